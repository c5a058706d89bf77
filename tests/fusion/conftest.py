"""Small synthetic CT pairs with a known mapping, shared by the fusion tests.

Fixtures are module/session scoped: registrations cost seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.registration import Registration, register_deformable, register_rigid
from fusion.volume import load_series
from oncopacs.phantom.fusion import (
    FusionPair,
    RigidMotion,
    SmoothDeformation,
    build_fusion_ct_series,
    build_fusion_pair,
)

#: The rigid truth: 3°/-2°/4° about x/y/z and (6, -4.5, 3) mm (fixed → moving).
RIGID_TRUTH = RigidMotion((3.0, -2.0, 4.0), (6.0, -4.5, 3.0))
SHAPE, SPACING_MM = (48, 48, 48), (5.0, 5.0, 5.0)


def as_images(pair: FusionPair) -> tuple[sitk.Image, sitk.Image]:
    """Fixed and moving volumes loaded from DICOM series (so they carry series/FoR UIDs)."""
    fixed = load_series(build_fusion_ct_series(pair.fixed_hu, pair.grid, "fixed"))
    moving = load_series(build_fusion_ct_series(pair.moving_hu, pair.grid, "moving"))
    return fixed, moving


@pytest.fixture(scope="session")
def rigid_pair() -> FusionPair:
    return build_fusion_pair(RIGID_TRUTH, SHAPE, SPACING_MM)


@pytest.fixture(scope="session")
def deformed_pair() -> FusionPair:
    return build_fusion_pair(SmoothDeformation(), SHAPE, SPACING_MM)


@pytest.fixture(scope="session")
def rigid_images(rigid_pair) -> tuple[sitk.Image, sitk.Image]:
    return as_images(rigid_pair)


@pytest.fixture(scope="session")
def deformed_images(deformed_pair) -> tuple[sitk.Image, sitk.Image]:
    return as_images(deformed_pair)


@pytest.fixture(scope="session")
def rigid_result(rigid_images) -> Registration:
    return register_rigid(*rigid_images)


@pytest.fixture(scope="session")
def deformable_result(deformed_images) -> tuple[Registration, list[tuple[float, str]]]:
    calls: list[tuple[float, str]] = []
    result = register_deformable(*deformed_images, progress=lambda fraction, message: calls.append((fraction, message)))
    return result, calls


def rotation_error_deg(r_estimated: np.ndarray, r_true: np.ndarray) -> float:
    """Angle of the residual rotation R_est · R_trueᵀ, degrees."""
    cosine = (np.trace(r_estimated @ r_true.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
