"""Writing one instance's rows into the index, in the caller's transaction, with few round trips.

Patient, study and series keys are cached after each commit (rows are never renumbered), so the
usual C-STORE of the next slice of a series costs one insert (an instance already indexed shows
up as an insert that inserts nothing) and an update of its series' instance count.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from oncopacs.archive.extract import InstanceRecord
from oncopacs.index.demographics import merge_generation, resolve_patient_key
from oncopacs.index.models import Instance, ObjectReference, Patient, PatientMerge, Series, Study

CACHE_LIMIT = 20_000
#: How often (seconds) the writer looks for patient merges made by another process (the CLI), which move
#: studies between patients and so invalidate cached patient and study keys.
MERGE_CHECK_INTERVAL_S = 2.0
_MERGE_STATE = select(func.max(PatientMerge.id), func.count(PatientMerge.reverted_at))

# Statements built once: building them per instance cost more than running them.
_SELECT_INSTANCE = select(Instance.id, Instance.series_pk).where(Instance.sop_instance_uid == bindparam("uid"))
_INSERT_INSTANCE = insert(Instance).returning(Instance.id)
_UPDATE_INSTANCE = update(Instance).where(Instance.id == bindparam("pk"))
_COUNT_INSTANCE = (
    update(Series).where(Series.id == bindparam("pk")).values(number_of_instances=Series.number_of_instances + 1)
)
#: The INSERT of a new instance, inserting nothing (and returning no key) if its SOP Instance UID is
#: indexed already: one statement where a lookup and an insert were two, on the back-ends with ON CONFLICT.
_INSERT_NEW_INSTANCE = {
    name: dialect.insert(Instance)
    .on_conflict_do_nothing(index_elements=[Instance.sop_instance_uid])
    .returning(Instance.id)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_DELETE_REFERENCES = delete(ObjectReference).where(ObjectReference.instance_pk == bindparam("pk"))
_INSERT_REFERENCES = insert(ObjectReference)


class IndexConflict(Exception):
    """The instance contradicts what the index holds (another patient, study or series)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class InstanceExists(Exception):
    """An index row for this SOP Instance UID already exists."""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """Where and what the stored file is."""

    relative_path: str
    size_bytes: int
    sha256: str
    source: str


@functools.cache
def _length(model, column: str) -> int | None:  # a SQLAlchemy model
    return getattr(model.__table__.c[column].type, "length", None)


def _clip(model, column: str, value: str) -> str:
    length = _length(model, column)
    return value[:length] if length else value


class IndexWriter:
    """Inserts instances; thread-safe; keeps a cache of parent keys that is only fed after commit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._patients: dict[tuple[str, str], int] = {}
        self._studies: dict[str, tuple[int, int]] = {}  # study UID -> (study pk, patient pk)
        self._series: dict[str, tuple[int, int]] = {}  # series UID -> (series pk, study pk)
        self._generation = merge_generation()  # merges in this process; see _notice_merges
        self._merge_state: tuple | None = None  # merges in the database, checked every MERGE_CHECK_INTERVAL_S
        self._next_merge_check = 0.0
        self._epoch = 0  # advanced whenever the cached patient and study keys are dropped

    def write(self, connection: Connection, record: InstanceRecord, facts: FileFacts, *, replace: bool) -> PendingKeys:
        """Insert (or with ``replace`` update) the rows of one instance; return keys to cache after commit."""
        self._notice_merges(connection)
        pending = PendingKeys(self._epoch)
        uid = record.sop_instance_uid
        insert_new = None if replace else _INSERT_NEW_INSTANCE.get(connection.dialect.name)
        existing = None
        if insert_new is None:
            existing = connection.execute(_SELECT_INSTANCE, {"uid": uid}).first()
            if existing is not None and not replace:
                raise InstanceExists(uid)
        try:
            patient_pk = self._patient_pk(connection, record, pending)
            study_pk = self._study_pk(connection, record, patient_pk, pending)
            series_pk = self._series_pk(connection, record, study_pk, pending)
        except IndexConflict:  # an instance already indexed is reported as such first, as the lookup did
            if insert_new is not None and connection.execute(_SELECT_INSTANCE, {"uid": uid}).first() is not None:
                raise InstanceExists(uid) from None
            raise
        now = datetime.now(UTC)
        values = {
            "sop_class_uid": record.sop_class_uid,
            "instance_number": _clip(Instance, "instance_number", record.instance_number),
            "content_date": _clip(Instance, "content_date", record.content_date),
            "content_time": _clip(Instance, "content_time", record.content_time),
            "rows": record.rows,
            "columns": record.columns,
            "number_of_frames": record.number_of_frames,
            "frame_of_reference_uid": record.frame_of_reference_uid,
            "transfer_syntax_uid": record.transfer_syntax_uid,
            "file_path": facts.relative_path,
            "file_size": facts.size_bytes,
            "sha256": facts.sha256,
            "received_at": now,
            "source": facts.source[:80],
        }
        instance_pk: int | None
        if existing is None:
            row = {"series_pk": series_pk, "sop_instance_uid": uid, **values}
            if insert_new is None:
                instance_pk = connection.execute(_INSERT_INSTANCE, row).scalar_one()
            else:
                instance_pk = connection.execute(insert_new, row).scalar()
                if instance_pk is None:  # the caller's transaction is rolled back, parent rows included
                    raise InstanceExists(uid)
            connection.execute(_COUNT_INSTANCE, {"pk": series_pk})
        else:
            instance_pk = existing.id
            if existing.series_pk != series_pk:
                raise IndexConflict(
                    "moved", f"already stored in another series: SOP Instance {record.sop_instance_uid}"
                )
            connection.execute(_UPDATE_INSTANCE, {"pk": instance_pk, **values})
            connection.execute(_DELETE_REFERENCES, {"pk": instance_pk})
        if record.references:
            connection.execute(
                _INSERT_REFERENCES,
                [
                    {"instance_pk": instance_pk, "relation": r.relation, "level": r.level, "referenced_uid": r.uid}
                    for r in record.references
                ],
            )
        return pending

    def remember(self, pending: PendingKeys) -> None:
        """Cache the keys of rows a committed transaction created or read."""
        with self._lock:
            if pending.epoch != self._epoch:  # read before a merge: the keys may be stale
                return
            if len(self._series) > CACHE_LIMIT:
                self._patients.clear()
                self._studies.clear()
                self._series.clear()
            self._patients.update(pending.patients)
            self._studies.update(pending.studies)
            self._series.update(pending.series)

    def _notice_merges(self, connection: Connection) -> None:
        """Forget cached patient and study keys once patients were merged (or a merge reverted) since."""
        generation, now = merge_generation(), time.monotonic()
        state = self._merge_state
        if now >= self._next_merge_check:
            state = tuple(connection.execute(_MERGE_STATE).one())
            self._next_merge_check = now + MERGE_CHECK_INTERVAL_S
        if generation != self._generation or state != self._merge_state:
            with self._lock:
                self._patients.clear()
                self._studies.clear()
                self._generation, self._merge_state = generation, state
                self._epoch += 1

    def _patient_pk(self, connection: Connection, record: InstanceRecord, pending: PendingKeys) -> int:
        key = (
            _clip(Patient, "patient_id", record.patient_id),
            _clip(Patient, "issuer_of_patient_id", record.issuer_of_patient_id),
        )
        if (pk := self._patients.get(key)) is not None:
            return pk
        filed_under = resolve_patient_key(connection, *key)  # a merged prior ID files under its survivor
        pk = connection.execute(
            select(Patient.id).where(Patient.patient_id == filed_under[0],
                                     Patient.issuer_of_patient_id == filed_under[1])
        ).scalar()
        if pk is None:
            pk = connection.execute(
                insert(Patient)
                .values(
                    patient_id=key[0],
                    issuer_of_patient_id=key[1],
                    patient_name=_clip(Patient, "patient_name", record.patient_name),
                    patient_birth_date=_clip(Patient, "patient_birth_date", record.patient_birth_date),
                    patient_sex=_clip(Patient, "patient_sex", record.patient_sex),
                )
                .returning(Patient.id)
            ).scalar_one()
        pending.patients[key] = pk
        return pk

    def _study_pk(self, connection: Connection, record: InstanceRecord, patient_pk: int, pending: PendingKeys) -> int:
        uid = record.study_instance_uid

        def values() -> dict:
            return {**_clipped(Study, {
                "study_date": record.study_date, "study_time": record.study_time,
                "accession_number": record.accession_number, "study_id": record.study_id,
                "study_description": record.study_description,
                "referring_physician_name": record.referring_physician_name,
            }), "created_at": datetime.now(UTC)}

        keys = _child_keys(connection, self._studies.get(uid), Study, Study.study_instance_uid, uid, Study.patient_pk,
                           patient_pk, values)
        if keys[1] != patient_pk:
            raise IndexConflict("patient", f"study already stored under another patient: {uid}")
        pending.studies[uid] = keys
        return keys[0]

    def _series_pk(self, connection: Connection, record: InstanceRecord, study_pk: int, pending: PendingKeys) -> int:
        uid = record.series_instance_uid

        def values() -> dict:
            return {**_clipped(Series, {
                "modality": record.modality, "series_number": record.series_number,
                "series_description": record.series_description, "series_date": record.series_date,
                "series_time": record.series_time, "body_part_examined": record.body_part_examined,
            }), "frame_of_reference_uid": record.frame_of_reference_uid, "number_of_instances": 0}

        keys = _child_keys(connection, self._series.get(uid), Series, Series.series_instance_uid, uid, Series.study_pk,
                           study_pk, values)
        if keys[1] != study_pk:
            raise IndexConflict("moved", f"series already stored in another study: {uid}")
        pending.series[uid] = keys
        return keys[0]


def _clipped(model, values: dict[str, str]) -> dict[str, str]:
    return {column: _clip(model, column, value) for column, value in values.items()}


def _child_keys(connection: Connection, cached, model, uid_column, uid: str, parent_column, parent_pk: int,
                values: Callable[[], dict]) -> tuple[int, int]:  # SQLAlchemy model and columns
    """``(pk, parent pk)`` of the study or series with this UID; if new, inserted under ``parent_pk``
    with ``values()`` (built only then)."""
    if cached is not None:
        return cached
    row = connection.execute(select(model.id, parent_column).where(uid_column == uid)).first()
    if row is not None:
        return row[0], row[1]
    pk = connection.execute(
        insert(model).values({uid_column.key: uid, parent_column.key: parent_pk, **values()}).returning(model.id)
    ).scalar_one()
    return pk, parent_pk


@dataclass(slots=True)
class PendingKeys:
    """Parent keys seen in a transaction, cached once it commits."""

    patients: dict[tuple[str, str], int]
    studies: dict[str, tuple[int, int]]
    series: dict[str, tuple[int, int]]
    epoch: int  # the writer's cache epoch the keys were read in

    def __init__(self, epoch: int = 0) -> None:
        self.patients, self.studies, self.series = {}, {}, {}
        self.epoch = epoch
