"""Registrations and fusion's derived objects in the archive: through ingest, with the registration QA stored.

A registration (the Spatial / Deformable Spatial Registration dataset of :mod:`fusion.dicom_reg`) goes in
through :meth:`Archive.ingest_dataset`; the index links it to both series it registers (relation
``registered_series``). Its QA is stored next to it as an ``AnalysisResult`` of kind
:data:`REGISTRATION_QA`, keyed by SHA-256 over the fixed and moving series UIDs and the REG's SOP
Instance UID, under the fixed series' patient and study, with one ``MetricValue`` row per QA figure
(structure "", metrics :data:`QA_METRICS`), so registrations are searchable by quality. Derived objects
(propagated RTSTRUCTs, warped/accumulated RT Doses, 4D CT projections, ITV structure sets) go in through
the same ingest path (:func:`ingest_derived`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from oncopacs.analysis.models import AnalysisResult
from oncopacs.analysis.results import Metric, NewResult, store_results
from oncopacs.archive.ingest import Archive, IngestOutcome, IngestResult
from oncopacs.errors import DicomInputError, StorageError
from oncopacs.index.models import Patient, Series, Study

REGISTRATION_QA = "registration_qa"
RESULT_VERSION = 1
#: MetricValue name → key of :meth:`fusion.qa.RegistrationQA.to_dict` (figures not computed are left out).
QA_METRICS = {
    "jacobian_min": "jacobian_min",
    "jacobian_max": "jacobian_max",
    "folding[%]": "folding_percent",
    "inverse_consistency[mm]": "inverse_consistency_mean_mm",
    "inverse_consistency_max[mm]": "inverse_consistency_max_mm",
    "TRE[mm]": "tre_mean_mm",
    "TRE_max[mm]": "tre_max_mm",
}
QA_PASSED_METRIC = "qa_passed"  # 1.0 passed, 0.0 flagged

@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object ingested into the archive; outcome "stored" or "duplicate" (already there, identical)."""

    sop_instance_uid: str
    series_instance_uid: str
    modality: str
    outcome: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StoredRegistration:
    """A registration in the archive: its REG instance, the series it links and its stored QA row.

    result_id: the ``AnalysisResult`` row's primary key; qa: :meth:`fusion.qa.RegistrationQA.to_dict`;
    flagged: the registration failed QA (its ``failures`` say why).
    """

    registration: StoredObject
    kind: str
    fixed_series_uid: str
    moving_series_uid: str
    patient_id: str
    study_instance_uid: str
    input_key: str
    result_id: int
    qa: dict[str, Any]

    @property
    def flagged(self) -> bool:
        return not self.qa.get("passed", False)

    def to_dict(self) -> dict[str, Any]:
        return {**self.registration.to_dict(), "kind": self.kind, "fixed_series_uid": self.fixed_series_uid,
                "moving_series_uid": self.moving_series_uid, "patient_id": self.patient_id,
                "study_instance_uid": self.study_instance_uid, "input_key": self.input_key,
                "result_id": self.result_id, "flagged": self.flagged, "qa": self.qa}


def ingest_derived(archive: Archive, datasets: Iterable[Dataset], *, source: str) -> tuple[StoredObject, ...]:
    """Ingest each dataset (the one ingest path); StorageError/DicomInputError when one is not acknowledged."""
    return tuple(_ingest(archive, dataset, source) for dataset in datasets)


def store_registration(archive: Archive, dataset: Dataset, *, source: str) -> StoredRegistration:
    """Ingest a (Deformable) Spatial Registration dataset and store its QA (replacing an earlier row of it).

    The dataset must carry its QA (``build_registration_dataset(..., qa=...)``); DicomInputError otherwise.
    """
    from fusion.dicom_reg import read_registration
    from fusion.errors import FusionError

    uid = str(dataset.get("SOPInstanceUID", "")) or None
    try:
        registration = read_registration(dataset)
    except FusionError as exc:
        raise DicomInputError("RegistrationSequence", f"unreadable ({exc})", sop_instance_uid=uid) from None
    if registration.qa is None:
        raise DicomInputError("registration QA", "missing (every stored registration carries its QA)",
                              sop_instance_uid=uid)
    fixed_uid, moving_uid = registration.fixed.series_instance_uid, registration.moving.series_instance_uid
    if not fixed_uid or not moving_uid:
        raise DicomInputError("ReferencedSeriesSequence", "does not name both the fixed and the moving series",
                              sop_instance_uid=uid)
    stored = _ingest(archive, dataset, source)
    qa = registration.qa.to_dict()
    key = compute_registration_key(fixed_uid, moving_uid, stored.sop_instance_uid)
    document = {"version": RESULT_VERSION, "registration_sop_instance_uid": stored.sop_instance_uid,
                "registration_series_uid": stored.series_instance_uid, "kind": registration.kind.value,
                "fixed_series_uid": fixed_uid, "moving_series_uid": moving_uid,
                "fixed_frame_of_reference_uid": registration.fixed.frame_of_reference_uid,
                "moving_frame_of_reference_uid": registration.moving.frame_of_reference_uid,
                "registration_seconds": round(registration.seconds, 3), "flagged": not registration.qa.passed,
                "qa": qa}
    with archive.index.writing() as session:
        patient_id, study_uid, study_date = _fixed_study(session, fixed_uid, dataset)
        metrics = [Metric("", name, value) for name, value in compute_qa_metrics(qa).items()]
        (result_id,) = store_results(session, [NewResult(REGISTRATION_QA, key, patient_id, study_uid, study_date,
                                                         [stored.sop_instance_uid], document, metrics)])
    return StoredRegistration(stored, registration.kind.value, fixed_uid, moving_uid, patient_id, study_uid, key,
                              result_id, qa)


def compute_registration_key(fixed_series_uid: str, moving_series_uid: str, sop_instance_uid: str) -> str:
    """SHA-256 (hex) over the fixed and moving series UIDs and the registration's SOP Instance UID."""
    text = f"{fixed_series_uid}\\{moving_series_uid}\\{sop_instance_uid}"
    return hashlib.sha256(text.encode()).hexdigest()


def compute_qa_metrics(qa: dict[str, Any]) -> dict[str, float]:
    """The searchable numbers of a QA document: {metric name: value} (uncomputed figures left out)."""
    metrics = {name: float(qa[key]) for name, key in QA_METRICS.items() if qa.get(key) is not None}
    metrics[QA_PASSED_METRIC] = 1.0 if qa.get("passed") else 0.0
    return metrics


def load_registration_qa(session: Session, sop_instance_uid: str) -> dict[str, Any] | None:
    """The stored QA document of a registration instance (None when none is stored)."""
    text = session.scalars(select(AnalysisResult.result_json).where(
        AnalysisResult.kind == REGISTRATION_QA, AnalysisResult.inputs == sop_instance_uid
    ).order_by(AnalysisResult.id.desc())).first()
    return json.loads(text) if text is not None else None


def find_registration_of(session: Session, fixed_series_uid: str, moving_series_uid: str) -> str | None:
    """The SOP Instance UID of a stored registration of ``moving`` onto ``fixed`` (None: none yet)."""
    rows = session.execute(select(AnalysisResult.inputs, AnalysisResult.result_json)
                           .where(AnalysisResult.kind == REGISTRATION_QA)).all()
    for sop_uid, text in rows:
        document = json.loads(text)
        pair = (document.get("fixed_series_uid"), document.get("moving_series_uid"))
        if pair == (fixed_series_uid, moving_series_uid):
            return str(sop_uid)
    return None


def _ingest(archive: Archive, dataset: Dataset, source: str) -> StoredObject:
    result: IngestResult = archive.ingest_dataset(dataset, source=source)
    uid = str(dataset.get("SOPInstanceUID", ""))
    if not result.acknowledged:
        if result.outcome is IngestOutcome.FAILED:
            raise StorageError(f"the archive could not store {uid or 'the object'}: {result.reason}")
        raise DicomInputError("SOPInstanceUID", f"refused by the archive ({result.outcome.value}: {result.reason})",
                              sop_instance_uid=uid)
    return StoredObject(uid, str(dataset.get("SeriesInstanceUID", "")), str(dataset.get("Modality", "")),
                        result.outcome.value)


def _fixed_study(session: Session, fixed_series_uid: str, dataset: Dataset) -> tuple[str, str, str]:
    """(patient ID, study UID, study date) of the fixed series; the REG's own (the fixed study's) if not indexed."""
    row = session.execute(select(Patient.patient_id, Study.study_instance_uid, Study.study_date)
                          .select_from(Series).join(Series.study).join(Study.patient)
                          .where(Series.series_instance_uid == fixed_series_uid)).first()
    if row is not None:
        return str(row[0] or ""), str(row[1]), str(row[2] or "")
    return (str(dataset.get("PatientID", "")), str(dataset.get("StudyInstanceUID", "")),
            str(dataset.get("StudyDate", "")))


@dataclass(frozen=True, slots=True)
class RegistrationVerdict:
    """The stored QA verdict of one registration: its kind ("rigid", "deformable"), flag and moving series."""

    sop_instance_uid: str
    kind: str
    flagged: bool  # the registration failed QA
    moving_series_uid: str


def find_registration_verdicts(session: Session, sop_instance_uids: Iterable[str]) -> dict[str, RegistrationVerdict]:
    """The QA verdict of each registration instance that has a stored QA (the newest row), by SOP Instance UID."""
    uids = sorted(set(sop_instance_uids))
    if not uids:
        return {}
    verdicts: dict[str, RegistrationVerdict] = {}
    for sop_uid, text in session.execute(select(AnalysisResult.inputs, AnalysisResult.result_json).where(
            AnalysisResult.kind == REGISTRATION_QA, AnalysisResult.inputs.in_(uids)).order_by(AnalysisResult.id)):
        document = json.loads(text)
        verdicts[str(sop_uid)] = RegistrationVerdict(str(sop_uid), str(document.get("kind", "registration")),
                                                     bool(document.get("flagged")),
                                                     str(document.get("moving_series_uid", "")))
    return verdicts
