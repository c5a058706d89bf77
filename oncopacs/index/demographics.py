"""Patient demographics kept current by the EHR: updates (ADT A08/A31), merges (A40) and their undo, and the
coercion of outgoing instances to the index's current values (stored files are never rewritten).

The ``patients`` row holds the current demographics (ingest never overwrites an existing row). A merge moves
the prior patient's studies to the surviving patient and keeps the prior row, empty, so an instance that
arrives later with the prior Patient ID is filed under the surviving patient (:func:`resolve_patient_key`).
Every merge and revert in this process advances :func:`merge_generation`, which tells the index writer to
drop its cached patient and study keys.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import Patient, PatientMerge, PatientUpdate, Study

#: HL7's explicit "delete this value" (an empty field means "leave as it is").
HL7_NULL = '""'
MAX_MERGE_CHAIN = 16

_generation_lock = threading.Lock()
_generation = itertools.count(1)
_current_generation = 0


def merge_generation() -> int:
    """A number that changes whenever this process merges patients or reverts a merge."""
    return _current_generation


def _advance_generation() -> None:
    global _current_generation
    with _generation_lock:
        _current_generation = next(_generation)


class DemographicsError(Exception):
    """An update, merge or revert the index cannot apply; the text names why (no patient data)."""


class MergeNotFound(DemographicsError):
    """No patient merge has that id."""


@dataclass(frozen=True, slots=True)
class Demographics:
    """A patient's identity and demographics in DICOM formats (PN ``Family^Given``, DA YYYYMMDD, CS sex)."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str

    def as_json(self) -> str:
        return json.dumps({"patient_id": self.patient_id, "issuer": self.issuer, "name": self.name,
                           "birth_date": self.birth_date, "sex": self.sex})

    @classmethod
    def of(cls, patient: Patient) -> Demographics:
        return cls(patient.patient_id, patient.issuer_of_patient_id, patient.patient_name,
                   patient.patient_birth_date, patient.patient_sex)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What an update did: ``changed`` names the attributes that changed; ``created`` when the row is new."""

    patient_pk: int
    created: bool
    changed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge did: the record's id (None when the pair was merged already) and the studies moved."""

    merge_id: int | None
    moved_study_uids: tuple[str, ...]
    already_merged: bool = False


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """One merge as listed to an administrator."""

    id: int
    surviving_patient_id: str
    surviving_issuer: str
    prior_patient_id: str
    prior_issuer: str
    moved_study_uids: tuple[str, ...]
    merged_at: datetime
    reverted_at: datetime | None
    reverted_by: str


@dataclass(frozen=True, slots=True)
class CurrentPatient:
    """The current demographics of a patient and the identities merged into it (for OtherPatientIDsSequence)."""

    demographics: Demographics
    prior_ids: tuple[tuple[str, str], ...] = ()


# -- updates ------------------------------------------------------------------------------------


def update_patient(index: IndexDatabase, values: Demographics, message_pk: int | None = None) -> UpdateResult:
    """Set a patient's name, birth date and sex (an empty value leaves the attribute as it is, ``""`` clears it).

    A patient the index does not hold is created with these demographics, as dcm4chee does: the studies that
    arrive later for it are then indexed under the EHR's demographics (ingest never overwrites a patient row).
    Every change is recorded (``patient_updates``) with the values before and after.
    """
    if not values.patient_id:
        raise DemographicsError("the update names no patient identifier")
    with index.writing() as session:
        patient = find_patient(session, values.patient_id, values.issuer)
        created = patient is None
        if patient is None:
            patient = Patient(patient_id=values.patient_id, issuer_of_patient_id=values.issuer, patient_name="",
                              patient_birth_date="", patient_sex="")
            session.add(patient)
            session.flush()
        before = Demographics.of(patient)
        after = replace(before, name=_updated(before.name, values.name),
                        birth_date=_updated(before.birth_date, values.birth_date),
                        sex=_updated(before.sex, values.sex))
        changed = tuple(f for f, old, new in (("name", before.name, after.name),
                                              ("birth_date", before.birth_date, after.birth_date),
                                              ("sex", before.sex, after.sex)) if old != new)
        if changed or created:
            patient.patient_name, patient.patient_birth_date, patient.patient_sex = (
                after.name, after.birth_date, after.sex)
            session.add(PatientUpdate(patient_pk=patient.id, before_json="{}" if created else before.as_json(),
                                      after_json=after.as_json(), message_pk=message_pk,
                                      updated_at=datetime.now(UTC)))
        return UpdateResult(patient.id, created, changed)


def _updated(old: str, new: str) -> str:
    if new == HL7_NULL:
        return ""
    return new if new else old


def find_patient(session: Session, patient_id: str, issuer: str) -> Patient | None:
    """The patient row with this ID and issuer; else the only row with this ID when the archive holds it without
    that issuer (an HL7 assigning authority that the modality did not send as IssuerOfPatientID)."""
    exact = session.scalars(select(Patient).where(Patient.patient_id == patient_id,
                                                  Patient.issuer_of_patient_id == issuer)).first()
    if exact is not None or not issuer:
        return exact
    rows = session.scalars(select(Patient).where(Patient.patient_id == patient_id).limit(2)).all()
    return rows[0] if len(rows) == 1 and rows[0].issuer_of_patient_id == "" else None


# -- merges -------------------------------------------------------------------------------------


def merge_patients(index: IndexDatabase, surviving: Demographics, prior: Demographics,
                   message_pk: int | None = None) -> MergeResult:
    """Move every study of ``prior`` to ``surviving`` and record the merge (reversible by :func:`revert_merge`).

    Either patient is created when absent (a prior ID unknown here still resolves to the surviving patient when
    its instances arrive later). The prior row stays, empty of studies. A pair merged already is a no-op;
    DemographicsError when the two are one patient, the prior patient was merged into another one, or the
    surviving patient was itself merged away.
    """
    with index.writing() as session:
        survivor = find_patient(session, surviving.patient_id, surviving.issuer) or _new_patient(session, surviving)
        old = find_patient(session, prior.patient_id, prior.issuer) or _new_patient(session, prior)
        if survivor.id == old.id:
            raise DemographicsError("the surviving and the prior patient are the same patient")
        if _active_merge_of(session, survivor) is not None:
            raise DemographicsError("the surviving patient was itself merged into another patient")
        earlier = _active_merge_of(session, old)
        if earlier is not None:
            if (earlier.surviving_patient_id, earlier.surviving_issuer) == (survivor.patient_id,
                                                                            survivor.issuer_of_patient_id):
                return MergeResult(None, (), already_merged=True)
            raise DemographicsError("the prior patient was merged into another patient already")
        studies = session.scalars(select(Study).where(Study.patient_pk == old.id).order_by(Study.id)).all()
        moved = tuple(study.study_instance_uid for study in studies)
        for study in studies:
            study.patient_pk = survivor.id
        record = PatientMerge(
            surviving_patient_id=survivor.patient_id, surviving_issuer=survivor.issuer_of_patient_id,
            prior_patient_id=old.patient_id, prior_issuer=old.issuer_of_patient_id,
            prior_json=Demographics.of(old).as_json(), moved_study_uids="\\".join(moved), message_pk=message_pk,
            merged_at=datetime.now(UTC),
        )
        session.add(record)
        session.flush()
        merge_id = record.id
    _advance_generation()
    return MergeResult(merge_id, moved)


def revert_merge(index: IndexDatabase, merge_id: int, actor: str) -> MergeRecord:
    """Move the studies a merge moved back to the prior patient and mark the merge reverted.

    DemographicsError when there is no such merge, it was reverted already, or one of its studies is no longer
    under the surviving patient (moved or deleted since), so that nothing is half undone.
    """
    with index.writing() as session:
        merge = session.get(PatientMerge, merge_id)
        if merge is None:
            raise MergeNotFound(f"there is no patient merge {merge_id}")
        if merge.reverted_at is not None:
            raise DemographicsError(f"patient merge {merge_id} was reverted already")
        survivor = _patient(session, merge.surviving_patient_id, merge.surviving_issuer)
        old = _patient(session, merge.prior_patient_id, merge.prior_issuer)
        if survivor is None or old is None:
            raise DemographicsError(f"a patient of merge {merge_id} is no longer in the archive")
        uids = _split(merge.moved_study_uids)
        studies = session.scalars(select(Study).where(Study.study_instance_uid.in_(uids))).all() if uids else []
        if len(studies) != len(uids) or any(study.patient_pk != survivor.id for study in studies):
            raise DemographicsError(f"studies of patient merge {merge_id} moved or were deleted since; "
                                    "it cannot be reverted")
        if uids:
            session.execute(update(Study).where(Study.study_instance_uid.in_(uids)).values(patient_pk=old.id))
        merge.reverted_at, merge.reverted_by = datetime.now(UTC), actor[:128]
        session.flush()
        record = _record(merge)
    _advance_generation()
    return record


def list_merges(index: IndexDatabase, *, limit: int = 100, offset: int = 0) -> list[MergeRecord]:
    """The merges, newest first."""
    with index.reading() as session:
        rows = session.scalars(select(PatientMerge).order_by(PatientMerge.id.desc()).limit(limit).offset(offset))
        return [_record(row) for row in rows]


def resolve_patient_key(connection: Connection, patient_id: str, issuer: str) -> tuple[str, str]:
    """The identity a Patient ID (and issuer) files under now: the surviving patient's, following merges that
    were not reverted; the identity itself when it was never merged away."""
    key = (patient_id, issuer)
    for hop in range(MAX_MERGE_CHAIN):
        active = (PatientMerge.prior_patient_id == key[0], PatientMerge.reverted_at.is_(None))
        statement = select(PatientMerge.surviving_patient_id, PatientMerge.surviving_issuer).where(*active)
        row = connection.execute(statement.where(PatientMerge.prior_issuer == key[1])
                                 .order_by(PatientMerge.id.desc()).limit(1)).first()
        if row is None and hop == 0 and not key[1] and not _has_patient(connection, key):
            # an instance without IssuerOfPatientID, merged by an A40 whose MRG-1 named an assigning authority
            rows = connection.execute(statement.limit(2)).all()
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            return key
        key = (row[0], row[1])
    return key


def _has_patient(connection: Connection, key: tuple[str, str]) -> bool:
    return connection.execute(select(Patient.id).where(Patient.patient_id == key[0],
                                                       Patient.issuer_of_patient_id == key[1])).first() is not None


def _active_merge_of(session: Session, patient: Patient) -> PatientMerge | None:
    return session.scalars(
        select(PatientMerge).where(PatientMerge.prior_patient_id == patient.patient_id,
                                   PatientMerge.prior_issuer == patient.issuer_of_patient_id,
                                   PatientMerge.reverted_at.is_(None)).order_by(PatientMerge.id.desc())
    ).first()


def _patient(session: Session, patient_id: str, issuer: str) -> Patient | None:
    return session.scalars(select(Patient).where(Patient.patient_id == patient_id,
                                                 Patient.issuer_of_patient_id == issuer)).first()


def _new_patient(session: Session, values: Demographics) -> Patient:
    patient = Patient(patient_id=values.patient_id, issuer_of_patient_id=values.issuer,
                      patient_name=_updated("", values.name), patient_birth_date=_updated("", values.birth_date),
                      patient_sex=_updated("", values.sex))
    session.add(patient)
    session.flush()
    return patient


def _split(uids: str) -> list[str]:
    return [uid for uid in uids.split("\\") if uid]


def _record(merge: PatientMerge) -> MergeRecord:
    return MergeRecord(merge.id, merge.surviving_patient_id, merge.surviving_issuer, merge.prior_patient_id,
                       merge.prior_issuer, tuple(_split(merge.moved_study_uids)), merge.merged_at,
                       merge.reverted_at, merge.reverted_by)


# -- outgoing instances -------------------------------------------------------------------------


def current_demographics(session: Session, study_uids: Iterable[str]) -> dict[str, CurrentPatient]:
    """Study Instance UID -> its patient's current demographics, for the studies whose patient the EHR changed
    (updated, or the survivor of a merge); a study absent from the answer goes out exactly as stored."""
    uids = sorted(set(study_uids))
    if not uids:
        return {}
    rows = session.execute(
        select(Study.study_instance_uid, Patient).join(Patient, Study.patient_pk == Patient.id)
        .where(Study.study_instance_uid.in_(uids))
    ).all()
    patient_pks = {patient.id for _, patient in rows}
    updated = set(session.scalars(select(PatientUpdate.patient_pk).where(PatientUpdate.patient_pk.in_(patient_pks))
                                  .distinct())) if patient_pks else set()
    merged: dict[tuple[str, str], list[tuple[str, str]]] = {}
    identities = {(p.patient_id, p.issuer_of_patient_id) for _, p in rows}
    if identities:
        for merge in session.execute(
            select(PatientMerge.surviving_patient_id, PatientMerge.surviving_issuer, PatientMerge.prior_patient_id,
                   PatientMerge.prior_issuer)
            .where(PatientMerge.surviving_patient_id.in_({i[0] for i in identities}),
                   PatientMerge.reverted_at.is_(None))
        ):
            merged.setdefault((merge[0], merge[1]), []).append((merge[2], merge[3]))
    answer = {}
    for uid, patient in rows:
        identity = (patient.patient_id, patient.issuer_of_patient_id)
        if patient.id in updated or identity in merged:
            answer[uid] = CurrentPatient(Demographics.of(patient), tuple(merged.get(identity, ())))
    return answer


def needs_coercion(dataset: Dataset, current: CurrentPatient) -> bool:
    """True when the dataset's patient attributes differ from the current demographics."""
    values = current.demographics
    return any(str(dataset.get(keyword, "") or "") != value for keyword, value in _attributes(values))


def coerce(dataset: Dataset, current: CurrentPatient) -> Dataset:
    """A copy of ``dataset`` carrying the current PatientName, PatientID, IssuerOfPatientID, PatientBirthDate and
    PatientSex (each set only where it differs); a Patient ID it replaces goes into OtherPatientIDsSequence,
    as dcm4chee does after a merge. The dataset itself is left as it is."""
    coerced = copy.deepcopy(dataset)
    stored_id = str(dataset.get("PatientID", "") or "")
    stored_issuer = str(dataset.get("IssuerOfPatientID", "") or "")
    for keyword, value in _attributes(current.demographics):
        if str(dataset.get(keyword, "") or "") != value and (value or keyword in dataset):
            setattr(coerced, keyword, value)
    if stored_id and (stored_id, stored_issuer) != (current.demographics.patient_id, current.demographics.issuer):
        others = coerced.get("OtherPatientIDsSequence") or Sequence()
        if not any(str(item.get("PatientID", "")) == stored_id for item in others):
            item = Dataset()
            item.PatientID = stored_id
            item.IssuerOfPatientID = stored_issuer
            item.TypeOfPatientID = "TEXT"
            others.append(item)
        coerced.OtherPatientIDsSequence = others
    return coerced


def coerce_part10(data: bytes, current: CurrentPatient) -> bytes:
    """A stored Part 10 file with the current demographics (re-encoded in its own transfer syntax), or the very
    same bytes when its patient attributes are current already."""
    if not needs_coercion(dcmread(io.BytesIO(data), stop_before_pixels=True), current):
        return data
    coerced = coerce(dcmread(io.BytesIO(data)), current)
    meta = coerced.file_meta  # files received with a sparse header still leave as valid Part 10
    meta.MediaStorageSOPClassUID = meta.get("MediaStorageSOPClassUID") or coerced.get("SOPClassUID")
    meta.MediaStorageSOPInstanceUID = meta.get("MediaStorageSOPInstanceUID") or coerced.get("SOPInstanceUID")
    buffer = io.BytesIO()
    dcmwrite(buffer, coerced, enforce_file_format=True)
    return buffer.getvalue()


def _attributes(values: Demographics) -> tuple[tuple[str, str], ...]:
    return (("PatientID", values.patient_id), ("IssuerOfPatientID", values.issuer), ("PatientName", values.name),
            ("PatientBirthDate", values.birth_date), ("PatientSex", values.sex))


__all__ = ["CurrentPatient", "Demographics", "DemographicsError", "MergeNotFound", "MergeRecord", "MergeResult",
           "UpdateResult",
           "coerce", "coerce_part10", "current_demographics", "find_patient", "list_merges", "merge_generation",
           "merge_patients", "needs_coercion", "resolve_patient_key", "revert_merge", "update_patient"]
