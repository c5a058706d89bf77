"""Comparing two dose distributions (plan A vs plan B) on one structure set.

For each ROI both DVHs are computed with :func:`rt.dvh.compute_roi_dvh` and each TG-263 metric
is evaluated on both; ``delta = b - a`` in the metric's unit. Both doses (and the structure set)
must share the frame of reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rt.dose import DoseGrid
from rt.dvh import DVH, METRIC_PATTERN, compute_metric, compute_roi_dvh
from rt.errors import GeometryError, MetricError, RTError
from rt.structures import StructureSet


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """One metric of one ROI in both plans; values in ``unit`` (None with ``error`` when not computable)."""

    roi_name: str
    metric: str
    unit: str
    value_a: float | None
    value_b: float | None
    error: str = ""

    @property
    def delta(self) -> float | None:
        """value_b - value_a, in ``unit``."""
        if self.value_a is None or self.value_b is None:
            return None
        return self.value_b - self.value_a

    def to_dict(self) -> dict[str, Any]:
        return {
            "roi_name": self.roi_name,
            "metric": self.metric,
            "unit": self.unit,
            "a": self.value_a,
            "b": self.value_b,
            "delta": self.delta,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ROIComparison:
    """Both DVHs of one ROI (None with ``error`` when the ROI could not be evaluated) and its metrics."""

    roi_name: str
    dvh_a: DVH | None = field(repr=False)
    dvh_b: DVH | None = field(repr=False)
    metrics: tuple[MetricComparison, ...] = ()
    error: str = ""

    def compute_dvh_arrays(self) -> dict[str, npt.NDArray[np.float64]]:
        """Cumulative DVHs on a common dose axis: dose_gy and volume_{a,b}_{cc,percent}."""
        if self.dvh_a is None or self.dvh_b is None:
            return {}
        a, b = self.dvh_a, self.dvh_b
        if a.bin_width_gy != b.bin_width_gy:
            raise RTError(f"ROI {self.roi_name!r}: DVH bin widths differ ({a.bin_width_gy}, {b.bin_width_gy})")
        n = max(a.cumulative_volume_cc.size, b.cumulative_volume_cc.size)
        va = np.zeros(n)
        vb = np.zeros(n)
        va[: a.cumulative_volume_cc.size] = a.cumulative_volume_cc
        vb[: b.cumulative_volume_cc.size] = b.cumulative_volume_cc
        return {
            "dose_gy": np.arange(n, dtype=np.float64) * a.bin_width_gy,
            "volume_a_cc": va,
            "volume_b_cc": vb,
            "volume_a_percent": 100.0 * va / a.volume_cc,
            "volume_b_percent": 100.0 * vb / b.volume_cc,
        }

    def to_dict(self) -> dict[str, Any]:
        arrays = self.compute_dvh_arrays()
        summary = {}
        for label, dvh in (("a", self.dvh_a), ("b", self.dvh_b)):
            if dvh is not None:
                summary[label] = {
                    "volume_cc": dvh.volume_cc,
                    "uncovered_volume_cc": dvh.uncovered_volume_cc,
                    "min_gy": dvh.min_gy,
                    "mean_gy": dvh.mean_gy,
                    "max_gy": dvh.max_gy,
                }
        return {
            "roi_name": self.roi_name,
            "error": self.error,
            "metrics": [m.to_dict() for m in self.metrics],
            "summary": summary,
            "dvh": {k: v.tolist() for k, v in arrays.items()},
        }


@dataclass(frozen=True, slots=True)
class PlanComparison:
    """Per-ROI, per-metric comparison of dose A and dose B (Gy; volumes cc or %)."""

    frame_of_reference_uid: str
    prescription_gy: float | None
    rois: tuple[ROIComparison, ...]
    label_a: str = "A"
    label_b: str = "B"

    @property
    def metrics(self) -> tuple[MetricComparison, ...]:
        """All metric comparisons, ROI by ROI."""
        return tuple(m for r in self.rois for m in r.metrics)

    def roi(self, name: str) -> ROIComparison:
        for r in self.rois:
            if r.roi_name == name or r.roi_name.lower() == name.lower():
                return r
        raise KeyError(f"no ROI {name!r} in the comparison")

    def get(self, roi_name: str, metric: str) -> MetricComparison:
        """The comparison of ``metric`` for ``roi_name``; KeyError if absent."""
        for m in self.roi(roi_name).metrics:
            if m.metric == metric:
                return m
        raise KeyError(f"no metric {metric!r} for ROI {roi_name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "prescription_gy": self.prescription_gy,
            "label_a": self.label_a,
            "label_b": self.label_b,
            "rois": [r.to_dict() for r in self.rois],
        }


def _unit_of(metric: str) -> str:
    return metric[metric.rindex("[") + 1 : -1] if "[" in metric and metric.endswith("]") else ""


def _metric_or_error(dvh: DVH, metric: str, prescription_gy: float | None) -> tuple[float | None, str]:
    try:
        return compute_metric(dvh, metric, prescription_gy), ""
    except MetricError as exc:
        return None, str(exc)


def compare_plans(
    structure_set: StructureSet,
    dose_a: DoseGrid,
    dose_b: DoseGrid,
    roi_names: Sequence[str],
    metrics: Sequence[str],
    prescription_gy: float | None = None,
    *,
    bin_width_gy: float = 0.01,
    label_a: str = "A",
    label_b: str = "B",
) -> PlanComparison:
    """Compare ``metrics`` (TG-263, e.g. ``Mean[Gy]``, ``D95%[Gy]``) of ``roi_names`` between two doses.

    Raises :class:`GeometryError` when the doses' frames of reference differ (doses without one
    are accepted) and :class:`MetricError` for a malformed metric name. A ROI that cannot be
    evaluated (absent, no contour, outside a dose grid) is kept with its ``error``; a metric
    that cannot be evaluated on a DVH (e.g. D2cc of a 1 cc ROI) has value None and an error.
    """
    for_a, for_b = dose_a.frame_of_reference_uid, dose_b.frame_of_reference_uid
    if for_a and for_b and for_a != for_b:
        raise GeometryError(f"dose A frame of reference {for_a} differs from dose B's {for_b}; register them first")
    for metric in metrics:  # malformed names fail early, before any DVH is computed
        if not isinstance(metric, str) or METRIC_PATTERN.match(metric.strip()) is None:
            raise MetricError(f"malformed DVH metric {metric!r}")
    results = []
    for roi_name in roi_names:
        try:
            roi = structure_set.roi(roi_name)
        except KeyError as exc:
            results.append(ROIComparison(roi_name, None, None, (), error=str(exc.args[0])))
            continue
        roi_for = roi.frame_of_reference_uid or structure_set.frame_of_reference_uid
        for label, dose_for in (("A", for_a), ("B", for_b)):
            if roi_for and dose_for and roi_for != dose_for:
                raise GeometryError(
                    f"ROI {roi.name!r} frame of reference {roi_for} differs from dose {label}'s {dose_for}"
                )
        try:
            dvh_a = compute_roi_dvh(structure_set, roi.name, dose_a, bin_width_gy=bin_width_gy)
            dvh_b = compute_roi_dvh(structure_set, roi.name, dose_b, bin_width_gy=bin_width_gy)
        except RTError as exc:  # no contour, or outside a dose grid
            results.append(ROIComparison(roi.name, None, None, (), error=str(exc)))
            continue
        rows = []
        for metric in metrics:
            value_a, error_a = _metric_or_error(dvh_a, metric, prescription_gy)
            value_b, error_b = _metric_or_error(dvh_b, metric, prescription_gy)
            rows.append(
                MetricComparison(dvh_a.roi_name, metric, _unit_of(metric), value_a, value_b, error_a or error_b)
            )
        results.append(ROIComparison(dvh_a.roi_name, dvh_a, dvh_b, tuple(rows)))
    return PlanComparison(
        frame_of_reference_uid=for_a or for_b,
        prescription_gy=prescription_gy,
        rois=tuple(results),
        label_a=label_a,
        label_b=label_b,
    )
