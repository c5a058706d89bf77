"""Gamma index (Low et al. 1998) between a reference and an evaluated dose distribution.

:func:`compute_gamma` works on any pair of dose-like objects with ``dose_gy`` ((nz, ny, nx)
array, Gy) and ``grid`` (:class:`~rt.grid.VoxelGrid`, mm), e.g. :class:`~rt.dose.DoseGrid`.
The grids may differ (origin, spacing, shape) but must share the frame of reference.

For every reference voxel whose dose is at least ``threshold_percent`` of the normalisation
dose, gamma is the minimum, over evaluated points ``r`` within ``max_search_mm`` of the voxel
centre, of ``sqrt(|r|^2 / dta_mm^2 + (D_eval(r) - D_ref)^2 / dD^2)`` where
``dD = dose_diff_percent / 100 x`` the normalisation dose (global) or the reference voxel's
dose (local). ``D_eval`` is trilinearly interpolated at sub-voxel offsets ``r`` of pitch
``step = search_step_fraction x dta_mm``, searched along every axis on which the evaluated
grid has more than one voxel (a single-voxel axis is not searched: 2D and 1D gamma). Two
search patterns sample the same continuous minimum:

* ``"lattice"`` (default): every point of a cubic lattice of pitch ``step``.
* ``"shells"``: spherical shells at radii 0, step, 2 step, ... (radius ``dta_mm`` always
  included), each sampled with no gap wider than ``step`` -- the pattern of
  ``pymedphys.gamma`` (Wendling et al. 2007), which this mode reproduces point for point
  (shell axes in array order z, y, x, as when pymedphys gets the axes in that order).

Any sampling gives an upper bound of the continuous minimum (of the trilinearly interpolated
dose), so every pass rate is at or below the converged one, and halving the lattice step can
only lower gamma (the finer lattice contains the coarser). In steep gradients, where the dose
criterion spans less than a step, the lattice at a given step is usually much closer to the
converged pass rate than the shells (e.g. 2%/2 mm local at dta/10: a few percentage points
higher); both converge to the same value as ``step`` shrinks (``benchmarks/gamma.py``).

Points outside the evaluated grid's voxel-centre span (along single-voxel axes: outside its
slab, +-half a voxel) give no match; a reference voxel with no match at all gets gamma = inf
(it fails, and is counted in ``number_without_match``; pymedphys leaves such voxels out).
A voxel passes when gamma <= 1.

The search visits offsets by increasing distance, in vectorised batches, and stops for a
voxel once ``distance / dta_mm`` alone reaches its best gamma so far. Gamma values are exact
(up to the sampling and interpolation) below ``max_search_mm / dta_mm``; above that they are
the minimum found inside the search sphere, an upper bound. With the default search radius
(1.5 x dta) pass/fail (gamma <= 1) is therefore decided exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rt.errors import GeometryError
from rt.grid import VoxelGrid

#: Default search radius as a multiple of the distance-to-agreement criterion.
DEFAULT_SEARCH_RADIUS_FACTOR = 1.5
#: Search patterns (see the module docstring).
SEARCH_LATTICE = "lattice"
SEARCH_SHELLS = "shells"
SEARCH_PATTERNS = (SEARCH_LATTICE, SEARCH_SHELLS)
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
    def dose_gy(self) -> npt.NDArray[Any]: ...

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
    search: str
    search_step_fraction: float
    search_step_mm: float
    max_search_mm: float

    @property
    def threshold_gy(self) -> float:
        """Reference dose below which voxels are not evaluated, Gy."""
        return self.threshold_percent / 100.0 * self.normalisation_gy

    def to_dict(self) -> dict[str, Any]:
        return {
            "dose_diff_percent": self.dose_diff_percent,
            "dta_mm": self.dta_mm,
            "local": self.local,
            "threshold_percent": self.threshold_percent,
            "threshold_gy": self.threshold_gy,
            "normalisation_gy": self.normalisation_gy,
            "search": self.search,
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

    gamma: npt.NDArray[np.float64] = field(repr=False)
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

    def to_dict(self) -> dict[str, Any]:
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


def _dose_array(dose: DoseLike, role: str) -> npt.NDArray[np.float64]:
    array = np.asarray(dose.dose_gy, dtype=np.float64)
    if array.shape != tuple(dose.grid.shape):
        raise GeometryError(f"{role} dose array shape {array.shape} does not match its grid shape {dose.grid.shape}")
    return array


def _lattice_offsets_mm(
    step_mm: float, radius_mm: float, searched: tuple[bool, bool, bool]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Cubic-lattice offsets (x, y, z) mm within the radius, along searched axes, sorted by distance.

    Returns the (M, 3) offsets and their (M,) distances, mm.
    """
    n = math.floor(radius_mm / step_mm + 1e-9)
    ranges = [np.arange(-n, n + 1) if s else np.zeros(1, dtype=np.int64) for s in searched]
    ix, iy, iz = np.meshgrid(*ranges, indexing="ij")
    lattice = np.column_stack([ix.ravel(), iy.ravel(), iz.ravel()]).astype(np.float64) * step_mm
    squared = np.einsum("ij,ij->i", lattice, lattice)
    keep = squared <= radius_mm * radius_mm * (1.0 + 1e-9)
    lattice, squared = lattice[keep], squared[keep]
    order = np.lexsort((lattice[:, 2], lattice[:, 1], lattice[:, 0], np.round(squared, 9)))
    return lattice[order], np.sqrt(squared[order])


def _shell(distance_mm: float, dimensions: int, step_mm: float) -> list[npt.NDArray[np.float64]]:
    """Points on a circle/sphere of the radius with no gap wider than the step (pymedphys' construction)."""
    if dimensions == 0 or distance_mm == 0:
        return [np.zeros(1) for _ in range(dimensions)]
    if dimensions == 1:
        return [np.array([distance_mm, -distance_mm])]
    if dimensions == 2:
        count = int(np.ceil(2 * np.pi * distance_mm / step_mm)) + 1
        theta = np.linspace(0, 2 * np.pi, count + 1)[:-1]
        return [distance_mm * np.cos(theta), distance_mm * np.sin(theta)]
    rows = int(np.ceil(np.pi * distance_mm / step_mm)) + 1
    elevation = np.linspace(0, np.pi, rows)
    in_row = np.ceil(2 * np.pi * distance_mm * np.sin(elevation) / step_mm).astype(int) + 1
    coordinates: list[list[npt.NDArray[np.float64]]] = [[], [], []]
    for phi, count in zip(elevation, in_row, strict=True):
        azimuth = np.linspace(0, 2 * np.pi, count + 1)[:-1]
        coordinates[0].append(distance_mm * np.sin(phi) * np.cos(azimuth))
        coordinates[1].append(distance_mm * np.sin(phi) * np.sin(azimuth))
        coordinates[2].append(distance_mm * np.cos(phi) * np.ones_like(azimuth))
    return [np.concatenate(c) for c in coordinates]


def _shell_offsets_mm(
    step_mm: float, dta_mm: float, radius_mm: float, searched: tuple[bool, bool, bool]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Spherical-shell offsets (x, y, z) mm and their shell radii, mm, as pymedphys.gamma steps them.

    Radii 0, step, 2 step, ... accumulated as pymedphys does, with dta_mm inserted; the shell's
    coordinates go to the searched axes in array order (z, y, x).
    """
    columns = [2 - a for a in range(3) if searched[2 - a]]  # (x, y, z) column of each searched z, y, x axis
    blocks, radii = [], []
    distance, dta_pending = 0.0, True
    while distance <= radius_mm * (1.0 + 1e-9):
        shell = _shell(distance, len(columns), step_mm)
        size = shell[0].size if shell else 1
        block = np.zeros((size, 3))
        for column, values in zip(columns, shell, strict=True):
            block[:, column] = values
        blocks.append(block)
        radii.append(np.full(size, distance))
        if not columns:
            break
        distance += step_mm
        if dta_pending and distance >= dta_mm:
            distance, dta_pending = dta_mm, False
    return np.concatenate(blocks), np.concatenate(radii)


class _LatticeSampler:
    """Evaluated dose at (active voxel, offset) pairs, by trilinear interpolation; NaN: no match.

    General case: every voxel has its own sub-voxel phase, so positions, corners and weights
    are computed per pair.
    """

    def __init__(
        self,
        dose: npt.NDArray[np.float64],
        positions: list[npt.NDArray[np.floating[Any]] | None],
        offsets: list[npt.NDArray[np.float64] | None],
    ) -> None:
        self.flat = np.ascontiguousarray(dose).ravel()
        nz, ny, nx = dose.shape
        self.sizes = (nz, ny, nx)
        self.strides = (ny * nx, nx, 1)
        self.positions = positions
        self.offsets = offsets

    def keep(self, still: npt.NDArray[np.bool_]) -> None:
        """Narrow the active voxels to those where ``still`` is True."""
        self.positions = [None if p is None else p[still] for p in self.positions]

    def __call__(self, start: int, stop: int) -> npt.NDArray[np.float64]:
        index: npt.NDArray[np.int64] | int = 0
        covered: npt.NDArray[np.bool_] | bool = True
        lerps: list[tuple[int, npt.NDArray[np.float64]]] = []
        for size, stride, voxel, offset in zip(self.sizes, self.strides, self.positions, self.offsets, strict=True):
            if voxel is None or offset is None:
                continue
            position = voxel[:, None] + offset[None, start:stop]
            covered = covered & (position >= -_COVERAGE_TOLERANCE) & (position <= size - 1 + _COVERAGE_TOLERANCE)
            position = np.clip(position, 0.0, size - 1.0)
            lower = np.minimum(position.astype(np.int64), size - 2)
            lerps.append((stride, position - lower))
            index = index + lower * stride
        values = self._blend(np.asarray(index), lerps)
        return np.where(covered, values, np.nan)

    def _blend(
        self, index: npt.NDArray[np.int64], lerps: list[tuple[int, npt.NDArray[np.float64]]]
    ) -> npt.NDArray[np.float64]:
        if not lerps:
            return self.flat[index]
        (stride, weight), rest = lerps[0], lerps[1:]
        low = self._blend(index, rest)
        high = self._blend(index + stride, rest)
        return low + (high - low) * weight


class _AlignedSampler:
    """Like :class:`_LatticeSampler` for voxels that share one sub-voxel phase per axis.

    That is the case when the reference grid's voxel centres sit at the same fractional
    position in every evaluated voxel (same spacing, e.g. the same grid). Corners and weights
    then depend on the offset only and are computed once; the evaluated dose is padded with NaN
    so that points off the grid need no bounds checks (NaN: no match).
    """

    def __init__(
        self,
        dose: npt.NDArray[np.float64],
        bases: list[npt.NDArray[np.int64] | None],
        phases: list[float],
        offsets: list[npt.NDArray[np.float64] | None],
        reach: list[int],
    ) -> None:
        pad = [(r, r) for r in reach]
        padded = np.pad(np.asarray(dose, dtype=np.float64), pad, constant_values=np.nan)
        self.flat = padded.ravel()
        strides = (padded.shape[1] * padded.shape[2], padded.shape[2], 1)
        self.base = sum(
            ((b + r) * st for b, r, st in zip(bases, reach, strides, strict=True) if b is not None),
            np.zeros(1, dtype=np.int64),
        )
        corner_index = np.zeros((1, 1), dtype=np.int64)  # (corners, offsets)
        corner_weight = np.ones((1, 1))
        for phase, offset, stride in zip(phases, offsets, strides, strict=True):
            if offset is None:
                continue
            position = phase + offset
            lower = np.floor(position + _COVERAGE_TOLERANCE)
            weight = position - lower
            weight[weight <= _COVERAGE_TOLERANCE] = 0.0
            upper_step = np.where(weight > 0.0, stride, 0)  # on a voxel centre: no upper neighbour needed
            low_index = lower.astype(np.int64) * stride
            corner_index = np.concatenate([corner_index + low_index, corner_index + low_index + upper_step])
            corner_weight = np.concatenate([corner_weight * (1.0 - weight), corner_weight * weight])
        self.corner_index = np.ascontiguousarray(corner_index)
        self.corner_weight = np.ascontiguousarray(corner_weight)

    def keep(self, still: npt.NDArray[np.bool_]) -> None:
        """Narrow the active voxels to those where ``still`` is True."""
        self.base = self.base[still]

    def __call__(self, start: int, stop: int) -> npt.NDArray[np.float64]:
        shape = (self.base.size, stop - start)
        index = np.empty(shape, dtype=np.int64)
        gathered = np.empty(shape)
        values = np.zeros(shape)
        for corner_index, corner_weight in zip(self.corner_index, self.corner_weight, strict=True):
            np.add(self.base[:, None], corner_index[None, start:stop], out=index)
            np.take(self.flat, index, out=gathered)
            gathered *= corner_weight[None, start:stop]
            values += gathered
        return values


def _aligned_sampler(
    dose: npt.NDArray[np.float64],
    count: int,
    positions: list[npt.NDArray[np.floating[Any]] | None],
    offsets: list[npt.NDArray[np.float64] | None],
    radius_index: list[float],
) -> tuple[_AlignedSampler | None, npt.NDArray[np.bool_]]:
    """An :class:`_AlignedSampler` if the voxel positions share one phase per axis, else None.

    Also returns which of the ``count`` voxels can reach the evaluated grid at all (within the
    search radius).
    """
    bases: list[npt.NDArray[np.int64] | None] = []
    phases: list[float] = []
    reach: list[int] = []
    reachable = np.ones(count, dtype=bool)
    aligned = True
    for size, position, radius in zip(dose.shape, positions, radius_index, strict=True):
        if position is None:
            bases.append(None)
            phases.append(0.0)
            reach.append(0)
            continue
        reachable &= (position >= -radius - _COVERAGE_TOLERANCE) & (position <= size - 1 + radius + _COVERAGE_TOLERANCE)
        base = np.floor(position + _COVERAGE_TOLERANCE)
        phase = position - base
        if phase.size and np.ptp(phase) > 1e-9:
            aligned = False
        bases.append(base.astype(np.int64))
        phases.append(float(phase[0]) if phase.size else 0.0)
        reach.append(math.ceil(2.0 * radius) + 2)
    if not aligned:
        return None, reachable
    bases = [None if b is None else b[reachable] for b in bases]
    return _AlignedSampler(dose, bases, phases, offsets, reach), reachable


def _validate(
    dose_diff_percent: float, dta_mm: float, threshold_percent: float, search: str, search_step_fraction: float
) -> None:
    if not dose_diff_percent > 0:
        raise ValueError(f"dose_diff_percent must be positive: {dose_diff_percent}")
    if not dta_mm > 0:
        raise ValueError(f"dta_mm must be positive: {dta_mm}")
    if not threshold_percent >= 0:
        raise ValueError(f"threshold_percent must be >= 0: {threshold_percent}")
    if search not in SEARCH_PATTERNS:
        raise ValueError(f"search must be one of {SEARCH_PATTERNS}: {search!r}")
    if not 0 < search_step_fraction <= 1:
        raise ValueError(f"search_step_fraction must be in (0, 1]: {search_step_fraction}")


def _histogram(values: npt.NDArray[np.float64]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    bins = round(HISTOGRAM_MAX / HISTOGRAM_BIN_WIDTH)
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
    search: str = SEARCH_LATTICE,
    search_step_fraction: float = 0.1,
    max_search_mm: float | None = None,
) -> GammaResult:
    """Gamma index of ``evaluated`` against ``reference`` on the reference grid (see module docstring).

    dose_diff_percent: dose criterion, percent of normalisation_gy (global) or of the reference
    voxel's dose (local=True; voxels with reference dose <= 0 are then not evaluated).
    dta_mm: distance-to-agreement criterion, mm.
    threshold_percent: reference voxels below this percent of normalisation_gy are not evaluated.
    normalisation_gy: Gy; default the maximum reference dose.
    search: "lattice" (default) or "shells" (pymedphys.gamma's pattern).
    search_step_fraction: sub-voxel search pitch as a fraction of dta_mm (pymedphys'
    ``1 / interp_fraction``).
    max_search_mm: search radius, mm; default 1.5 x dta_mm (so pass/fail is exact).
    """
    _validate(dose_diff_percent, dta_mm, threshold_percent, search, search_step_fraction)
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
        search=search,
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
    positions: list[npt.NDArray[np.floating[Any]] | None] = []
    in_slab = np.ones(ref_values.shape, dtype=bool)
    for array_axis, voxel_index in zip((0, 1, 2), (kk, jj, ii), strict=True):
        axis = 2 - array_axis
        mm = ref_grid.origin_mm[axis] + ref_grid.spacing_mm[axis] * voxel_index
        position = (mm - ev_grid.origin_mm[axis]) / ev_grid.spacing_mm[axis]
        if ev.shape[array_axis] == 1:
            in_slab &= np.abs(position) <= 0.5 + _COVERAGE_TOLERANCE
            positions.append(None)
        else:
            positions.append(position)
    searched = tuple(ev.shape[2 - axis] > 1 for axis in range(3))
    if search == SEARCH_LATTICE:
        offsets_mm, distances_mm = _lattice_offsets_mm(step_mm, radius_mm, searched)  # (x, y, z)
    else:
        offsets_mm, distances_mm = _shell_offsets_mm(step_mm, dta_mm, radius_mm, searched)
    offsets_index = [
        None if positions[a] is None else offsets_mm[:, 2 - a] / ev_grid.spacing_mm[2 - a] for a in range(3)
    ]
    reduced_squared = (distances_mm / dta_mm) ** 2  # non-decreasing

    best_squared = np.full(ref_values.shape, np.inf)
    active = np.nonzero(in_slab)[0]
    act_pos = [None if p is None else p[active] for p in positions]
    radius_index = [radius_mm / ev_grid.spacing_mm[2 - a] for a in range(3)]
    aligned, reachable = _aligned_sampler(ev, active.size, act_pos, offsets_index, radius_index)
    sampler: _AlignedSampler | _LatticeSampler
    if aligned is None:
        sampler = _LatticeSampler(ev, act_pos, offsets_index)
    else:
        sampler = aligned
        active = active[reachable]
    act_ref, act_inv = ref_values[active], inverse_tolerance[active]
    start = 0
    while start < len(reduced_squared) and active.size:
        # Drop voxels that no farther offset can improve: gamma >= distance / dta from here on.
        still = best_squared[active] > reduced_squared[start]
        if not still.all():
            active = active[still]
            sampler.keep(still)
            act_ref, act_inv = act_ref[still], act_inv[still]
            if not active.size:
                break
        stop = min(len(reduced_squared), start + max(1, _BATCH_ELEMENTS // active.size))
        candidate = sampler(start, stop)  # NaN where no match
        candidate -= act_ref[:, None]
        candidate *= act_inv[:, None]
        np.square(candidate, out=candidate)
        candidate += reduced_squared[None, start:stop]
        nearest = np.fmin.reduce(candidate, axis=1)  # NaN only if no offset matched
        best_squared[active] = np.fmin(best_squared[active], nearest)
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
