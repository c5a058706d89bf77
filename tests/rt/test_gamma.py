"""Gamma index: known analytic answers, grid handling, and agreement with pymedphys."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest

from rt.dose import DoseGrid
from rt.errors import GeometryError
from rt.gamma import compute_gamma
from rt.grid import VoxelGrid
from tests.conftest import require


def _dose(array: np.ndarray, grid: VoxelGrid) -> DoseGrid:
    return DoseGrid(dose_gy=np.asarray(array, dtype=np.float64), grid=grid, orientation=(1, 0, 0, 0, 1, 0))


def _sample(grid: VoxelGrid, function) -> np.ndarray:
    z, y, x = np.meshgrid(grid.z_mm(), grid.y_mm(), grid.x_mm(), indexing="ij")
    return function(x, y, z)


def _gaussian(cx: float = 0.0, sigma: float = 10.0, peak: float = 10.0):
    return lambda x, y, z: peak * np.exp(-((x - cx) ** 2 + y**2 + z**2) / (2 * sigma**2))


GRID_3D = VoxelGrid((-20.0, -20.0, -20.0), (1.0, 1.0, 1.0), (41, 41, 41))
GRID_1D = VoxelGrid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 1, 80))


def test_identical_doses_pass_with_zero_gamma():
    ref = _dose(_sample(GRID_3D, _gaussian()), GRID_3D)
    result = compute_gamma(ref, ref)
    assert result.pass_rate_percent == 100.0
    assert result.number_evaluated == int(np.count_nonzero(ref.dose_gy >= 1.0))
    assert result.mean_gamma == 0.0 and result.max_gamma == 0.0
    assert result.histogram_counts[0] == result.number_evaluated and sum(result.histogram_counts) == result.number_evaluated
    assert np.isnan(result.gamma[ref.dose_gy < 1.0]).all()
    as_dict = result.to_dict()
    assert as_dict["parameters"]["max_search_mm"] == 4.5 and as_dict["parameters"]["normalisation_gy"] == 10.0
    assert len(as_dict["histogram_bin_edges"]) == len(as_dict["histogram_counts"]) == 21


@pytest.mark.parametrize("x", [0.01, 0.02, 0.05])
def test_uniform_scale_on_flat_dose_gives_x_over_dose_criterion(x):
    grid = VoxelGrid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (6, 6, 6))
    ref = _dose(np.full(grid.shape, 2.0), grid)
    evaluated = _dose(np.full(grid.shape, 2.0 * (1 + x)), grid)
    result = compute_gamma(ref, evaluated, dose_diff_percent=3.0)
    assert np.allclose(result.gamma, x / 0.03)
    assert result.pass_rate_percent == (100.0 if x / 0.03 <= 1 else 0.0)
    # Half the normalisation dose: a uniform scale is half as large a fraction of it.
    half = compute_gamma(ref, evaluated, normalisation_gy=4.0)
    assert np.allclose(half.gamma, x / 0.06)


@pytest.mark.parametrize("shift_mm", [0.6, 1.2, 2.1])
def test_shift_of_linear_gradient_matches_closed_form(shift_mm):
    # D(x) = x Gy/mm; the evaluated dose is D shifted by s: gamma = s / sqrt(dta^2 + (dD / g)^2).
    ref = _dose(_sample(GRID_1D, lambda x, y, z: x), GRID_1D)
    evaluated = _dose(_sample(GRID_1D, lambda x, y, z: x - shift_mm), GRID_1D)
    result = compute_gamma(ref, evaluated, normalisation_gy=10.0, threshold_percent=0.0)
    expected = shift_mm / math.sqrt(3.0**2 + 0.3**2)
    inner = result.gamma[0, 0, 10:70]  # away from the ends of the profile
    step_error = 0.3**2 / 3.0**2  # the lattice minimum is at most one 0.3 mm step from the true one
    assert np.all(np.abs(inner - expected) <= step_error * expected + 1e-9)
    assert np.all(inner >= expected - 1e-9)  # a lattice minimum never undercuts the continuous one
    assert abs(inner.mean() - shift_mm / 3.0) < 0.01  # distance dominates: ~ s / dta


def test_shift_of_gaussian_is_distance_dominated_on_the_flanks():
    shift_mm = 1.5
    # sigma 7 mm: the 10 % isodose (r = 15 mm) stays > 4.5 mm (search radius) inside the grid.
    ref = _dose(_sample(GRID_3D, _gaussian(sigma=7.0)), GRID_3D)
    evaluated = _dose(_sample(GRID_3D, _gaussian(cx=shift_mm, sigma=7.0)), GRID_3D)
    result = compute_gamma(ref, evaluated)
    assert result.pass_rate_percent == 100.0
    # The exact shift is on the search lattice (5 x 0.3 mm): gamma <= s / dta, up to interpolation.
    assert result.max_gamma <= shift_mm / 3.0 + 0.01
    # Steepest point (x = -sigma, on axis): locally linear, gamma = s / sqrt(dta^2 + (dD/g)^2).
    gradient = 10.0 * math.exp(-0.5) / 7.0
    expected = shift_mm / math.sqrt(9.0 + (0.3 / gradient) ** 2)
    assert result.gamma[20, 20, 13] == pytest.approx(expected, abs=0.01)


def test_local_and_global_differ_in_low_dose_regions():
    # Two plateaus (10 Gy, then 2 Gy) joined by a ramp; the evaluated dose is 0.1 Gy higher everywhere.
    profile = lambda x, y, z: np.interp(x, [0, 30, 45, 80], [10, 10, 2, 2])  # noqa: E731
    ref = _dose(_sample(GRID_1D, profile), GRID_1D)
    evaluated = _dose(ref.dose_gy + 0.1, GRID_1D)
    global_result = compute_gamma(ref, evaluated)
    local_result = compute_gamma(ref, evaluated, local=True)
    assert global_result.gamma[0, 0, 10] == pytest.approx(0.1 / 0.3)
    assert local_result.gamma[0, 0, 10] == pytest.approx(0.1 / 0.3)  # at the maximum, local == global
    assert global_result.gamma[0, 0, 65] == pytest.approx(0.1 / 0.3)
    assert local_result.gamma[0, 0, 65] == pytest.approx(0.1 / 0.06)  # 5 % of 2 Gy: fails
    assert global_result.pass_rate_percent == 100.0
    assert local_result.pass_rate_percent < 60.0
    assert np.all(local_result.gamma[0, 0] >= global_result.gamma[0, 0] - 1e-12)


def test_threshold_excludes_low_dose_voxels():
    ref = _dose(_sample(GRID_1D, lambda x, y, z: x / 8.0), GRID_1D)  # 0 .. 9.875 Gy
    evaluated = _dose(ref.dose_gy * 1.5, GRID_1D)
    result = compute_gamma(ref, evaluated, threshold_percent=50.0)
    cutoff = 0.5 * ref.dose_gy.max()
    assert result.parameters.threshold_gy == pytest.approx(cutoff)
    assert result.number_evaluated == int(np.count_nonzero(ref.dose_gy >= cutoff))
    assert np.isnan(result.gamma[ref.dose_gy < cutoff]).all()
    assert np.isfinite(result.gamma[ref.dose_gy >= cutoff]).all()
    everything = compute_gamma(ref, evaluated, threshold_percent=0.0)
    assert everything.number_evaluated == GRID_1D.shape[2]


@pytest.mark.parametrize(
    "evaluated_grid",
    [
        VoxelGrid((-19.5, -19.5, -19.5), (1.0, 1.0, 1.0), (40, 40, 40)),  # offset by half a voxel
        VoxelGrid((-21.0, -21.25, -20.5), (1.5, 2.5, 1.25), (34, 18, 29)),  # different spacing
    ],
)
def test_different_grids_agree_for_the_same_function(evaluated_grid):
    ref = _dose(_sample(GRID_3D, _gaussian()), GRID_3D)
    evaluated = _dose(_sample(evaluated_grid, _gaussian()), evaluated_grid)
    result = compute_gamma(ref, evaluated)
    assert result.pass_rate_percent == 100.0
    assert result.number_without_match == 0
    assert result.mean_gamma < 0.1


def test_points_outside_the_evaluated_grid_have_no_match():
    ref = _dose(np.full(GRID_1D.shape, 5.0), GRID_1D)
    small = VoxelGrid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 1, 40))
    result = compute_gamma(ref, _dose(np.full(small.shape, 5.0), small), dta_mm=2.5)
    # Evaluated centres span x = 0 .. 39 mm; the search radius is 3.75 mm: x <= 42 finds a match
    # (gamma = (x - 39) / 2.5, passing for x <= 41), beyond it nothing matches.
    assert result.number_without_match == 80 - 43
    assert np.isinf(result.gamma[0, 0, 43:]).all()
    assert np.allclose(result.gamma[0, 0, 39:43], [0.0, 0.4, 0.8, 1.2])
    assert result.pass_rate_percent == pytest.approx(100.0 * 42 / 80)
    assert result.histogram_counts[-1] == 37
    assert result.to_dict()["max_gamma"] is not None


def test_two_dimensional_gamma_searches_in_plane_only():
    grid = VoxelGrid((-20.0, -20.0, 0.0), (1.0, 1.0, 3.0), (1, 41, 41))
    ref = _dose(_sample(grid, _gaussian(sigma=7.0)), grid)
    evaluated = _dose(_sample(grid, _gaussian(cx=1.5, sigma=7.0)), grid)
    result = compute_gamma(ref, evaluated)
    assert result.pass_rate_percent == 100.0
    assert result.max_gamma <= 0.5 + 0.01


def test_bad_inputs_are_rejected():
    ref = _dose(np.ones(GRID_1D.shape), GRID_1D)
    with pytest.raises(ValueError):
        compute_gamma(ref, ref, dta_mm=0.0)
    with pytest.raises(ValueError):
        compute_gamma(ref, ref, search_step_fraction=0.0)
    with pytest.raises(ValueError):
        compute_gamma(_dose(np.zeros(GRID_1D.shape), GRID_1D), ref)
    mismatched = DoseGrid(dose_gy=np.ones((1, 1, 5)), grid=GRID_1D, orientation=(1, 0, 0, 0, 1, 0))
    with pytest.raises(GeometryError):
        compute_gamma(ref, mismatched)


@pytest.mark.parametrize("local", [False, True])
def test_pass_rate_agrees_with_pymedphys(local):
    require(importlib.util.find_spec("pymedphys") is not None, "pymedphys is not installed (pip install -e .[test])")
    import pymedphys

    grid = VoxelGrid((-40.0, -40.0, 0.0), (2.0, 2.0, 2.0), (1, 41, 41))
    reference = _sample(grid, _gaussian(sigma=15.0))
    evaluated = _sample(grid, lambda x, y, z: 10.5 * np.exp(-((x - 3.0) ** 2 + (y + 1.5) ** 2) / (2 * 15.0**2)))
    evaluated = evaluated + 0.3 * np.sin(_sample(grid, lambda x, y, z: x / 4.0 + y / 7.0))
    ours = compute_gamma(_dose(reference, grid), _dose(evaluated, grid), local=local)
    axes = (grid.y_mm(), grid.x_mm())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pymedphys.gamma(
            axes, reference[0], axes, evaluated[0], 3.0, 3.0,
            lower_percent_dose_cutoff=10.0, interp_fraction=10,
            local_gamma=local, interp_algo="scipy",
        )  # fmt: skip
    valid = ~np.isnan(theirs)
    assert int(valid.sum()) == ours.number_evaluated
    their_rate = 100.0 * np.count_nonzero(theirs[valid] <= 1.0) / valid.sum()
    assert 50.0 < ours.pass_rate_percent < 99.0  # a case that actually discriminates
    # pymedphys samples sparser shells; our full sub-voxel lattice finds equal or lower minima,
    # so our pass rate is the same or slightly higher (measured: +1.1 pp global, +2.7 pp local).
    assert their_rate - 0.5 <= ours.pass_rate_percent <= their_rate + 3.0
