"""PET quantification per patient and time point: measure, assess response, store in the index and the archive.

A time point is measured from its PET slices and (optionally) an RTSTRUCT on the PET-CT's CT:
lesion ROIs (RTROIInterpretedType GTV, or names given) and a liver reference ROI ("Liver"; PERCIST's
liver reference is taken as that ROI's SULmean and SD). Results are stored twice:

- in the index: AnalysisResult kind ``pet_timepoint`` (one per PET series and parameters) and
  ``pet_response`` (one per baseline/follow-up pair), with MetricValue rows per ROI
  (``SUVmax[g/mL]``, ``SUVmean[g/mL]``, ``SUVpeak[g/mL]``, ``SULpeak[g/mL]``, ``MTV[cc]``, ``TLG[g]``;
  ``cm2/mL`` for SUVbsa) and per response (``SULpeakChange[%]``, ``SUVmaxChange[%]``, ``TLGChange[%]``,
  ``SLDChange[%]``);
- in the archive: a TID 1500 SR per time point (:mod:`fusion.pet.sr`), ingested through
  :meth:`Archive.ingest_dataset`.

A PET series analysed on arrival (:func:`analyse_contoured_pet`, the pet_statistics job) is stored as a time
point and then every stored follow-up of the patient is assessed against the earliest stored time point
(:func:`assess_stored_responses`), so scans sent one by one get their PERCIST category.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from fusion.pet.errors import ResponseInputError, SuvTagError
from fusion.pet.response import (
    EortcResult,
    LesionChange,
    LesionMeasurement,
    PercistResult,
    RecistResult,
    TimePoint,
    assess_eortc,
    assess_percist,
    assess_recist,
    compute_lesion_changes,
    compute_longest_axial_diameter_mm,
    order_time_points,
)
from fusion.pet.sr import build_pet_report
from fusion.pet.stats import (
    RoiStats,
    compute_roi_stats,
    compute_structure_stats,
    segment_from_seed,
)
from fusion.pet.suv import SuvImage, SuvType, read_suv_image
from oncopacs.analysis.models import AnalysisResult
from oncopacs.analysis.results import Metric, NewResult, find_result, store_results, upsert_result
from oncopacs.archive.ingest import Archive
from oncopacs.errors import EXPECTED_ERRORS, OncopacsError
from oncopacs.index.models import Instance, ObjectReference, Patient, Relation, Series, Study
from oncopacs.index.query import find_instances
from oncopacs.uids import uid_for
from rt.structures import StructureSet, read_structure_set

log = logging.getLogger(__name__)

PET_TIMEPOINT, PET_RESPONSE = "pet_timepoint", "pet_response"
LIVER_NAME = "Liver"
LESION_TYPES = ("GTV",)
SR_SERIES_NUMBER = 900


@dataclass(frozen=True)
class MeasuredTimePoint:
    """One time point: the SUV image, per-ROI statistics (lesions, then liver) and the response inputs."""

    time_point: TimePoint
    lesions: tuple[RoiStats, ...]
    liver: RoiStats | None
    image: SuvImage
    pet_slices: tuple[Dataset, ...] = field(repr=False)
    structure_set_uid: str = ""  # the RTSTRUCT the ROIs came from ("" for seeded regions only)

    @property
    def suv_type(self) -> SuvType:
        return self.image.suv_type


def _date(text: str) -> date:
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        raise OncopacsError(f"PET StudyDate {text!r} is not a date (YYYYMMDD)") from None


def _lesion_names(structure_set: StructureSet, liver_name: str) -> list[str]:
    names = [r.name for r in structure_set.rois if not r.is_empty and r.interpreted_type.upper() in LESION_TYPES
             and r.name.lower() != liver_name.lower()]
    if not names:
        raise OncopacsError(f"no lesion ROI (RTROIInterpretedType GTV) in the structure set; have "
                            f"{', '.join(structure_set.roi_names)} (name them with --roi)")
    return names


def measure_time_point(
    pet_slices: Sequence[Dataset],
    rtstruct: Dataset | None = None,
    *,
    lesion_names: Sequence[str] = (),
    liver_name: str = LIVER_NAME,
    suv_type: SuvType | str = SuvType.BW,
    seeds_mm: Sequence[tuple[float, float, float]] = (),
    label: str = "",
    new_lesions: bool = False,
) -> MeasuredTimePoint:
    """Measure one PET time point from contours (``rtstruct``) and/or seeded threshold regions (``seeds_mm``)."""
    image = read_suv_image(list(pet_slices), suv_type)
    lesions: list[RoiStats] = []
    liver = None
    geometry: dict[str, tuple[float, float]] = {}
    if rtstruct is not None:
        structure_set = read_structure_set(rtstruct)
        names = list(lesion_names) or _lesion_names(structure_set, liver_name)
        lesions += compute_structure_stats(image, structure_set, names)
        for name in names:
            roi = structure_set.roi(name)
            geometry[roi.name] = (roi.compute_volume_cc(), compute_longest_axial_diameter_mm(roi))
        if any(r.name.lower() == liver_name.lower() for r in structure_set.rois):
            (liver,) = compute_structure_stats(image, structure_set, [liver_name])
    elif lesion_names:
        raise OncopacsError("ROI names need an RTSTRUCT (--rtstruct)")
    for i, seed in enumerate(seeds_mm):
        lesions.append(compute_roi_stats(image, segment_from_seed(image, seed), f"seed{i + 1}"))
    if not lesions:
        raise OncopacsError("nothing to measure: give an RTSTRUCT with lesion ROIs or a seed point")
    to_sul = _ratio(image, SuvType.LBM)
    measurements = tuple(
        LesionMeasurement(s.name, sul_peak=s.sul_peak, suv_max=s.suv_max, suv_peak=s.suv_peak, tlg=s.tlg41,
                          mtv_cc=s.mtv41_cc, volume_cc=geometry.get(s.name, (None, None))[0],
                          longest_diameter_mm=geometry.get(s.name, (None, None))[1])
        for s in lesions)
    time_point = TimePoint(
        date=_date(image.study_date), lesions=measurements, label=label,
        liver_sul_mean=liver.suv_mean * to_sul if liver and to_sul else None,
        liver_sul_sd=liver.suv_sd * to_sul if liver and to_sul else None,
        reference_suv_mean=liver.suv_mean if liver else None,
        uptake_s=image.calibration.uptake_s, new_lesions=new_lesions,
        study_instance_uid=image.study_instance_uid,
    )
    structure_set_uid = str(rtstruct.get("SOPInstanceUID", "")) if rtstruct is not None else ""
    return MeasuredTimePoint(time_point, tuple(lesions), liver, image, tuple(pet_slices), structure_set_uid)


def _ratio(image: SuvImage, suv_type: SuvType) -> float | None:
    try:
        return image.compute_ratio_to(suv_type)
    except SuvTagError:
        return None


@dataclass(frozen=True)
class ResponseAssessment:
    """A follow-up against baseline: PERCIST, EORTC, RECIST-style SLD and per-lesion CT changes."""

    baseline: TimePoint
    followup: TimePoint
    percist: PercistResult | None
    eortc: EortcResult | None
    recist: RecistResult | None
    lesion_changes: tuple[LesionChange, ...]
    notes: tuple[str, ...] = ()

    @property
    def categories(self) -> dict[str, str]:
        found = {"PERCIST 1.0": self.percist, "EORTC 1999": self.eortc, "RECIST": self.recist}
        return {name: result.category.value for name, result in found.items() if result is not None}

    def to_dict(self) -> dict:
        return {
            "baseline": {"date": self.baseline.date.isoformat(), "label": self.baseline.label,
                         "study_instance_uid": self.baseline.study_instance_uid},
            "followup": {"date": self.followup.date.isoformat(), "label": self.followup.label,
                         "study_instance_uid": self.followup.study_instance_uid},
            "categories": self.categories,
            "percist": self.percist.to_dict() if self.percist else None,
            "eortc": self.eortc.to_dict() if self.eortc else None,
            "recist": self.recist.to_dict() if self.recist else None,
            "ct": [c.to_dict() for c in self.lesion_changes],
            "notes": list(self.notes),
        }


def assess_response(time_points: Sequence[TimePoint], *, cycles: int = 1) -> ResponseAssessment:
    """Assess the latest time point against the earliest (RECIST uses every one in between for the nadir)."""
    ordered = order_time_points(time_points)
    if len(ordered) < 2:
        raise OncopacsError("response needs a baseline and a follow-up on different dates")
    baseline, followup = ordered[0], ordered[-1]
    baseline_names = {lesion.name for lesion in baseline.lesions}
    if any(lesion.name not in baseline_names for lesion in followup.lesions) and not followup.new_lesions:
        followup = TimePoint(**{**{f: getattr(followup, f) for f in followup.__slots__}, "new_lesions": True})
        ordered = (*ordered[:-1], followup)
    notes: list[str] = []
    results: dict[str, Any] = {}
    for name, assess in (("percist", lambda: assess_percist(baseline, followup)),
                         ("eortc", lambda: assess_eortc(baseline, followup, cycles=cycles)),
                         ("recist", lambda: assess_recist(ordered))):
        try:
            results[name] = assess()
        except ResponseInputError as exc:
            results[name] = None
            notes.append(f"{name}: {exc}")
    return ResponseAssessment(baseline, followup, results["percist"], results["eortc"], results["recist"],
                              tuple(compute_lesion_changes(baseline, followup)), tuple(notes))


def read_response_category(data: Any) -> dict[str, str]:
    """The category and its criteria of a stored ``pet_response`` document ({} when none is recorded)."""
    if not isinstance(data, dict):
        return {}
    percist = data.get("percist")
    if isinstance(percist, dict) and percist.get("category"):
        return {"criteria": "PERCIST 1.0", "category": str(percist["category"])}
    if isinstance(percist, str) and percist:
        return {"criteria": "PERCIST 1.0", "category": percist}
    if data.get("percist_category"):
        return {"criteria": "PERCIST 1.0", "category": str(data["percist_category"])}
    if data.get("category"):
        return {"criteria": str(data.get("criteria") or "PERCIST 1.0"), "category": str(data["category"])}
    return {}



# -- storage -------------------------------------------------------------------------------------


def _key(*parts: str) -> str:
    return hashlib.sha256("\\".join(parts).encode()).hexdigest()


def build_time_point_sr(measured: MeasuredTimePoint, order: int, categories: dict[str, str] | None = None) -> Dataset:
    """The TID 1500 SR of one time point (UIDs derived from its PET series and SUV type)."""
    image = measured.image
    geometry = {lesion.name: lesion for lesion in measured.time_point.lesions}
    stats = [*measured.lesions, *([measured.liver] if measured.liver else [])]
    return build_pet_report(
        measured.pet_slices, stats, time_point=measured.time_point.label or measured.time_point.date.isoformat(),
        time_point_order=order, categories=categories,
        ct_volumes_cc={n: g.volume_cc for n, g in geometry.items() if g.volume_cc is not None},
        longest_diameters_mm={n: g.longest_diameter_mm for n, g in geometry.items()
                              if g.longest_diameter_mm is not None},
        series_instance_uid=uid_for(image.series_instance_uid, "pet-sr-series", image.suv_type.value),
        sop_instance_uid=uid_for(image.series_instance_uid, "pet-sr", image.suv_type.value, str(order),
                                 json.dumps(categories or {}, sort_keys=True), measured.structure_set_uid),
        series_number=SR_SERIES_NUMBER,
    )


def store_time_point(archive: Archive, measured: MeasuredTimePoint, *, order: int = 1,
                     categories: dict[str, str] | None = None) -> tuple[int, str]:
    """Ingest the time point's SR and store its ``pet_timepoint`` result; (result id, SR SOP Instance UID)."""
    sr = build_time_point_sr(measured, order, categories)
    outcome = archive.ingest_dataset(sr, source="pet")
    if not outcome.acknowledged:
        raise OncopacsError(f"the PET SR was rejected: {outcome.reason}")
    image, tp = measured.image, measured.time_point
    unit = image.suv_type.unit
    stats = [*measured.lesions, *([measured.liver] if measured.liver else [])]
    metrics = []
    for s in stats:
        metrics += [(s.name, f"SUVmax[{unit}]", s.suv_max), (s.name, f"SUVmean[{unit}]", s.suv_mean),
                    (s.name, f"SUVpeak[{unit}]", s.suv_peak), (s.name, "SULpeak[g/mL]", s.sul_peak),
                    (s.name, "MTV[cc]", s.mtv41_cc), (s.name, "TLG[g]", s.tlg41)]
    for lesion in tp.lesions:
        metrics += [(lesion.name, "Volume[cc]", lesion.volume_cc), (lesion.name, "LongestDiameter[mm]",
                                                                     lesion.longest_diameter_mm)]
    result = {"suv_type": image.suv_type.value, "calibration": image.calibration.to_dict(),
              "time_point": tp.to_dict(), "rois": [s.to_dict() for s in stats],
              "series_instance_uid": image.series_instance_uid, "sr_sop_instance_uid": str(sr.SOPInstanceUID),
              "categories": categories or {}}
    result["structure_set_uid"] = measured.structure_set_uid
    new = NewResult(PET_TIMEPOINT, compute_time_point_key(measured), image.patient_id, image.study_instance_uid,
                    tp.date.strftime("%Y%m%d"), list(image.sop_instance_uids), result,
                    [Metric(*metric) for metric in metrics])
    with archive.index.writing() as session:  # one time point per PET series and SUV type: the newest contours
        (result_id,) = store_results(session, [new], superseded=_time_points_of(session, image))
    return result_id, str(sr.SOPInstanceUID)


def _time_points_of(session: Session, image: SuvImage) -> list[int]:
    """Ids of the stored time points measured on exactly these PET instances with this SUV type."""
    rows = session.execute(select(AnalysisResult.id, AnalysisResult.result_json).where(
        AnalysisResult.kind == PET_TIMEPOINT, AnalysisResult.inputs == "\\".join(image.sop_instance_uids))).all()
    return [pk for pk, text in rows if json.loads(text).get("suv_type") == image.suv_type.value]


def compute_time_point_key(measured: MeasuredTimePoint) -> str:
    """The input key of a time point's result: SUV type, PET instances, the structure set and the ROIs measured."""
    stats = [*measured.lesions, *([measured.liver] if measured.liver else [])]
    return _key(PET_TIMEPOINT, measured.suv_type.value, *sorted(measured.image.sop_instance_uids),
                measured.structure_set_uid, *sorted(s.name for s in stats))


def _change(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def store_response(archive: Archive, baseline: MeasuredTimePoint, followup: MeasuredTimePoint,
                   assessment: ResponseAssessment) -> int:
    """Store a ``pet_response`` result (keyed by both PET series) with its change metrics."""
    return _upsert_response(archive, assessment, followup.image.patient_id, baseline.suv_type,
                            (baseline.image.series_instance_uid, followup.image.series_instance_uid),
                            [*baseline.image.sop_instance_uids, *followup.image.sop_instance_uids])


def _upsert_response(archive: Archive, assessment: ResponseAssessment, patient_id: str, suv_type: SuvType,
                     series_uids: tuple[str, str], inputs: list[str]) -> int:
    """The ``pet_response`` row of (baseline, follow-up) PET series: one per pair and SUV type, the newest kept."""
    metrics = [("", "SULpeakChange[%]", _change(assessment.percist.change_percent) if assessment.percist else None),
               ("", "TLGChange[%]", _change(assessment.percist.tlg_change_percent) if assessment.percist else None),
               ("", "SUVmaxChange[%]", _change(assessment.eortc.change_percent) if assessment.eortc else None),
               ("", "SLDChange[%]", _change(assessment.recist.change_from_baseline_percent)
                if assessment.recist else None)]
    metrics += [(c.name, "VolumeChange[%]", _change(c.volume_change_percent)) for c in assessment.lesion_changes]
    key = _key(PET_RESPONSE, *series_uids, suv_type.value)
    followup = assessment.followup
    return upsert_result(archive.index, NewResult(
        PET_RESPONSE, key, patient_id, followup.study_instance_uid, followup.date.strftime("%Y%m%d"), inputs,
        assessment.to_dict(), [Metric(*metric) for metric in metrics]))


@dataclass(frozen=True, slots=True)
class StoredTimePoint:
    """A stored ``pet_timepoint`` read back: its :class:`TimePoint`, PET series and input instances."""

    time_point: TimePoint
    series_instance_uid: str
    inputs: tuple[str, ...]


def read_stored_time_point(document: Any) -> TimePoint | None:
    """The :class:`TimePoint` a ``pet_timepoint`` document holds (its :meth:`TimePoint.to_dict`); None if none."""
    data = document.get("time_point") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        return None
    try:
        day = date.fromisoformat(str(data.get("date")))
    except ValueError:
        return None

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    lesions = tuple(
        LesionMeasurement(str(item.get("name")), sul_peak=number(item.get("SULpeak")),
                          suv_max=number(item.get("SUVmax")), suv_peak=number(item.get("SUVpeak")),
                          tlg=number(item.get("TLG")), mtv_cc=number(item.get("MTV_cc")),
                          volume_cc=number(item.get("volume_cc")),
                          longest_diameter_mm=number(item.get("longest_diameter_mm")))
        for item in data.get("lesions") or [] if isinstance(item, dict) and item.get("name"))
    return TimePoint(day, lesions, str(data.get("label") or ""), number(data.get("liver_sul_mean")),
                     number(data.get("liver_sul_sd")), number(data.get("reference_suv_mean")),
                     number(data.get("uptake_s")), bool(data.get("new_lesions")),
                     str(data.get("study_instance_uid") or ""))


def find_stored_time_points(session: Session, patient_id: str, suv_type: SuvType) -> list[StoredTimePoint]:
    """The patient's stored time points of ``suv_type``, one per date (the newest stored), oldest date first."""
    rows = session.execute(select(AnalysisResult.time_point, AnalysisResult.result_json, AnalysisResult.inputs)
                           .where(AnalysisResult.kind == PET_TIMEPOINT, AnalysisResult.patient_id == patient_id)
                           .order_by(AnalysisResult.time_point, AnalysisResult.id)).all()
    by_date: dict[str, StoredTimePoint] = {}
    for stamp, text, inputs in rows:
        try:
            document = json.loads(text)
        except ValueError:
            continue
        point = read_stored_time_point(document)
        if point is None or document.get("suv_type") != suv_type.value:
            continue
        by_date[stamp] = StoredTimePoint(point, str(document.get("series_instance_uid") or ""),
                                         tuple(u for u in str(inputs or "").split("\\") if u))
    return [by_date[stamp] for stamp in sorted(by_date)]


def assess_stored_responses(archive: Archive, patient_id: str, suv_type: SuvType = SuvType.BW) -> list[str]:
    """Assess every stored follow-up of the patient against the earliest stored time point (``suv_type``) and store
    each as a ``pet_response`` (the same pair's older assessment replaced); the follow-up dates (ISO) assessed.

    What the pet_statistics job runs after storing a time point, so scans that arrive one by one get their
    PERCIST category: a follow-up needs a baseline on an earlier date; one that cannot be assessed is left out.
    """
    with archive.index.reading() as session:
        points = find_stored_time_points(session, patient_id, suv_type)
    assessed: list[str] = []
    if len(points) < 2:
        return assessed
    baseline = points[0]
    for i in range(1, len(points)):
        try:
            assessment = assess_response([p.time_point for p in points[: i + 1]], cycles=i)
        except EXPECTED_ERRORS as exc:
            log.warning("PET response of %s not assessed: %s", points[i].series_instance_uid, exc)
            continue
        _upsert_response(archive, assessment, patient_id, suv_type,
                         (baseline.series_instance_uid, points[i].series_instance_uid),
                         [*baseline.inputs, *points[i].inputs])
        assessed.append(assessment.followup.date.isoformat())
    return assessed


def record_patient(archive: Archive, measured: Sequence[MeasuredTimePoint], *,
                   cycles: Sequence[int] | None = None) -> list[ResponseAssessment]:
    """Store every time point of one patient (ordered by date) and each follow-up's response against baseline.

    ``cycles[i]`` is the number of treatment cycles before follow-up ``i`` (EORTC; default i + 1).
    """
    ordered = sorted(measured, key=lambda m: m.time_point.date)
    order_time_points([m.time_point for m in ordered])  # rejects two scans on one date
    assessments = []
    store_time_point(archive, ordered[0], order=1)
    for i, follow in enumerate(ordered[1:]):
        assessment = assess_response([m.time_point for m in ordered[: i + 2]],
                                     cycles=cycles[i] if cycles else i + 1)
        store_time_point(archive, follow, order=i + 2, categories=assessment.categories)
        store_response(archive, ordered[0], follow, assessment)
        assessments.append(assessment)
    return assessments


# -- PET series with contours in the archive (the pet_statistics job) ----------------------------

#: PET series kinds measured as one volume (SeriesType value 1); DYNAMIC and GATED series are not.
MEASURED_SERIES_TYPES = frozenset({"STATIC", "WHOLE BODY", ""})


@dataclass(frozen=True, slots=True)
class ContouredPet:
    """A PET series and an RT Structure Set of the same patient on its frame of reference (any study)."""

    pet_series_uid: str
    structure_set_uid: str

    def to_dict(self) -> dict[str, str]:
        return {"pet_series_uid": self.pet_series_uid, "structure_set_uid": self.structure_set_uid}


def _on_frame(frame_of_reference_uid: str) -> Any:
    """An instance on the frame: its own FrameOfReferenceUID, or any ReferencedFrameOfReference item (RTSTRUCT)."""
    return or_(Instance.frame_of_reference_uid == frame_of_reference_uid, Instance.id.in_(
        select(ObjectReference.instance_pk).where(ObjectReference.referenced_uid == frame_of_reference_uid,
                                                  ObjectReference.relation == Relation.FRAME_OF_REFERENCE)))


def find_structure_sets_on_frame(session: Session, patient_id: str, frame_of_reference_uid: str) -> list[str]:
    """SOP Instance UIDs of the patient's RT Structure Sets on ``frame_of_reference_uid``, oldest first."""
    if not frame_of_reference_uid:
        return []
    return list(session.scalars(
        select(Instance.sop_instance_uid).join(Instance.series).join(Series.study).join(Study.patient)
        .where(Patient.patient_id == patient_id, Series.modality == "RTSTRUCT", _on_frame(frame_of_reference_uid))
        .order_by(Instance.id)))


def find_pet_series_on_frames(session: Session, patient_id: str, frame_of_reference_uids: Sequence[str]) -> list[str]:
    """Series Instance UIDs of the patient's PET series on any of ``frame_of_reference_uids``."""
    frames = [uid for uid in frame_of_reference_uids if uid]
    if not frames:
        return []
    return list(session.scalars(
        select(Series.series_instance_uid).join(Series.study).join(Study.patient)
        .where(Patient.patient_id == patient_id, Series.modality == "PT", Series.frame_of_reference_uid.in_(frames))
        .order_by(Series.id)))


@dataclass(frozen=True, slots=True)
class StoredPetSeries:
    """A PET series as the index holds it: its patient, frame of reference and how many instances are stored."""

    series_instance_uid: str
    patient_id: str
    frame_of_reference_uid: str
    stored_instances: int


def find_pet_series(session: Session, series_instance_uid: str) -> StoredPetSeries | None:
    """The stored PET series (None: no PT series of that UID in the archive)."""
    row = session.execute(
        select(Series.series_instance_uid, Patient.patient_id, Series.frame_of_reference_uid,
               Series.number_of_instances).join(Series.study).join(Study.patient)
        .where(Series.series_instance_uid == series_instance_uid, Series.modality == "PT")).first()
    return StoredPetSeries(str(row[0]), str(row[1]), str(row[2] or ""), int(row[3] or 0)) if row else None


def count_series_instances(connection: Connection, series_instance_uid: str) -> int:
    """How many instances of the series the index holds (0: none): one look-up on its unique UID."""
    return int(connection.scalar(select(Series.number_of_instances)
                                 .where(Series.series_instance_uid == series_instance_uid)) or 0)


def find_contoured_pet(session: Session, pet_series_uid: str) -> ContouredPet | None:
    """The PET series with the newest of its patient's structure sets on its frame (None: no contours there).

    A PET series has one time point: revised contours replace what the older ones measured.
    """
    series = find_pet_series(session, pet_series_uid)
    if series is None:
        return None
    structure_sets = find_structure_sets_on_frame(session, series.patient_id, series.frame_of_reference_uid)
    return ContouredPet(pet_series_uid, structure_sets[-1]) if structure_sets else None


def find_contoured_pet_series(session: Session) -> list[str]:
    """Every PET series of the archive with a structure set of its patient on its frame (the demo's catch-up)."""
    rows = session.execute(select(Series.series_instance_uid, Patient.patient_id, Series.frame_of_reference_uid)
                           .join(Series.study).join(Study.patient).where(Series.modality == "PT")).all()
    return [uid for uid, patient_id, frame in rows if find_structure_sets_on_frame(session, patient_id, frame or "")]


@dataclass(frozen=True, slots=True)
class PetStatistics:
    """What the pet_statistics job did with one contoured PET series: ``status`` and why."""

    contoured: ContouredPet
    status: str  # "measured", "cached", "incomplete" (slices still arriving) or "not measured"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {**self.contoured.to_dict(), "status": self.status, "detail": self.detail}


def read_expected_instances(header: Dataset) -> int | str:
    """How many instances a complete PET series has (NumberOfSlices), or why that cannot be told."""
    series_type = str((header.get("SeriesType") or [""])[0] or "").strip().upper()
    if series_type not in MEASURED_SERIES_TYPES:
        return f"a {series_type} PET series: SUV statistics are measured on static series"
    try:
        slices = int(header.get("NumberOfSlices") or 0)
    except (TypeError, ValueError):
        slices = 0
    return slices if slices > 0 else "NumberOfSlices is missing: cannot tell when the series is complete"


def analyse_contoured_pet(archive: Archive, contoured: ContouredPet, *,
                          suv_type: SuvType = SuvType.BW) -> PetStatistics:
    """SUV statistics of a PET series in its contours, stored as the patient's time point unless cached.

    Only a complete static series is measured: fewer stored instances than its NumberOfSlices is
    "incomplete" (its last slice queues the job again), and a dynamic or gated series, or one that
    does not say how many slices it has, is "not measured" with the reason. ROIs of type GTV are the
    lesions and "Liver" the reference, as in :func:`measure_time_point`.
    """
    with archive.index.reading() as session:
        series = find_pet_series(session, contoured.pet_series_uid)
        first = find_instances(session, {"SeriesInstanceUID": contoured.pet_series_uid})[:1]
    if series is None or not first:
        return PetStatistics(contoured, "not measured", "the PET series is no longer in the archive")
    expected = read_expected_instances(archive.read_dataset(first[0].file_path, first[0].sha256,
                                                            stop_before_pixels=True))
    if isinstance(expected, str):
        return PetStatistics(contoured, "not measured", expected)
    if series.stored_instances < expected:
        return PetStatistics(contoured, "incomplete", f"{series.stored_instances} of {expected} slices stored")
    try:
        measured = measure_time_point(archive.read_series(contoured.pet_series_uid),
                                      archive.read_instance(contoured.structure_set_uid), suv_type=suv_type)
    except EXPECTED_ERRORS as exc:
        return PetStatistics(contoured, "not measured", str(exc))
    with archive.index.reading() as session:
        if find_result(session, PET_TIMEPOINT, compute_time_point_key(measured)) is not None:
            return PetStatistics(contoured, "cached", "already measured")
        order = 1 + _earlier_time_points(session, measured.image.patient_id, measured.time_point.date)
    store_time_point(archive, measured, order=order)
    assessed = assess_stored_responses(archive, measured.image.patient_id, suv_type)
    lesions = ", ".join(s.name for s in measured.lesions)
    detail = f"{len(measured.lesions)} lesion(s): {lesions}"
    if assessed:
        detail += f"; response assessed at {', '.join(assessed)}"
    return PetStatistics(contoured, "measured", detail)


def _earlier_time_points(session: Session, patient_id: str, day: date) -> int:
    """How many PET time points of the patient are stored from before ``day``."""
    return session.scalar(select(func.count(func.distinct(AnalysisResult.time_point))).where(
        AnalysisResult.kind == PET_TIMEPOINT, AnalysisResult.patient_id == patient_id,
        AnalysisResult.time_point < day.strftime("%Y%m%d"))) or 0


# -- reading stored PET results across patients (the tumour-board cohort) --------------------------


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A patient's newest stored ``pet_response`` result: its follow-up study and date, and its document.

    ``document`` is the stored :meth:`ResponseAssessment.to_dict` (None when the stored JSON is not an object).
    """

    patient_id: str
    study_instance_uid: str
    time_point: str  # YYYYMMDD of the follow-up
    document: dict[str, object] | None


def find_last_time_points(session: Session) -> dict[str, str]:
    """Each patient's newest stored PET time point: {PatientID: date (YYYYMMDD)} over ``pet_timepoint`` results."""
    rows = session.execute(select(AnalysisResult.patient_id, func.max(AnalysisResult.time_point))
                           .where(AnalysisResult.kind == PET_TIMEPOINT).group_by(AnalysisResult.patient_id))
    return {str(patient_id): str(time_point or "") for patient_id, time_point in rows}


def find_latest_responses(session: Session) -> dict[str, StoredResponse]:
    """Each patient's newest ``pet_response`` result (latest follow-up date, then latest stored), by PatientID."""
    latest: dict[str, StoredResponse] = {}
    for patient_id, study_uid, time_point, text in session.execute(
            select(AnalysisResult.patient_id, AnalysisResult.study_instance_uid, AnalysisResult.time_point,
                   AnalysisResult.result_json)
            .where(AnalysisResult.kind == PET_RESPONSE).order_by(AnalysisResult.time_point, AnalysisResult.id)):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        latest[str(patient_id)] = StoredResponse(str(patient_id), str(study_uid or ""), str(time_point or ""),
                                                 document if isinstance(document, dict) else None)
    return latest
