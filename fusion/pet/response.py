"""Treatment response over time: PERCIST 1.0, EORTC 1999 and RECIST-style CT changes.

Thresholds (``>=`` / ``>`` exactly as the criteria state; comparisons allow 1e-9 of float noise):

- **PERCIST 1.0** (Wahl 2009), from the SULpeak of the hottest lesion on each scan (not necessarily
  the same lesion), relative to baseline:
  PMD: a new FDG-avid lesion, or SULpeak up by > 30 % **and** > 0.8 SUL, or total TLG up by > 75 %;
  CMR: no lesion uptake left, or the hottest SULpeak <= the follow-up liver SULmean;
  PMR: SULpeak down by >= 30 % **and** >= 0.8 SUL; SMD: none of these. Checked in that order.
  Measurable at baseline: SULpeak >= 1.5 x liver SULmean + 2 SD. Comparability (flagged, not fatal):
  liver SULmean within 20 % and 0.3 SUL, uptake times within 15 min.
- **EORTC 1999** (Young 1999), from the hottest lesion's SUVmax: PMD: new lesions, SUV up by > 25 %, or
  the longest lesion diameter up by >= 20 %; CMR: no uptake left or SUVmax <= the reference (normal tissue)
  SUVmean; PMR: SUV down by >= 15 % after one cycle, > 25 % after more; SMD otherwise.
- **RECIST-style CT** (RECIST 1.1 rules on contoured lesions), from the sum of longest axial diameters
  (SLD) of the baseline's lesions: CR: SLD 0 and no new lesion; PD: new lesion, or SLD >= 20 % **and**
  >= 5 mm over the nadir (smallest earlier SLD); PR: SLD down >= 30 % from baseline; SD otherwise.
  Volumes and diameters per lesion are reported as changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from itertools import pairwise
from typing import Any

import numpy as np

from fusion.pet.errors import ResponseInputError
from rt.structures import ROI

_EPS = 1e-9
PERCIST_PERCENT = 30.0
PERCIST_SUL = 0.8
PERCIST_TLG_PERCENT = 75.0
EORTC_PMD_PERCENT = 25.0
EORTC_PMR_ONE_CYCLE_PERCENT = 15.0
EORTC_PMR_LATER_PERCENT = 25.0
EORTC_EXTENT_PERCENT = 20.0
RECIST_PR_PERCENT = 30.0
RECIST_PD_PERCENT = 20.0
RECIST_PD_MM = 5.0
LIVER_COMPARABLE_PERCENT = 20.0
LIVER_COMPARABLE_SUL = 0.3
UPTAKE_COMPARABLE_S = 15 * 60.0


def _at_least(value: float, threshold: float) -> bool:
    return value >= threshold - _EPS


def _more_than(value: float, threshold: float) -> bool:
    return value > threshold + _EPS


class PercistCategory(str, Enum):
    CMR = "CMR"
    PMR = "PMR"
    SMD = "SMD"
    PMD = "PMD"


class EortcCategory(str, Enum):
    CMR = "CMR"
    PMR = "PMR"
    SMD = "SMD"
    PMD = "PMD"


class RecistCategory(str, Enum):
    CR = "CR"
    PR = "PR"
    SD = "SD"
    PD = "PD"


@dataclass(frozen=True, slots=True)
class LesionMeasurement:
    """One lesion at one time point: SUL/SUV in g/mL, TLG g, volumes cc, diameter mm (None when not measured)."""

    name: str
    sul_peak: float | None = None
    suv_max: float | None = None
    suv_peak: float | None = None
    tlg: float | None = None
    mtv_cc: float | None = None
    volume_cc: float | None = None
    longest_diameter_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "SULpeak": self.sul_peak, "SUVmax": self.suv_max, "SUVpeak": self.suv_peak,
                "TLG": self.tlg, "MTV_cc": self.mtv_cc, "volume_cc": self.volume_cc,
                "longest_diameter_mm": self.longest_diameter_mm}


@dataclass(frozen=True, slots=True)
class TimePoint:
    """A patient's scan: its date, lesions, reference tissue (liver SUL / SUV in g/mL) and uptake time (s)."""

    date: date
    lesions: tuple[LesionMeasurement, ...] = ()
    label: str = ""
    liver_sul_mean: float | None = None
    liver_sul_sd: float | None = None
    reference_suv_mean: float | None = None
    uptake_s: float | None = None
    new_lesions: bool = False
    study_instance_uid: str = ""

    def _values(self, attribute: str) -> list[float]:
        return [getattr(lesion, attribute) for lesion in self.lesions if getattr(lesion, attribute) is not None]

    @property
    def hottest_sul_peak(self) -> float | None:
        """SULpeak of the hottest lesion, g/mL (None when no lesion has one)."""
        values = self._values("sul_peak")
        return max(values) if values else None

    @property
    def hottest_suv_max(self) -> float | None:
        values = self._values("suv_max")
        return max(values) if values else None

    @property
    def total_tlg(self) -> float | None:
        values = self._values("tlg")
        return sum(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "label": self.label,
                "lesions": [lesion.to_dict() for lesion in self.lesions],
                "liver_sul_mean": self.liver_sul_mean, "liver_sul_sd": self.liver_sul_sd,
                "reference_suv_mean": self.reference_suv_mean, "uptake_s": self.uptake_s,
                "new_lesions": self.new_lesions, "study_instance_uid": self.study_instance_uid}


def order_time_points(time_points: Sequence[TimePoint]) -> tuple[TimePoint, ...]:
    """The time points sorted by date; two on the same date are an error (which one is later?)."""
    ordered = tuple(sorted(time_points, key=lambda t: t.date))
    for a, b in pairwise(ordered):
        if a.date == b.date:
            raise ResponseInputError(f"two time points on {a.date.isoformat()} ({a.label!r}, {b.label!r})")
    return ordered


def _percent(baseline: float, followup: float) -> float:
    if baseline == 0:
        return float("inf") if followup > 0 else 0.0
    return (followup - baseline) / baseline * 100.0


@dataclass(frozen=True, slots=True)
class PercistResult:
    """PERCIST 1.0 category of a follow-up against baseline, with the numbers it rests on (SUL g/mL)."""

    category: PercistCategory
    baseline_sul_peak: float
    followup_sul_peak: float | None
    change_percent: float | None
    change_sul: float | None
    tlg_change_percent: float | None
    measurable_at_baseline: bool | None
    measurability_threshold: float | None
    comparable: bool
    reasons: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"criteria": "PERCIST 1.0", "category": self.category.value,
                "baseline_SULpeak": self.baseline_sul_peak, "followup_SULpeak": self.followup_sul_peak,
                "SULpeak_change_percent": self.change_percent, "SULpeak_change": self.change_sul,
                "TLG_change_percent": self.tlg_change_percent, "measurable_at_baseline": self.measurable_at_baseline,
                "measurability_threshold": self.measurability_threshold, "comparable": self.comparable,
                "reasons": list(self.reasons), "notes": list(self.notes)}


def _comparability(baseline: TimePoint, followup: TimePoint) -> tuple[bool, list[str]]:
    """(comparable, notes): liver SULmean within 20 % and 0.3 SUL, uptake times within 15 min."""
    comparable, notes = True, []
    if baseline.liver_sul_mean is not None and followup.liver_sul_mean is not None:
        delta = followup.liver_sul_mean - baseline.liver_sul_mean
        percent = _percent(baseline.liver_sul_mean, followup.liver_sul_mean)
        if _more_than(abs(delta), LIVER_COMPARABLE_SUL) or _more_than(abs(percent), LIVER_COMPARABLE_PERCENT):
            comparable = False
            notes.append(f"liver SULmean changed by {delta:+.2f} ({percent:+.0f} %): scans not comparable "
                         "(limit 20 % and 0.3 SUL)")
    else:
        notes.append("liver SULmean not given: comparability and CMR against liver not checked")
    if (baseline.uptake_s is not None and followup.uptake_s is not None
            and _more_than(abs(followup.uptake_s - baseline.uptake_s), UPTAKE_COMPARABLE_S)):
        comparable = False
        notes.append(f"uptake times differ by {abs(followup.uptake_s - baseline.uptake_s) / 60:.0f} min (limit 15)")
    return comparable, notes


def assess_percist(baseline: TimePoint, followup: TimePoint) -> PercistResult:
    """PERCIST 1.0 category of ``followup`` against ``baseline`` (module docstring)."""
    b = baseline.hottest_sul_peak
    if b is None:
        raise ResponseInputError("PERCIST needs a lesion SULpeak at baseline")
    f = followup.hottest_sul_peak
    comparable, notes = _comparability(baseline, followup)
    threshold = measurable = None
    if baseline.liver_sul_mean is not None:
        threshold = 1.5 * baseline.liver_sul_mean + 2.0 * (baseline.liver_sul_sd or 0.0)
        measurable = _at_least(b, threshold)
        if not measurable:
            notes.append(f"baseline SULpeak {b:.2f} is below the measurability threshold {threshold:.2f}")
    change = None if f is None else f - b
    percent = None if f is None else _percent(b, f)
    tlg_b, tlg_f = baseline.total_tlg, followup.total_tlg
    tlg_percent = _percent(tlg_b, tlg_f) if tlg_b is not None and tlg_f is not None else None
    reasons = []
    if followup.new_lesions:
        reasons.append("new FDG-avid lesion")
    if (percent is not None and change is not None and _more_than(percent, PERCIST_PERCENT)
            and _more_than(change, PERCIST_SUL)):
        reasons.append(f"SULpeak +{percent:.1f} % and +{change:.2f} SUL")
    if tlg_percent is not None and _more_than(tlg_percent, PERCIST_TLG_PERCENT):
        reasons.append(f"TLG +{tlg_percent:.1f} %")
    if reasons:
        category = PercistCategory.PMD
    elif f is None:
        category, reasons = PercistCategory.CMR, ["no lesion uptake left"]
    elif followup.liver_sul_mean is not None and f <= followup.liver_sul_mean + _EPS:
        category, reasons = PercistCategory.CMR, [f"SULpeak {f:.2f} <= liver SULmean {followup.liver_sul_mean:.2f}"]
    elif (percent is not None and change is not None and _at_least(-percent, PERCIST_PERCENT)
          and _at_least(-change, PERCIST_SUL)):
        category, reasons = PercistCategory.PMR, [f"SULpeak {percent:.1f} % and {change:.2f} SUL"]
    else:
        category = PercistCategory.SMD
    return PercistResult(category, b, f, percent, change, tlg_percent, measurable, threshold, comparable,
                         tuple(reasons), tuple(notes))


@dataclass(frozen=True, slots=True)
class EortcResult:
    """EORTC 1999 category from the hottest lesion's SUVmax (g/mL) and extent."""

    category: EortcCategory
    baseline_suv_max: float
    followup_suv_max: float | None
    change_percent: float | None
    extent_change_percent: float | None
    cycles: int
    reasons: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"criteria": "EORTC 1999", "category": self.category.value, "baseline_SUVmax": self.baseline_suv_max,
                "followup_SUVmax": self.followup_suv_max, "SUVmax_change_percent": self.change_percent,
                "extent_change_percent": self.extent_change_percent, "cycles": self.cycles,
                "reasons": list(self.reasons)}


def _longest(time_point: TimePoint) -> float | None:
    values = time_point._values("longest_diameter_mm")
    return max(values) if values else None


def assess_eortc(baseline: TimePoint, followup: TimePoint, *, cycles: int = 1) -> EortcResult:
    """EORTC 1999 category of ``followup`` against ``baseline`` after ``cycles`` treatment cycles (>= 1)."""
    if cycles < 1:
        raise ResponseInputError("EORTC needs the number of treatment cycles (>= 1)")
    b = baseline.hottest_suv_max
    if b is None:
        raise ResponseInputError("EORTC needs a lesion SUVmax at baseline")
    f = followup.hottest_suv_max
    percent = None if f is None else _percent(b, f)
    lb, lf = _longest(baseline), _longest(followup)
    extent = _percent(lb, lf) if lb and lf is not None else None
    reasons = []
    if followup.new_lesions:
        reasons.append("new lesion")
    if percent is not None and _more_than(percent, EORTC_PMD_PERCENT):
        reasons.append(f"SUVmax +{percent:.1f} %")
    if extent is not None and _at_least(extent, EORTC_EXTENT_PERCENT):
        reasons.append(f"longest dimension +{extent:.1f} %")
    pmr = EORTC_PMR_ONE_CYCLE_PERCENT if cycles == 1 else EORTC_PMR_LATER_PERCENT
    if reasons:
        category = EortcCategory.PMD
    elif f is None:
        category, reasons = EortcCategory.CMR, ["no lesion uptake left"]
    elif followup.reference_suv_mean is not None and f <= followup.reference_suv_mean + _EPS:
        category, reasons = EortcCategory.CMR, [f"SUVmax {f:.2f} <= normal tissue {followup.reference_suv_mean:.2f}"]
    elif percent is not None and (_at_least(-percent, pmr) if cycles == 1 else _more_than(-percent, pmr)):
        category, reasons = EortcCategory.PMR, [f"SUVmax {percent:.1f} % after {cycles} cycle(s)"]
    else:
        category = EortcCategory.SMD
    return EortcResult(category, b, f, percent, extent, cycles, tuple(reasons))


# -- CT ------------------------------------------------------------------------------------------


def compute_longest_axial_diameter_mm(roi: ROI) -> float:
    """RECIST longest diameter of a contoured lesion, mm: the largest in-plane distance between two contour points."""
    longest = 0.0
    for polygons in roi.planes().values():
        points = np.concatenate(polygons)
        if len(points) < 2:
            continue
        diff = points[:, None, :] - points[None, :, :]
        longest = max(longest, float(np.sqrt((diff ** 2).sum(axis=-1)).max()))
    return longest


@dataclass(frozen=True, slots=True)
class LesionChange:
    """Volume (cc) and longest-diameter (mm) change of one lesion between two time points."""

    name: str
    baseline_volume_cc: float | None
    followup_volume_cc: float | None
    volume_change_percent: float | None
    baseline_diameter_mm: float | None
    followup_diameter_mm: float | None
    diameter_change_percent: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "baseline_volume_cc": self.baseline_volume_cc,
                "followup_volume_cc": self.followup_volume_cc, "volume_change_percent": self.volume_change_percent,
                "baseline_longest_diameter_mm": self.baseline_diameter_mm,
                "followup_longest_diameter_mm": self.followup_diameter_mm,
                "longest_diameter_change_percent": self.diameter_change_percent}


def compute_lesion_changes(baseline: TimePoint, followup: TimePoint) -> list[LesionChange]:
    """Per-lesion CT changes, lesions matched by name (a lesion gone at follow-up counts as 0 cc / 0 mm)."""
    after = {lesion.name: lesion for lesion in followup.lesions}
    changes = []
    for lesion in baseline.lesions:
        later = after.get(lesion.name, LesionMeasurement(lesion.name, volume_cc=0.0, longest_diameter_mm=0.0))

        def change(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else _percent(a, b)

        changes.append(LesionChange(lesion.name, lesion.volume_cc, later.volume_cc,
                                    change(lesion.volume_cc, later.volume_cc), lesion.longest_diameter_mm,
                                    later.longest_diameter_mm,
                                    change(lesion.longest_diameter_mm, later.longest_diameter_mm)))
    return changes


@dataclass(frozen=True, slots=True)
class RecistResult:
    """RECIST-style category from the sum of longest diameters (SLD, mm) of the baseline lesions."""

    category: RecistCategory
    baseline_sld_mm: float
    nadir_sld_mm: float
    current_sld_mm: float
    change_from_baseline_percent: float
    change_from_nadir_percent: float
    change_from_nadir_mm: float
    reasons: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"criteria": "RECIST 1.1 (contoured lesions)", "category": self.category.value,
                "baseline_SLD_mm": self.baseline_sld_mm, "nadir_SLD_mm": self.nadir_sld_mm,
                "current_SLD_mm": self.current_sld_mm,
                "change_from_baseline_percent": self.change_from_baseline_percent,
                "change_from_nadir_percent": self.change_from_nadir_percent,
                "change_from_nadir_mm": self.change_from_nadir_mm, "reasons": list(self.reasons)}


def _sld(time_point: TimePoint, targets: Sequence[str]) -> float:
    diameters = {lesion.name: lesion.longest_diameter_mm for lesion in time_point.lesions}
    return float(sum(diameters.get(name) or 0.0 for name in targets))


def assess_recist(time_points: Sequence[TimePoint]) -> RecistResult:
    """Category of the latest time point; the earliest is baseline, the nadir the smallest earlier SLD."""
    ordered = order_time_points(time_points)
    if len(ordered) < 2:
        raise ResponseInputError("RECIST needs a baseline and at least one follow-up")
    baseline, current = ordered[0], ordered[-1]
    targets = [lesion.name for lesion in baseline.lesions if lesion.longest_diameter_mm]
    if not targets:
        raise ResponseInputError("RECIST needs a baseline lesion with a longest diameter")
    history = [_sld(t, targets) for t in ordered]
    base, nadir, now = history[0], min(history[:-1]), history[-1]
    from_nadir_mm = now - nadir
    from_nadir = _percent(nadir, now)
    from_base = _percent(base, now)
    reasons = []
    if current.new_lesions:
        reasons.append("new lesion")
    if _at_least(from_nadir, RECIST_PD_PERCENT) and _at_least(from_nadir_mm, RECIST_PD_MM):
        reasons.append(f"SLD +{from_nadir:.1f} % and +{from_nadir_mm:.1f} mm over the nadir")
    if reasons:
        category = RecistCategory.PD
    elif now <= _EPS:
        category, reasons = RecistCategory.CR, ["all target lesions gone"]
    elif _at_least(-from_base, RECIST_PR_PERCENT):
        category, reasons = RecistCategory.PR, [f"SLD {from_base:.1f} % from baseline"]
    else:
        category = RecistCategory.SD
    return RecistResult(category, base, nadir, now, from_base, from_nadir, from_nadir_mm, tuple(reasons))

