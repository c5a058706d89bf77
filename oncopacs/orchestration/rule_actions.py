"""What a firing rule does on the platform: forward through the outbox, analyse as a plug-in job, export de-identified.

Nothing runs inside the association or request that stored the instance: ``forward`` writes outbox rows (delivered
by the delivery loop), ``analyse`` and ``export`` queue jobs (run by the job worker). A destination or plug-in the
configuration does not know is refused when the platform opens (:func:`check_rules`), never at the first firing.
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.audit.trail import AuditTrail
from oncopacs.errors import ConfigError
from oncopacs.index.models import Instance, Series, Study
from oncopacs.jobs.background import BackgroundLoop
from oncopacs.jobs.kinds import JobSystem, enqueue_once
from oncopacs.jobs.worker import Handler, ProgressCallback
from oncopacs.orchestration.deid_export import export_deidentified
from oncopacs.orchestration.deid_sinks import parse_export_target, sink_for
from oncopacs.orchestration.dicomweb_auth import DicomwebAuth, parse_dicomweb_auth
from oncopacs.orchestration.engine import BuiltinRule, Firing, RuleEngine
from oncopacs.orchestration.outbox import Outbox, parse_destination
from oncopacs.orchestration.pending import IndexPendingStore
from oncopacs.orchestration.plugins import PluginEntry, discover_plugins, run_plugin
from oncopacs.orchestration.registry import ModelRegistry
from oncopacs.orchestration.rule_store import ManagedRules
from oncopacs.orchestration.rulebook import RuleBook
from oncopacs.orchestration.rules import Rule, Trigger, parse_rules
from oncopacs.settings import RemoteAE, Settings
from oncopacs.tls import TlsFiles

PLUGIN_JOB = "plugin_analysis"
EXPORT_JOB = "deid_export"
RULES_ACTOR = "rules"

log = logging.getLogger(__name__)


def check_rules(rules: Iterable[Rule], remote_aes: Iterable[RemoteAE], plugins: Mapping[str, PluginEntry]) -> None:
    """ConfigError naming the rule when it forwards to an unknown destination, runs an unknown or broken plug-in,
    or exports elsewhere than an absolute folder, a configured AE title or an http(s) DICOMweb URL."""
    for rule in rules:
        for destination in rule.forward:
            try:
                parse_destination(destination, remote_aes)
            except ConfigError as exc:
                raise ConfigError(f"rule {rule.name!r}: {exc}") from None
        for name in rule.analyse:
            entry = plugins.get(name)
            if entry is None:
                raise ConfigError(f"rule {rule.name!r}: no plug-in named {name!r} (installed: "
                                  f"{', '.join(sorted(plugins)) or 'none'})")
            if entry.plugin is None:
                raise ConfigError(f"rule {rule.name!r}: plug-in {name!r} cannot be loaded: {entry.problem}")
        for target in rule.export:
            try:
                parse_export_target(target, remote_aes)
            except ConfigError as exc:
                raise ConfigError(f"rule {rule.name!r}: {exc}") from None


class PlatformActions:
    """Carries out firings on the platform's outbox and job queue."""

    def __init__(self, archive: Archive, jobs: JobSystem, outbox: Outbox) -> None:
        self.archive = archive
        self.jobs = jobs
        self.outbox = outbox

    def run(self, firing: Firing) -> None:
        rule = firing.rule
        if rule.forward:
            instances = self._instances_of(firing)
            for destination in rule.forward:
                self.outbox.enqueue(instances, destination, rule.name)
        for plugin in rule.analyse:
            for series in self._series_of(firing):
                enqueue_once(self.jobs.queue, PLUGIN_JOB, {"plugin": plugin, "series_instance_uid": series,
                                                           "rule": rule.name}, RULES_ACTOR)
        for target in rule.export:
            enqueue_once(self.jobs.queue, EXPORT_JOB, {"study_instance_uids": [firing.study_instance_uid],
                                                          "out": target, "rule": rule.name}, RULES_ACTOR)

    def _instances_of(self, firing: Firing) -> list[str]:
        """The SOP Instance UIDs a firing covers: its instance, or every instance of its series or study."""
        if firing.level is Trigger.INSTANCE:
            return list(firing.sop_instance_uids)
        with self.archive.index.reading() as session:
            query = select(Instance.sop_instance_uid).join(Instance.series)
            if firing.level is Trigger.SERIES:
                query = query.where(Series.series_instance_uid == firing.uid)
            else:
                query = query.join(Series.study).where(Study.study_instance_uid == firing.uid)
            return [str(uid) for uid in session.scalars(query.order_by(Instance.id))]

    def _series_of(self, firing: Firing) -> list[str]:
        """The series a firing covers: the instance's or the series; of a study, each series whose modality the
        rule's ``Modality`` condition (if any) accepts."""
        with self.archive.index.reading() as session:
            if firing.level is Trigger.INSTANCE:
                rows = session.execute(select(Series.series_instance_uid, Series.modality).join(Instance.series)
                                       .where(Instance.sop_instance_uid.in_(firing.sop_instance_uids)).distinct())
            elif firing.level is Trigger.SERIES:
                return [firing.uid]
            else:
                rows = session.execute(select(Series.series_instance_uid, Series.modality).join(Series.study)
                                       .where(Study.study_instance_uid == firing.uid))
            modality = next((c for c in firing.rule.conditions if c.keyword == "Modality"), None)
            return sorted(str(uid) for uid, series_modality in rows
                          if modality is None or modality.matches(str(series_modality or "")))


def build_plugin_handler(archive: Archive, plugins: Mapping[str, PluginEntry] | None = None,
                         is_enabled: Callable[[str], bool] | None = None) -> Handler:
    """The job handler running a plug-in on a series (params: plugin, series_instance_uid); the installed plug-ins
    are looked up at the first job when ``plugins`` is None. A plug-in for which ``is_enabled`` (the model
    registry's) says False is not run: its job finishes with ``skipped`` saying so. Without it, every one may run."""
    found: dict[str, Mapping[str, PluginEntry]] = {"plugins": plugins} if plugins is not None else {}

    def run(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        if "plugins" not in found:
            found["plugins"] = discover_plugins()
        entry = found["plugins"].get(str(params.get("plugin", "")))
        if entry is None or entry.plugin is None:
            raise ValueError(f"plug-in {params.get('plugin')!r} is not installed or cannot be loaded")
        if is_enabled is not None and not is_enabled(entry.name):
            log.info("plug-in %s is disabled in the model registry: its job ran nothing", entry.name)
            progress(1.0, f"{entry.name} is disabled: not run")
            return {"plugin": entry.name, "version": entry.plugin.version,
                    "series_instance_uid": str(params.get("series_instance_uid", "")), "stored": [], "refused": [],
                    "metrics": None, "skipped": f"{entry.name} is disabled in the model registry"}
        progress(0.0, f"{entry.name} on a series")
        done = run_plugin(archive, entry.plugin, str(params["series_instance_uid"]))
        progress(1.0, f"{len(done.stored)} object(s) stored")
        return {"plugin": done.plugin, "version": done.version, "series_instance_uid": done.series_instance_uid,
                "stored": list(done.stored), "refused": [list(r) for r in done.refused],
                "metrics": dict(done.metrics) if done.metrics is not None else None}

    return run


def build_export_handler(archive: Archive, audit: AuditTrail, remote_aes: Iterable[RemoteAE] = (),
                         local_ae_title: str = "ONCOPACS",
                         ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None,
                         credentials: DicomwebAuth | None = None) -> Handler:
    """The job handler of a rule's export: the studies de-identified to a folder, one of ``remote_aes`` (called
    as ``local_ae_title``) or a DICOMweb URL with its ``credentials`` (params: study UIDs, out: the target).
    ``ssl_context`` is asked at the first export, so TLS files are read when an export needs them, not when the
    platform opens."""
    remotes = tuple(remote_aes)
    ssl_context = functools.cache(ssl_context)

    def run(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        progress(0.0, "de-identified export")
        sink = sink_for(str(params["out"]), remotes, local_ae_title=local_ae_title, ssl_context=ssl_context(),
                        credentials=credentials)
        summary = export_deidentified(archive, audit, list(params["study_instance_uids"]), sink, actor=RULES_ACTOR,
                                      source=f"rule {params.get('rule', '')}")
        progress(1.0, "exported")
        return summary.to_dict()

    return run


def install_rules(settings: Settings, archive: Archive, jobs: JobSystem, outbox: Outbox, audit: AuditTrail,
                  models: ModelRegistry, builtins: Iterable[BuiltinRule] = ()) -> RuleBook:
    """The built-in rules, the configured ones (checked: ConfigError) and those administrators stored, on an engine
    listening to the archive; the plug-in (``models``: what may run) and export job kinds."""
    configured = parse_rules(settings.rules)
    builtins = tuple(builtins)
    clash = next((rule.name for rule in configured if rule.name in {b.name for b in builtins}), None)
    if clash:
        raise ConfigError(f"rule {clash!r}: a built-in rule has this name; choose another")
    check = functools.partial(check_rules, remote_aes=settings.remote_aes, plugins=models.entries)
    check(configured)
    jobs.registry.register(PLUGIN_JOB, build_plugin_handler(archive, models.entries, models.is_enabled))
    jobs.registry.register(EXPORT_JOB, build_export_handler(archive, audit, settings.remote_aes, settings.ae_title,
                                                            TlsFiles.from_settings(settings).client_context,
                                                            parse_dicomweb_auth(settings.dicomweb_auth)))
    engine = RuleEngine(configured, PlatformActions(archive, jobs, outbox), builtins=builtins,
                        stable_seconds=settings.stable_seconds, store=IndexPendingStore(archive.index))
    book = RuleBook(engine, configured, ManagedRules(archive.index), check)
    book.load()
    archive.subscribe_arrivals(engine.arrived)
    return book


class RuleLoop(BackgroundLoop):
    """Fires the series and study rules whose data has become stable, checking every ``poll_s`` seconds."""

    thread_name = "oncopacs-rules"

    def __init__(self, book: RuleBook, poll_s: float = 1.0, refresh_s: float = 5.0,
                 on_fired: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.book = book
        self.poll_s = poll_s
        self.refresh_s = refresh_s  # how often rules other processes stored are picked up
        self.on_fired = on_fired  # e.g. wake the job worker, so a queued analysis starts at once

    def _loop(self) -> None:
        refreshed = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - refreshed >= self.refresh_s:
                    refreshed = time.monotonic()
                    self.book.refresh()
                if self.book.engine.fire_stable():
                    self.on_fired()
            except Exception as exc:  # one failing action must not end rule processing
                log.error("a stable-series rule failed: %s", type(exc).__name__, exc_info=exc)
            self._sleep(self.poll_s)


__all__ = ["EXPORT_JOB", "PLUGIN_JOB", "PlatformActions", "RuleLoop", "build_export_handler",
           "build_plugin_handler", "check_rules", "install_rules"]
