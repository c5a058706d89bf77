"""Deformable registration: the demons levels stop once converged, a rigid offset and a deformation
together are recovered, and a propagated organ matches its propagation through the true field (issue 17)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.registration import DeformableSettings, register_deformable
from oncopacs.phantom.fusion import FusionAnatomy, SmoothDeformation, build_fusion_pair
from tests.fusion.conftest import RIGID_TRUTH, SHAPE, SPACING_MM, as_images


def _demons_iterations(calls: list[tuple[float, str]]) -> Counter[str]:
    """Demons iterations per level, from the progress messages ("demons level 1/2, MSE ...")."""
    levels = (re.match(r"demons level (\d+)/\d+", message) for _, message in calls)
    return Counter(match.group(1) for match in levels if match)


def _rigid_then_deformed(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return SmoothDeformation()(*RIGID_TRUTH(x, y, z))


@pytest.fixture(scope="module")
def combined_pair():
    return build_fusion_pair(_rigid_then_deformed, SHAPE, SPACING_MM, noise_hu=10.0)


def test_each_level_stops_once_its_mse_levels_off(deformed_images, deformed_pair):
    calls: list[tuple[float, str]] = []
    result = register_deformable(*deformed_images, settings=DeformableSettings(iterations=(200, 200, 200)),
                                 progress=lambda fraction, message: calls.append((fraction, message)))
    per_level = _demons_iterations(calls)
    # 48^3 voxels of 5 mm: levels at 10 mm, then 5 mm (the 4 and 2 mm levels merge: 400 iterations at most)
    assert sorted(per_level) == ["1", "2"]
    assert all(count < 100 for count in per_level.values()), per_level
    fixed_points, moving_points = deformed_pair.landmarks_mm(40)
    assert np.linalg.norm(result.map_points_mm(fixed_points) - moving_points, axis=1).mean() <= 1.0


def test_without_a_convergence_window_every_iteration_runs(deformed_images):
    calls: list[tuple[float, str]] = []
    register_deformable(*deformed_images, settings=DeformableSettings(iterations=(7, 3, 2), convergence_window=0),
                        progress=lambda fraction, message: calls.append((fraction, message)))
    assert _demons_iterations(calls) == Counter({"1": 7, "2": 5})
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.parametrize("settings", [DeformableSettings(convergence_window=-1),
                                      DeformableSettings(convergence_tolerance=-0.1)])
def test_negative_convergence_settings_are_refused(deformed_images, settings):
    with pytest.raises(ValueError, match="convergence"):
        register_deformable(*deformed_images, settings=settings)


def test_rigid_offset_and_deformation_recovered_together(combined_pair):
    """6-8 mm of rigid motion and 3° rotations on top of the smooth deformation, with 10 HU of noise."""
    fixed, moving = as_images(combined_pair)
    result = register_deformable(fixed, moving)
    fixed_points, moving_points = combined_pair.landmarks_mm(40)
    initial = np.linalg.norm(moving_points - fixed_points, axis=1).mean()
    tre = np.linalg.norm(result.map_points_mm(fixed_points) - moving_points, axis=1)
    assert initial > 8.0 and tre.mean() <= 1.2, (initial, tre.mean())
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(result.displacement_field))
    assert jacobian.min() > 0.0


def test_propagated_organ_matches_its_propagation_through_the_true_field(deformable_result, deformed_pair,
                                                                         deformed_images):
    """The liver-like sphere (22 mm), as occupancy on the moving grid, through the found and the true field."""
    result, _ = deformable_result
    fixed, _ = deformed_images
    grid = deformed_pair.grid
    (cx, cy, cz), radius, _ = FusionAnatomy().spheres[0]
    xx, yy, zz = grid.compute_voxel_centres_mm()
    occupancy = sitk.GetImageFromArray(
        ((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2 <= radius**2).astype(np.float32))
    occupancy.CopyInformation(fixed)
    mapped = deformed_pair.mapping(xx, yy, zz)
    true_field = sitk.GetImageFromArray(np.stack([mapped[0] - xx, mapped[1] - yy, mapped[2] - zz], axis=-1),
                                        isVector=True)
    true_field.CopyInformation(fixed)

    def propagate(transform: sitk.Transform) -> np.ndarray:
        warped = sitk.Resample(occupancy, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(warped) >= 0.5

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))

    truth = propagate(sitk.DisplacementFieldTransform(true_field))
    assert dice(propagate(sitk.Transform(3, sitk.sitkIdentity)), truth) < 0.9  # the deformation matters here
    assert dice(propagate(result.transform), truth) >= 0.95
