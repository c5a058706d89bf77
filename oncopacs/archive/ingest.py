"""The one ingest path: validate, store durably, index in one transaction, then acknowledge.

DIMSE C-STORE, STOW-RS, ``oncopacs import`` and every derived object go through
:meth:`Archive.ingest`. An instance is reported stored only once its file is fsynced in place
and its index row committed. Re-sending the same instance is a no-op success; the same SOP
Instance UID with other content is kept once and reported (unless overwrite is allowed).
"""

from __future__ import annotations

import enum
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydicom import Dataset, dcmread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.archive.decoding import ValueWarnings, decoding, value_free_traceback
from oncopacs.archive.extract import (
    InstanceRecord,
    build_record,
    parse_dataset,
    read_identity,
    transfer_syntax_of,
    uid_or_none,
    validate,
)
from oncopacs.archive.index_writer import (
    FileFacts,
    IndexConflict,
    IndexWriter,
    InstanceExists,
)
from oncopacs.archive.part10 import build_part10, dataset_offset, encode_dataset
from oncopacs.archive.storage import (
    Damage,
    DamagedFileError,
    StagingArea,
    StagingStream,
    compute_sha256,
    relative_path_for,
)
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.errors import AuditError, DicomInputError, NotFoundError, StorageError
from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import IngestConflict, Instance, Patient, Series, Study

if TYPE_CHECKING:
    from oncopacs.archive.stores import InstanceStore

log = logging.getLogger(__name__)

INDEX_RETRIES = 3
ORPHAN_WAIT_S = 2.0  # how long a file without an index row is given to be indexed by its writer
ORPHAN_WAIT_STEPS = 20
IO_THREADS = 8


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
    reason: str = ""  # names elements and UIDs, never their values: safe to log
    study_instance_uid: str | None = None
    # The reason as told to whoever sent the object, where it says more than ``reason``: a study stored
    # under another patient names both Patient IDs. Patient data: show it to the sender, never log it.
    sender_reason: str = ""
    # The Patient ID a refused (CONFLICT) object declared, for its audit record (patient data: never logged).
    patient_id: str | None = field(default=None, repr=False)

    @property
    def acknowledged(self) -> bool:
        """True when the sender may consider the instance safely archived."""
        return self.outcome in (IngestOutcome.STORED, IngestOutcome.DUPLICATE)

    @property
    def reason_for_sender(self) -> str:
        """:attr:`sender_reason` where there is one, else :attr:`reason` (may name patient data: never log it)."""
        return self.sender_reason or self.reason


@dataclass(frozen=True, slots=True)
class ExpectedIdentity:
    """What the sender declared (a C-STORE request's Affected SOP Class/Instance UIDs)."""

    sop_class_uid: str
    sop_instance_uid: str


IngestListener = Callable[[InstanceRecord], None]
#: An ingest listener that also learns where the instance came from ("dimse:<calling AE>", "stow", "import", ...).
ArrivalListener = Callable[[InstanceRecord, str], object]  # what it returns is ignored


@dataclass(frozen=True, slots=True)
class _RecordOnly:
    """An :data:`IngestListener` heard as an :data:`ArrivalListener` (the source left out)."""

    listener: IngestListener

    def __call__(self, record: InstanceRecord, source: str) -> None:
        self.listener(record)

    def __repr__(self) -> str:
        return repr(self.listener)


class Archive:
    """Storage plus index, and the one way in."""

    def __init__(self, storage: InstanceStore, index: IndexDatabase, *, allow_overwrite: bool = False,
                 accept_empty_patient_id: bool = False, log_phi: bool = False, audit: AuditTrail | None = None):
        self.storage = storage
        self.index = index
        self.allow_overwrite = allow_overwrite
        # Store objects whose Patient ID is present but empty, each recorded in ``audit`` (else they are refused).
        self.accept_empty_patient_id = accept_empty_patient_id
        self.log_phi = log_phi  # debugging only: refusal logs may quote element values (patient data)
        # Where accepted empty Patient IDs are recorded; the composition root puts the platform's trail here.
        self.audit = audit if audit is not None else AuditTrail(index)
        self._writer = IndexWriter()
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="oncopacs-io")
        self._listeners: list[ArrivalListener] = []
        self._listeners_lock = threading.Lock()

    def close(self) -> None:
        """Finish pending I/O and release database connections."""
        self._io.shutdown(wait=True)
        self.index.dispose()

    def subscribe(self, listener: IngestListener) -> None:
        """Call ``listener(record)`` after each newly stored instance (rules, forwarding, jobs)."""
        with self._listeners_lock:
            self._listeners.append(_RecordOnly(listener))

    def subscribe_arrivals(self, listener: ArrivalListener) -> None:
        """Call ``listener(record, source)`` after each newly stored instance (the hospital's rules)."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def read_dataset(self, file_path: str, sha256: str, **dcmread_options: Any) -> Dataset:
        """A stored instance as a dataset, its bytes checked against ``sha256`` (IntegrityError when altered)."""
        return dcmread(io.BytesIO(self.storage.read(file_path, sha256)), **dcmread_options)

    # -- entry points -------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        """Whether the archive holds the instance (the index alone: no file is read)."""
        with self.index.reading() as session:
            return session.execute(select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
                                   .limit(1)).first() is not None

    def read_instance(self, sop_instance_uid: str) -> Dataset:
        """One stored instance, checked against its SHA-256 (NotFoundError when the archive lacks it)."""
        with self.index.reading() as session:
            row = session.execute(select(Instance.file_path, Instance.sha256)
                                  .where(Instance.sop_instance_uid == sop_instance_uid)).first()
        if row is None:
            raise NotFoundError(f"instance {sop_instance_uid} is not in the archive")
        return self.read_dataset(row.file_path, row.sha256)

    def read_series(self, series_instance_uid: str) -> list[Dataset]:
        """Every stored instance of a series, in arrival order, each checked against its SHA-256.

        NotFoundError when the archive holds no instance of the series.
        """
        with self.index.reading() as session:
            files = session.execute(select(Instance.file_path, Instance.sha256).join(Instance.series)
                                    .where(Series.series_instance_uid == series_instance_uid)
                                    .order_by(Instance.id)).all()
        if not files:
            raise NotFoundError(f"series {series_instance_uid} is not in the archive")
        return [self.read_dataset(path, sha) for path, sha in files]

    def ingest_dimse(
        self, dataset_bytes: bytes, *, transfer_syntax_uid: str, expected: ExpectedIdentity, calling_ae: str,
        received: ReceivedFile | None = None,
    ) -> IngestResult:
        """A C-STORE request's dataset, exactly as received on the wire.

        ``received`` is the same file already staged while it arrived (its File Meta header
        and the stream the dataset was copied to); it is used when it holds exactly these bytes.
        """
        if received is not None:
            part10 = b"".join((received.header, dataset_bytes))
            if received.stream.size != len(part10):  # pragma: no cover - a copy that missed a piece
                received.stream.abandon()
                received = None
        if received is None:
            part10 = build_part10(
                dataset_bytes,
                sop_class_uid=expected.sop_class_uid,
                sop_instance_uid=expected.sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                source_ae_title=calling_ae,
            )
        return self.ingest(part10, source=f"dimse:{calling_ae}", expected=expected,
                           staged=received.stream if received is not None else None)

    def ingest_dataset(self, dataset: Dataset, *, source: str) -> IngestResult:
        """A dataset built in memory (derived objects, phantoms)."""
        return self.ingest(encode_dataset(dataset), source=source)

    def ingest(self, data: bytes, *, source: str, expected: ExpectedIdentity | None = None,
               staged: StagingStream | None = None, wait_for_writer: bool = True) -> IngestResult:
        """Validate, store and index one object given as a Part 10 file (or a bare dataset).

        ``staged`` is a stream that already holds ``data`` (written as it arrived); it is
        made durable instead of writing ``data`` again. Without ``wait_for_writer`` a stored file that has no
        index row is taken at once rather than given :data:`ORPHAN_WAIT_S` to be indexed by another writer
        (crash recovery, which gave it its own grace already).
        """
        is_part10 = dataset_offset(data) > 0
        if staged is not None and not is_part10:  # pragma: no cover - callers stage Part 10 files only
            staged.abandon()
            staged = None
        # Hashing, writing and fsyncing release the GIL: do them while the header is parsed.
        staging = self._start_staging(data, staged) if is_part10 else None
        reports = ValueWarnings(keep_messages=self.log_phi)
        try:
            with decoding(reports):
                dataset = parse_dataset(data)
                validate(dataset, accept_empty_patient_id=self.accept_empty_patient_id)
                if expected is not None:
                    _check_expected(dataset, expected)
                syntax = transfer_syntax_of(dataset)
                record = build_record(dataset, syntax)
        except Exception as exc:  # noqa: BLE001 - DicomInputError, or a reader bug: either way a refusal, not a crash
            if staging is not None:
                staging.discard(self.storage)
            return self._refuse(exc, source, reports)
        if reports.total:
            log.info("%s from %s: %s", record.sop_instance_uid, source, reports.summary())
        if staging is None:  # a bare dataset: give it the File Meta a Part 10 file needs
            data = build_part10(
                data, sop_class_uid=record.sop_class_uid, sop_instance_uid=record.sop_instance_uid,
                transfer_syntax_uid=syntax,
            )
            staging = self._start_staging(data)
        result = self._store(data, record, source, staging, wait_for_writer)
        if not record.patient_id and result.outcome is IngestOutcome.STORED:  # validate() let it through
            self._audit_empty_patient_id(record, source)
        return result

    def _audit_empty_patient_id(self, record: InstanceRecord, source: str) -> None:
        """One audit record per object stored with an empty Patient ID (no patient data: there is none)."""
        actor, kind = _actor_of(source)
        event = AuditEvent(
            action=AuditAction.STORE, outcome=Outcome.SUCCESS, actor=actor, actor_kind=kind,
            source=socket.gethostname() if kind is ActorKind.SYSTEM else "",
            study_uids=(record.study_instance_uid,),
            detail=f"stored with an empty Patient ID (0010,0020), accepted by ONCOPACS_ACCEPT_EMPTY_PATIENT_ID: "
                   f"SOP Instance {record.sop_instance_uid} from {source}",
        )
        try:
            self.audit.record(event)
        except AuditError as exc:  # the object is durable and acknowledged: say loudly that its record is missing
            log.error("stored %s with an empty Patient ID but could not audit it: %s", record.sop_instance_uid, exc)

    def _refuse(self, exc: Exception, source: str, reports: ValueWarnings) -> IngestResult:
        """The REJECTED result of an object that could not be read, logged by element and problem, without values.

        An error other than :class:`DicomInputError` is a bug in reading: still a refusal (the sender gets
        an answer), logged at ERROR with where it happened but not its message, which may quote values.
        """
        summary = f"; {reports.summary()}" if reports.total else ""
        if not isinstance(exc, DicomInputError):
            trace = "" if self.log_phi else "\n" + value_free_traceback(exc)
            log.error("rejected object from %s: unexpected %s reading it%s%s", source, type(exc).__name__, summary,
                      trace, exc_info=exc if self.log_phi else None)
            reason = f"Dataset cannot be read (unexpected {type(exc).__name__})"
            return IngestResult(IngestOutcome.REJECTED, Status.CANNOT_UNDERSTAND, None, reason)
        status = (
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
            if exc.keyword.startswith(("Media", "Affected"))
            else Status.CANNOT_UNDERSTAND
        )
        log.warning("rejected object from %s: %s%s", source, exc, summary)
        return IngestResult(IngestOutcome.REJECTED, status, exc.sop_instance_uid, str(exc))

    def _start_staging(self, data: bytes, staged: StagingStream | None = None) -> _Staging:
        if staged is None:
            return _Staging(self._io.submit(compute_sha256, data), self._io.submit(self.storage.stage, data))
        digest: Future = Future()  # hashed while it was written
        digest.set_result(staged.sha256())
        return _Staging(digest, self._io.submit(staged.finish))

    # -- the steps ----------------------------------------------------------------------------

    def _store(self, data: bytes, record: InstanceRecord, source: str, staging: _Staging,
               wait_for_writer: bool = True) -> IngestResult:
        """Place the file once it is durable while the index rows are written, then commit.

        The commit comes after the file is durably in place, so an index row never points at
        nothing; a file is never placed over another one, so a resent or conflicting instance
        shows up as a file already there and is sorted out by :meth:`_resolve_existing`. A file
        placed for rows that then fail to be written is taken back out.
        """
        uid = record.sop_instance_uid
        relative_path = relative_path_for(record.study_instance_uid, record.series_instance_uid, uid)
        try:
            facts = FileFacts(relative_path, len(data), staging.digest.result(), source)
        except StorageError as exc:  # pragma: no cover - hashing does not fail
            return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, uid, str(exc))
        for attempt in range(1, INDEX_RETRIES + 1):
            placement = self._place_when_staged(staging, relative_path)
            try:
                with self.index.write_connection() as connection:
                    pending = self._writer.write(connection, record, facts, replace=False)
                    if not placement.result():
                        raise _AlreadyPlaced
                self._writer.remember(pending)
                log.debug("stored %s from %s", uid, source)
                self._notify(record, source)
                return IngestResult(IngestOutcome.STORED, Status.SUCCESS, uid, "", record.study_instance_uid)
            except (InstanceExists, _AlreadyPlaced):
                self._take_back(placement, relative_path)
                staging.discard(self.storage)
                try:
                    return self._resolve_existing(data, record, facts, wait_for_writer)
                except StorageError as exc:  # an object store that stopped answering
                    log.error("storage failure for %s from %s: %s", uid, source, exc)
                    return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, uid, str(exc))
            except IndexConflict as exc:
                self._take_back(placement, relative_path)
                staging.discard(self.storage)
                return self._refuse_conflict(exc, record, source)
            except StorageError as exc:
                log.error("storage failure for %s from %s: %s", uid, source, exc)
                return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, uid, str(exc))
            except SQLAlchemyError as exc:
                if self._take_back(placement, relative_path):  # the rows failed after the file went in
                    staging = self._start_staging(data)
                if isinstance(exc, SqlIntegrityError) and attempt < INDEX_RETRIES:
                    continue  # a racing writer created the same patient, study or series
                staging.discard(self.storage)
                log.error("index failure for %s from %s: %s", uid, source, type(exc).__name__)
                return IngestResult(IngestOutcome.FAILED, Status.PROCESSING_FAILURE, uid, "the index is unavailable")
        raise AssertionError("unreachable")  # pragma: no cover

    def _place_when_staged(self, staging: _Staging, relative_path: str) -> Future:
        """A future of :meth:`Storage.place` of the staged file, run as soon as the file is durable.

        It runs in the I/O thread that finishes the staged file (a callback, never a task that
        waits for another in the same pool), while the caller writes the index rows.
        """
        placement: Future = Future()

        def place(staged: Future) -> None:
            try:
                placement.set_result(self.storage.place(staged.result(), relative_path))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                placement.set_exception(exc)

        staging.staged.add_done_callback(place)
        return placement

    def _take_back(self, placement: Future, relative_path: str) -> bool:
        """Wait for ``placement``; remove the file if it was placed (its rows were not written). True if removed."""
        try:
            placed = placement.result()
        except StorageError:
            return False
        if placed and self._indexed(relative_path):  # another writer's row names it: never remove what it points at
            log.warning("not taking back %s: an index row names it", relative_path)
            return False
        if placed:
            try:
                self.storage.remove(relative_path)
            except StorageError as exc:  # an object store gone: left unindexed, for verify and crash recovery
                log.error("cannot take back %s after its rows failed: %s", relative_path, exc)
        return placed

    def _indexed(self, relative_path: str) -> bool:
        """Whether an index row points at ``relative_path`` (True when the index cannot say: keep the file)."""
        try:
            with self.index.reading() as session:
                return session.scalar(select(Instance.id).where(Instance.file_path == relative_path)) is not None
        except SQLAlchemyError:
            return True

    def _resolve_existing(self, data: bytes, record: InstanceRecord, facts: FileFacts,
                          wait_for_writer: bool = True) -> IngestResult:
        uid = record.sop_instance_uid
        existing = self._find_existing(uid)
        for _ in range(ORPHAN_WAIT_STEPS if wait_for_writer else 0):  # a file without a row: a writer's, in flight?
            if existing is not None or not self.storage.exists(facts.relative_path):
                break
            time.sleep(ORPHAN_WAIT_S / ORPHAN_WAIT_STEPS)
            existing = self._find_existing(uid)
        if existing is None:  # left by a crash and never acknowledged, or removed: store ours
            return self._replace(data, record, facts)
        instance, series_uid, study_uid = existing
        if (series_uid, study_uid) != (record.series_instance_uid, record.study_instance_uid):
            reason = (
                f"already stored in another study or series: SOP Instance {uid} "
                f"is in study {study_uid} series {series_uid}"
            )
            self._record_conflict(instance, facts, reason)
            return IngestResult(IngestOutcome.CONFLICT, Status.MOVED_INSTANCE, uid, reason, record.study_instance_uid,
                                patient_id=record.patient_id)
        try:
            stored = self.storage.read(instance.file_path)
        except DamagedFileError as exc:
            if exc.damage is Damage.UNREADABLE:  # an I/O error or a store that did not answer: the first copy stays
                log.error("stored file of %s could not be read to compare: %s", uid, exc.damage.description)
                return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, uid,
                                    "the stored copy could not be read; try again")
            log.error("stored file of %s is %s; replacing it with the received copy", uid, exc.damage.description)
            return self._replace(data, record, facts)
        if stored[dataset_offset(stored) :] == data[dataset_offset(data) :]:
            return IngestResult(
                IngestOutcome.DUPLICATE, Status.SUCCESS, uid, "already stored", record.study_instance_uid
            )
        if self.allow_overwrite:
            log.warning("replacing %s with new content from %s (overwrite allowed)", uid, facts.source)
            return self._replace(data, record, facts)
        reason = f"already stored with different content (first copy kept): SOP Instance {uid}"
        self._record_conflict(instance, facts, reason)
        return IngestResult(
            IngestOutcome.CONFLICT, Status.DUPLICATE_SOP_INSTANCE, uid, reason, record.study_instance_uid,
            patient_id=record.patient_id,
        )

    def _replace(self, data: bytes, record: InstanceRecord, facts: FileFacts) -> IngestResult:
        try:
            self.storage.place(self.storage.stage(data), facts.relative_path, replace=True)
        except StorageError as exc:
            return IngestResult(IngestOutcome.FAILED, Status.OUT_OF_RESOURCES, record.sop_instance_uid, str(exc))
        result = self._index(record, facts, replace=True)
        return result or IngestResult(
            IngestOutcome.FAILED, Status.PROCESSING_FAILURE, record.sop_instance_uid, "index contention"
        )

    def _refuse_conflict(self, exc: IndexConflict, record: InstanceRecord, source: str) -> IngestResult:
        """The CONFLICT result of an instance whose study or series the index holds elsewhere.

        The log names UIDs only; a study under another patient also tells the sender both Patient IDs.
        """
        uid = record.sop_instance_uid
        log.warning("refused %s from %s: %s", uid, source, exc.reason)
        if exc.kind != "patient":
            return IngestResult(IngestOutcome.CONFLICT, Status.MOVED_INSTANCE, uid, exc.reason,
                                record.study_instance_uid, patient_id=record.patient_id)
        stored = self._patient_of_study(record.study_instance_uid)
        received = _describe_patient(record.patient_id, record.issuer_of_patient_id)
        sender_reason = (
            f"this object has Patient ID {received}, its study is stored under {stored} ({exc.reason})"
            if stored is not None else ""
        )
        return IngestResult(IngestOutcome.CONFLICT, Status.CONFLICTING_PATIENT, uid, exc.reason,
                            record.study_instance_uid, sender_reason, patient_id=record.patient_id)

    def _patient_of_study(self, study_uid: str) -> str | None:
        """The Patient ID (and issuer) a stored study is filed under, as :func:`_describe_patient` gives it."""
        try:
            with self.index.reading() as session:
                row = session.execute(select(Patient.patient_id, Patient.issuer_of_patient_id)
                                      .join(Study, Study.patient_pk == Patient.id)
                                      .where(Study.study_instance_uid == study_uid)).first()
        except SQLAlchemyError:  # the refusal stands; it only says less
            return None
        return _describe_patient(row.patient_id, row.issuer_of_patient_id) if row is not None else None

    def _find_existing(self, sop_uid: str):
        """``(instance, series UID, study UID)`` of a stored SOP Instance UID, or None."""
        with self.index.reading() as session:
            return session.execute(
                select(Instance, Series.series_instance_uid, Study.study_instance_uid)
                .join(Instance.series)
                .join(Series.study)
                .where(Instance.sop_instance_uid == sop_uid)
            ).first()

    def _record_conflict(self, instance: Instance, facts: FileFacts, reason: str) -> None:
        log.warning("conflict from %s: %s", facts.source, reason)
        with self.index.writing() as session:
            session.add(
                IngestConflict(
                    sop_instance_uid=instance.sop_instance_uid,
                    stored_sha256=instance.sha256,
                    received_sha256=facts.sha256,
                    reason=reason,
                    source=facts.source[:80],
                    received_at=datetime.now(UTC),
                )
            )

    def _index(self, record: InstanceRecord, facts: FileFacts, *, replace: bool) -> IngestResult | None:
        """Index a placed file. None when the SOP Instance UID turns out to be indexed already."""
        uid = record.sop_instance_uid
        for attempt in range(1, INDEX_RETRIES + 1):
            try:
                with self.index.write_connection() as connection:
                    pending = self._writer.write(connection, record, facts, replace=replace)
                self._writer.remember(pending)
                break
            except InstanceExists:
                return None
            except IndexConflict as exc:
                return self._refuse_conflict(exc, record, facts.source)
            except SqlIntegrityError:
                if attempt == INDEX_RETRIES:  # racing writers keep creating the same parent rows
                    return None
            except SQLAlchemyError as exc:
                log.error("index failure for %s from %s: %s", uid, facts.source, type(exc).__name__)
                return IngestResult(IngestOutcome.FAILED, Status.PROCESSING_FAILURE, uid, "the index is unavailable")
        log.debug("stored %s from %s", uid, facts.source)
        self._notify(record, facts.source)
        return IngestResult(IngestOutcome.STORED, Status.SUCCESS, uid, "", record.study_instance_uid)

    def _notify(self, record: InstanceRecord, source: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(record, source)
            except Exception as exc:  # a failing rule must never undo an acknowledged store
                trace = "" if self.log_phi else "\n" + value_free_traceback(exc)  # SQL errors quote parameters
                log.error("ingest listener %r failed for %s%s", listener, record.sop_instance_uid, trace,
                          exc_info=exc if self.log_phi else None)


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A received instance staged while it arrived: its File Meta header (preamble included) and the stream."""

    header: bytes
    stream: StagingStream


class _AlreadyPlaced(Exception):
    """A file is already at the instance's path."""


@dataclass(frozen=True, slots=True)
class _Staging:
    """The received bytes being hashed and written to the incoming area, in the I/O pool."""

    digest: Future
    staged: Future

    def discard(self, storage: StagingArea) -> None:
        """Delete the staged file once written (unless it was placed or failed)."""

        def _remove(future: Future) -> None:
            if future.exception() is None:
                storage.discard(future.result())

        self.staged.add_done_callback(_remove)


def _describe_patient(patient_id: str, issuer: str) -> str:
    """``'PAT-1'`` or ``'PAT-1' (issuer 'HOSP')``: a Patient ID as a refusal names it (patient data)."""
    return f"{patient_id!r} (issuer {issuer!r})" if issuer else repr(patient_id)


def _actor_of(source: str) -> tuple[str, ActorKind]:
    """Who sent an object, from its ingest ``source``: a calling AE, a STOW-RS user, or OncoPACS itself."""
    if source.startswith("dimse:"):
        return source.removeprefix("dimse:"), ActorKind.AE
    if source.startswith("STOW-RS "):
        return source.removeprefix("STOW-RS "), ActorKind.USER
    return source, ActorKind.SYSTEM


def _check_expected(dataset: Dataset, expected: ExpectedIdentity) -> None:
    sop_class_uid, sop_instance_uid = read_identity(dataset)
    if sop_class_uid != expected.sop_class_uid:
        raise DicomInputError(
            "AffectedSOPClassUID",
            "does not match the dataset's SOPClassUID",
            sop_instance_uid=uid_or_none(expected.sop_instance_uid),
        )
    if sop_instance_uid != expected.sop_instance_uid:
        raise DicomInputError(
            "AffectedSOPInstanceUID",
            "does not match the dataset's SOPInstanceUID",
            sop_instance_uid=uid_or_none(expected.sop_instance_uid),
        )
