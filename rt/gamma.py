"""Gamma index (Low et al. 1998) between a reference and an evaluated dose distribution.

:func:`compute_gamma` works on any pair of dose-like objects with ``dose_gy`` ((nz, ny, nx)
array, Gy) and ``grid`` (:class:`~rt.grid.VoxelGrid`, mm), e.g. :class:`~rt.dose.DoseGrid`.
The grids may differ (origin, spacing, shape) but must share the frame of reference.

For every reference voxel whose dose is at least ``threshold_percent`` of the normalisation
dose, gamma is the minimum, over evaluated points ``r`` within ``max_search_mm`` of the voxel
centre, of ``sqrt(|r|^2 / dta_mm^2 + (D_eval(r) - D_ref)^2 / dD^2)`` where
``dD = dose_diff_percent / 100 x`` the normalisation dose (global) or the reference voxel's
dose (local). ``D_eval`` is trilinearly interpolated at sub-voxel offsets on a cubic lattice
of pitch ``search_step_fraction x dta_mm`` (in every axis along which the evaluated grid has
more than one voxel; a single-voxel axis is not searched, which gives 2D and 1D gamma).

Points outside the evaluated grid's voxel-centre span (along single-voxel axes: outside its
slab, +-half a voxel) give no match; a reference voxel with no match at all gets gamma = inf
(it fails, and is counted in ``number_without_match``).

The search visits lattice offsets by increasing distance, in vectorised batches, and stops for
a voxel once ``distance / dta_mm`` alone reaches its best gamma so far. Gamma values are exact
(up to the lattice and interpolation) below ``max_search_mm / dta_mm``; above that they are the
minimum found inside the search sphere, an upper bound. With the default search radius
(1.5 x dta) pass/fail (gamma <= 1) is therefore decided exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rt.errors import GeometryError
from rt.grid import VoxelGrid

#: Default search radius as a multiple of the distance-to-agreement criterion.
DEFAULT_SEARCH_RADIUS_FACTOR = 1.5
#: Histogram bin width (gamma units) and upper edge; the last bin collects everything >= 2.
HISTOGRAM_BIN_WIDTH = 0.1
HISTOGRAM_MAX = 2.0
#: Tolerance, in voxels, on a point lying within the evaluated grid's voxel-centre span.
_COVERAGE_TOLERANCE = 1e-6
#: Target number of (voxel, offset) pairs interpolated per vectorised batch.
_BATCH_ELEMENTS = 1 << 20


class DoseLike(Protocol):
    """Anything with a (nz, ny, nx) dose array in Gy and its :class:`VoxelGrid`."""

    @property
    def dose_gy(self) -> np.ndarray: ...

    @property
    def grid(self) -> VoxelGrid: ...


@dataclass(frozen=True, slots=True)
class GammaParameters:
    """The criteria a gamma analysis ran with (percent, mm, Gy)."""

    dose_diff_percent: float
    dta_mm: float
    local: bool
    threshold_percent: float
    normalisation_gy: float
    search_step_fraction: float
    search_step_mm: float
    max_search_mm: float

    @property
    def threshold_gy(self) -> float:
        """Reference dose below which voxels are not evaluated, Gy."""
        return self.threshold_percent / 100.0 * self.normalisation_gy

    def to_dict(self) -> dict:
        return {
            "dose_diff_percent": self.dose_diff_percent,
            "dta_mm": self.dta_mm,
            "local": self.local,
            "threshold_percent": self.threshold_percent,
            "threshold_gy": self.threshold_gy,
            "normalisation_gy": self.normalisation_gy,
            "search_step_fraction": self.search_step_fraction,
            "search_step_mm": self.search_step_mm,
            "max_search_mm": self.max_search_mm,
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class GammaResult:
    """Outcome of :func:`compute_gamma`.

    gamma: (nz, ny, nx) on the reference grid, dimensionless; NaN where not evaluated (below
    threshold), inf where no evaluated point was found.
    pass_rate_percent: percentage of evaluated voxels with gamma <= 1 (NaN if none evaluated).
    mean_gamma / max_gamma: over evaluated voxels with a finite gamma (NaN if none).
    histogram_counts[b]: evaluated voxels with gamma in [edges[b], edges[b + 1]); the last
    count (b = len(edges) - 1) is every gamma >= edges[-1] = 2.0, inf included.
    """

    gamma: np.ndarray = field(repr=False)
    grid: VoxelGrid
    parameters: GammaParameters
    number_evaluated: int
    number_passed: int
    number_without_match: int
    pass_rate_percent: float
    mean_gamma: float
    max_gamma: float
    histogram_bin_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]

    def to_dict(self) -> dict:
        return {
            "grid": self.grid.to_dict(),
            "parameters": self.parameters.to_dict(),
            "number_evaluated": self.number_evaluated,
            "number_passed": self.number_passed,
            "number_without_match": self.number_without_match,
            "pass_rate_percent": _finite_or_none(self.pass_rate_percent),
            "mean_gamma": _finite_or_none(self.mean_gamma),
            "max_gamma": _finite_or_none(self.max_gamma),
            "histogram_bin_edges": list(self.histogram_bin_edges),
            "histogram_counts": list(self.histogram_counts),
        }


def _dose_array(dose: DoseLike, role: str) -> np.ndarray:
    array = np.asarray(dose.dose_gy, dtype=np.float64)
    if array.shape != tuple(dose.grid.shape):
        raise GeometryError(f"{role} dose array shape {array.shape} does not match its grid shape {dose.grid.shape}")
    return array


def _search_offsets_mm(step_mm: float, radius_mm: float, searched: tuple[bool, bool, bool]) -> np.ndarray:
    """Lattice offsets (x, y, z) mm within the radius, along searched axes, sorted by distance; (M, 3)."""
    n = int(math.floor(radius_mm / step_mm + 1e-9))
    ranges = [np.arange(-n, n + 1) if s else np.zeros(1, dtype=np.int64) for s in searched]
    ix, iy, iz = np.meshgrid(*ranges, indexing="ij")
    lattice = np.column_stack([ix.ravel(), iy.ravel(), iz.ravel()]).astype(np.float64) * step_mm
    squared = np.einsum("ij,ij->i", lattice, lattice)
    keep = squared <= radius_mm * radius_mm * (1.0 + 1e-9)
    lattice, squared = lattice[keep], squared[keep]
    order = np.lexsort((lattice[:, 2], lattice[:, 1], lattice[:, 0], np.round(squared, 9)))
    return lattice[order]


class _Interpolator:
    """Trilinear interpolation of the evaluated dose at arbitrary index-space points."""

    def __init__(self, dose: np.ndarray) -> None:
        self.flat = np.ascontiguousarray(dose).ravel()
        nz, ny, nx = dose.shape
        self.sizes = (nz, ny, nx)
        self.strides = (ny * nx, nx, 1)

    def __call__(self, positions: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """Values and coverage at (z, y, x) index positions (None: a single-voxel axis, index 0)."""
        index: np.ndarray | int = 0
        covered: np.ndarray | bool = True
        lerps: list[tuple[int, np.ndarray]] = []
        for size, stride, position in zip(self.sizes, self.strides, positions):
            if position is None:
                continue
            covered = covered & (position >= -_COVERAGE_TOLERANCE) & (position <= size - 1 + _COVERAGE_TOLERANCE)
            position = np.clip(position, 0.0, size - 1.0)
            lower = np.minimum(position.astype(np.int64), size - 2)
            lerps.append((stride, position - lower))
            index = index + lower * stride
        return self._blend(np.asarray(index), lerps), np.asarray(covered)

    def _blend(self, index: np.ndarray, lerps: list[tuple[int, np.ndarray]]) -> np.ndarray:
        if not lerps:
            return self.flat[index]
        (stride, weight), rest = lerps[0], lerps[1:]
        low = self._blend(index, rest)
        high = self._blend(index + stride, rest)
        return low + (high - low) * weight


def _validate(dose_diff_percent: float, dta_mm: float, threshold_percent: float, search_step_fraction: float) -> None:
    if not dose_diff_percent > 0:
        raise ValueError(f"dose_diff_percent must be positive: {dose_diff_percent}")
    if not dta_mm > 0:
        raise ValueError(f"dta_mm must be positive: {dta_mm}")
    if not threshold_percent >= 0:
        raise ValueError(f"threshold_percent must be >= 0: {threshold_percent}")
    if not 0 < search_step_fraction <= 1:
        raise ValueError(f"search_step_fraction must be in (0, 1]: {search_step_fraction}")


def _histogram(values: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...]]:
    bins = int(round(HISTOGRAM_MAX / HISTOGRAM_BIN_WIDTH))
    edges = np.round(np.arange(bins + 1) * HISTOGRAM_BIN_WIDTH, 10)
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins)
    counts = np.bincount(which, minlength=bins + 1)
    return tuple(float(e) for e in edges), tuple(int(c) for c in counts)


def compute_gamma(
    reference: DoseLike,
    evaluated: DoseLike,
    *,
    dose_diff_percent: float = 3.0,
    dta_mm: float = 3.0,
    local: bool = False,
    threshold_percent: float = 10.0,
    normalisation_gy: float | None = None,
    search_step_fraction: float = 0.1,
    max_search_mm: float | None = None,
) -> GammaResult:
    """Gamma index of ``evaluated`` against ``reference`` on the reference grid (see module docstring).

    dose_diff_percent: dose criterion, percent of normalisation_gy (global) or of the reference
    voxel's dose (local=True; voxels with reference dose <= 0 are then not evaluated).
    dta_mm: distance-to-agreement criterion, mm.
    threshold_percent: reference voxels below this percent of normalisation_gy are not evaluated.
    normalisation_gy: Gy; default the maximum reference dose.
    search_step_fraction: sub-voxel search lattice pitch as a fraction of dta_mm.
    max_search_mm: search radius, mm; default 1.5 x dta_mm (so pass/fail is exact).
    """
    _validate(dose_diff_percent, dta_mm, threshold_percent, search_step_fraction)
    ref = _dose_array(reference, "reference")
    ev = _dose_array(evaluated, "evaluated")
    ref_grid, ev_grid = reference.grid, evaluated.grid
    if normalisation_gy is None:
        finite = ref[np.isfinite(ref)]
        normalisation_gy = float(finite.max()) if finite.size else math.nan
    if not (math.isfinite(normalisation_gy) and normalisation_gy > 0):
        raise ValueError(f"normalisation dose must be positive and finite: {normalisation_gy} Gy")
    radius_mm = DEFAULT_SEARCH_RADIUS_FACTOR * dta_mm if max_search_mm is None else float(max_search_mm)
    if not radius_mm >= 0:
        raise ValueError(f"max_search_mm must be >= 0: {max_search_mm}")
    step_mm = search_step_fraction * dta_mm
    parameters = GammaParameters(
        dose_diff_percent=float(dose_diff_percent),
        dta_mm=float(dta_mm),
        local=bool(local),
        threshold_percent=float(threshold_percent),
        normalisation_gy=float(normalisation_gy),
        search_step_fraction=float(search_step_fraction),
        search_step_mm=float(step_mm),
        max_search_mm=radius_mm,
    )

    mask = np.isfinite(ref) & (ref >= parameters.threshold_gy)
    if local:
        mask &= ref > 0
    kk, jj, ii = np.nonzero(mask)
    ref_values = ref[kk, jj, ii]
    tolerance_gy = dose_diff_percent / 100.0 * (ref_values if local else normalisation_gy)
    inverse_tolerance = np.broadcast_to(1.0 / np.asarray(tolerance_gy, dtype=np.float64), ref_values.shape).copy()

    # Reference voxel centres as (z, y, x) fractional indices of the evaluated grid.
    positions: list[np.ndarray | None] = []
    in_slab = np.ones(ref_values.shape, dtype=bool)
    for array_axis, voxel_index in zip((0, 1, 2), (kk, jj, ii)):
        axis = 2 - array_axis
        mm = ref_grid.origin_mm[axis] + ref_grid.spacing_mm[axis] * voxel_index
        position = (mm - ev_grid.origin_mm[axis]) / ev_grid.spacing_mm[axis]
        if ev.shape[array_axis] == 1:
            in_slab &= np.abs(position) <= 0.5 + _COVERAGE_TOLERANCE
            positions.append(None)
        else:
            positions.append(position)
    searched = tuple(ev.shape[2 - axis] > 1 for axis in range(3))
    offsets_mm = _search_offsets_mm(step_mm, radius_mm, searched)  # (x, y, z)
    offsets_index = [
        None if positions[a] is None else offsets_mm[:, 2 - a] / ev_grid.spacing_mm[2 - a] for a in range(3)
    ]
    reduced_squared = np.einsum("ij,ij->i", offsets_mm, offsets_mm) / (dta_mm * dta_mm)

    best_squared = np.full(ref_values.shape, np.inf)
    active = np.nonzero(in_slab)[0]
    act_pos = [None if p is None else p[active] for p in positions]
    act_ref, act_inv = ref_values[active], inverse_tolerance[active]
    interpolate = _Interpolator(ev)
    start = 0
    while start < len(reduced_squared) and active.size:
        # Drop voxels that no farther offset can improve: gamma >= distance / dta from here on.
        still = best_squared[active] > reduced_squared[start]
        if not still.all():
            active = active[still]
            act_pos = [None if p is None else p[still] for p in act_pos]
            act_ref, act_inv = act_ref[still], act_inv[still]
            if not active.size:
                break
        stop = min(len(reduced_squared), start + max(1, _BATCH_ELEMENTS // active.size))
        batch_positions = [
            None if p is None else p[:, None] + o[None, start:stop] for p, o in zip(act_pos, offsets_index)
        ]
        values, covered = interpolate(batch_positions)
        difference = (values - act_ref[:, None]) * act_inv[:, None]
        candidate = reduced_squared[None, start:stop] + difference * difference
        candidate = np.where(covered & np.isfinite(values), candidate, np.inf)
        best_squared[active] = np.fmin(best_squared[active], candidate.min(axis=1))
        start = stop

    gamma_values = np.sqrt(best_squared)
    gamma = np.full(ref.shape, np.nan)
    gamma[kk, jj, ii] = gamma_values
    evaluated_count = int(gamma_values.size)
    passed = int(np.count_nonzero(gamma_values <= 1.0))
    finite_values = gamma_values[np.isfinite(gamma_values)]
    edges, counts = _histogram(gamma_values)
    return GammaResult(
        gamma=gamma,
        grid=ref_grid,
        parameters=parameters,
        number_evaluated=evaluated_count,
        number_passed=passed,
        number_without_match=evaluated_count - int(finite_values.size),
        pass_rate_percent=100.0 * passed / evaluated_count if evaluated_count else math.nan,
        mean_gamma=float(finite_values.mean()) if finite_values.size else math.nan,
        max_gamma=float(finite_values.max()) if finite_values.size else math.nan,
        histogram_bin_edges=edges,
        histogram_counts=counts,
    )
