"""rt.dose: reading RT Dose grids in any axis-aligned orientation, and trilinear resampling."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from oncopacs.phantom import build_demo_patient
from rt.dose import compute_dose_on_grid, read_dose
from rt.errors import GeometryError
from rt.grid import VoxelGrid
from tests.rt.helpers import reorient_dose


@pytest.fixture(scope="module")
def phantom():
    return build_demo_patient()


def test_read_dose_hfs_matches_analytic_model(phantom):
    dose = read_dose(phantom.rt_dose)
    grid = phantom.truth.dose_grid
    assert dose.grid.shape == grid.shape == dose.dose_gy.shape
    assert dose.origin_mm == pytest.approx(grid.origin_mm) and dose.spacing_mm == pytest.approx(grid.spacing_mm)
    assert (dose.dose_units, dose.dose_type, dose.dose_summation_type) == ("GY", "EFFECTIVE", "PLAN")  # proton
    assert dose.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert dose.frame_of_reference_uid == phantom.planning_ct[0].FrameOfReferenceUID
    expected = phantom.truth.dose_model.compute_dose_gy(*grid.compute_voxel_centres_mm())
    np.testing.assert_allclose(dose.dose_gy, expected, atol=1e-6)
    assert dose.to_dict()["max_dose_gy"] == pytest.approx(63.6, abs=1e-6)


@pytest.mark.parametrize(
    ("orientation", "reverse_frames"),
    [("HFS", True), ("FFS", False), ("FFS", True), ("HFP", False), ("FFP", False)],
)
def test_flipped_orientations_give_the_same_canonical_grid(phantom, orientation, reverse_frames):
    reference = read_dose(phantom.rt_dose)
    dose = read_dose(reorient_dose(phantom.rt_dose, orientation, reverse_frames))
    assert dose.grid == reference.grid
    np.testing.assert_array_equal(dose.dose_gy, reference.dose_gy)


def test_absolute_grid_frame_offsets(phantom):
    ds = copy.deepcopy(phantom.rt_dose)
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [f"{z0 + float(v):g}" for v in ds.GridFrameOffsetVector]
    assert float(ds.GridFrameOffsetVector[0]) != 0.0
    dose = read_dose(ds)
    assert dose.grid == read_dose(phantom.rt_dose).grid


def test_oblique_orientation_is_rejected_naming_it(phantom):
    ds = copy.deepcopy(phantom.rt_dose)
    c, s = np.cos(0.3), np.sin(0.3)
    ds.ImageOrientationPatient = [f"{c:.6f}", f"{s:.6f}", "0", f"{-s:.6f}", f"{c:.6f}", "0"]
    with pytest.raises(GeometryError, match=r"ImageOrientationPatient \[0\.955336.*not axis-aligned"):
        read_dose(ds)


def test_non_uniform_frames_are_rejected(phantom):
    ds = copy.deepcopy(phantom.rt_dose)
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[-1] += 1.0
    ds.GridFrameOffsetVector = [f"{v:g}" for v in offsets]
    with pytest.raises(GeometryError, match="not uniformly spaced"):
        read_dose(ds)


def test_dose_grid_scaling_applies(phantom):
    ds = copy.deepcopy(phantom.rt_dose)
    ds.DoseGridScaling = "0.000002"
    assert read_dose(ds).max_dose_gy == pytest.approx(2 * 63.6, abs=1e-5)


def test_trilinear_resampling_is_exact_for_linear_dose(phantom):
    reference = read_dose(phantom.rt_dose)
    zz, yy, xx = np.meshgrid(reference.grid.z_mm(), reference.grid.y_mm(), reference.grid.x_mm(), indexing="ij")
    linear = replace(reference, dose_gy=10.0 + 0.1 * xx - 0.05 * yy + 0.02 * zz)
    target = VoxelGrid((-58.3, -20.1, 0.7), (0.9, 1.3, 2.1), (9, 11, 13))
    sampled = compute_dose_on_grid(linear, target)
    tz, ty, tx = np.meshgrid(target.z_mm(), target.y_mm(), target.x_mm(), indexing="ij")
    np.testing.assert_allclose(sampled, 10.0 + 0.1 * tx - 0.05 * ty + 0.02 * tz, atol=1e-9)


def test_resampling_marks_points_outside_the_dose_grid(phantom):
    dose = read_dose(phantom.rt_dose)  # voxel extent -61.5 .. 61.5 mm on every axis
    target = VoxelGrid((-61.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 1, 4))  # x = -61, -60, -59, -58
    assert not np.isnan(compute_dose_on_grid(dose, target)).any()
    outside = VoxelGrid((-62.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 1, 2))  # x = -62 (outside), -61
    values = compute_dose_on_grid(dose, outside)
    assert np.isnan(values[0, 0, 0]) and not np.isnan(values[0, 0, 1])
