"""Registration QA: Jacobian statistics, inverse consistency, TRE, the verdict and the dose-accumulation gate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.errors import UnusableRegistrationError
from fusion.qa import (
    QAThresholds,
    RegistrationQA,
    check_usable,
    compute_registration_qa,
)
from fusion.registration import (
    Registration,
    RegistrationKind,
    build_field_transform,
    register_rigid,
)


def test_good_deformable_registration_passes(deformable_result, deformed_images, deformed_pair):
    result, _ = deformable_result
    qa = compute_registration_qa(result, deformed_images[0], landmarks_mm=deformed_pair.landmarks_mm(30))
    assert qa.passed and not qa.failures
    assert qa.folding_percent == 0.0 and 0.3 < qa.jacobian_min < 1.0 < qa.jacobian_max < 2.0
    assert qa.inverse_consistency_method == "field inversion" and qa.inverse_consistency_mean_mm < 0.5
    assert qa.landmark_count == 30 and qa.tre_mean_mm <= 1.0 <= qa.tre_max_mm + 1.0
    assert RegistrationQA.from_dict(qa.to_dict()).to_dict() == qa.to_dict()
    check_usable(qa, override=False)  # no error


def test_rigid_inverse_consistency_from_the_reverse_registration(rigid_result, rigid_images):
    fixed, moving = rigid_images
    reverse = register_rigid(moving, fixed)
    qa = compute_registration_qa(rigid_result, fixed, reverse=reverse)
    assert qa.inverse_consistency_method == "reverse registration"
    assert qa.inverse_consistency_mean_mm < 0.5 and qa.jacobian_min == pytest.approx(1.0)
    assert qa.passed


def test_rigid_result_on_a_deformed_pair_is_flagged_by_tre(deformed_images, deformed_pair):
    rigid = register_rigid(*deformed_images)
    qa = compute_registration_qa(rigid, deformed_images[0], landmarks_mm=deformed_pair.landmarks_mm(30),
                                 thresholds=QAThresholds(max_mean_tre_mm=1.0))
    assert qa.flagged and any("mean TRE" in failure for failure in qa.failures)


def folded_registration(fixed: sitk.Image) -> Registration:
    """A displacement that pushes a slab 12 mm past its neighbour along x: det J < 0 there."""
    x = np.array([fixed.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(fixed.GetSize()[0])])
    ux = np.where(np.abs(x) < 15.0, -12.0 * np.sign(x) * (1 - np.abs(x) / 15.0) * 2, 0.0)
    vectors = np.zeros((*sitk.GetArrayViewFromImage(fixed).shape, 3))
    vectors[..., 0] = ux[None, None, :]
    field_image = sitk.GetImageFromArray(vectors, isVector=True)
    field_image.CopyInformation(fixed)
    return Registration(build_field_transform(field_image), RegistrationKind.DEFORMABLE, None, None, 0.0,  # type: ignore[arg-type]
                        displacement_field=field_image)


def test_folding_flags_the_registration_and_blocks_dose_accumulation(deformed_images, caplog):
    qa = compute_registration_qa(folded_registration(deformed_images[0]), deformed_images[0])
    assert qa.flagged and qa.folding_percent > 1.0 and qa.jacobian_min < 0
    assert any("folding" in failure for failure in qa.failures)
    with pytest.raises(UnusableRegistrationError, match="failed QA: folding"):
        check_usable(qa, override=False)
    check_usable(qa, override=True)  # the explicit override lets it through, with a warning
    assert "explicit override" in caplog.text


def test_registration_without_qa_needs_the_override():
    with pytest.raises(UnusableRegistrationError, match="has no QA"):
        check_usable(None, override=False)
    check_usable(None, override=True)


def test_thresholds_travel_with_the_figures(deformable_result, deformed_images):
    result, _ = deformable_result
    strict = QAThresholds(min_jacobian=0.99)
    qa = compute_registration_qa(dataclasses.replace(result), deformed_images[0], thresholds=strict)
    assert qa.flagged and qa.thresholds == strict
    assert RegistrationQA.from_dict(qa.to_dict()).thresholds == strict
