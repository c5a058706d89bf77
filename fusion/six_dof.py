"""The six degrees of freedom of a rigid registration, as a couch correction is read.

A rigid 4x4 homogeneous matrix (patient LPS, mm) is split into translations along x (left-right), y
(anterior-posterior), z (superior-inferior) in mm and rotations about those axes in degrees, with the rotation
written R = Rz(yaw) · Ry(roll) · Rx(pitch) (each right-handed about the LPS axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fusion.errors import FusionError

ROTATION_TOLERANCE = 1e-3  # |R·Rᵀ - I| and |det R - 1| allowed before a matrix is refused as not rigid


@dataclass(frozen=True)
class SixDof:
    """Translations (mm) along x, y, z and rotations (degrees) about x (pitch), y (roll), z (yaw), LPS axes."""

    translation_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]

    @property
    def shift_mm(self) -> float:
        """Length of the translation vector, mm."""
        return float(np.linalg.norm(self.translation_mm))

    def to_dict(self) -> dict[str, list[float]]:
        return {"translation_mm": [round(v, 3) for v in self.translation_mm],
                "rotation_deg": [round(v, 3) for v in self.rotation_deg]}


def compute_six_dof(matrix: npt.ArrayLike) -> SixDof:
    """The 6 DOF of a rigid 4x4 homogeneous matrix (FusionError when it is not a rotation plus translation)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise FusionError(f"a rigid matrix is 4x4, not {'x'.join(map(str, m.shape))}")
    rotation = m[:3, :3]
    if (np.abs(rotation @ rotation.T - np.eye(3)).max() > ROTATION_TOLERANCE
            or abs(np.linalg.det(rotation) - 1.0) > ROTATION_TOLERANCE):
        raise FusionError("the matrix is not rigid (its 3x3 part is not a rotation)")
    roll = float(np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(rotation[2, 1], rotation[2, 2]))
    yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
    translation = (float(m[0, 3]), float(m[1, 3]), float(m[2, 3]))
    return SixDof(translation, (float(np.degrees(pitch)), float(np.degrees(roll)), float(np.degrees(yaw))))
