"""Rigid matrix → translations (mm) and rotations (degrees)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fusion.errors import FusionError
from fusion.six_dof import compute_six_dof


def test_recovers_known_rotations_and_translations():
    matrix = np.eye(4)
    # R = Rz(yaw) Ry(roll) Rx(pitch): extrinsic x, then y, then z
    matrix[:3, :3] = Rotation.from_euler("xyz", [2.0, -1.5, 3.0], degrees=True).as_matrix()
    matrix[:3, 3] = [4.0, -2.5, 10.0]
    dof = compute_six_dof(matrix)
    assert dof.translation_mm == pytest.approx((4.0, -2.5, 10.0))
    assert dof.rotation_deg == pytest.approx((2.0, -1.5, 3.0))
    assert dof.shift_mm == pytest.approx(np.linalg.norm([4.0, -2.5, 10.0]))
    assert dof.to_dict()["rotation_deg"] == [2.0, -1.5, 3.0]


def test_identity_is_zero_and_non_rigid_is_refused():
    assert compute_six_dof(np.eye(4)).rotation_deg == (0.0, 0.0, 0.0)
    scaled = np.diag([1.1, 1.0, 1.0, 1.0])
    with pytest.raises(FusionError, match="not rigid"):
        compute_six_dof(scaled)
    with pytest.raises(FusionError, match="4x4"):
        compute_six_dof(np.eye(3))
