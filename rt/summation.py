"""Dose summation across plans and radiobiological conversion (BED, EQD2) per voxel.

Summation (:func:`compute_dose_sum`): doses on the same grid are added voxel by voxel; doses on
other grids are first trilinearly resampled onto the target grid (the first dose's grid unless
``target_grid`` is given). All doses must share the frame of reference (doses without a
FrameOfReferenceUID are accepted as unknown) and the dose units.

Coverage policy: a target voxel outside an input's grid has no dose from that input. With
``outside="nan"`` (default) such voxels are NaN in the sum (unknown), so a DVH over the sum
reports them as uncovered volume (see :func:`rt.dvh.compute_roi_dvh`); with ``outside="zero"``
the missing input counts as 0 Gy (only right when that input's grid covers all its dose).
:func:`compute_sum_coverage` tells which voxels every input covers.

Radiobiology (linear-quadratic model, no repopulation), with D the total dose (Gy) in n
fractions of d = D / n (Gy) and alpha/beta (Gy):

- BED = D (1 + d / (alpha/beta))
- EQD2 = BED / (1 + 2 / (alpha/beta))

BED and EQD2 are not additive over courses with different fractionation per voxel unless each
course is converted first: convert each course, then sum the EQD2 maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rt.dose import DoseGrid, compute_dose_on_grid
from rt.errors import GeometryError, RTError
from rt.grid import VoxelGrid

_CANONICAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _common_frame_of_reference(doses: Sequence[DoseGrid]) -> str:
    uids = {d.frame_of_reference_uid for d in doses if d.frame_of_reference_uid}
    if len(uids) > 1:
        raise GeometryError(f"doses are in different frames of reference: {sorted(uids)}; register them first")
    return uids.pop() if uids else ""


def _on_grid(dose: DoseGrid, grid: VoxelGrid) -> npt.NDArray[np.float64]:
    """The dose (Gy) at the voxel centres of ``grid``: as stored when the grids match, else trilinear (NaN outside)."""
    if dose.grid == grid:
        return dose.dose_gy.astype(np.float64, copy=False)
    return compute_dose_on_grid(dose, grid)


def compute_sum_coverage(doses: Sequence[DoseGrid], target_grid: VoxelGrid | None = None) -> npt.NDArray[np.bool_]:
    """Boolean (z, y, x) array on the target grid: True where every dose's grid covers the voxel centre."""
    if not doses:
        raise RTError("no doses given")
    grid = target_grid or doses[0].grid
    covered = np.ones(grid.shape, dtype=bool)
    for dose in doses:
        if dose.grid != grid:
            covered &= ~np.isnan(compute_dose_on_grid(dose, grid))
    return covered


def compute_dose_sum(
    doses: Sequence[DoseGrid],
    *,
    weights: Sequence[float] | None = None,
    target_grid: VoxelGrid | None = None,
    outside: str = "nan",
) -> DoseGrid:
    """The weighted voxel-wise sum of ``doses`` (Gy) on ``target_grid`` (default: the first dose's grid).

    ``weights`` (dimensionless, default all 1) scale each dose, e.g. to rescale a plan's number
    of fractions. Doses on other grids are resampled trilinearly; ``outside`` ("nan" or
    "zero") sets what a voxel outside an input's grid gets (module docstring). Raises
    :class:`GeometryError` for different frames of reference and :class:`RTError` for an empty
    list, mismatched weights or different dose units.
    """
    doses = list(doses)
    if not doses:
        raise RTError("no doses given")
    if outside not in ("nan", "zero"):
        raise ValueError(f"outside must be 'nan' or 'zero', not {outside!r}")
    if weights is None:
        weights = [1.0] * len(doses)
    weights = [float(w) for w in weights]
    if len(weights) != len(doses):
        raise RTError(f"{len(weights)} weights for {len(doses)} doses")
    if not all(np.isfinite(w) for w in weights):
        raise RTError(f"weights must be finite: {weights}")
    units = {d.dose_units.upper() for d in doses}
    if len(units) > 1:
        raise RTError(f"cannot add doses in different units: {sorted(units)}")
    labels = {d.dose_unit for d in doses if d.dose_type}
    if len(labels) > 1:  # a physical dose plus an RBE-weighted one is neither
        raise RTError(f"cannot add doses of different DoseType: {sorted(labels)}")
    frame_of_reference_uid = _common_frame_of_reference(doses)
    grid = target_grid or doses[0].grid

    total = np.zeros(grid.shape, dtype=np.float64)
    for dose, weight in zip(doses, weights, strict=True):
        sampled = _on_grid(dose, grid)
        if outside == "zero":
            sampled = np.nan_to_num(sampled, nan=0.0)
        total += weight * sampled
    dose_types = {d.dose_type for d in doses}
    quantities = {d.effective_quantity for d in doses}
    return DoseGrid(
        dose_gy=total,
        grid=grid,
        orientation=doses[0].orientation if target_grid is None else _CANONICAL_ORIENTATION,
        dose_units=doses[0].dose_units,
        dose_type=dose_types.pop() if len(dose_types) == 1 else "",
        dose_summation_type="MULTI_PLAN" if len(doses) > 1 else doses[0].dose_summation_type,
        frame_of_reference_uid=frame_of_reference_uid,
        sop_instance_uid="",
        effective_quantity=quantities.pop() if len(quantities) == 1 else "RBE",
    )


# -- BED and EQD2 -------------------------------------------------------------------------------------


def _check_fractionation(fractions: float, alpha_beta_gy: npt.ArrayLike) -> npt.NDArray[np.float64]:
    if not np.isfinite(fractions) or fractions <= 0:
        raise ValueError(f"fractions must be positive, got {fractions!r}")
    alpha_beta = np.asarray(alpha_beta_gy, dtype=np.float64)
    if np.any(~(alpha_beta > 0.0)):
        raise ValueError(f"alpha/beta must be positive (Gy), got {alpha_beta_gy!r}")
    return alpha_beta


def _as_result(value: npt.NDArray[np.float64]) -> float | npt.NDArray[np.float64]:
    return float(value) if np.ndim(value) == 0 else value


def compute_bed_gy(
    dose_gy: npt.ArrayLike, fractions: float, alpha_beta_gy: npt.ArrayLike
) -> float | npt.NDArray[np.float64]:
    """Biologically effective dose (Gy): BED = D (1 + d / (alpha/beta)), d = D / fractions.

    ``dose_gy`` is the total physical dose (Gy, scalar or array), ``fractions`` the number of
    fractions, ``alpha_beta_gy`` (Gy, scalar or array broadcastable to the dose). NaN stays NaN.
    Returns a float for scalar input, else an array.
    """
    alpha_beta = _check_fractionation(fractions, alpha_beta_gy)
    dose = np.asarray(dose_gy, dtype=np.float64)
    return _as_result(dose * (1.0 + dose / fractions / alpha_beta))


def compute_eqd2_gy(
    dose_gy: npt.ArrayLike, fractions: float, alpha_beta_gy: npt.ArrayLike
) -> float | npt.NDArray[np.float64]:
    """Equivalent dose in 2 Gy fractions (Gy): EQD2 = BED / (1 + 2 / (alpha/beta)).

    Arguments as :func:`compute_bed_gy`.
    """
    alpha_beta = _check_fractionation(fractions, alpha_beta_gy)
    bed = np.asarray(compute_bed_gy(dose_gy, fractions, alpha_beta))
    return _as_result(bed / (1.0 + 2.0 / alpha_beta))


def compute_alpha_beta_map(
    shape: tuple[int, int, int],
    alpha_beta_by_roi: Mapping[str, tuple[npt.NDArray[Any], float]],
    default_alpha_beta_gy: float,
) -> tuple[list[tuple[npt.NDArray[np.float64], float]], npt.NDArray[np.float64]]:
    """Per-voxel share of each alpha/beta: ([(share array, alpha/beta Gy)], default share array).

    Masks are weights 0..1 (fractional occupancy) of ``shape``. In overlaps the ROI listed first
    takes precedence: each ROI gets min(its weight, what is left of the voxel); the remainder
    gets ``default_alpha_beta_gy``.
    """
    remaining = np.ones(shape, dtype=np.float64)
    shares = []
    for roi, (mask, alpha_beta) in alpha_beta_by_roi.items():
        weights = np.asarray(mask, dtype=np.float64)
        if weights.shape != tuple(shape):
            raise GeometryError(f"mask of ROI {roi!r} has shape {weights.shape}, the dose grid {tuple(shape)}")
        if not np.isfinite(alpha_beta) or alpha_beta <= 0.0:
            raise ValueError(f"alpha/beta of ROI {roi!r} must be positive (Gy), got {alpha_beta!r}")
        share = np.minimum(np.clip(weights, 0.0, 1.0), remaining)
        remaining = remaining - share
        shares.append((share, float(alpha_beta)))
    return shares, remaining


def compute_eqd2_map(
    dose: DoseGrid,
    fractions: float,
    alpha_beta_by_roi: Mapping[str, tuple[npt.NDArray[Any], float]],
    default_alpha_beta_gy: float,
) -> DoseGrid:
    """EQD2 (Gy) per voxel of ``dose`` (total physical dose, Gy, in ``fractions`` fractions).

    ``alpha_beta_by_roi`` maps ROI name -> (mask weights 0..1 on ``dose.grid``, alpha/beta Gy),
    e.g. masks from :func:`rt.structures.compute_mask` on ``dose.grid``; voxels outside every
    ROI use ``default_alpha_beta_gy``. A voxel partly in an ROI gets the occupancy-weighted mean
    of the EQD2 values; overlaps resolve in mapping order (:func:`compute_alpha_beta_map`).
    The result is a :class:`DoseGrid` with dose_type EFFECTIVE, labelled ``Gy(EQD2)``.
    """
    if dose.dose_units.upper() != "GY":
        raise RTError(f"EQD2 needs an absolute dose in Gy, not {dose.dose_units}")
    shares, rest = compute_alpha_beta_map(dose.grid.shape, alpha_beta_by_roi, default_alpha_beta_gy)
    physical = dose.dose_gy.astype(np.float64, copy=False)
    eqd2 = rest * compute_eqd2_gy(physical, fractions, default_alpha_beta_gy)
    for share, alpha_beta in shares:
        eqd2 = eqd2 + share * compute_eqd2_gy(physical, fractions, alpha_beta)
    return DoseGrid(
        dose_gy=eqd2,
        grid=dose.grid,
        orientation=dose.orientation,
        dose_units=dose.dose_units,
        dose_type="EFFECTIVE",
        dose_summation_type=dose.dose_summation_type,
        frame_of_reference_uid=dose.frame_of_reference_uid,
        sop_instance_uid="",
        effective_quantity="EQD2",
    )
