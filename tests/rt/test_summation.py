"""rt.summation: summing doses across grids, and BED/EQD2."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from oncopacs.phantom import build_demo_patient
from rt.dose import read_dose
from rt.errors import GeometryError, RTError
from rt.grid import VoxelGrid
from rt.structures import compute_mask, read_structure_set
from rt.summation import (
    compute_bed_gy,
    compute_dose_sum,
    compute_eqd2_gy,
    compute_eqd2_map,
    compute_sum_coverage,
)


@pytest.fixture(scope="module")
def phantom():
    return build_demo_patient()


@pytest.fixture(scope="module")
def dose(phantom):
    return read_dose(phantom.rt_dose)


def test_two_identical_doses_sum_to_twice(dose):
    total = compute_dose_sum([dose, dose])
    assert total.grid == dose.grid and total.frame_of_reference_uid == dose.frame_of_reference_uid
    np.testing.assert_allclose(total.dose_gy, 2.0 * dose.dose_gy)
    assert total.dose_summation_type == "MULTI_PLAN"
    weighted = compute_dose_sum([dose, dose], weights=[0.5, 0.25])
    np.testing.assert_allclose(weighted.dose_gy, 0.75 * dose.dose_gy)


def test_dose_on_shifted_coarser_grid_is_resampled(phantom, dose):
    model = phantom.truth.dose_model
    coarse = VoxelGrid((-58.5, -58.5, -58.0), (2.5, 2.5, 2.0), (59, 47, 47))  # inside the dose grid
    z, y, x = np.meshgrid(coarse.z_mm(), coarse.y_mm(), coarse.x_mm(), indexing="ij")
    other = replace(dose, dose_gy=model.compute_dose_gy(x, y, z), grid=coarse)
    total = compute_dose_sum([dose, other])
    assert total.grid == dose.grid
    covered = compute_sum_coverage([dose, other])
    assert covered.any() and not covered.all()
    assert np.all(np.isnan(total.dose_gy[~covered]))
    inner = covered & (dose.dose_gy > 1.0)
    error = np.abs(total.dose_gy[inner] - 2.0 * dose.dose_gy[inner])
    assert np.median(error) < 0.5 and np.max(error) < 0.05 * 2.0 * dose.max_dose_gy
    zero = compute_dose_sum([dose, other], outside="zero")
    np.testing.assert_allclose(zero.dose_gy[~covered], dose.dose_gy[~covered])


def test_target_grid(dose):
    target = VoxelGrid(dose.origin_mm, dose.spacing_mm, dose.grid.shape)
    assert compute_dose_sum([dose], target_grid=target).grid == target
    np.testing.assert_allclose(compute_dose_sum([dose], target_grid=target).dose_gy, dose.dose_gy)


def test_mismatched_frames_and_inputs_raise(dose):
    with pytest.raises(GeometryError, match="frames of reference"):
        compute_dose_sum([dose, replace(dose, frame_of_reference_uid="1.2.3")])
    with pytest.raises(RTError, match="weights"):
        compute_dose_sum([dose, dose], weights=[1.0])
    with pytest.raises(RTError, match="units"):
        compute_dose_sum([dose, replace(dose, dose_units="RELATIVE")])
    with pytest.raises(RTError):
        compute_dose_sum([])


def test_bed_and_eqd2_hand_computed():
    assert compute_bed_gy(60.0, 30, 3.0) == pytest.approx(100.0)
    assert compute_eqd2_gy(60.0, 30, 3.0) == pytest.approx(60.0)
    assert compute_bed_gy(60.0, 30, 10.0) == pytest.approx(72.0)
    assert compute_eqd2_gy(60.0, 30, 10.0) == pytest.approx(60.0)
    assert compute_eqd2_gy(50.0, 5, 3.0) == pytest.approx(50.0 * 13.0 / 5.0)  # 130 Gy
    assert compute_bed_gy(50.0, 5, 3.0) == pytest.approx(216.6666667)
    values = compute_eqd2_gy(np.array([0.0, 60.0, np.nan]), 30, 3.0)
    np.testing.assert_allclose(values, [0.0, 60.0, np.nan])
    with pytest.raises(ValueError):
        compute_bed_gy(60.0, 0, 3.0)
    with pytest.raises(ValueError):
        compute_eqd2_gy(60.0, 30, 0.0)


def test_eqd2_map_uses_roi_alpha_beta(phantom, dose):
    ss = read_structure_set(phantom.rtstruct)
    rectum = compute_mask(ss.roi("Rectum"), dose.grid)
    ptv = compute_mask(ss.roi("PTV"), dose.grid)
    scaled = replace(dose, dose_gy=dose.dose_gy * (50.0 / 60.0))  # 50 Gy-ish in 5 fractions
    eqd2 = compute_eqd2_map(scaled, 5, {"Rectum": (rectum, 3.0), "PTV": (ptv, 10.0)}, 10.0)
    assert eqd2.dose_type == "EFFECTIVE" and eqd2.grid == dose.grid
    inside_rectum = rectum == 1.0
    np.testing.assert_allclose(eqd2.dose_gy[inside_rectum], compute_eqd2_gy(scaled.dose_gy[inside_rectum], 5, 3.0))
    outside = (rectum == 0.0) & (ptv == 0.0)
    np.testing.assert_allclose(eqd2.dose_gy[outside], compute_eqd2_gy(scaled.dose_gy[outside], 5, 10.0))
    partial = (rectum > 0.0) & (rectum < 1.0) & (ptv == 0.0)
    w = rectum[partial]
    d = scaled.dose_gy[partial]
    expected = w * compute_eqd2_gy(d, 5, 3.0) + (1 - w) * compute_eqd2_gy(d, 5, 10.0)
    np.testing.assert_allclose(eqd2.dose_gy[partial], expected)
    with pytest.raises(GeometryError):
        compute_eqd2_map(dose, 30, {"Rectum": (rectum[:-1], 3.0)}, 10.0)
