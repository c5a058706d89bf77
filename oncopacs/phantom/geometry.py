"""Image grids in patient coordinates (LPS, mm) and their voxel-centre coordinates.

A grid is axis-aligned (ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``) and stacked along +z.
``origin_mm`` is the centre of the first voxel, i.e. the ImagePositionPatient of the first
slice (DICOM positions refer to voxel centres), so voxel ``(k, j, i)`` has its centre at
``origin + (i * dx, j * dy, k * dz)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rt.grid import VoxelGrid

Vec3 = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class ImageGrid(VoxelGrid):
    """A regular, axis-aligned voxel grid (:class:`rt.grid.VoxelGrid`) with the phantom's helpers.

    origin_mm: (x, y, z) centre of voxel (0, 0, 0), mm (LPS).
    spacing_mm: (dx, dy, dz) voxel pitch along x (columns), y (rows) and z (slices), mm.
    shape: (nz, ny, nx) = (slices, rows, columns), numpy order.
    """

    @property
    def nz(self) -> int:
        return self.shape[0]

    @property
    def ny(self) -> int:
        return self.shape[1]

    @property
    def nx(self) -> int:
        return self.shape[2]

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel, mm^3."""
        dx, dy, dz = self.spacing_mm
        return dx * dy * dz

    def slice_position_mm(self, k: int) -> Vec3:
        """ImagePositionPatient of slice ``k`` (centre of its first voxel), mm."""
        x0, y0, _ = self.origin_mm
        return (x0, y0, float(self.z_mm()[k]))

    def compute_slice_xy_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Voxel-centre (x, y) of one slice as two (ny, nx) arrays, mm."""
        yy, xx = np.meshgrid(self.y_mm(), self.x_mm(), indexing="ij")
        return xx, yy

    def compute_voxel_centres_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre (x, y, z) as three (nz, ny, nx) arrays, mm."""
        zz, yy, xx = np.meshgrid(self.z_mm(), self.y_mm(), self.x_mm(), indexing="ij")
        return xx, yy, zz


def centred_grid(
    shape: tuple[int, int, int], spacing_mm: Vec3, centre_mm: Vec3 = (0.0, 0.0, 0.0)
) -> ImageGrid:
    """A grid of ``shape`` (nz, ny, nx) whose voxel centres are symmetric about ``centre_mm``."""
    (cx, cy, cz), (dx, dy, dz), (nz, ny, nx) = centre_mm, spacing_mm, shape
    origin = (cx - (nx - 1) * dx / 2.0, cy - (ny - 1) * dy / 2.0, cz - (nz - 1) * dz / 2.0)
    return ImageGrid(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=(float(dx), float(dy), float(dz)),
        shape=(int(nz), int(ny), int(nx)),
    )
