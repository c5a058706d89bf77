"""Axis-aligned voxel grids in patient coordinates (LPS, mm).

``origin_mm`` is the centre of voxel (0, 0, 0); voxel ``(k, j, i)`` (numpy order z, y, x) has
its centre at ``origin_mm + (i * dx, j * dy, k * dz)``. Spacings are positive: every grid in
``rt`` is stored with indices increasing along +x, +y and +z (flipped orientations are
canonicalised when read, see :mod:`rt.dose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: mm^3 per cc.
MM3_PER_CC = 1000.0


@dataclass(frozen=True, slots=True)
class VoxelGrid:
    """A regular axis-aligned grid: origin_mm (x, y, z) voxel centre, spacing_mm (dx, dy, dz), shape (nz, ny, nx)."""

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.origin_mm) != 3 or len(self.spacing_mm) != 3 or len(self.shape) != 3:
            raise ValueError("origin_mm, spacing_mm and shape need three components each")
        if min(self.spacing_mm) <= 0 or min(self.shape) <= 0:
            raise ValueError(f"spacing and shape must be positive: {self.spacing_mm}, {self.shape}")

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel, cc."""
        dx, dy, dz = self.spacing_mm
        return dx * dy * dz / MM3_PER_CC

    def axis_mm(self, axis: int) -> npt.NDArray[np.float64]:
        """Voxel-centre coordinates along x (0), y (1) or z (2), mm."""
        n = self.shape[2 - axis]
        return self.origin_mm[axis] + self.spacing_mm[axis] * np.arange(n, dtype=np.float64)

    def x_mm(self) -> npt.NDArray[np.float64]:
        """Voxel-centre x of the columns, mm."""
        return self.axis_mm(0)

    def y_mm(self) -> npt.NDArray[np.float64]:
        """Voxel-centre y of the rows, mm."""
        return self.axis_mm(1)

    def z_mm(self) -> npt.NDArray[np.float64]:
        """Voxel-centre z of the slices, mm."""
        return self.axis_mm(2)

    def to_dict(self) -> dict[str, Any]:
        return {"origin_mm": list(self.origin_mm), "spacing_mm": list(self.spacing_mm), "shape": list(self.shape)}
