"""A patient's treatment-response timeline: PET time points with PERCIST against baseline, and the RT course.

The dashboard (:mod:`dashboards.response`) and the PET response and tumour-board reports read it here, so a
page and its PDF show the same numbers.

- **Time points** are the stored ``pet_timepoint`` results (:mod:`oncopacs.analysis.pet`), one per date
  (SUVbw preferred when a date was measured with several SUV types), oldest first; the first is the baseline.
  A time point without a label (one analysed on arrival) is called "baseline", "follow-up 1", ... in order.
  Per time point, over its lesions (ROIs of type GTV): the hottest lesion's SUVmax, SUVpeak and SULpeak
  (g/mL), summed MTV41 (cc), TLG41 (g) and contoured lesion volume (cc).
- **Change from baseline** (%) of the hottest SUVpeak and SULpeak: ``(value - baseline) / baseline x 100``,
  the comparison PERCIST 1.0 makes (the hottest lesion at each time point, not necessarily the same one).
- **Liver reference**: the time point's liver SULmean and SD (g/mL) from its "Liver" ROI, and the PERCIST 1.0
  measurability threshold ``1.5 x SULmean + 2 x SD`` (a baseline lesion is measurable at or above it).
- **PERCIST 1.0** category of each follow-up: its stored ``pet_response`` result (with the reasons and
  notes given there), else the categories stored with the time point, else :data:`NOT_ASSESSED`.
- **RT course**: :func:`oncopacs.analysis.course.read_courses`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from oncopacs.analysis.course import CoursePlan, read_courses
from oncopacs.analysis.pet import PET_RESPONSE, PET_TIMEPOINT, read_response_category
from oncopacs.analysis.results import StoredResult, find_results
from oncopacs.archive.ingest import Archive
from oncopacs.index.query import find_patient
from rt.course import parse_da

BASELINE = "baseline"
NOT_ASSESSED = "not assessed"
PERCIST = "PERCIST 1.0"
#: PERCIST 1.0 measurability: a lesion's SULpeak at or above 1.5 x liver SULmean + 2 x liver SD (g/mL).
LIVER_MEAN_FACTOR, LIVER_SD_FACTOR = 1.5, 2.0


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One PET time point (SUV and SUL in g/mL, volumes in cc, TLG in g, changes in %).

    ``category`` is :data:`BASELINE` for the first, else the PERCIST 1.0 category or :data:`NOT_ASSESSED`;
    ``basis`` lists the reasons and notes of the stored assessment (empty when there is none).
    """

    day: date
    label: str
    study_uid: str
    suv_max: float | None
    suv_peak: float | None
    sul_peak: float | None
    mtv_cc: float | None
    tlg_g: float | None
    gtv_cc: float | None
    liver_sul_mean: float | None
    liver_sul_sd: float | None
    category: str
    suv_peak_change_pct: float | None = None
    sul_peak_change_pct: float | None = None
    basis: tuple[str, ...] = ()

    @property
    def measurability_threshold(self) -> float | None:
        """PERCIST 1.0 measurability threshold, SUL g/mL (None without a liver reference)."""
        if self.liver_sul_mean is None:
            return None
        return LIVER_MEAN_FACTOR * self.liver_sul_mean + LIVER_SD_FACTOR * (self.liver_sul_sd or 0.0)

    @property
    def is_follow_up(self) -> bool:
        return self.category != BASELINE

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "label": self.label, "study_uid": self.study_uid,
                "SUVmax": self.suv_max, "SUVpeak": self.suv_peak, "SULpeak": self.sul_peak,
                "SUVpeak_change_percent": self.suv_peak_change_pct, "SULpeak_change_percent": self.sul_peak_change_pct,
                "MTV_cc": self.mtv_cc, "TLG": self.tlg_g, "GTV_cc": self.gtv_cc,
                "liver_SULmean": self.liver_sul_mean, "liver_SULsd": self.liver_sul_sd,
                "measurability_threshold": self.measurability_threshold, "category": self.category,
                "basis": list(self.basis)}


@dataclass(frozen=True, slots=True)
class PatientTimeline:
    """What the response page shows for one patient: the time points (oldest first) and the RT course."""

    patient_id: str
    patient_name: str  # DICOM PN
    points: tuple[TimelinePoint, ...]
    plans: tuple[CoursePlan, ...]

    @property
    def study_uids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([p.study_uid for p in self.points] + [p.study_instance_uid for p in self.plans]))

    @property
    def latest_assessed(self) -> TimelinePoint | None:
        """The newest follow-up with a PERCIST category (None when none was assessed)."""
        return next((p for p in reversed(self.points) if p.is_follow_up and p.category != NOT_ASSESSED), None)

    @property
    def baseline(self) -> TimelinePoint | None:
        return self.points[0] if self.points else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _total(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _hottest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def compute_change_percent(baseline: float | None, value: float | None) -> float | None:
    """``(value - baseline) / baseline x 100``; None when either is unknown or the baseline is not positive."""
    if baseline is None or value is None or baseline <= 0:
        return None
    return (value - baseline) / baseline * 100.0


def summarize_time_point(result: StoredResult, category: str, basis: Sequence[str] = ()) -> TimelinePoint | None:
    """The timeline point of one ``pet_timepoint`` result (None when its document is not one)."""
    data = result.document
    if not isinstance(data, dict) or not isinstance(data.get("time_point"), dict):
        return None
    time_point = data["time_point"]
    day = parse_da(result.time_point) or parse_da(str(time_point.get("date") or "").replace("-", ""))
    if day is None:
        return None
    lesions = [lesion for lesion in time_point.get("lesions", []) if isinstance(lesion, dict)]
    names = {lesion.get("name") for lesion in lesions}
    rois = [r for r in data.get("rois", []) if isinstance(r, dict) and r.get("name") in names]
    return TimelinePoint(
        day=day, label=str(time_point.get("label") or ""), study_uid=result.study_instance_uid,
        suv_max=_hottest([_number(r.get("SUVmax")) for r in rois]),
        suv_peak=_hottest([_number(r.get("SUVpeak")) for r in rois]),
        sul_peak=_hottest([_number(r.get("SULpeak")) for r in rois]),
        mtv_cc=_total([_number(r.get("MTV_cc")) for r in rois]),
        tlg_g=_total([_number(r.get("TLG")) for r in rois]),
        gtv_cc=_total([_number(lesion.get("volume_cc")) for lesion in lesions]),
        liver_sul_mean=_number(time_point.get("liver_sul_mean")), liver_sul_sd=_number(time_point.get("liver_sul_sd")),
        category=category, basis=tuple(basis),
    )


def _assessment_basis(document: Any) -> tuple[str, ...]:
    """The PERCIST reasons and notes of a stored ``pet_response`` document."""
    percist = document.get("percist") if isinstance(document, dict) else None
    if not isinstance(percist, dict):
        return ()
    return tuple(str(t) for key in ("reasons", "notes") for t in percist.get(key) or () if str(t).strip())


def build_timeline(timepoints: Sequence[StoredResult], responses: Sequence[StoredResult]) -> tuple[TimelinePoint, ...]:
    """Time points oldest first (one per date, SUVbw preferred), with PERCIST and change from baseline."""
    by_date: dict[str, StoredResult] = {}
    for result in timepoints:
        kept = by_date.get(result.time_point)
        if kept is None or (isinstance(result.document, dict) and result.document.get("suv_type") == "bw"):
            by_date[result.time_point] = result
    assessed = {r.time_point: r.document for r in responses}
    points: list[TimelinePoint] = []
    for stamp in sorted(by_date):
        result = by_date[stamp]
        document = assessed.get(stamp)
        stored = result.document.get("categories", {}) if isinstance(result.document, dict) else {}
        category = (BASELINE if not points
                    else read_response_category(document).get("category") or str(stored.get(PERCIST, ""))
                    or NOT_ASSESSED)
        point = summarize_time_point(result, category, _assessment_basis(document) if points else ())
        if point is not None:
            points.append(replace(point, label=point.label or (BASELINE if not points else f"follow-up {len(points)}")))
    if not points:
        return ()
    base = points[0]
    return tuple(_with_changes(p, base) for p in points)


def _with_changes(point: TimelinePoint, baseline: TimelinePoint) -> TimelinePoint:
    return replace(point, suv_peak_change_pct=compute_change_percent(baseline.suv_peak, point.suv_peak),
                   sul_peak_change_pct=compute_change_percent(baseline.sul_peak, point.sul_peak))


def read_patient_timeline(archive: Archive, patient_id: str) -> PatientTimeline | None:
    """The timeline and RT course of ``patient_id``; None when the archive has no such patient."""
    with archive.index.reading() as session:
        patient = find_patient(session, patient_id)
        if patient is None:
            return None
        points = build_timeline(find_results(session, PET_TIMEPOINT, patient_id=patient_id),
                                find_results(session, PET_RESPONSE, patient_id=patient_id))
        plans = read_courses(archive, session, patient_id).get(patient_id, ())
    return PatientTimeline(patient_id, patient.patient_name, points, plans)


__all__ = ["BASELINE", "NOT_ASSESSED", "PatientTimeline", "TimelinePoint", "build_timeline",
           "compute_change_percent", "read_patient_timeline", "summarize_time_point"]
