"""The composition root: :func:`open_platform` wires the whole platform from one settings object.

Everything that serves or changes the archive — ``create_app``, ``oncopacs serve``, ``demo``,
``import`` and the CLI's analysis commands — takes a :class:`Platform`. The built-in rules (RT
analysis, PET statistics), the hospital's rules and every job kind are registered inside :func:`open_platform`,
before it returns, so nothing can be stored before the rules that react to it exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from oncopacs.analysis.pet_job import install_pet_statistics
from oncopacs.analysis.registration_job import install_registration
from oncopacs.analysis.rt_job import install_rt_analysis
from oncopacs.archive.backup import restore_sealed_index
from oncopacs.archive.decoding import guard_pydicom_logs
from oncopacs.archive.encryption import storage_keys_of
from oncopacs.archive.ingest import Archive
from oncopacs.archive.stores import open_storage
from oncopacs.audit.spool import SPOOL_FILE
from oncopacs.audit.syslog import open_syslog_sender
from oncopacs.audit.trail import AuditTrail, open_audit_trail
from oncopacs.auth.throttle import LockoutPolicy
from oncopacs.auth.users import UserStore
from oncopacs.ehr.dispatch import Handler
from oncopacs.ehr.wiring import install_ehr
from oncopacs.errors import StorageError
from oncopacs.index.db import IndexDatabase, open_index
from oncopacs.jobs.kinds import JobSystem, open_job_system
from oncopacs.orchestration.engine import BuiltinRule
from oncopacs.orchestration.inference import endpoint_entries, merge_plugins
from oncopacs.orchestration.outbox import Outbox
from oncopacs.orchestration.plugins import discover_plugins
from oncopacs.orchestration.registry import ModelRegistry
from oncopacs.orchestration.rule_actions import install_rules
from oncopacs.orchestration.rulebook import RuleBook
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from reporting.jobs import Reports, open_reports


@dataclass(frozen=True, eq=False)
class Platform:
    """One archive with everything that works on it: audit trail, jobs and their rules, users, reports."""

    settings: Settings
    archive: Archive
    audit: AuditTrail
    jobs: JobSystem
    users: UserStore
    reports: Reports
    outbox: Outbox  # forwards to remote AEs and DICOMweb servers; delivered by the loop `serve` runs
    rules: RuleBook  # built-in and hospital's rules; series and study rules fire from the loop `serve` runs
    models: ModelRegistry  # analysis plug-ins and inference endpoints, enabled or not, and what each produced
    ehr_handlers: Mapping[str, Handler]  # HL7 message kind ("ADT^A08") -> handler; `serve` runs the listener

    @property
    def index(self) -> IndexDatabase:
        return self.archive.index

    def close(self) -> None:
        """Finish pending I/O and release the database connections."""
        self.audit.close()
        self.jobs.close()
        self.archive.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def open_archive(settings: Settings) -> Archive:
    """The bare archive of ``settings.data_dir`` (created on first use), its index migrated; no rules.

    For maintenance (crash recovery, ``verify``) and tests of the archive itself; anything that
    stores instances a user expects to be analysed goes through :func:`open_platform`.
    """
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot open the archive in {settings.data_dir}: {exc.strerror or exc}") from None
    keys = storage_keys_of(settings)  # ConfigError: a bad key file
    restore_sealed_index(settings, keys)  # a backup's sealed SQLite index, unsealed in place
    index = open_index(settings.effective_database_url)
    guard_pydicom_logs(log_phi=settings.log_phi)  # pydicom's records quote values: kept value-free
    return Archive(open_storage(settings, keys), index, allow_overwrite=settings.allow_overwrite,
                   accept_empty_patient_id=settings.accept_empty_patient_id, log_phi=settings.log_phi)


def open_platform(settings: Settings | None = None) -> Platform:
    """The platform of ``settings`` (default: the configured settings), rules and job kinds installed."""
    settings = settings or Settings.load()
    archive = open_archive(settings)
    jobs = open_job_system(archive, settings.queue_url, settings.queue_name)  # a queue URL: `oncopacs worker` runs jobs
    builtins: tuple[BuiltinRule, ...] = (
        BuiltinRule("rt-analysis", "DVH, plan metrics and clinical goals when an RT dose, plan or structure set "
                    "completes a planning set", install_rt_analysis(archive, jobs)),
        BuiltinRule("pet-statistics", "SUV statistics when a complete PET series and a structure set on its frame "
                    "of reference meet", install_pet_statistics(archive, jobs)),
    )
    install_registration(archive, jobs)
    try:
        audit = open_audit_trail(archive.index, open_syslog_sender(settings.audit_syslog, settings.ae_title,
                                                                   TlsFiles.from_settings(settings)),
                                 spool_path=settings.data_dir / SPOOL_FILE, spool_bytes=settings.audit_spool_bytes,
                                 key_file=settings.effective_audit_key_file,
                                 checkpoint_file=settings.effective_audit_checkpoint_file)
    except BaseException:
        archive.close()  # a missing or wrong audit key: nothing stays open
        raise
    archive.audit = audit  # objects accepted with an empty Patient ID are recorded in the platform's trail
    outbox = Outbox(archive.index, settings.remote_aes)
    try:
        ehr_handlers, worklist_linker = install_ehr(settings, archive, jobs)  # ConfigError: bad [[prefetch]]
        builtins = (*builtins, BuiltinRule("worklist-link", "links a study arriving with an order's accession "
                                           "number to the order", worklist_linker.react))
        models = ModelRegistry(archive.index, merge_plugins(discover_plugins(), endpoint_entries(settings)))
        rules = install_rules(settings, archive, jobs, outbox, audit, models, builtins)  # before anything arrives
    except BaseException:
        audit.close()
        archive.close()  # a rule or setting it cannot carry out: nothing stays open
        raise
    return Platform(
        settings=settings,
        archive=archive,
        audit=audit,
        jobs=jobs,
        users=UserStore(archive.index, LockoutPolicy(settings.login_max_failures, settings.login_lockout_minutes)),
        reports=open_reports(settings, archive, jobs),
        outbox=outbox,
        rules=rules,
        models=models,
        ehr_handlers=ehr_handlers,
    )
