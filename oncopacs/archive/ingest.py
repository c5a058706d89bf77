"""The one ingest path: validate, store durably, index in one transaction, then acknowledge.

DIMSE C-STORE, STOW-RS, ``oncopacs import`` and every derived object go through
:meth:`Archive.ingest`. An instance is reported stored only once its file is fsynced in place
and its index row committed. Re-sending the same instance is a no-op success; the same SOP
Instance UID with other content is kept once and reported (unless overwrite is allowed).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from oncopacs.archive.extract import InstanceRecord, build_record, parse_dataset, transfer_syntax_of, validate
from oncopacs.archive.part10 import build_part10, dataset_offset, encode_dataset
from oncopacs.archive.storage import Storage, compute_sha256, relative_path_for
from oncopacs.errors import DicomInputError, IntegrityError, StorageError
from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import IngestConflict, Instance, ObjectReference, Patient, Series, Study

log = logging.getLogger(__name__)

INDEX_RETRIES = 3


class IngestOutcome(str, enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical instance already stored: success, nothing written
    CONFLICT = "conflict"  # same SOP Instance UID, other content or place: refused, first copy kept
    REJECTED = "rejected"  # the input is not acceptable DICOM
    FAILED = "failed"  # the archive could not make it durable (disk, database)


class Status(enum.IntEnum):
    """The PS3.4 C-STORE statuses OncoPACS answers with."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    OUT_OF_RESOURCES = 0xA700
    CONFLICTING_PATIENT = 0xA778  # the study is already stored under another patient (as dcm4chee)
    MOVED_INSTANCE = 0xA77B  # the SOP Instance UID is stored in another study or series (as dcm4chee)
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of one received object."""

    outcome: IngestOutcome
    status: Status
    sop_instance_uid: str | None
    reason: str = ""
    study_instance_uid: str | None = None

    @property
    def acknowledged(self) -> bool:
        """True when the sender may consider the instance safely archived."""
        return self.outcome in (IngestOutcome.STORED, IngestOutcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class ExpectedIdentity:
    """What the sender declared (a C-STORE request's Affected SOP Class/Instance UIDs)."""

    sop_class_uid: str
    sop_instance_uid: str


IngestListener = Callable[[InstanceRecord], None]


class _Conflict(Exception):
    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class Archive:
    """Storage plus index, and the one way in."""

    def __init__(self, storage: Storage, index: IndexDatabase, *, allow_overwrite: bool = False):
        self.storage = storage
        self.index = index
        self.allow_overwrite = allow_overwrite
        self._listeners: list[IngestListener] = []
        self._listeners_lock = threading.Lock()

    def subscribe(self, listener: IngestListener) -> None:
        """Call ``listener(record)`` after each newly stored instance (rules, forwarding, jobs)."""
        with self._listeners_lock:
            self._listeners.append(listener)

    # -- entry points -------------------------------------------------------------------------

    def ingest_dimse(
        self, dataset_bytes: bytes, *, transfer_syntax_uid: str, expected: ExpectedIdentity, calling_ae: str
    ) -> IngestResult:
        """A C-STORE request's dataset, exactly as received on the wire."""
        part10 = build_part10(
            dataset_bytes,
            sop_class_uid=expected.sop_class_uid,
            sop_instance_uid=expected.sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            source_ae_title=calling_ae,
        )
        return self.ingest(part10, source=f"dimse:{calling_ae}", expected=expected)

    def ingest_dataset(self, dataset: Dataset, *, source: str) -> IngestResult:
        """A dataset built in memory (derived objects, phantoms)."""
        return self.ingest(encode_dataset(dataset), source=source)

    def ingest(self, data: bytes, *, source: str, expected: ExpectedIdentity | None = None) -> IngestResult:
        """Validate, store and index one object given as a Part 10 file (or a bare dataset)."""
        try:
            dataset = parse_dataset(data)
            validate(dataset)
            if expected is not None:
                _check_expected(dataset, expected)
        except DicomInputError as exc:
            status = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS if exc.keyword.startswith(("Media", "Affected")) else Status.CANNOT_UNDERSTAND
            log.warning("rejected object from %s: %s", source, exc)
            return IngestResult(IngestOutcome.REJECTED, status, exc.sop_instance_uid, str(exc))
        syntax = transfer_syntax_of(dataset)
        if dataset_offset(data) == 0:  # a bare dataset: give it the File Meta a Part 10 file needs
            data = build_part10(
                data, sop_class_uid=dataset.SOPClassUID, sop_instance_uid=dataset.SOPInstanceUID, transfer_syntax_uid=syntax
            )
        record = build_record(dataset, syntax)
        return self._store(data, record, source)

    # -- the steps ----------------------------------------------------------------------------

    def _store(self, data: bytes, record: InstanceRecord, source: str) -> IngestResult:
        uid = record.sop_instance_uid
        existing = self._find_existing(uid)
        if existing is not None:
            result = self._compare_with_existing(existing, data, record, source)
            if result is not None:
                return result
        relative_path = relative_path_for(record.study_instance_uid, record.series_instance_uid, uid)
        sha256 = compute_sha256(data)
        try:
            staged = self.storage.stage(data)
            placed = self.storage.place(staged, relative_path, replace=existing is not None)
        except StorageError as exc:
            log.error("storage failure for %s from %s: %s", uid, source, exc)
            return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, uid, str(exc))
        if not placed:  # a file is already there without an index row (crash leftover or a racing sender)
            return self._store_over_orphan(data, record, source, relative_path, sha256)
        return self._index(record, relative_path, len(data), sha256, source, replace=existing is not None)

    def _store_over_orphan(
        self, data: bytes, record: InstanceRecord, source: str, relative_path: str, sha256: str
    ) -> IngestResult:
        existing = self._find_existing(record.sop_instance_uid)
        if existing is not None:  # another association won the race: compare with what it stored
            return self._compare_with_existing(existing, data, record, source) or IngestResult(
                IngestOutcome.DUPLICATE, Status.SUCCESS, record.sop_instance_uid, "already stored", record.study_instance_uid
            )
        try:
            staged = self.storage.stage(data)
            self.storage.place(staged, relative_path, replace=True)  # the orphan was never acknowledged
        except StorageError as exc:
            return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, record.sop_instance_uid, str(exc))
        return self._index(record, relative_path, len(data), sha256, source, replace=False)

    def _find_existing(self, sop_uid: str):
        """``(instance, series UID, study UID)`` of a stored SOP Instance UID, or None."""
        with self.index.reading() as session:
            return session.execute(
                select(Instance, Series.series_instance_uid, Study.study_instance_uid)
                .join(Instance.series)
                .join(Series.study)
                .where(Instance.sop_instance_uid == sop_uid)
            ).first()

    def _compare_with_existing(self, existing, data: bytes, record: InstanceRecord, source: str) -> IngestResult | None:
        """None when the new copy should replace the stored one; otherwise the answer to give."""
        instance, series_uid, study_uid = existing
        uid = record.sop_instance_uid
        if (series_uid, study_uid) != (record.series_instance_uid, record.study_instance_uid):
            reason = f"SOP Instance {uid} is already stored in study {study_uid} series {series_uid}"
            self._record_conflict(instance, data, reason, source)
            return IngestResult(IngestOutcome.CONFLICT, Status.MOVED_INSTANCE, uid, reason, record.study_instance_uid)
        try:
            stored = self.storage.read(instance.file_path)
        except IntegrityError:
            log.error("stored file of %s is missing; replacing it with the received copy", uid)
            return None
        if stored[dataset_offset(stored) :] == data[dataset_offset(data) :]:
            return IngestResult(IngestOutcome.DUPLICATE, Status.SUCCESS, uid, "already stored", record.study_instance_uid)
        if self.allow_overwrite:
            log.warning("replacing %s with new content from %s (overwrite allowed)", uid, source)
            return None
        reason = f"SOP Instance {uid} is already stored with different content; the first copy is kept"
        self._record_conflict(instance, data, reason, source)
        return IngestResult(IngestOutcome.CONFLICT, Status.DUPLICATE_SOP_INSTANCE, uid, reason, record.study_instance_uid)

    def _record_conflict(self, instance: Instance, data: bytes, reason: str, source: str) -> None:
        log.warning("conflict from %s: %s", source, reason)
        with self.index.writing() as session:
            session.add(
                IngestConflict(
                    sop_instance_uid=instance.sop_instance_uid,
                    stored_sha256=instance.sha256,
                    received_sha256=compute_sha256(data),
                    reason=reason,
                    source=source[:80],
                    received_at=datetime.now(UTC),
                )
            )

    def _index(
        self, record: InstanceRecord, relative_path: str, size: int, sha256: str, source: str, *, replace: bool
    ) -> IngestResult:
        uid = record.sop_instance_uid
        for attempt in range(1, INDEX_RETRIES + 1):
            try:
                with self.index.writing() as session:
                    _write_index_rows(session, record, relative_path, size, sha256, source, replace=replace)
                break
            except _Conflict as exc:
                self.storage.remove(relative_path)
                log.warning("refused %s from %s: %s", uid, source, exc.reason)
                return IngestResult(IngestOutcome.CONFLICT, exc.status, uid, exc.reason, record.study_instance_uid)
            except SqlIntegrityError:
                if attempt == INDEX_RETRIES:  # a racing association keeps creating the same rows
                    return self._after_index_race(record, source)
            except SQLAlchemyError as exc:
                self.storage.remove(relative_path)
                log.error("index failure for %s from %s: %s", uid, source, type(exc).__name__)
                return IngestResult(IngestOutcome.FAILED, Status.PROCESSING_FAILURE, uid, "the index is unavailable")
        log.debug("stored %s from %s", uid, source)
        self._notify(record)
        return IngestResult(IngestOutcome.STORED, Status.SUCCESS, uid, "", record.study_instance_uid)

    def _after_index_race(self, record: InstanceRecord, source: str) -> IngestResult:
        existing = self._find_existing(record.sop_instance_uid)
        if existing is None:
            return IngestResult(IngestOutcome.FAILED, Status.PROCESSING_FAILURE, record.sop_instance_uid, "index contention")
        instance = existing[0]
        if instance.sha256 == compute_sha256(self.storage.read(instance.file_path)):
            return IngestResult(IngestOutcome.DUPLICATE, Status.SUCCESS, record.sop_instance_uid, "already stored")
        return IngestResult(IngestOutcome.FAILED, Status.PROCESSING_FAILURE, record.sop_instance_uid, "index contention")

    def _notify(self, record: InstanceRecord) -> None:
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:  # noqa: BLE001 - a failing rule must never undo an acknowledged store
                log.exception("ingest listener %r failed for %s", listener, record.sop_instance_uid)


def _check_expected(dataset: Dataset, expected: ExpectedIdentity) -> None:
    if str(dataset.SOPClassUID) != expected.sop_class_uid:
        raise DicomInputError("AffectedSOPClassUID", expected.sop_instance_uid, "does not match the dataset's SOPClassUID")
    if str(dataset.SOPInstanceUID) != expected.sop_instance_uid:
        raise DicomInputError("AffectedSOPInstanceUID", expected.sop_instance_uid, "does not match the dataset's SOPInstanceUID")


def _clip(model, column: str, value: str) -> str:
    length = getattr(model.__table__.c[column].type, "length", None)
    return value[:length] if length else value


def _write_index_rows(
    session: Session, record: InstanceRecord, relative_path: str, size: int, sha256: str, source: str, *, replace: bool
) -> None:
    now = datetime.now(UTC)
    patient = session.scalars(
        select(Patient).where(
            Patient.patient_id == _clip(Patient, "patient_id", record.patient_id),
            Patient.issuer_of_patient_id == _clip(Patient, "issuer_of_patient_id", record.issuer_of_patient_id),
        )
    ).first()
    if patient is None:
        patient = Patient(
            patient_id=_clip(Patient, "patient_id", record.patient_id),
            issuer_of_patient_id=_clip(Patient, "issuer_of_patient_id", record.issuer_of_patient_id),
            patient_name=_clip(Patient, "patient_name", record.patient_name),
            patient_birth_date=_clip(Patient, "patient_birth_date", record.patient_birth_date),
            patient_sex=_clip(Patient, "patient_sex", record.patient_sex),
        )
        session.add(patient)
        session.flush()
    study = session.scalars(select(Study).where(Study.study_instance_uid == record.study_instance_uid)).first()
    if study is None:
        study = Study(
            patient_pk=patient.id,
            study_instance_uid=record.study_instance_uid,
            study_date=_clip(Study, "study_date", record.study_date),
            study_time=_clip(Study, "study_time", record.study_time),
            accession_number=_clip(Study, "accession_number", record.accession_number),
            study_id=_clip(Study, "study_id", record.study_id),
            study_description=_clip(Study, "study_description", record.study_description),
            referring_physician_name=_clip(Study, "referring_physician_name", record.referring_physician_name),
            created_at=now,
        )
        session.add(study)
        session.flush()
    elif study.patient_pk != patient.id:
        raise _Conflict(
            Status.CONFLICTING_PATIENT,
            f"study {record.study_instance_uid} is already stored under another patient",
        )
    series = session.scalars(select(Series).where(Series.series_instance_uid == record.series_instance_uid)).first()
    if series is None:
        series = Series(
            study_pk=study.id,
            series_instance_uid=record.series_instance_uid,
            modality=_clip(Series, "modality", record.modality),
            series_number=_clip(Series, "series_number", record.series_number),
            series_description=_clip(Series, "series_description", record.series_description),
            series_date=_clip(Series, "series_date", record.series_date),
            series_time=_clip(Series, "series_time", record.series_time),
            body_part_examined=_clip(Series, "body_part_examined", record.body_part_examined),
            frame_of_reference_uid=record.frame_of_reference_uid,
            number_of_instances=0,
        )
        session.add(series)
        session.flush()
    elif series.study_pk != study.id:
        raise _Conflict(
            Status.MOVED_INSTANCE, f"series {record.series_instance_uid} is already stored in another study"
        )
    instance = None
    if replace:
        instance = session.scalars(select(Instance).where(Instance.sop_instance_uid == record.sop_instance_uid)).first()
    if instance is None:
        instance = Instance(series_pk=series.id, sop_instance_uid=record.sop_instance_uid)
        session.add(instance)
        series.number_of_instances = Series.number_of_instances + 1
    else:
        instance.references.clear()
    instance.sop_class_uid = record.sop_class_uid
    instance.instance_number = _clip(Instance, "instance_number", record.instance_number)
    instance.content_date = _clip(Instance, "content_date", record.content_date)
    instance.content_time = _clip(Instance, "content_time", record.content_time)
    instance.rows, instance.columns, instance.number_of_frames = record.rows, record.columns, record.number_of_frames
    instance.frame_of_reference_uid = record.frame_of_reference_uid
    instance.transfer_syntax_uid = record.transfer_syntax_uid
    instance.file_path, instance.file_size, instance.sha256 = relative_path, size, sha256
    instance.received_at, instance.source = now, source[:80]
    for reference in record.references:
        instance.references.append(
            ObjectReference(relation=reference.relation, level=reference.level, referenced_uid=reference.uid)
        )
