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
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from rt.dose import DoseGrid
from rt.errors import GeometryError, MetricError, OutsideDoseGridError, RTError
from rt.grid import MM3_PER_CC
from rt.structures import (
    StackIntervals,
    StructureSet,
    compute_plane_thickness_mm,
    compute_slab_bounds_mm,
    compute_stack_intervals,
)

#: A TG-263 DVH metric: Mean|Max|Min[Gy|%], D<v>%|cc[Gy|%], V<d>Gy|%[%|cc] (shared by goals and comparisons).
METRIC_PATTERN = re.compile(
    r"^(?:(?P<stat>Mean|Max|Min)"
    r"|D(?P<dvol>\d+(?:\.\d+)?)(?P<dvol_unit>%|cc)"
    r"|V(?P<vdose>\d+(?:\.\d+)?)(?P<vdose_unit>Gy|%))"
    r"\[(?P<unit>Gy|%|cc)\]$"
)
_METRIC_FORMS = ("Mean[Gy], Max[Gy], Min[Gy], D95%[Gy], D2cc[Gy], V20Gy[%], V20Gy[cc], V95%[%] "
                 "([%] dose needs a prescription)")


@dataclass(frozen=True, slots=True)
class DVH:
    """Cumulative and differential DVH of one ROI (doses Gy, volumes cc)."""

    roi_name: str
    bin_width_gy: float
    dose_edges_gy: npt.NDArray[np.float64] = field(repr=False)  # lower bin edges, k * bin_width_gy
    differential_volume_cc: npt.NDArray[np.float64] = field(repr=False)
    cumulative_volume_cc: npt.NDArray[np.float64] = field(repr=False)
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

    def to_dict(self) -> dict[str, Any]:
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
    roi_mask_weights: npt.NDArray[Any],
    dose_on_grid: npt.NDArray[np.floating[Any]],
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
    histogram = _Histogram(bin_width_gy, float(d.max()))
    histogram.add(d, w * voxel_volume_cc)
    return histogram.to_dvh(roi_name, uncovered_volume_cc)


class _Histogram:
    """Differential DVH accumulated from (dose Gy, volume cc) samples in bins of ``bin_width_gy`` from 0 Gy."""

    def __init__(self, bin_width_gy: float, max_dose_gy: float) -> None:
        self.bin_width_gy = float(bin_width_gy)
        self.size = int(np.floor(max_dose_gy / bin_width_gy + 1e-9)) + 2
        self.differential = np.zeros(self.size)
        self.volume_cc = 0.0
        self.dose_volume = 0.0  # sum of dose x volume, Gy cc
        self.min_gy, self.max_gy = np.inf, -np.inf

    def add(self, dose_gy: npt.NDArray[np.float64], volume_cc: npt.NDArray[np.float64] | float) -> None:
        """Samples of dose (Gy, >= 0) with their volumes (cc; one float for equal volumes)."""
        if dose_gy.size == 0:
            return
        low, high = float(dose_gy.min()), float(dose_gy.max())
        if low < 0.0:
            raise RTError(f"negative dose {low:.4g} Gy in the DVH samples")
        bins = (dose_gy * (1.0 / self.bin_width_gy) + 1e-9).astype(np.int64)  # doses are >= 0: trunc = floor
        if np.ndim(volume_cc) == 0:
            self.differential += np.bincount(bins, minlength=self.size)[: self.size] * float(volume_cc)
            self.volume_cc += float(volume_cc) * dose_gy.size
            self.dose_volume += float(volume_cc) * float(dose_gy.sum())
        else:
            volumes = cast("npt.NDArray[np.float64]", volume_cc)  # not 0-d: an array
            self.differential += np.bincount(bins, weights=volumes, minlength=self.size)[: self.size]
            self.volume_cc += float(volumes.sum())
            self.dose_volume += float((volumes * dose_gy).sum())  # not np.dot: BLAS threads spin on a busy machine
        self.min_gy, self.max_gy = min(self.min_gy, low), max(self.max_gy, high)

    def to_dvh(self, roi_name: str, uncovered_volume_cc: float) -> DVH:
        last = int(np.floor(self.max_gy / self.bin_width_gy + 1e-9))
        differential = self.differential[: last + 2].copy()  # as many bins as the hottest sample needs, plus one
        return DVH(
            roi_name=roi_name,
            bin_width_gy=self.bin_width_gy,
            dose_edges_gy=np.arange(differential.size, dtype=np.float64) * self.bin_width_gy,
            differential_volume_cc=differential,
            cumulative_volume_cc=np.cumsum(differential[::-1])[::-1],
            volume_cc=self.volume_cc,
            min_gy=self.min_gy,
            mean_gy=self.dose_volume / self.volume_cc,
            max_gy=self.max_gy,
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


def compute_metrics(
    dvh: DVH, metrics: list[str] | tuple[str, ...], prescription_gy: float | None = None
) -> dict[str, float]:
    """Several metrics at once: {metric name: value}."""
    return {m: compute_metric(dvh, m, prescription_gy) for m in metrics}


def validate_metric(metric: str) -> str:
    """``metric`` stripped when it is a well-formed TG-263 DVH metric; MetricError naming the forms otherwise."""
    if not isinstance(metric, str) or METRIC_PATTERN.match(metric.strip()) is None:
        raise MetricError(f"malformed DVH metric {metric!r}; expected forms like {_METRIC_FORMS}")
    return metric.strip()


@dataclass(frozen=True, slots=True)
class MetricValues:
    """Metrics of one DVH: the values (unit in each name), and why the others could not be evaluated on it."""

    values: dict[str, float]
    not_evaluable: dict[str, str]  # e.g. {"D2cc[Gy]": "2 cc exceeds the volume of ROI 'node' (0.9 cc)"}


def compute_available_metrics(
    dvh: DVH, metrics: list[str] | tuple[str, ...], prescription_gy: float | None = None
) -> MetricValues:
    """Every well-formed metric that this DVH can answer, and a reason for each it cannot (a 0.9 cc ROI has
    no D2cc; a % dose needs a prescription). A malformed name is still a MetricError: that is the caller's."""
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for metric in (validate_metric(m) for m in metrics):
        try:
            values[metric] = compute_metric(dvh, metric, prescription_gy)
        except MetricError as exc:
            reasons[metric] = str(exc)
    return MetricValues(values, reasons)


#: Sub-cells per dose pixel and axis in partial (boundary) pixels, by default.
DEFAULT_SUPERSAMPLING = 4
#: Dose samples (equal-volume quantiles) per whole pixel where the dose varies over it, by default.
DEFAULT_FULL_SAMPLES = 8
#: A ROI whose contours' bounding box (slabs included) is smaller than this, cc, is sampled finer by default:
#: its DVH rests on a few dozen dose pixels, so it gets SMALL_ROI_SUPERSAMPLING x SMALL_ROI_SUPERSAMPLING
#: boundary sub-cells and SMALL_ROI_FULL_SAMPLES samples per whole pixel, at a negligible cost.
SMALL_ROI_BOX_CC = 10.0
SMALL_ROI_SUPERSAMPLING = 12
SMALL_ROI_FULL_SAMPLES = 32
#: ... and is sampled on this many shape-interpolated sections per contour plane
#: (:meth:`rt.structures.ROI.compute_sections`) instead of one slab per plane.
SMALL_ROI_SECTIONS = 4
#: Sub-slabs per contour plane: each plane's slab is sampled at the mid-height of each sub-slab.
Z_SUBSLABS = 1
_NO_VOLUME = "ROI {name!r} encloses no volume: its closed contours have no area (or are too thin to sample)"


def _axis_index(
    position: npt.NDArray[np.float64], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Linear-interpolation (lower, upper, upper weight) at fractional indices, clamped to [0, n - 1]."""
    position = np.clip(position, 0.0, n - 1.0)
    lower = np.minimum(np.floor(position).astype(np.int64), max(n - 2, 0))
    upper = np.minimum(lower + 1, n - 1)
    return lower, upper, position - lower


def _cell_areas_mm2(intervals: StackIntervals, plane_count: int, box: tuple[int, int], x_edge0: float,
                    dx: float, row_height: float, m: int) -> npt.NDArray[np.floating[Any]]:
    """Exact inside area (mm^2) of each box cell of each plane, (planes, rows, columns), from the scanline intervals.

    Each interval adds its exact length to the cells it crosses (m scanlines of height
    ``row_height`` per cell row): its end cells by their partial lengths, the cells between
    through a running sum of +1 / -1 steps along the row.
    """
    nyb, nxb = box
    cell_row = intervals.plane * nyb + intervals.row // m
    fs, fe = (intervals.start - x_edge0) / dx, (intervals.end - x_edge0) / dx  # in cells
    ia = np.clip(np.floor(fs).astype(np.int64), 0, nxb - 1)
    ib = np.clip(np.floor(fe).astype(np.int64), 0, nxb - 1)
    width = nxb + 1  # one spare column per row takes the last step, so every row's steps sum to zero
    size = plane_count * nyb * width
    same = ia == ib
    span = ~same
    r, a, b = cell_row[span] * width, ia[span], ib[span]
    ends = np.bincount(np.concatenate([cell_row * width + ia, r + b]),
                       weights=np.concatenate([np.where(same, fe - fs, ia + 1 - fs), fe[span] - b]), minlength=size)
    steps = np.bincount(np.concatenate([r + a + 1, r + b]),
                        weights=np.concatenate([np.ones(a.size), np.full(b.size, -1.0)]), minlength=size)
    lengths = (ends + np.cumsum(steps)).reshape(plane_count * nyb, width)[:, :nxb]
    return lengths.reshape(plane_count, nyb, nxb) * (dx * row_height)


#: :func:`_reconstruct_at` reconstructs the whole box when at least this fraction of its cells is
#: wanted: a sphere fills 52 % of its box, and gathering its cells is 10 % faster than the box.
_DENSE_FRACTION = 0.7


#: Which margins of a padded box (west, east, north, south) lie beyond the dose grid: none.
_INSIDE_GRID = (False, False, False, False)


def _reconstruct_at(
    padded: npt.NDArray[np.float64],
    plane: npt.NDArray[np.int64],
    row: npt.NDArray[np.int64],
    col: npt.NDArray[np.int64],
    grid_edges: tuple[bool, bool, bool, bool] = _INSIDE_GRID,
) -> tuple[npt.NDArray[np.float64], ...]:
    """Centre dose, slopes along x and y (Gy per pixel; :func:`_limited_slope`) and 3 x 3 min / max at some cells.

    ``padded`` is (planes, rows + 2, columns + 2); cell (plane, row, col) is its inner pixel
    (plane, row + 1, col + 1). A structure that fills its box is reconstructed over the whole
    box (separable 3 x 3 min / max); a sparse one, such as a thin shell, only at its own cells
    (gathered by flat index), so it costs what its cells cost. Both give identical values.
    ``grid_edges`` says which margins (west, east, north, south) lie beyond the dose grid
    (:func:`_grid_edge_slopes`).
    """
    planes, rows, columns = padded.shape[0], padded.shape[1] - 2, padded.shape[2] - 2
    if plane.size >= _DENSE_FRACTION * planes * rows * columns:
        dense = [np.ascontiguousarray(values).reshape(-1) for values in _reconstruct_dense(padded)]
        if plane.size == planes * rows * columns:  # every cell, in C order (np.nonzero's)
            result = tuple(dense)
        else:
            at = (plane * rows + row) * columns + col
            result = tuple(values[at] for values in dense)
        if any(grid_edges):
            _grid_edge_slopes(padded, plane, row, col, result[1], result[2], grid_edges)
        return result
    width = padded.shape[2]
    flat = padded.ravel()
    at = (plane * padded.shape[1] + row + 1) * width + col + 1
    centre = flat[at]
    west, east, north, south = flat[at - 1], flat[at + 1], flat[at - width], flat[at + width]
    lo = np.minimum(np.minimum(west, east), np.minimum(north, south))
    hi = np.maximum(np.maximum(west, east), np.maximum(north, south))
    np.minimum(lo, centre, out=lo)
    np.maximum(hi, centre, out=hi)
    for offset in (-width - 1, -width + 1, width - 1, width + 1):
        corner = flat[at + offset]
        np.minimum(lo, corner, out=lo)
        np.maximum(hi, corner, out=hi)
    gx = _edge_slope(_limited_slope(east - centre, centre - west), west, centre, east)
    gy = _edge_slope(_limited_slope(south - centre, centre - north), north, centre, south)
    if any(grid_edges):
        _grid_edge_slopes(padded, plane, row, col, gx, gy, grid_edges)
    return centre, gx, gy, lo, hi


def _grid_edge_slopes(
    padded: npt.NDArray[np.float64],
    plane: npt.NDArray[np.int64],
    row: npt.NDArray[np.int64],
    col: npt.NDArray[np.int64],
    gx: npt.NDArray[np.float64],
    gy: npt.NDArray[np.float64],
    grid_edges: tuple[bool, bool, bool, bool],
) -> None:
    """Set, in place, the slope across the dose grid's edge of the cells on it to the one-sided inner step.

    A margin beyond the grid repeats the edge pixels (:func:`_take_box`), so the limiter would
    flatten them: the half pixel inside would lose the dose between the two outermost voxel
    centres. With the inner step the dose there is linear, as :func:`rt.dose.compute_dose_on_grid`
    interpolates it; in the half pixel beyond the outermost centre the 3 x 3 clamp holds it
    between that line and the edge value (the edge value where the dose varies only across the
    edge, as compute_dose_on_grid has it). A grid one pixel wide keeps a zero slope.
    """
    rows, columns, width = padded.shape[1] - 2, padded.shape[2] - 2, padded.shape[2]
    flat = padded.ravel()
    west, east, north, south = grid_edges
    for before, after, index, count, step, slopes in ((west, east, col, columns, 1, gx),
                                                      (north, south, row, rows, width, gy)):
        first = (index == 0) if before else np.zeros(index.shape, dtype=bool)
        last = (index == count - 1) if after else np.zeros(index.shape, dtype=bool)
        for on_edge, inward in ((first & ~last, step), (last & ~first, -step)):
            at = np.nonzero(on_edge)[0]
            if at.size:
                centre_at = (plane[at] * (rows + 2) + row[at] + 1) * width + col[at] + 1
                slopes[at] = (flat[centre_at + inward] - flat[centre_at]) * np.sign(inward)
        slopes[first & last] = 0.0


def _reconstruct_dense(padded: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    """:func:`_reconstruct_at` for every inner pixel of ``padded``: (planes, rows, columns) arrays."""
    west, centre_row, east = padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]
    row_lo = np.minimum(np.minimum(west, centre_row), east)
    row_hi = np.maximum(np.maximum(west, centre_row), east)
    lo = np.minimum(np.minimum(row_lo[:, :-2], row_lo[:, 1:-1]), row_lo[:, 2:])
    hi = np.maximum(np.maximum(row_hi[:, :-2], row_hi[:, 1:-1]), row_hi[:, 2:])
    along_x = np.diff(padded[:, 1:-1, :], axis=2)  # (planes, rows, columns + 1): pixel-to-pixel steps
    along_y = np.diff(padded[:, :, 1:-1], axis=1)  # (planes, rows + 1, columns)
    centre = centre_row[:, 1:-1]
    gx = _edge_slope(_limited_slope(along_x[:, :, 1:], along_x[:, :, :-1]), padded[:, 1:-1, :-2], centre,
                     padded[:, 1:-1, 2:])
    gy = _edge_slope(_limited_slope(along_y[:, 1:, :], along_y[:, :-1, :]), padded[:, :-2, 1:-1], centre,
                     padded[:, 2:, 1:-1])
    return centre, gx, gy, lo, hi


def _limited_slope(ahead: npt.NDArray[np.float64], behind: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Monotonised-central slope from the steps to the next and from the previous pixel, Gy per pixel.

    minmod(central, 2 x forward, 2 x backward difference): it keeps a pixel's linear
    reconstruction within its neighbours' values, zero at extrema and beside a kink (a dose
    plateau's edge), the central difference where the dose is smooth.
    """
    abs_ahead, abs_behind = np.abs(ahead), np.abs(behind)  # in-place from here: these arrays are large
    limited = np.minimum(abs_ahead, abs_behind)
    limited *= 2.0
    central = np.add(abs_ahead, abs_behind, out=abs_ahead)
    central *= 0.5
    np.minimum(limited, central, out=limited)
    np.copysign(limited, ahead, out=limited)
    same_sign = np.multiply(ahead, behind, out=abs_behind) > 0.0
    limited *= same_sign
    return limited


def _edge_slope(
    limited: npt.NDArray[np.float64],
    before: npt.NDArray[np.float64],
    centre: npt.NDArray[np.float64],
    after: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """``limited`` except at the edge of the dose support: a dosed pixel beside an undosed one, rising away from it.

    There the dose is max(0, linear) with its kink inside the pixel or at its border, so the
    inner step is the slope (the clamp to the 3 x 3 minimum, 0, then cuts the part beyond the
    edge) instead of the limiter's zero or half slope, which would smear the edge's dose over
    the undosed side.
    """
    edge = np.nonzero((before == 0.0) != (after == 0.0))  # exactly one undosed neighbour: few pixels
    if not edge[0].size:
        return limited
    b, c, a = before[edge], centre[edge], after[edge]
    rising_after = (b == 0.0) & (c > 0.0) & (a > c)
    rising_before = (a == 0.0) & (c > 0.0) & (b > c)
    limited[edge] = np.where(rising_after, a - c, np.where(rising_before, c - b, limited[edge]))
    return limited


def _trapezoid_quantiles(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """Quantiles at (k + 1/2) / n of U(-a, a) + U(-b, b) for each pair (a, b >= 0): shape (len(a), n).

    That sum is the spread of a linear dose a' u + b' v over a pixel (u, v uniform): a
    trapezoid on [-(a + b), a + b] whose ramps are 2 min(a, b) wide. The distribution is
    symmetric, so only the lower half is computed and the upper half mirrors it.
    """
    big, small = np.maximum(a, b)[:, None], np.minimum(a, b)[:, None]
    q = (np.arange((n + 1) // 2) + 0.5) / n  # the lower half's probabilities (<= 1/2)
    ramp = small / (2.0 * np.where(big > 0.0, big, 1.0))  # probability in each ramp
    on_ramp = np.sqrt(8.0 * big * small) * np.sqrt(q) - (big + small)
    on_flat = big * (2.0 * q - 1.0)
    lower = np.where(q < ramp, on_ramp, on_flat)
    return np.concatenate([lower, -lower[:, : n // 2][:, ::-1]], axis=1)


def compute_roi_dvh(
    structure_set: StructureSet,
    roi_name: str,
    dose: DoseGrid,
    *,
    bin_width_gy: float = 0.01,
    supersampling: int | None = None,
    full_samples: int | None = None,
) -> DVH:
    """DVH of one ROI of ``structure_set`` in ``dose`` (Gy, cc).

    Each contour plane stands for its slab (:mod:`rt.structures`); its slab is split into
    :data:`Z_SUBSLABS` sub-slabs, each sampled on its mid-height plane (dose linear between
    frames), and weighted by the plane's effective thickness (the volume between planes by
    Cavalieri's rule with quadratic section areas and extrapolated end caps), so the DVH's
    volume is :meth:`ROI.compute_volume_cc` to the scanline areas' precision. A ROI whose
    bounding box is under :data:`SMALL_ROI_BOX_CC` is instead sampled on
    :data:`SMALL_ROI_SECTIONS` shape-interpolated sections per plane
    (:meth:`ROI.compute_sections`), each on its own height with its own share of the volume.
    In-plane, all planes (or sections) of the ROI are processed together over the dose-grid
    pixels under the ROI's bounding box, the polygons' area in each pixel integrated exactly along x
    on ``supersampling`` (default :data:`DEFAULT_SUPERSAMPLING`; :data:`SMALL_ROI_SUPERSAMPLING` for
    a ROI whose bounding box is under :data:`SMALL_ROI_BOX_CC`) scanlines per pixel row:

    - the dose in each pixel is reconstructed as linear about its centre value with limited
      slopes (:func:`_limited_slope`), clamped to its 3 x 3 neighbours; across the grid's own
      edge, which has no neighbour beyond, with the one-sided inner step (:func:`_grid_edge_slopes`);
    - a pixel wholly inside the polygons adds a point mass where the slopes vanish, else
      ``full_samples`` (default :data:`DEFAULT_FULL_SAMPLES`, or :data:`SMALL_ROI_FULL_SAMPLES`)
      equal-volume quantiles of that linear dose over the pixel;
    - a boundary pixel is split into m x m sub-cells, each with its exact inside area, sampled
      at the centroid of its inside part, so every sample lies in the structure and
      ``Max[Gy]`` is a dose the structure receives.

    Pixels whose neighbourhood has no dose (outside the grid's non-zero support) add their
    volume at 0 Gy without sampling. ROI volume outside the dose grid is never dropped
    silently: it is reported as ``DVH.uncovered_volume_cc``.
    """
    roi = structure_set.roi(roi_name)
    if roi.is_empty:
        raise RTError(f"ROI {roi.name!r} has no closed planar contour")
    roi_for = roi.frame_of_reference_uid or structure_set.frame_of_reference_uid
    if roi_for and dose.frame_of_reference_uid and roi_for != dose.frame_of_reference_uid:
        raise GeometryError(
            f"ROI {roi.name!r} frame of reference {roi_for} differs from the dose's {dose.frame_of_reference_uid}"
        )
    planes = roi.planes()
    polygons = list(planes.values())
    plane_z = np.array(list(planes), dtype=np.float64)
    half = roi.compute_plane_spacing_mm(default_mm=dose.spacing_mm[2]) / 2.0
    lo, hi = roi.compute_bounds_mm()
    box_cc = float(np.prod(hi - lo)) / MM3_PER_CC  # z already spans the end slabs
    small = box_cc < SMALL_ROI_BOX_CC
    m = supersampling or (SMALL_ROI_SUPERSAMPLING if small else DEFAULT_SUPERSAMPLING)
    full_samples = full_samples or (SMALL_ROI_FULL_SAMPLES if small else DEFAULT_FULL_SAMPLES)
    if m < 1:
        raise ValueError("supersampling must be >= 1")
    below, above = compute_slab_bounds_mm(plane_z, half)
    thickness = above - below  # where each plane's dose is sampled
    sections = None
    if small and SMALL_ROI_SECTIONS > 1 and len(polygons) >= 3:  # shape-interpolated sections instead of slabs
        sections = roi.compute_sections(SMALL_ROI_SECTIONS, default_mm=dose.spacing_mm[2])
        if not sections.polygons:  # every plane's area is zero
            raise RTError(_NO_VOLUME.format(name=roi.name))
        polygons, plane_z, below, thickness = (list(sections.polygons), sections.z_mm, sections.below_mm,
                                               sections.thickness_mm)
        points = np.concatenate([p for section in polygons for p in section])
        lo[:2], hi[:2] = np.minimum(lo[:2], points.min(axis=0)), np.maximum(hi[:2], points.max(axis=0))
    nz, ny, nx = dose.grid.shape
    (ox, oy, oz), (dx, dy, dz) = dose.grid.origin_mm, dose.grid.spacing_mm
    # Box of dose-grid pixel cells (may exceed the grid) with one spare cell on each side.
    i0, i1 = int(np.floor((lo[0] - ox) / dx + 0.5)) - 1, int(np.floor((hi[0] - ox) / dx + 0.5)) + 2
    j0, j1 = int(np.floor((lo[1] - oy) / dy + 0.5)) - 1, int(np.floor((hi[1] - oy) / dy + 0.5)) + 2
    row_height = dy / m
    x_edge0, y_edge0 = ox + (i0 - 0.5) * dx, oy + (j0 - 0.5) * dy
    intervals = compute_stack_intervals(polygons, y_edge0 + (np.arange((j1 - j0) * m) + 0.5) * row_height)
    plane_count = len(polygons)
    lengths = np.bincount(intervals.plane, intervals.end - intervals.start, minlength=plane_count)
    # How much volume each plane stands for, from its scanline area (ROI.compute_volume_cc uses exact areas).
    weight_mm = (compute_plane_thickness_mm(plane_z, lengths * row_height, 2.0 * half) if sections is None
                 else sections.weight_mm)
    total_mm3 = float(lengths @ weight_mm) * row_height
    # Covered: planes within the grid's z extent; scanlines and x within its y / x extent.
    z_index = (plane_z - oz) / dz
    z_in = (z_index >= -0.5 - 1e-9) & (z_index <= nz - 0.5 + 1e-9)
    a0, a1, b0, b1 = max(0, -i0), min(i1 - i0, nx - i0), max(0, -j0), min(j1 - j0, ny - j0)
    covered_mm3 = 0.0
    if a0 < a1 and b0 < b1 and z_in.any():
        x_lo, x_hi = x_edge0 + a0 * dx, x_edge0 + a1 * dx
        rows_in = (intervals.row >= b0 * m) & (intervals.row < b1 * m)
        inside = np.clip(intervals.end, x_lo, x_hi) - np.clip(intervals.start, x_lo, x_hi)
        per_plane = np.bincount(intervals.plane[rows_in], inside[rows_in], minlength=plane_count)
        covered_mm3 = float(per_plane[z_in] @ weight_mm[z_in]) * row_height
    if covered_mm3 <= 0.0:
        if total_mm3 <= 0.0:
            raise RTError(_NO_VOLUME.format(name=roi.name))
        raise OutsideDoseGridError(roi.name, total_mm3 / MM3_PER_CC)
    histogram = _Histogram(bin_width_gy, max(dose.max_dose_gy, 0.0))
    hot_mm3 = _sample_hot_cells(intervals, z_in=z_in, below=below, thickness=thickness, weight_mm=weight_mm,
                                box=(i0, j0, a0, a1, b0, b1), dose=dose, m=m, full_samples=full_samples,
                                histogram=histogram)
    cold_mm3 = covered_mm3 - hot_mm3
    if cold_mm3 > 1e-12 * covered_mm3:
        histogram.add(np.zeros(1), cold_mm3 / MM3_PER_CC)
    return histogram.to_dvh(roi.name, (total_mm3 - covered_mm3) / MM3_PER_CC)


def _sample_hot_cells(
    intervals: StackIntervals,
    *,
    z_in: npt.NDArray[np.bool_],
    below: npt.NDArray[np.float64],
    thickness: npt.NDArray[np.float64],
    weight_mm: npt.NDArray[np.float64],
    box: tuple[int, ...],
    dose: DoseGrid,
    m: int,
    full_samples: int,
    histogram: _Histogram,
) -> float:
    """Add to ``histogram`` the ROI's cells within one pixel of non-zero dose; return their volume, mm^3.

    ``intervals`` lie on m scanlines per row of the box of cells whose cell (0, 0) is grid pixel
    (j0, i0); box columns ``a0:a1`` and rows ``b0:b1`` are within the grid, planes ``z_in`` too.
    Each plane's slab (``below`` + ``thickness``) says where its dose is sampled, its
    ``weight_mm`` (effective thickness, :func:`rt.structures.compute_plane_thickness_mm`) how
    much volume its area stands for.
    """
    i0, j0, a0, a1, b0, b1 = box
    support = dose.compute_support()
    if support is None:
        return 0.0
    sk0, sk1, sj0, sj1, si0, si1 = support
    nz = dose.grid.shape[0]
    (ox, _, oz), (dx, dy, dz) = dose.grid.origin_mm, dose.grid.spacing_mm
    # Hot cells (box coordinates): within one pixel of the support, on planes whose sub-slabs reach it.
    ha0, ha1 = max(a0, si0 - 1 - i0), min(a1, si1 + 1 - i0)
    hb0, hb1 = max(b0, sj0 - 1 - j0), min(b1, sj1 + 1 - j0)
    if ha0 >= ha1 or hb0 >= hb1:
        return 0.0
    s = Z_SUBSLABS
    sub_z = below[:, None] + (np.arange(s) + 0.5) / s * thickness[:, None]  # (planes, s), mm
    k_lo, k_hi, k_w = _axis_index((sub_z - oz) / dz, nz)
    touches = (np.where(k_w > 0.0, k_hi, k_lo) >= sk0) & (k_lo < sk1)
    is_hot = z_in & touches.any(axis=1)
    select = is_hot[intervals.plane] & (intervals.row >= hb0 * m) & (intervals.row < hb1 * m)
    x_lo, x_hi = ox + (i0 + ha0 - 0.5) * dx, ox + (i0 + ha1 - 0.5) * dx
    start = np.clip(intervals.start[select], x_lo, x_hi)
    end = np.clip(intervals.end[select], x_lo, x_hi)
    keep = end > start
    if not keep.any():
        return 0.0
    hot_planes = np.nonzero(is_hot)[0]
    rank = np.cumsum(is_hot) - 1  # plane -> index among the hot planes
    hot = StackIntervals(rank[intervals.plane[select][keep]], intervals.row[select][keep] - hb0 * m,
                         start[keep], end[keep])
    shape = (hot_planes.size, hb1 - hb0, ha1 - ha0)
    cells = _cell_areas_mm2(hot, shape[0], shape[1:], x_lo, dx, dy / m, m)  # (H, rows, columns), mm^2
    # Dose on each sub-slab's plane over the hot cells plus a one-pixel margin (edge values beyond the grid).
    rows, cols = (j0 + hb0 - 1, j0 + hb1 + 1), (i0 + ha0 - 1, i0 + ha1 + 1)
    k0, k1, w = k_lo[hot_planes].ravel(), k_hi[hot_planes].ravel(), k_w[hot_planes].ravel()
    lower = _take_box(dose.dose_gy, k0, rows, cols)
    # The dose on each sub-slab plane over the cells and their margin: (H * s, rows + 2, columns + 2).
    padded = lower + (_take_box(dose.dose_gy, k1, rows, cols) - lower) * w[:, None, None]
    ny, nx = dose.grid.shape[1:]
    grid_edges = (cols[0] < 0, cols[1] > nx, rows[0] < 0, rows[1] > ny)  # margins beyond the grid
    sub_volume_cc = np.repeat(weight_mm[hot_planes] / s, s) / MM3_PER_CC  # cc per mm^2, per sub-slab plane
    near = dose.compute_near_dose_mask()
    inner_rows, inner_cols = (rows[0] + 1, rows[1] - 1), (cols[0] + 1, cols[1] - 1)
    near_cells = _take_box(near, k0, inner_rows, inner_cols) | _take_box(near, k1, inner_rows, inner_cols)
    near_cells = near_cells.reshape(shape[0], s, *shape[1:]).any(axis=1)  # (H, rows, columns)
    cells = np.where(near_cells, cells, 0.0)  # cells without dose nearby stay in the cold (0 Gy) volume
    hot_mm3 = float(cells.sum(axis=(1, 2)) @ weight_mm[hot_planes])
    cell_area = dx * dy
    plane, row, col = np.nonzero(cells > 0.0)
    is_full = cells[plane, row, col] >= cell_area * (1.0 - 1e-9)
    full = (plane[is_full], row[is_full], col[is_full])
    partial = (plane[~is_full], row[~is_full], col[~is_full])
    for k in range(s):
        sub_plane = full[0] * s + k
        centre, gx, gy, lo, hi = _reconstruct_at(padded, sub_plane, full[1], full[2], grid_edges)
        volume_cc = cell_area * sub_volume_cc[sub_plane]
        flat = (gx == 0.0) & (gy == 0.0)
        histogram.add(centre[flat], volume_cc[flat])
        sloped = ~flat
        _add_sloped_pixels(histogram, centre[sloped], gx[sloped], gy[sloped], lo[sloped], hi[sloped], volume_cc[sloped],
                           full_samples)
    if partial[0].size:
        _sample_boundary_cells(hot, shape, *partial, padded, sub_volume_cc, x_lo, dx, dy, m, histogram, grid_edges)
    return hot_mm3


def _take_box(
    values: npt.NDArray[Any], planes: npt.NDArray[np.int64], rows: tuple[int, int], cols: tuple[int, int]
) -> npt.NDArray[Any]:
    """values[planes, rows[0]:rows[1], cols[0]:cols[1]] of a (planes, rows, columns) grid, with rows and columns
    beyond the grid taking its edge values."""
    ny, nx = values.shape[1:]
    r0, r1, c0, c1 = max(rows[0], 0), min(rows[1], ny), max(cols[0], 0), min(cols[1], nx)
    box = values[:, r0:r1, c0:c1][planes]
    margins = ((0, 0), (r0 - rows[0], rows[1] - r1), (c0 - cols[0], cols[1] - c1))
    return np.pad(box, margins, mode="edge") if any(m for pair in margins for m in pair) else box


#: Pixels per batch of :func:`_add_sloped_pixels` (batches keep its n-sample temporaries in cache).
_SLOPED_BATCH = 16384


def _add_sloped_pixels(
    histogram: _Histogram,
    centre: npt.NDArray[np.float64],
    gx: npt.NDArray[np.float64],
    gy: npt.NDArray[np.float64],
    lo: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
    volume_cc: npt.NDArray[np.float64],
    n: int,
) -> None:
    """Add whole pixels whose dose varies: n equal-volume quantiles of each one's linear dose, clamped to [lo, hi]."""
    for first in range(0, centre.size, _SLOPED_BATCH):
        batch = slice(first, first + _SLOPED_BATCH)
        doses = centre[batch, None] + _trapezoid_quantiles(np.abs(gx[batch]) / 2.0, np.abs(gy[batch]) / 2.0, n)
        np.clip(doses, lo[batch, None], hi[batch, None], out=doses)
        volumes = volume_cc[batch]
        if volumes[0] == volumes.min() == volumes.max():  # equal slabs: one volume for every sample
            histogram.add(doses.ravel(), float(volumes[0]) / n)
        else:
            histogram.add(doses.ravel(), np.repeat(volumes / n, n))


def _sample_boundary_cells(
    intervals: StackIntervals,
    shape: tuple[int, int, int],
    plane: npt.NDArray[np.int64],
    row: npt.NDArray[np.int64],
    col: npt.NDArray[np.int64],
    padded: npt.NDArray[np.float64],
    sub_volume_cc: npt.NDArray[np.float64],
    x_lo: float,
    dx: float,
    dy: float,
    m: int,
    histogram: _Histogram,
    grid_edges: tuple[bool, bool, bool, bool] = _INSIDE_GRID,
) -> None:
    """Split the partly covered cells (plane, row, column of ``shape``) into m x m sub-cells and add them.

    A sub-cell is one scanline high and dx / m wide; its inside length and the centroid of the
    inside part come exactly from the scanline intervals (whose column 0 starts at ``x_lo``),
    and its dose is each sub-slab plane's slope-limited linear reconstruction (:func:`_reconstruct_at`
    on ``padded``, the dose of every sub-slab plane with a one-pixel margin) at that centroid.
    """
    plane_count, rows, _ = shape
    starts, ends = intervals.to_dense(plane_count, rows * m)  # (planes * scanlines, K)
    scanlines = (plane * rows + row)[:, None] * m + np.arange(m)  # (P, m)
    left = x_lo + col * dx  # each cell's left edge, mm
    s = starts[scanlines] - left[:, None, None]
    e = ends[scanlines] - left[:, None, None]  # (P, m, K), relative to the cell's left edge
    edges = np.arange(m + 1) * (dx / m)
    clipped = np.clip(edges, s[..., None], e[..., None])  # (P, m, K, m + 1)
    # Summed over the K intervals first (differences along the sub-column edges are linear).
    length = np.diff(clipped.sum(axis=2), axis=-1)  # (P, m scanlines, m sub-columns), mm
    moment = np.diff(np.square(clipped, out=clipped).sum(axis=2), axis=-1) / 2.0
    keep = length > 0.0
    p_idx, r_idx, _ = np.nonzero(keep)
    length, centroid = length[keep], moment[keep] / length[keep]
    # Offsets (pixels) of each sample from its cell's centre.
    v = (r_idx + 0.5) / m - 0.5
    u = centroid / dx - 0.5
    for k in range(Z_SUBSLABS):
        sub_plane = plane * Z_SUBSLABS + k
        centre, gx, gy, lo, hi = (values[p_idx] for values in _reconstruct_at(padded, sub_plane, row, col,
                                                                              grid_edges))
        doses = np.clip(centre + gx * u + gy * v, lo, hi)
        histogram.add(doses, length * (dy / m) * sub_volume_cc[sub_plane[p_idx]])
