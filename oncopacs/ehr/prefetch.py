"""Prefetch before an appointment: an SIU^S12 (or an order with a scheduled date) queues a ``prefetch`` job, which
C-MOVEs the patient's relevant priors from ``ONCOPACS_PREFETCH_FROM`` to us so they are local when the patient comes.

The job asks the remote archive (one of ``ONCOPACS_REMOTE_AES``) for the patient's studies and their series (C-FIND,
Study Root), keeps those the ``[[prefetch]]`` rules choose (:mod:`oncopacs.ehr.prefetch_rules`), skips those already
complete here (as many instances as the remote reports), and asks the remote to C-MOVE each other study to our own
AE title (``ONCOPACS_AE_TITLE``): the remote must know that title with our host and DIMSE port, and our
``ONCOPACS_ALLOWED_AES`` (when set) must admit the remote. Jobs show in ``GET /api/jobs?kind=prefetch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select

from oncopacs.archive.ingest import Archive
from oncopacs.ehr.messages import HandlerOutcome, Hl7FormatError, Hl7Message, PatientIdentity, hl7_date
from oncopacs.ehr.prefetch_rules import PrefetchRule, RemoteStudy, parse_prefetch_rules, select_studies
from oncopacs.ehr.remote_archive import MoveOutcome, RemoteArchive
from oncopacs.errors import ConfigError, RemoteNodeError
from oncopacs.index.models import Instance, Series, Study
from oncopacs.jobs.kinds import JobSystem, enqueue_once
from oncopacs.jobs.queue import JobRecord
from oncopacs.jobs.worker import Handler as JobHandler
from oncopacs.jobs.worker import ProgressCallback
from oncopacs.settings import RemoteAE, Settings
from oncopacs.tls import TlsFiles

PREFETCH = "prefetch"  # the job kind
CREATED_BY = "hl7"
NOT_CONFIGURED = "prefetch is not configured (ONCOPACS_PREFETCH_FROM)"
PARTIAL = 0xB000  # C-MOVE warning: some sub-operations failed (e.g. an instance we hold with other bytes)

#: DICOM body part terms (BodyPartExamined, PS3.16 Annex L) recognised in an appointment's service text (AIS-3).
BODY_PARTS = frozenset({
    "ABDOMEN", "ABDOMENPELVIS", "BLADDER", "BRAIN", "BREAST", "CERVIX", "CHEST", "CHESTABDOMEN", "CHESTABDPELVIS",
    "CSPINE", "ESOPHAGUS", "HEAD", "HEADNECK", "KIDNEY", "LIVER", "LSPINE", "LUNG", "NECK", "PANCREAS", "PELVIS",
    "PROSTATE", "RECTUM", "SPINE", "TSPINE", "UTERUS", "WHOLEBODY",
})

HL7Handler = Callable[[Hl7Message, int | None], HandlerOutcome]  # the listener's handler contract


# -- queueing (HL7 side) ------------------------------------------------------------------------------------------

def queue_prefetch(jobs: JobSystem, patient: PatientIdentity, reason: str, when: str = "", *,
                   body_part: str = "") -> tuple[JobRecord, bool]:
    """Queue a prefetch of ``patient``'s priors (job, queued now); an identical queued job is reused.

    ``when``: the appointment or scheduled start (HL7 DTM or DICOM DA; empty: unknown, priors are aged from today);
    ``body_part``: a BodyPartExamined term when known (rules with ``body_part = "same"`` use it); ``reason``: a
    sentence without patient data (e.g. ``"SIU^S12 appointment 4711"``). Callers check ``settings.prefetch_from``
    first: a job queued without it fails saying prefetch is not configured.
    """
    params = {"patient_id": patient.patient_id, "appointment": hl7_date(when), "body_part": body_part.upper(),
              "reason": reason[:200]}
    return enqueue_once(jobs.queue, PREFETCH, params, CREATED_BY)


def build_prefetch_handlers(jobs: JobSystem, settings: Settings) -> dict[str, HL7Handler]:
    """{"SIU^S12": handler}: a new appointment queues a prefetch job of the patient's priors.

    The ACK is AA whenever the message is readable: the appointment itself is fine even when prefetch is not
    configured (then the AA's text says so and no job is queued); AE only when PID-3 names no patient.
    """

    def on_new_appointment(message: Hl7Message, message_pk: int | None) -> HandlerOutcome:
        try:
            patient = message.patient("PID")
        except Hl7FormatError as exc:
            return HandlerOutcome.not_applied(str(exc))
        if not settings.prefetch_from:
            return HandlerOutcome.applied(f"appointment noted; {NOT_CONFIGURED}")
        if _is_pattern(patient.patient_id):  # it would match other patients' studies at the remote
            return HandlerOutcome.not_applied("PID-3 holds a wildcard character (* ? \\): no prefetch")
        appointment_id = message.field("SCH", 2) or message.field("SCH", 1)
        reason = f"{message.kind} appointment {appointment_id}".strip() if appointment_id else message.kind
        job, queued = queue_prefetch(jobs, patient, reason, appointment_start(message),
                                     body_part=appointment_body_part(message))
        return HandlerOutcome.applied(f"prefetch job {job.id} {'queued' if queued else 'already queued'}")

    return {"SIU^S12": on_new_appointment}


def appointment_start(message: Hl7Message) -> str:
    """The appointment's start (HL7 DTM): SCH-11.4, else TQ1-7, else the first AIS-4; empty when none is given."""
    return message.field("SCH", 11, 4) or message.field("TQ1", 7) or message.field("AIS", 4)


def appointment_body_part(message: Hl7Message) -> str:
    """The body part an appointment names: a DICOM body part term among the words of AIS-3 (the service, e.g.
    ``CTCHEST^CT CHEST PLANNING``); empty when there is none."""
    words = " ".join((message.field("AIS", 3, 1), message.field("AIS", 3, 2))).upper().replace("_", " ").split()
    return next((word for word in words if word in BODY_PARTS), "")


# -- the job ------------------------------------------------------------------------------------------------------

def build_prefetch_handler(archive: Archive, settings: Settings) -> JobHandler:
    """The ``prefetch`` job: find the patient's priors at ``settings.prefetch_from`` and C-MOVE the relevant ones
    here. ConfigError at once (when the platform opens) for bad ``[[prefetch]]`` tables."""
    rules = parse_prefetch_rules(settings.prefetch)

    def run_prefetch(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        remote = _prefetch_source(settings)
        patient_id = str(params.get("patient_id", "")).strip()
        if not patient_id or _is_pattern(patient_id):
            raise ValueError("the prefetch job names no patient, or a wildcard pattern (* ? \\) instead of one")
        appointment = _appointment_date(str(params.get("appointment", "")))
        context = TlsFiles.from_settings(settings).client_context() if remote.tls else None
        with RemoteArchive(settings.ae_title, remote, ssl_context=context) as source:
            progress(0.0, f"asking {remote.ae_title} for the patient's studies")
            studies = source.patient_studies(patient_id)
            chosen = select_studies(studies, rules, body_part=str(params.get("body_part", "")),
                                    appointment=appointment)
            by_uid = {s.study_instance_uid: s for s in studies}
            outcomes = []
            for position, uid in enumerate(chosen, 1):
                outcomes.append(_fetch_study(archive, source, by_uid[uid], chosen[uid], settings.ae_title))
                progress(position / len(chosen), f"{position} of {len(chosen)} relevant studies done")
        return _result(remote, len(studies), outcomes)

    return run_prefetch


def install_prefetch(archive: Archive, jobs: JobSystem, settings: Settings) -> None:
    """Register the ``prefetch`` job kind on ``jobs`` (ConfigError for bad ``[[prefetch]]`` tables)."""
    jobs.registry.register(PREFETCH, build_prefetch_handler(archive, settings))


def local_instance_count(archive: Archive, study_instance_uid: str) -> int:
    """How many instances of the study the archive holds."""
    with archive.index.reading() as session:
        return session.scalar(
            select(func.count(Instance.id)).join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id).where(Study.study_instance_uid == study_instance_uid)
        ) or 0


def _fetch_study(archive: Archive, source: RemoteArchive, study: RemoteStudy, rules: tuple[str, ...],
                 destination: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"study_instance_uid": study.study_instance_uid, "rules": list(rules),
                             "remote_instances": study.instances}
    local = local_instance_count(archive, study.study_instance_uid)
    if study.instances and local >= study.instances:
        return {**entry, "outcome": "skipped", "local_instances": local}
    moved: MoveOutcome = source.move_study(study.study_instance_uid, destination)
    outcome = "moved" if moved.success else "partial" if moved.status == PARTIAL and moved.completed else "failed"
    return {**entry, "outcome": outcome, **moved.to_dict(),
            "local_instances": local_instance_count(archive, study.study_instance_uid)}


def _result(remote: RemoteAE, found: int, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [o for o in outcomes if o["outcome"] == "failed"]
    if failed and len(failed) == len(outcomes):
        status = failed[0]["status"]
        hint = " (move destination unknown: the remote must list our AE title)" if status == "0xA801" else ""
        raise RemoteNodeError(f"{remote.ae_title} at {remote.host}:{remote.port} moved none of the "
                              f"{len(failed)} relevant studies (status {status}){hint}")
    return {
        "source": remote.ae_title,
        "found": found,
        "relevant": len(outcomes),
        "moved": sum(o["outcome"] == "moved" for o in outcomes),
        "partial": sum(o["outcome"] == "partial" for o in outcomes),
        "skipped": sum(o["outcome"] == "skipped" for o in outcomes),
        "failed": len(failed),
        "studies": outcomes,
    }


def _prefetch_source(settings: Settings) -> RemoteAE:
    if not settings.prefetch_from:
        raise ConfigError(NOT_CONFIGURED)
    remote = settings.remote_ae(settings.prefetch_from)
    if remote is None:
        raise ConfigError(f"ONCOPACS_PREFETCH_FROM names {settings.prefetch_from!r}, which is not one of "
                          "ONCOPACS_REMOTE_AES")
    return remote


def _is_pattern(patient_id: str) -> bool:
    return any(c in patient_id for c in "*?\\")


def _appointment_date(value: str) -> date:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return datetime.now(UTC).date()


__all__ = ["NOT_CONFIGURED", "PREFETCH", "PrefetchRule", "appointment_body_part", "appointment_start",
           "build_prefetch_handler", "build_prefetch_handlers", "install_prefetch", "local_instance_count",
           "parse_prefetch_rules", "queue_prefetch"]
