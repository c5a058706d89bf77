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
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from fusion.errors import FusionError
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
from oncopacs.analysis.results import Metric, NewResult, find_result, upsert_result
from oncopacs.archive.ingest import Archive
from oncopacs.errors import OncopacsError
from oncopacs.index.models import Instance, ObjectReference, Relation, Series, Study
from oncopacs.index.oncology import summarize_study
from oncopacs.uids import uid_for
from rt.errors import RTError
from rt.structures import StructureSet, read_structure_set

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
    return MeasuredTimePoint(time_point, tuple(lesions), liver, image, tuple(pet_slices))


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


def _upsert(archive: Archive, kind: str, input_key: str, *, patient_id: str, study_uid: str, time_point: str,
            inputs: Sequence[str], result: dict, metrics: Sequence[tuple[str, str, float | None]]) -> int:
    """Insert or replace one result with its metric rows (structure, metric, value); its id."""
    return upsert_result(archive.index, NewResult(kind, input_key, patient_id, study_uid, time_point, inputs, result,
                                                  [Metric(*metric) for metric in metrics]))


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
                                 json.dumps(categories or {}, sort_keys=True)),
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
    result_id = _upsert(archive, PET_TIMEPOINT, compute_time_point_key(measured),
                        patient_id=image.patient_id, study_uid=image.study_instance_uid,
                        time_point=tp.date.strftime("%Y%m%d"), inputs=list(image.sop_instance_uids), result=result,
                        metrics=metrics)
    return result_id, str(sr.SOPInstanceUID)


def compute_time_point_key(measured: MeasuredTimePoint) -> str:
    """The input key of a time point's result: SUV type, PET instances and the ROIs measured."""
    stats = [*measured.lesions, *([measured.liver] if measured.liver else [])]
    return _key(PET_TIMEPOINT, measured.suv_type.value, *sorted(measured.image.sop_instance_uids),
                *sorted(s.name for s in stats))


def _change(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def store_response(archive: Archive, baseline: MeasuredTimePoint, followup: MeasuredTimePoint,
                   assessment: ResponseAssessment) -> int:
    """Store a ``pet_response`` result (keyed by both PET series) with its change metrics."""
    metrics = [("", "SULpeakChange[%]", _change(assessment.percist.change_percent) if assessment.percist else None),
               ("", "TLGChange[%]", _change(assessment.percist.tlg_change_percent) if assessment.percist else None),
               ("", "SUVmaxChange[%]", _change(assessment.eortc.change_percent) if assessment.eortc else None),
               ("", "SLDChange[%]", _change(assessment.recist.change_from_baseline_percent)
                if assessment.recist else None)]
    metrics += [(c.name, "VolumeChange[%]", _change(c.volume_change_percent)) for c in assessment.lesion_changes]
    inputs = [*baseline.image.sop_instance_uids, *followup.image.sop_instance_uids]
    return _upsert(archive, PET_RESPONSE, _key(PET_RESPONSE, baseline.image.series_instance_uid,
                                                 followup.image.series_instance_uid, baseline.suv_type.value),
                   patient_id=followup.image.patient_id, study_uid=followup.image.study_instance_uid,
                   time_point=followup.time_point.date.strftime("%Y%m%d"), inputs=inputs,
                   result=assessment.to_dict(), metrics=metrics)


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


@dataclass(frozen=True, slots=True)
class ContouredPet:
    """A PET series of a study and a structure set drawn on its frame of reference (its PET-CT's CT, or itself)."""

    study_instance_uid: str
    pet_series_uid: str
    structure_set_uid: str

    def to_dict(self) -> dict[str, str]:
        return {"pet_series_uid": self.pet_series_uid, "structure_set_uid": self.structure_set_uid}


def find_contoured_pet(session: Session, study_instance_uid: str) -> tuple[ContouredPet, ...]:
    """Every (PET series, structure set) pair of the study sharing a non-empty Frame of Reference UID."""
    summary = summarize_study(session, study_instance_uid)
    return tuple(ContouredPet(study_instance_uid, pet.series_instance_uid, structures.sop_instance_uid)
                 for pet in summary.image_series if pet.modality == "PT" and pet.frame_of_reference_uid
                 for structures in summary.structure_sets
                 if structures.frame_of_reference_uid == pet.frame_of_reference_uid)


def find_studies_with_contoured_pet(session: Session) -> list[str]:
    """Study Instance UIDs of every study holding both a PET series and an RT Structure Set (candidates)."""
    with_pet = select(Series.study_pk).where(Series.modality == "PT")
    with_contours = select(Series.study_pk).where(Series.modality == "RTSTRUCT")
    return list(session.scalars(select(Study.study_instance_uid).where(
        Study.id.in_(with_pet), Study.id.in_(with_contours))))


def has_contours_on_frame(session: Session, study_instance_uid: str, frame_of_reference_uid: str) -> bool:
    """Whether the study holds an RTSTRUCT on ``frame_of_reference_uid`` (the PET rule's cheap test per slice)."""
    if not frame_of_reference_uid:
        return False
    on_frame = or_(Instance.frame_of_reference_uid == frame_of_reference_uid, Instance.id.in_(
        select(ObjectReference.instance_pk).where(ObjectReference.referenced_uid == frame_of_reference_uid,
                                                  ObjectReference.relation == Relation.FRAME_OF_REFERENCE)))
    return session.scalar(select(Instance.id).join(Instance.series).join(Series.study).where(
        Study.study_instance_uid == study_instance_uid, Series.modality == "RTSTRUCT", on_frame).limit(1)) is not None


@dataclass(frozen=True, slots=True)
class PetStatistics:
    """What the pet_statistics job did with one contoured PET series: ``status`` and why."""

    contoured: ContouredPet
    status: str  # "measured", "cached", "incomplete" (slices still arriving) or "not measured"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {**self.contoured.to_dict(), "status": self.status, "detail": self.detail}


def expected_slice_count(pet_slices: Sequence[Dataset]) -> int | None:
    """Instances a complete PET series has: NumberOfSlices × NumberOfTimeSlots (None when not stated)."""
    first = pet_slices[0]
    try:
        slices = int(first.get("NumberOfSlices") or 0)
        time_slots = int(first.get("NumberOfTimeSlots") or 1)
    except (TypeError, ValueError):
        return None
    return slices * max(time_slots, 1) if slices > 0 else None


def analyse_contoured_pet(archive: Archive, contoured: ContouredPet, *,
                          suv_type: SuvType = SuvType.BW) -> PetStatistics:
    """SUV statistics of a PET series in its contours, stored as the patient's time point unless cached.

    A series whose slices are still arriving (fewer than NumberOfSlices) is left for the job queued
    by its last slice. ROIs of type GTV are the lesions and "Liver" the reference, as in
    :func:`measure_time_point`; a structure set without lesions, or a series SUV cannot be computed
    for, is reported as not measured, with the reason.
    """
    pet_slices = archive.read_series(contoured.pet_series_uid)
    expected = expected_slice_count(pet_slices)
    if expected is not None and len(pet_slices) < expected:
        return PetStatistics(contoured, "incomplete", f"{len(pet_slices)} of {expected} slices stored")
    rtstruct = archive.read_instance(contoured.structure_set_uid)
    try:
        measured = measure_time_point(pet_slices, rtstruct, suv_type=suv_type)
    except (OncopacsError, RTError, FusionError) as exc:
        return PetStatistics(contoured, "not measured", str(exc))
    with archive.index.reading() as session:
        if find_result(session, PET_TIMEPOINT, compute_time_point_key(measured)) is not None:
            return PetStatistics(contoured, "cached", "already measured")
        order = 1 + _earlier_time_points(session, measured.image.patient_id, measured.time_point.date)
    store_time_point(archive, measured, order=order)
    lesions = ", ".join(s.name for s in measured.lesions)
    return PetStatistics(contoured, "measured", f"{len(measured.lesions)} lesion(s): {lesions}")


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
