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

from rt.dose import DoseGrid
from rt.errors import GeometryError, MetricError, OutsideDoseGridError, RTError
from rt.grid import MM3_PER_CC
from rt.structures import (
    StructureSet,
    compute_covered_length_mm,
    compute_row_intervals,
    compute_slab_overlaps_mm,
)

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

    def add(self, dose_gy: np.ndarray, volume_cc: np.ndarray | float) -> None:
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
            self.differential += np.bincount(bins, weights=volume_cc, minlength=self.size)[: self.size]
            self.volume_cc += float(volume_cc.sum())
            self.dose_volume += float(np.dot(volume_cc, dose_gy))
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


def compute_metrics(dvh: DVH, metrics: list[str] | tuple[str, ...], prescription_gy: float | None = None) -> dict[str, float]:
    """Several metrics at once: {metric name: value}."""
    return {m: compute_metric(dvh, m, prescription_gy) for m in metrics}


#: Sub-cells per dose pixel and axis in partial (boundary) pixels, by default.
DEFAULT_SUPERSAMPLING = 4
#: Dose samples (equal-volume quantiles) per whole pixel where the dose varies over it, by default.
DEFAULT_FULL_SAMPLES = 8


def _axis_index(position: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation (lower, upper, upper weight) at fractional indices, clamped to [0, n - 1]."""
    position = np.clip(position, 0.0, n - 1.0)
    lower = np.minimum(np.floor(position).astype(np.int64), max(n - 2, 0))
    upper = np.minimum(lower + 1, n - 1)
    return lower, upper, position - lower


def _sample_plane(
    polygons: tuple[np.ndarray, ...], z_mm: float, thickness_mm: float, dose: DoseGrid,
    box: tuple[int, int, int, int], m: int, full_samples: int, histogram: _Histogram,
) -> float:
    """Add the slab of one contour plane to ``histogram``; return its volume outside the dose grid, mm^3.

    ``box`` (i0, i1, j0, j1) is the ROI's range of dose-grid pixel cells (may exceed the grid).
    The polygons' area in each cell is integrated exactly along x on m scanlines per cell row.
    The dose on the plane (linear between frames) is reconstructed in each pixel as linear about
    the pixel-centre value with limited slopes (:func:`_limited_slope`), clamped to its 3 x 3
    neighbours: a cell wholly inside the polygons adds a point mass where the slopes vanish,
    else ``full_samples`` equal-volume quantiles of that linear dose over the cell; a boundary
    cell is split into m x m sub-cells, each with its exact inside area and its reconstructed dose.
    """
    i0, i1, j0, j1 = box
    nz, ny, nx = dose.grid.shape
    (ox, oy, oz), (dx, dy, dz) = dose.grid.origin_mm, dose.grid.spacing_mm
    nxb, nyb = i1 - i0, j1 - j0
    x_edge0, y_edge0 = ox + (i0 - 0.5) * dx, oy + (j0 - 0.5) * dy
    rows = y_edge0 + (np.arange(nyb * m) + 0.5) * (dy / m)
    start, end = compute_row_intervals(polygons, rows)
    if start.shape[1] == 0:
        return 0.0
    lengths = np.diff(compute_covered_length_mm(start, end, x_edge0 + dx * np.arange(nxb + 1)), axis=1)
    area = lengths.reshape(nyb, m, nxb).sum(axis=1) * (dy / m)  # mm^2 per cell, (nyb, nxb)
    total_mm3 = float(area.sum()) * thickness_mm
    z_index = (z_mm - oz) / dz
    # The cells inside the dose grid: box rows b0:b1 and columns a0:a1 (grid rows j0 + b0 ...).
    a0, a1 = max(0, -i0), min(nxb, nx - i0)
    b0, b1 = max(0, -j0), min(nyb, ny - j0)
    if not -0.5 - 1e-9 <= z_index <= nz - 0.5 + 1e-9 or a0 >= a1 or b0 >= b1:
        return total_mm3
    area = area[b0:b1, a0:a1]
    covered_mm3 = float(area.sum()) * thickness_mm
    if covered_mm3 <= 0.0:
        return total_mm3
    # The dose plane over those cells with a one-pixel margin (edge-padded beyond the grid).
    gi0, gi1, gj0, gj1 = i0 + a0, i0 + a1, j0 + b0, j0 + b1
    k0, k1, wz = _axis_index(np.array([z_index]), nz)
    c0, c1, r0, r1 = max(gi0 - 1, 0), min(gi1 + 1, nx), max(gj0 - 1, 0), min(gj1 + 1, ny)
    data = dose.dose_gy
    plane = data[k0[0], r0:r1, c0:c1] * (1.0 - wz[0]) + data[k1[0], r0:r1, c0:c1] * wz[0]
    plane = np.pad(plane, ((int(gj0 == r0), gj1 + 1 - r1), (int(gi0 == c0), gi1 + 1 - c1)), mode="edge")
    # Only cells within one pixel of non-zero dose need the reconstruction; the rest get 0 Gy.
    rows_hot, cols_hot = np.nonzero(plane.any(axis=1))[0], np.nonzero(plane.any(axis=0))[0]
    if rows_hot.size == 0:
        histogram.add(np.zeros(1), covered_mm3 / MM3_PER_CC)
        return total_mm3 - covered_mm3
    # Hot rectangle in cell coordinates (padded plane index - 1), widened by one pixel.
    hb0, hb1 = max(int(rows_hot[0]) - 2, 0), min(int(rows_hot[-1]) + 1, area.shape[0])
    ha0, ha1 = max(int(cols_hot[0]) - 2, 0), min(int(cols_hot[-1]) + 1, area.shape[1])
    if hb0 >= hb1 or ha0 >= ha1:
        histogram.add(np.zeros(1), covered_mm3 / MM3_PER_CC)
        return total_mm3 - covered_mm3
    cold_mm3 = covered_mm3 - float(area[hb0:hb1, ha0:ha1].sum()) * thickness_mm
    if cold_mm3 > 0.0:
        histogram.add(np.zeros(1), cold_mm3 / MM3_PER_CC)
    area, plane = area[hb0:hb1, ha0:ha1], plane[hb0:hb1 + 2, ha0:ha1 + 2]
    b0, a0 = b0 + hb0, a0 + ha0
    gx, gy, lo, hi = _reconstruction(plane)  # each (b1 - b0, a1 - a0), cell-aligned
    centre = plane[1:-1, 1:-1]
    cell_area = dx * dy
    full = area >= cell_area * (1.0 - 1e-9)
    flat = full & (gx == 0.0) & (gy == 0.0)
    histogram.add(centre[flat], cell_area * thickness_mm / MM3_PER_CC)
    sloped = full & ~flat
    if sloped.any():
        doses = centre[sloped][:, None] + _trapezoid_quantiles(np.abs(gx[sloped]) / 2.0, np.abs(gy[sloped]) / 2.0,
                                                                full_samples)
        doses = np.clip(doses, lo[sloped][:, None], hi[sloped][:, None])
        histogram.add(doses.ravel(), cell_area * thickness_mm / full_samples / MM3_PER_CC)
    partial = (area > 0.0) & ~full
    if partial.any():
        pb, pa = np.nonzero(partial)  # cell indices within the cropped box
        sub_rows = (pb + b0)[:, None] * m + np.arange(m)  # (P, m) scanline indices
        x_sub = x_edge0 + (pa + a0)[:, None] * dx + np.arange(m + 1) * (dx / m)  # (P, m + 1) sub-cell edges
        s, e = start[sub_rows], end[sub_rows]  # (P, m, K)
        covered = np.clip(x_sub[:, None, None, :] - s[..., None], 0.0, (e - s)[..., None]).sum(axis=2)
        sub_volume = np.diff(covered, axis=2) * (dy / m * thickness_mm / MM3_PER_CC)  # (P, m rows, m columns)
        offsets = (np.arange(m) + 0.5) / m - 0.5  # sub-cell centres, pixels
        sub_dose = (centre[pb, pa][:, None, None] + gx[pb, pa][:, None, None] * offsets[None, None, :]
                    + gy[pb, pa][:, None, None] * offsets[None, :, None])
        sub_dose = np.clip(sub_dose, lo[pb, pa][:, None, None], hi[pb, pa][:, None, None])
        keep = sub_volume > 0.0
        histogram.add(sub_dose[keep], sub_volume[keep])
    return total_mm3 - covered_mm3


def _reconstruction(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slopes along x and y (Gy per pixel; :func:`_limited_slopes`) and the 3 x 3 min / max of the inner pixels."""
    rows, cols = padded.shape[0] - 2, padded.shape[1] - 2
    centre = padded[1:-1, 1:-1]
    lo, hi = centre.copy(), centre.copy()
    for dj in (0, 1, 2):
        for di in (0, 1, 2):
            window = padded[dj:dj + rows, di:di + cols]
            np.minimum(lo, window, out=lo)
            np.maximum(hi, window, out=hi)
    gx = _limited_slope(padded[1:-1, 2:], centre, padded[1:-1, :-2])
    gy = _limited_slope(padded[2:, 1:-1], centre, padded[:-2, 1:-1])
    return gx, gy, lo, hi


def _limited_slope(forward: np.ndarray, centre: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Monotonised-central slope minmod(central, 2 x forward, 2 x backward difference), Gy per pixel.

    It keeps a pixel's linear reconstruction within its neighbours' values: zero at extrema
    and beside a kink (a dose plateau's edge), the central difference where the dose is smooth.
    """
    ahead, behind = forward - centre, centre - backward
    limited = np.minimum(np.abs(forward - backward) / 2.0, 2.0 * np.minimum(np.abs(ahead), np.abs(behind)))
    return np.where(ahead * behind > 0.0, np.copysign(limited, ahead), 0.0)


def _trapezoid_quantiles(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Quantiles at (k + 1/2) / n of U(-a, a) + U(-b, b) for each pair (a, b >= 0): shape (len(a), n).

    That sum is the spread of a linear dose a' u + b' v over a pixel (u, v uniform): a
    trapezoid on [-(a + b), a + b] whose ramps are 2 min(a, b) wide.
    """
    big, small = np.maximum(a, b)[:, None], np.minimum(a, b)[:, None]
    p = (np.arange(n) + 0.5) / n
    q = np.minimum(p, 1.0 - p)[None, :]  # lower half; the upper half mirrors it
    ramp = small / (2.0 * np.where(big > 0.0, big, 1.0))  # probability in each ramp
    on_ramp = -big - small + np.sqrt(8.0 * big * small * q)
    on_flat = big * (2.0 * q - 1.0)
    lower = np.where(q < ramp, on_ramp, on_flat)
    return np.where(p[None, :] <= 0.5, lower, -lower)


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

    Each contour plane stands for its slab (:mod:`rt.structures`); the dose is taken on the
    plane itself (linear between dose frames), i.e. the midpoint rule in z, so the DVH never
    sees dose from beyond the contoured solid. In-plane, only the dose-grid pixels under the
    ROI's bounding box are visited: a pixel wholly inside the polygons contributes its area at
    the pixel-centre dose; a boundary pixel is split into ``supersampling`` x ``supersampling``
    sub-cells (default :data:`DEFAULT_SUPERSAMPLING`) whose inside area is integrated exactly
    along x and whose dose is interpolated bilinearly. ROI volume outside the dose grid is never
    dropped silently: it is reported as ``DVH.uncovered_volume_cc``.
    """
    roi = structure_set.roi(roi_name)
    if roi.is_empty:
        raise RTError(f"ROI {roi.name!r} has no closed planar contour")
    roi_for = roi.frame_of_reference_uid or structure_set.frame_of_reference_uid
    if roi_for and dose.frame_of_reference_uid and roi_for != dose.frame_of_reference_uid:
        raise GeometryError(
            f"ROI {roi.name!r} frame of reference {roi_for} differs from the dose's {dose.frame_of_reference_uid}"
        )
    m = supersampling or DEFAULT_SUPERSAMPLING
    full_samples = full_samples or DEFAULT_FULL_SAMPLES
    if m < 1:
        raise ValueError("supersampling must be >= 1")
    planes = roi.planes()
    plane_z = np.array(list(planes), dtype=np.float64)
    half = roi.compute_plane_spacing_mm(default_mm=dose.spacing_mm[2]) / 2.0
    thickness = compute_slab_overlaps_mm(plane_z, half, np.array([-np.inf]), np.array([np.inf]))[0]
    lo, hi = roi.compute_bounds_mm()
    (ox, oy, _), (dx, dy, _) = dose.grid.origin_mm, dose.grid.spacing_mm
    box = (int(np.floor((lo[0] - ox) / dx + 0.5)), int(np.floor((hi[0] - ox) / dx + 0.5)) + 1,
           int(np.floor((lo[1] - oy) / dy + 0.5)), int(np.floor((hi[1] - oy) / dy + 0.5)) + 1)
    histogram = _Histogram(bin_width_gy, max(dose.max_dose_gy, 0.0))
    uncovered_mm3 = 0.0
    for (z, polys), t in zip(planes.items(), thickness):
        uncovered_mm3 += _sample_plane(polys, float(z), float(t), dose, box, m, full_samples, histogram)
    if histogram.volume_cc <= 0.0:
        raise OutsideDoseGridError(roi.name, uncovered_mm3 / MM3_PER_CC)
    return histogram.to_dvh(roi.name, uncovered_mm3 / MM3_PER_CC)
