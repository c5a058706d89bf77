"""Dose warping through a transform, accumulation (physical, EQD2 per ROI) and the QA gate."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset

from fusion.dose_warp import (
    DoseCourse,
    accumulate_doses,
    compute_covering_grid,
    compute_voxel_grid,
    warp_dose,
)
from fusion.errors import FusionError, UnusableRegistrationError
from fusion.qa import RegistrationQA
from rt.dose import DoseGrid, build_rt_dose, read_dose
from rt.grid import VoxelGrid
from rt.summation import compute_eqd2_gy

GRID = VoxelGrid(origin_mm=(-30.0, -30.0, -20.0), spacing_mm=(2.0, 2.0, 2.5), shape=(17, 31, 31))


def blob_dose(centre=(0.0, 0.0, 0.0), peak_gy: float = 60.0, grid: VoxelGrid = GRID, frame: str = "1.2.3") -> DoseGrid:
    zz, yy, xx = np.meshgrid(grid.z_mm(), grid.y_mm(), grid.x_mm(), indexing="ij")
    r2 = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (zz - centre[2]) ** 2
    return DoseGrid(peak_gy * np.exp(-r2 / (2 * 8.0**2)), grid, (1.0, 0, 0, 0, 1.0, 0), "GY", "PHYSICAL", "PLAN", frame)


def centroid_mm(dose: DoseGrid) -> np.ndarray:
    values = np.nan_to_num(dose.dose_gy)
    zz, yy, xx = np.meshgrid(dose.grid.z_mm(), dose.grid.y_mm(), dose.grid.x_mm(), indexing="ij")
    return np.array([(values * a).sum() / values.sum() for a in (xx, yy, zz)])


def passed_qa(passed: bool = True) -> RegistrationQA:
    return RegistrationQA(1.0, 1.0, 0.0, None, None, "not computed", None, None, 0, passed,
                          () if passed else ("folding in 3% of voxels",))


def test_warped_dose_moves_opposite_to_the_transform_and_is_nan_outside():
    shift = (4.0, -6.0, 5.0)  # fixed point + shift = moving point
    warped = warp_dose(blob_dose(), sitk.TranslationTransform(3, shift), GRID, frame_of_reference_uid="9.9")
    assert warped.frame_of_reference_uid == "9.9" and warped.grid == GRID
    np.testing.assert_allclose(centroid_mm(warped), -np.array(shift), atol=0.6)  # blob truncated at the edges
    assert np.isnan(warped.dose_gy[-1, 0, 0]) and not np.isnan(warped.dose_gy[8, 15, 15])
    same = warp_dose(blob_dose(), None, GRID)
    np.testing.assert_allclose(same.dose_gy, blob_dose().dose_gy, rtol=1e-9)


def test_physical_sum_of_two_courses():
    first, second = blob_dose(peak_gy=40.0), blob_dose(peak_gy=20.0, centre=(4.0, 0.0, 0.0))
    identity = sitk.TranslationTransform(3)
    total = accumulate_doses([DoseCourse(first, 20), DoseCourse(second, 5, identity, passed_qa())], GRID,
                             frame_of_reference_uid="1.2.3")
    np.testing.assert_allclose(total.dose_gy, first.dose_gy + second.dose_gy, rtol=1e-9)
    assert total.dose_summation_type == "MULTI_PLAN" and total.dose_type == "PHYSICAL"


def test_eqd2_sum_uses_each_courses_fractions_and_the_roi_alpha_beta():
    uniform = DoseGrid(np.full(GRID.shape, 30.0), GRID, (1.0, 0, 0, 0, 1.0, 0), "GY", "PHYSICAL", "PLAN", "1.2.3")
    mask = np.zeros(GRID.shape)
    mask[:, :, :10] = 1.0
    total = accumulate_doses([DoseCourse(uniform, 10), DoseCourse(uniform, 5)], GRID, mode="eqd2",
                             alpha_beta_by_roi={"Cord": (mask, 2.0)}, default_alpha_beta_gy=10.0,
                             frame_of_reference_uid="1.2.3")
    assert total.dose_type == "EFFECTIVE"
    in_cord = compute_eqd2_gy(30.0, 10, 2.0) + compute_eqd2_gy(30.0, 5, 2.0)
    elsewhere = compute_eqd2_gy(30.0, 10, 10.0) + compute_eqd2_gy(30.0, 5, 10.0)
    assert total.dose_gy[3, 3, 3] == pytest.approx(in_cord)
    assert total.dose_gy[3, 3, 20] == pytest.approx(elsewhere)
    assert in_cord > elsewhere


def test_registration_without_or_failing_qa_is_refused_unless_overridden():
    transform = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))
    for qa in (None, passed_qa(False)):
        with pytest.raises(UnusableRegistrationError):
            accumulate_doses([DoseCourse(blob_dose(), 1, transform, qa)], GRID)
        total = accumulate_doses([DoseCourse(blob_dose(), 1, transform, qa)], GRID, override_qa=True)
        assert np.nanmax(total.dose_gy) > 50.0


def test_dose_outside_the_target_and_bad_mode_are_errors():
    far = sitk.TranslationTransform(3, (500.0, 0.0, 0.0))
    with pytest.raises(FusionError, match="overlap"):
        warp_dose(blob_dose(), far, GRID)
    with pytest.raises(ValueError):
        accumulate_doses([DoseCourse(blob_dose(), 1)], GRID, mode="bed")
    with pytest.raises(FusionError):
        accumulate_doses([], GRID)


def test_grids_from_images_and_rt_dose_round_trip():
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), dtype=np.float32))
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    image.SetDirection((-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0))  # flipped x and z
    grid = compute_voxel_grid(image)
    assert grid.shape == (4, 5, 6) and grid.spacing_mm == (1.0, 2.0, 3.0)
    assert grid.origin_mm == (5.0, 20.0, 21.0)
    covering = compute_covering_grid(image, (2.0, 2.0, 2.0))
    assert covering.shape == (6, 5, 3)
    template = Dataset()
    template.PatientID, template.StudyInstanceUID, template.FrameOfReferenceUID = "P", "1.2.3.4", "1.2.3"
    total = accumulate_doses([DoseCourse(blob_dose(), 1)], GRID, frame_of_reference_uid="1.2.3")
    read = read_dose(build_rt_dose(total, template))
    assert read.grid == GRID and read.frame_of_reference_uid == "1.2.3"
    np.testing.assert_allclose(read.dose_gy, total.dose_gy, atol=1e-6)
