"""Dose-volume histograms and TG-263 DVH metrics.

A :class:`DVH` is built from per-voxel ROI weights (fractional occupancy 0..1), the dose at the
same voxels (Gy) and the voxel volume (cc). Doses are binned in ``bin_width_gy`` bins from 0 Gy:
``differential_volume_cc[k]`` holds the volume with dose in [k w, (k + 1) w) and
``cumulative_volume_cc[k]`` the volume with dose >= k w (exact at the bin edges). Between edges
the cumulative DVH is taken as linear (dose uniform within a bin).

Metric names follow TG-263 (case-sensitive):

- ``Mean[Gy]``, ``Max[Gy]``, ``Min[Gy]`` (also ``[%]`` of the prescription);
- ``D<v>%[Gy]``, ``D<v>cc[Gy]``: minimum dose to the hottest v % / v cc (also ``[%]``);
- ``V<d>Gy[%]``, ``V<d>Gy[cc]``: volume receiving >= d Gy; ``V<d>%[%|cc]`` with d in % of the
  prescription.

Percent volumes are relative to the DVH's ``volume_cc`` (the part of the ROI with dose);
a ROI part outside the dose grid is reported separately as ``uncovered_volume_cc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from rt.dose import DoseGrid, compute_dose_on_grid
from rt.errors import GeometryError, MetricError, OutsideDoseGridError, RTError
from rt.grid import VoxelGrid
from rt.structures import StructureSet, compute_mask

#: A TG-263 DVH metric: Mean|Max|Min[Gy|%], D<v>%|cc[Gy|%], V<d>Gy|%[%|cc] (shared by goals and comparisons).
METRIC_PATTERN = re.compile(
    r"^(?:(?P<stat>Mean|Max|Min)"
    r"|D(?P<dvol>\d+(?:\.\d+)?)(?P<dvol_unit>%|cc)"
    r"|V(?P<vdose>\d+(?:\.\d+)?)(?P<vdose_unit>Gy|%))"
    r"\[(?P<unit>Gy|%|cc)\]$"
)
_METRIC_FORMS = "Mean[Gy], Max[Gy], Min[Gy], D95%[Gy], D2cc[Gy], V20Gy[%], V20Gy[cc], V95%[%] ([%] dose needs a prescription)"


@dataclass(frozen=True, slots=True)
class DVH:
    """Cumulative and differential DVH of one ROI (doses Gy, volumes cc)."""

    roi_name: str
    bin_width_gy: float
    dose_edges_gy: np.ndarray = field(repr=False)  # lower bin edges, k * bin_width_gy
    differential_volume_cc: np.ndarray = field(repr=False)
    cumulative_volume_cc: np.ndarray = field(repr=False)
    volume_cc: float
    min_gy: float
    mean_gy: float
    max_gy: float
    uncovered_volume_cc: float = 0.0

    @property
    def total_volume_cc(self) -> float:
        """ROI volume with and without dose, cc."""
        return self.volume_cc + self.uncovered_volume_cc

    def compute_volume_at_dose_cc(self, dose_gy: float) -> float:
        """Volume receiving >= dose_gy (Gy), cc, linear between bin edges."""
        if dose_gy <= 0.0:
            return self.volume_cc
        return float(np.interp(dose_gy, self.dose_edges_gy, self.cumulative_volume_cc, right=0.0))

    def compute_dose_at_volume_gy(self, volume_cc: float) -> float:
        """Minimum dose (Gy) to the hottest ``volume_cc`` (cc) of the ROI."""
        if volume_cc <= 0.0:
            return self.max_gy
        if volume_cc > self.volume_cc * (1.0 + 1e-9):
            raise MetricError(f"{volume_cc:g} cc exceeds the volume of ROI {self.roi_name!r} ({self.volume_cc:.4g} cc)")
        cumulative = self.cumulative_volume_cc
        # cumulative is non-increasing; find the last edge with V >= volume_cc, then interpolate.
        k = int(np.searchsorted(-cumulative, -volume_cc, side="right")) - 1
        k = max(k, 0)
        if k + 1 >= cumulative.size:
            return float(self.dose_edges_gy[k])
        v_lo, v_hi = cumulative[k], cumulative[k + 1]
        fraction = 0.0 if v_lo == v_hi else (v_lo - volume_cc) / (v_lo - v_hi)
        dose = self.dose_edges_gy[k] + fraction * self.bin_width_gy
        return float(min(max(dose, self.min_gy), self.max_gy))

    def to_dict(self) -> dict:
        return {
            "roi_name": self.roi_name,
            "bin_width_gy": self.bin_width_gy,
            "dose_edges_gy": self.dose_edges_gy.tolist(),
            "differential_volume_cc": self.differential_volume_cc.tolist(),
            "cumulative_volume_cc": self.cumulative_volume_cc.tolist(),
            "volume_cc": self.volume_cc,
            "uncovered_volume_cc": self.uncovered_volume_cc,
            "min_gy": self.min_gy,
            "mean_gy": self.mean_gy,
            "max_gy": self.max_gy,
        }


def compute_dvh(
    roi_mask_weights: np.ndarray,
    dose_on_grid: np.ndarray,
    voxel_volume_cc: float,
    *,
    bin_width_gy: float = 0.01,
    roi_name: str = "",
    uncovered_volume_cc: float = 0.0,
) -> DVH:
    """DVH of voxels with weights (0..1 or bool) and dose (Gy, same shape) of volume voxel_volume_cc (cc).

    Voxels with weight 0 are ignored; a NaN or negative dose under a positive weight is an error
    (use :func:`compute_roi_dvh` to account for the ROI outside the dose grid).
    """
    weights = np.asarray(roi_mask_weights, dtype=np.float64)
    dose = np.asarray(dose_on_grid, dtype=np.float64)
    if weights.shape != dose.shape:
        raise GeometryError(f"ROI weights {weights.shape} and dose {dose.shape} differ in shape")
    if bin_width_gy <= 0.0 or voxel_volume_cc <= 0.0:
        raise ValueError("bin_width_gy and voxel_volume_cc must be positive")
    inside = weights > 0.0
    w, d = weights[inside], dose[inside]
    if w.size == 0:
        raise RTError(f"ROI {roi_name!r} has no volume on the dose grid")
    if not np.all(np.isfinite(d)):
        raise GeometryError(f"ROI {roi_name!r} has voxels without dose (NaN); use compute_roi_dvh")
    if np.any(d < 0.0):
        raise RTError(f"ROI {roi_name!r} has negative doses (min {d.min():.4g} Gy)")
    volumes = w * voxel_volume_cc
    bins = np.floor(d / bin_width_gy + 1e-9).astype(np.int64)
    differential = np.bincount(bins, weights=volumes, minlength=int(bins.max()) + 2)
    cumulative = np.cumsum(differential[::-1])[::-1]
    total = float(volumes.sum())
    return DVH(
        roi_name=roi_name,
        bin_width_gy=float(bin_width_gy),
        dose_edges_gy=np.arange(differential.size, dtype=np.float64) * bin_width_gy,
        differential_volume_cc=differential,
        cumulative_volume_cc=cumulative,
        volume_cc=total,
        min_gy=float(d.min()),
        mean_gy=float(np.dot(volumes, d) / total),
        max_gy=float(d.max()),
        uncovered_volume_cc=float(uncovered_volume_cc),
    )


def _dose_in(unit: str, dose_gy: float, prescription_gy: float | None, metric: str) -> float:
    if unit == "Gy":
        return dose_gy
    if unit == "%":
        return 100.0 * dose_gy / _prescription(prescription_gy, metric)
    raise MetricError(f"{metric!r}: a dose metric is reported in [Gy] or [%], not [{unit}]")


def _prescription(prescription_gy: float | None, metric: str) -> float:
    if prescription_gy is None or prescription_gy <= 0.0:
        raise MetricError(f"{metric!r} is relative to the prescription; pass prescription_gy > 0")
    return prescription_gy


def compute_metric(dvh: DVH, metric: str, prescription_gy: float | None = None) -> float:
    """Evaluate a TG-263 DVH metric such as ``D95%[Gy]`` or ``V20Gy[cc]`` (module docstring)."""
    match = METRIC_PATTERN.match(metric.strip()) if isinstance(metric, str) else None
    if match is None:
        raise MetricError(f"malformed DVH metric {metric!r}; expected forms like {_METRIC_FORMS}")
    unit = match["unit"]
    if match["stat"]:
        value = {"Mean": dvh.mean_gy, "Max": dvh.max_gy, "Min": dvh.min_gy}[match["stat"]]
        return _dose_in(unit, value, prescription_gy, metric)
    if match["dvol"]:
        amount = float(match["dvol"])
        if match["dvol_unit"] == "%":
            if amount > 100.0:
                raise MetricError(f"{metric!r}: volume above 100 %")
            volume_cc = dvh.volume_cc * amount / 100.0
        else:
            volume_cc = amount
        return _dose_in(unit, dvh.compute_dose_at_volume_gy(volume_cc), prescription_gy, metric)
    amount = float(match["vdose"])
    dose_gy = amount if match["vdose_unit"] == "Gy" else amount / 100.0 * _prescription(prescription_gy, metric)
    volume_cc = dvh.compute_volume_at_dose_cc(dose_gy)
    if unit == "cc":
        return volume_cc
    if unit == "%":
        return 100.0 * volume_cc / dvh.volume_cc
    raise MetricError(f"{metric!r}: a volume metric is reported in [%] or [cc], not [{unit}]")


def compute_metrics(dvh: DVH, metrics: list[str] | tuple[str, ...], prescription_gy: float | None = None) -> dict[str, float]:
    """Several metrics at once: {metric name: value}."""
    return {m: compute_metric(dvh, m, prescription_gy) for m in metrics}


def _choose_subdivision(roi_extent_mm: np.ndarray, spacing_mm: tuple[float, float, float], max_voxels: int) -> int:
    """Largest factor n <= 4 whose n^3-times finer grid over the ROI box stays within max_voxels."""
    coarse_voxels = float(np.prod(np.asarray(roi_extent_mm) / np.asarray(spacing_mm) + 3.0))
    return int(max(1, min(4, np.floor(np.cbrt(max_voxels / coarse_voxels)))))


def build_roi_grid(bounds_mm: tuple[np.ndarray, np.ndarray], dose_grid: VoxelGrid, subdivision: int = 1) -> VoxelGrid:
    """A grid covering ``bounds_mm`` whose voxels tile the dose grid's voxels (each split n^3 times).

    With ``subdivision=1`` the voxel centres coincide with the dose voxel centres (no
    interpolation); the grid may extend beyond the dose grid so that uncovered ROI parts show.
    """
    lo, hi = bounds_mm
    n = subdivision
    origin, spacing, shape = [], [], []
    for axis in range(3):
        pitch = dose_grid.spacing_mm[axis] / n
        first_centre = dose_grid.origin_mm[axis] - dose_grid.spacing_mm[axis] / 2.0 + pitch / 2.0
        i0 = int(np.floor((lo[axis] - first_centre) / pitch)) - 1
        i1 = int(np.ceil((hi[axis] - first_centre) / pitch)) + 1
        origin.append(first_centre + i0 * pitch)
        spacing.append(pitch)
        shape.append(i1 - i0 + 1)
    return VoxelGrid(tuple(origin), tuple(spacing), (shape[2], shape[1], shape[0]))  # type: ignore[arg-type]


def compute_roi_dvh(
    structure_set: StructureSet,
    roi_name: str,
    dose: DoseGrid,
    *,
    bin_width_gy: float = 0.01,
    subdivision: int | None = None,
    max_voxels: int = 2_000_000,
    supersampling: int | None = None,
) -> DVH:
    """DVH of one ROI of ``structure_set`` in ``dose`` (Gy, cc).

    The ROI is rasterised with fractional weights (:func:`rt.structures.compute_mask`) on a grid
    that tiles the dose grid's voxels, each split ``subdivision`` times per axis; the dose is
    interpolated trilinearly at the fine voxel centres. By default ``subdivision`` is the
    largest n <= 4 keeping the fine grid over the ROI's box within ``max_voxels`` (small ROIs
    get fine sampling, a whole-body ROI stays tractable), and ``supersampling`` (the mask's
    sub-samples per fine voxel and axis) is ceil(4 / n), so the ROI is always
    sampled at about a quarter of the dose grid's pitch. ROI volume outside the dose grid is
    never dropped silently: it is reported as ``DVH.uncovered_volume_cc``.
    """
    roi = structure_set.roi(roi_name)
    if roi.is_empty:
        raise RTError(f"ROI {roi.name!r} has no closed planar contour")
    roi_for = roi.frame_of_reference_uid or structure_set.frame_of_reference_uid
    if roi_for and dose.frame_of_reference_uid and roi_for != dose.frame_of_reference_uid:
        raise GeometryError(
            f"ROI {roi.name!r} frame of reference {roi_for} differs from the dose's {dose.frame_of_reference_uid}"
        )
    bounds = roi.compute_bounds_mm()
    n = subdivision or _choose_subdivision(bounds[1] - bounds[0], dose.spacing_mm, max_voxels)
    grid = build_roi_grid(bounds, dose.grid, n)
    weights = compute_mask(roi, grid, supersampling=supersampling or int(np.ceil(4 / n)))
    dose_gy = compute_dose_on_grid(dose, grid)
    missing = np.isnan(dose_gy) & (weights > 0.0)
    uncovered_cc = float(weights[missing].sum() * grid.voxel_volume_cc)
    if not np.any((weights > 0.0) & ~missing):
        raise OutsideDoseGridError(roi.name, uncovered_cc)
    weights = np.where(missing, 0.0, weights)
    return compute_dvh(
        weights,
        np.nan_to_num(dose_gy, nan=0.0),
        grid.voxel_volume_cc,
        bin_width_gy=bin_width_gy,
        roi_name=roi.name,
        uncovered_volume_cc=uncovered_cc,
    )
