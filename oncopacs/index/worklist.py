"""Scheduled procedure steps (``worklist_items``): written from orders, offered to modalities, closed by MPPS.

Orders (:mod:`oncopacs.ehr.orders`) upsert and cancel steps; the Modality Worklist SCP
(:mod:`oncopacs.dimse.worklist`) reads them with :func:`find_worklist` (PS3.4 K.6 matching keys, the index's
matching rules of :mod:`oncopacs.index.query`); the MPPS SCP (:mod:`oncopacs.dimse.mpps`) moves them through
IN PROGRESS to COMPLETED or DISCONTINUED; :func:`link_study` ties the study that arrived to its order.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from oncopacs.index.models import WorklistItem
from oncopacs.index.query import Attribute, QueryLevel, match_condition


class StepStatus(str, enum.Enum):
    """A scheduled procedure step's status (Scheduled / Performed Procedure Step Status, PS3.3 C.4.10, C.4.14)."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    """One scheduled procedure step as an order describes it (DICOM forms: PN, DA, TM, CS)."""

    placer_order_number: str
    accession_number: str
    patient_id: str
    modality: str
    scheduled_step_id: str
    study_instance_uid: str = ""  # empty: keep the stored one (a new step needs one)
    filler_order_number: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    scheduled_step_description: str = ""
    scheduled_station_ae: str = ""
    scheduled_date: str = ""  # YYYYMMDD
    scheduled_time: str = ""  # HHMMSS
    referring_physician_name: str = ""


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    """A stored step, read once (what the worklist SCP answers with)."""

    placer_order_number: str
    filler_order_number: str
    accession_number: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    requested_procedure_id: str
    requested_procedure_description: str
    scheduled_step_id: str
    scheduled_step_description: str
    scheduled_station_ae: str
    modality: str
    scheduled_date: str
    scheduled_time: str
    referring_physician_name: str
    study_instance_uid: str
    status: str
    linked_study_uid: str
    mpps_uid: str

    @classmethod
    def of(cls, row: WorklistItem) -> WorklistEntry:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class StepReference:
    """How an MPPS names the step it performs (one Scheduled Step Attributes Sequence item)."""

    accession_number: str = ""
    scheduled_step_id: str = ""
    study_instance_uid: str = ""

    @property
    def is_empty(self) -> bool:
        return not (self.accession_number or self.scheduled_step_id or self.study_instance_uid)


#: Matching keys (PS3.4 K.6.1.2.2) and the columns that hold them; PN matching folds case, as the index does.
MATCHING: dict[str, Attribute] = {
    keyword: Attribute(keyword, QueryLevel.STUDY, column, vr)
    for keyword, column, vr in (
        ("ScheduledStationAETitle", WorklistItem.scheduled_station_ae, "AE"),
        ("Modality", WorklistItem.modality, "CS"),
        ("ScheduledProcedureStepStartDate", WorklistItem.scheduled_date, "DA"),
        ("ScheduledProcedureStepStartTime", WorklistItem.scheduled_time, "TM"),
        ("ScheduledProcedureStepID", WorklistItem.scheduled_step_id, "SH"),
        ("PatientID", WorklistItem.patient_id, "LO"),
        ("IssuerOfPatientID", WorklistItem.issuer_of_patient_id, "LO"),
        ("PatientName", WorklistItem.patient_name, "PN"),
        ("AccessionNumber", WorklistItem.accession_number, "SH"),
        ("RequestedProcedureID", WorklistItem.requested_procedure_id, "SH"),
        ("StudyInstanceUID", WorklistItem.study_instance_uid, "UI"),
        ("ReferringPhysicianName", WorklistItem.referring_physician_name, "PN"),
    )
}

#: At most this many steps answer one query.
MAX_MATCHES = 1000


def _now() -> datetime:
    return datetime.now(UTC)


def upsert_step(session: Session, step: ScheduledStep, status: StepStatus | None = StepStatus.SCHEDULED, *,
                message_pk: int | None = None) -> tuple[WorklistEntry, bool]:
    """Create the step, or update the stored one with the same placer order number and step ID.

    ``status`` None keeps a stored step's status (an order change). Returns the entry and whether it was new.
    A new step without a Study Instance UID is a ValueError (the caller generates one).
    """
    row = session.scalars(select(WorklistItem).where(
        WorklistItem.placer_order_number == step.placer_order_number,
        WorklistItem.scheduled_step_id == step.scheduled_step_id,
    )).one_or_none()
    now = _now()
    created = row is None
    if row is None:
        if not step.study_instance_uid:
            raise ValueError("a new scheduled procedure step needs a Study Instance UID")
        row = WorklistItem(created_at=now, status=(status or StepStatus.SCHEDULED).value)
        session.add(row)
    elif status is not None:
        row.status = status.value
    for f in fields(ScheduledStep):
        value = getattr(step, f.name)
        if f.name != "study_instance_uid" or value:
            setattr(row, f.name, value)
    row.updated_at = now
    if message_pk is not None:
        row.message_pk = message_pk
    session.flush()
    return WorklistEntry.of(row), created


def set_order_status(session: Session, placer_order_number: str, status: StepStatus, *,
                     message_pk: int | None = None) -> int:
    """Set the status of every step of an order (a cancel, a discontinue, a status change); the steps changed."""
    values: dict[str, object] = {"status": status.value, "updated_at": _now()}
    if message_pk is not None:
        values["message_pk"] = message_pk
    result = session.execute(
        update(WorklistItem).where(WorklistItem.placer_order_number == placer_order_number).values(**values)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for UPDATE


def list_order(session: Session, placer_order_number: str) -> list[WorklistEntry]:
    """Every step of one order, in step ID order."""
    rows = session.scalars(select(WorklistItem).where(WorklistItem.placer_order_number == placer_order_number)
                           .order_by(WorklistItem.scheduled_step_id))
    return [WorklistEntry.of(row) for row in rows]


def find_worklist(session: Session, keys: Mapping[str, str]) -> list[WorklistEntry]:
    """The SCHEDULED steps matching a Modality Worklist query's keys (keyword -> DICOM string value).

    Keys not in :data:`MATCHING` are return keys only; empty values and ``*`` match everything. Single values,
    ``*``/``?`` wildcards, backslash lists, UID lists and date/time ranges (``A-B``, ``-B``, ``A-``; date and time
    each on their own) match as in :func:`oncopacs.index.query.match_condition`; QueryError for a bad range.
    """
    conditions: list[ColumnElement[bool]] = [WorklistItem.status == StepStatus.SCHEDULED.value]
    for keyword, raw in keys.items():
        attribute = MATCHING.get(keyword)
        value = "" if raw is None else str(raw).strip()
        if attribute is None or not value or value == "*":
            continue
        conditions.append(match_condition(attribute, value))
    rows = session.scalars(
        select(WorklistItem).where(and_(*conditions))
        .order_by(WorklistItem.scheduled_date, WorklistItem.scheduled_time, WorklistItem.id).limit(MAX_MATCHES)
    )
    return [WorklistEntry.of(row) for row in rows]


def has_unlinked(session: Session, accession_number: str) -> bool:
    """Whether a step with this accession number has no study linked yet (a read, for the ingest path)."""
    return session.scalar(select(WorklistItem.id).where(
        WorklistItem.accession_number == accession_number, WorklistItem.linked_study_uid == "").limit(1)) is not None


def link_study(session: Session, accession_number: str, study_uid: str) -> int:
    """Link the study that arrived with ``accession_number`` to the steps ordered under it that have none yet.

    The steps' status is left as it is (MPPS or the order closes them). Returns the steps linked.
    """
    if not accession_number or not study_uid:
        return 0
    result = session.execute(
        update(WorklistItem)
        .where(WorklistItem.accession_number == accession_number, WorklistItem.linked_study_uid == "")
        .values(linked_study_uid=study_uid, updated_at=_now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for UPDATE


def _step_condition(reference: StepReference) -> ColumnElement[bool]:
    parts = []
    if reference.accession_number:
        parts.append(WorklistItem.accession_number == reference.accession_number)
    if reference.scheduled_step_id:
        parts.append(WorklistItem.scheduled_step_id == reference.scheduled_step_id)
    if reference.study_instance_uid:
        parts.append(WorklistItem.study_instance_uid == reference.study_instance_uid)
    return and_(*parts)


def start_steps(session: Session, mpps_uid: str, references: list[StepReference]) -> int:
    """MPPS N-CREATE: the SCHEDULED steps each reference names go IN PROGRESS under ``mpps_uid``.

    A reference matches the steps agreeing with all its non-empty fields; empty references (an unscheduled
    procedure) match nothing. Returns the steps started.
    """
    started = 0
    for reference in references:
        if reference.is_empty:
            continue
        result = session.execute(
            update(WorklistItem)
            .where(_step_condition(reference), WorklistItem.status == StepStatus.SCHEDULED.value)
            .values(status=StepStatus.IN_PROGRESS.value, mpps_uid=mpps_uid, updated_at=_now())
        )
        started += int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for UPDATE
    return started


def steps_of_mpps(session: Session, mpps_uid: str) -> list[WorklistEntry]:
    """The steps an MPPS instance performs."""
    return [WorklistEntry.of(row) for row in session.scalars(
        select(WorklistItem).where(WorklistItem.mpps_uid == mpps_uid).order_by(WorklistItem.id))]


def finish_steps(session: Session, mpps_uid: str, status: StepStatus) -> int:
    """MPPS N-SET: the steps performed under ``mpps_uid`` that are IN PROGRESS take ``status``; the steps set."""
    result = session.execute(
        update(WorklistItem)
        .where(WorklistItem.mpps_uid == mpps_uid, WorklistItem.status == StepStatus.IN_PROGRESS.value)
        .values(status=status.value, updated_at=_now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for UPDATE


__all__ = ["MATCHING", "ScheduledStep", "StepReference", "StepStatus", "WorklistEntry", "find_worklist",
           "finish_steps", "has_unlinked", "link_study", "list_order", "set_order_status", "start_steps",
           "steps_of_mpps", "upsert_step"]
