"""Rigid and deformable registration recover known mappings (issue 5 checks)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.errors import RegistrationError
from fusion.registration import (
    RegistrationKind,
    build_rigid_transform,
    compute_affine_matrix,
    register_rigid,
)
from tests.fusion.conftest import RIGID_TRUTH, rotation_error_deg


def test_rigid_offset_recovered_within_half_mm_and_half_degree(rigid_result, rigid_pair):
    assert rigid_result.kind is RegistrationKind.RIGID and rigid_result.seconds > 0
    matrix = rigid_result.rigid_matrix
    assert rotation_error_deg(matrix[:3, :3], RIGID_TRUTH.matrix) <= 0.5
    fixed_points, moving_points = rigid_pair.landmarks_mm(40)
    errors = np.linalg.norm(rigid_result.map_points_mm(fixed_points) - moving_points, axis=1)
    assert errors.max() <= 0.5, errors.max()
    # the translation at the rotation centre (origin) itself
    assert np.linalg.norm(matrix[:3, 3] - np.asarray(RIGID_TRUTH.translation_mm)) <= 0.5


def test_rigid_result_names_both_series(rigid_result, rigid_images):
    fixed, moving = rigid_images
    assert rigid_result.fixed.series_instance_uid == fixed.GetMetaData("SeriesInstanceUID")
    assert rigid_result.moving.frame_of_reference_uid == moving.GetMetaData("FrameOfReferenceUID")
    assert rigid_result.fixed.frame_of_reference_uid != rigid_result.moving.frame_of_reference_uid


def test_rigid_mutual_information_aligns_another_modality(rigid_pair):
    """An MR-like moving image (intensities remapped non-monotonically) still registers: MI, not MSE."""
    fixed = sitk.GetImageFromArray(rigid_pair.fixed_hu)
    mr_like = np.where(rigid_pair.moving_hu < -500, 0.0, 600.0 - np.abs(rigid_pair.moving_hu - 50.0))
    moving = sitk.GetImageFromArray(mr_like.astype(np.float32))
    for image in (fixed, moving):
        image.SetOrigin(rigid_pair.grid.origin_mm)
        image.SetSpacing(rigid_pair.grid.spacing_mm)
    result = register_rigid(fixed, moving)
    fixed_points, moving_points = rigid_pair.landmarks_mm(40)
    assert np.linalg.norm(result.map_points_mm(fixed_points) - moving_points, axis=1).mean() <= 1.0


def test_known_smooth_deformation_mean_tre_at_most_1mm_without_folding(deformable_result, deformed_pair,
                                                                        deformed_images):
    result, _ = deformable_result
    fixed, _ = deformed_images
    assert result.kind is RegistrationKind.DEFORMABLE
    fixed_points, moving_points = deformed_pair.landmarks_mm(40)
    initial = np.linalg.norm(moving_points - fixed_points, axis=1).mean()
    tre = np.linalg.norm(result.map_points_mm(fixed_points) - moving_points, axis=1)
    assert initial > 3.0 and tre.mean() <= 1.0, (initial, tre.mean())
    field_image = result.displacement_field
    assert field_image.GetSize() == fixed.GetSize() and field_image.GetOrigin() == fixed.GetOrigin()
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field_image))
    assert jacobian.min() > 0.0


def test_displacement_field_is_transform_minus_identity(deformable_result, deformed_images):
    result, _ = deformable_result
    fixed, _ = deformed_images
    index = (10, 20, 30)
    point = np.array(fixed.TransformIndexToPhysicalPoint(index))
    vector = np.array(result.displacement_field[index])
    assert np.allclose(np.array(result.transform.TransformPoint(tuple(point))), point + vector, atol=1e-6)


def test_progress_reports_fractions_up_to_one(deformable_result):
    _, calls = deformable_result
    fractions = [fraction for fraction, _ in calls]
    assert len(calls) > 10 and all(0.0 <= f <= 1.0 for f in fractions) and fractions[-1] == 1.0
    assert any("demons" in message for _, message in calls) and any("rigid" in message for _, message in calls)


def test_matrix_round_trip_and_non_rigid_matrix_refused():
    transform = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, 5.0, 6.0))
    matrix = compute_affine_matrix(transform)
    rebuilt = build_rigid_transform(matrix)
    for point in ((0.0, 0.0, 0.0), (10.0, -20.0, 30.0)):
        assert np.allclose(transform.TransformPoint(point), rebuilt.TransformPoint(point), atol=1e-9)
    scaled = matrix.copy()
    scaled[:3, :3] *= 1.1
    with pytest.raises(RegistrationError, match="not a rigid"):
        build_rigid_transform(scaled)


def test_two_dimensional_images_are_refused():
    image = sitk.Image(8, 8, sitk.sitkFloat32)
    with pytest.raises(RegistrationError, match="3D"):
        register_rigid(image, image)
