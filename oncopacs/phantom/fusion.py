"""CT pairs with a known spatial mapping, for registration tests and the registration benchmark.

The anatomy is analytic (:class:`FusionAnatomy`: HU at any point, LPS mm), so both images are
sampled exactly, without interpolation. A known *mapping* ``T`` takes fixed-image points to
moving-image points (SimpleITK's convention): the moving image samples the anatomy at ``y``, the
fixed image samples it at ``T(x)``, so ``fixed(x) = moving(T(x))`` holds exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from oncopacs.phantom.ct import CT_RESCALE_INTERCEPT, build_ct_slice
from oncopacs.phantom.geometry import ImageGrid, centred_grid
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.uids import uid_for

Points = tuple[np.ndarray, np.ndarray, np.ndarray]
Mapping = Callable[[np.ndarray, np.ndarray, np.ndarray], Points]


@dataclass(frozen=True)
class FusionAnatomy:
    """A torso-like phantom centred at the origin (mm): elliptic body, lungs, spine, organs, soft texture.

    body_semi_axes_mm: (a along x, b along y) of the elliptic body cross-section; texture_hu: amplitude
    of each of the smooth cosine textures in soft tissue, HU (gives the interior something to register).
    """

    body_semi_axes_mm: tuple[float, float] = (120.0, 90.0)
    half_length_mm: float = 110.0
    texture_hu: float = 25.0
    spheres: tuple[tuple[tuple[float, float, float], float, float], ...] = field(default=(
        ((30.0, -20.0, 10.0), 22.0, 60.0),     # liver-like, brighter
        ((-35.0, 10.0, -25.0), 15.0, -90.0),   # fat
        ((0.0, -45.0, 40.0), 18.0, 35.0),      # bladder-like
        ((45.0, 30.0, -45.0), 12.0, 120.0),    # contrast-filled
        ((-20.0, -30.0, -60.0), 10.0, 300.0),  # calcification
    ))

    def compute_hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """CT number (HU) at the points (mm)."""
        a, b = self.body_semi_axes_mm
        hu = np.full(np.broadcast(x, y, z).shape, -1000.0)
        inside = ((x / a) ** 2 + (y / b) ** 2 <= 1.0) & (np.abs(z) <= self.half_length_mm)
        texture = self.texture_hu * (np.cos(x / 9.0 + 0.3) * np.cos(y / 11.0) + np.cos(z / 10.0 + x / 23.0)
                                     + np.sin(y / 13.0 - z / 17.0))
        hu = np.where(inside, texture, hu)
        for cx, cy, rx, ry in ((-55.0, -5.0, 35.0, 45.0), (55.0, -5.0, 35.0, 45.0)):  # lungs
            lung = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + (z / (0.8 * self.half_length_mm)) ** 2 <= 1.0
            hu = np.where(lung & inside, -800.0 + 0.4 * texture, hu)
        spine = ((x / 14.0) ** 2 + ((y - 60.0) / 14.0) ** 2 <= 1.0) & inside
        hu = np.where(spine, 700.0 + 100.0 * np.cos(z / 6.0), hu)  # vertebrae along z
        for (cx, cy, cz), radius, value in self.spheres:
            hu = np.where((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2, value + 0.5 * texture, hu)
        return hu

    def sample(self, grid: ImageGrid, mapping: Mapping | None = None) -> np.ndarray:
        """HU on ``grid`` (nz, ny, nx, float32), at ``mapping(x)`` of each voxel centre ``x`` when given."""
        xx, yy = grid.compute_slice_xy_mm()
        out = np.empty(grid.shape, dtype=np.float32)
        for k, z in enumerate(grid.z_mm()):
            zz = np.full_like(xx, float(z))
            points = (xx, yy, zz) if mapping is None else mapping(xx, yy, zz)
            out[k] = self.compute_hu(*points)
        return out


@dataclass(frozen=True)
class RigidMotion:
    """Fixed → moving rigid mapping ``y = R (x - c) + c + t`` (rotations about x, y, z in that order, deg)."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 rotation R = Rz · Ry · Rx (SimpleITK Euler3DTransform's default order)."""
        ax, ay, az = np.radians(self.rotation_deg)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        return rz @ ry @ rx

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Points:
        r, c, t = self.matrix, np.asarray(self.centre_mm), np.asarray(self.translation_mm)
        p = np.stack([x - c[0], y - c[1], z - c[2]], axis=-1) @ r.T + c + t
        return p[..., 0], p[..., 1], p[..., 2]


@dataclass(frozen=True)
class SmoothDeformation:
    """Fixed → moving mapping ``y = x + u(x)``: a sum of Gaussian displacement bumps.

    Each bump is (centre mm, displacement vector mm, sigma mm); displacements up to about 10 mm with
    sigma ≥ 30 mm keep the Jacobian determinant well above zero (no folding).
    """

    bumps: tuple[tuple[tuple[float, float, float], tuple[float, float, float], float], ...] = (
        ((20.0, -10.0, 10.0), (7.0, -5.0, 4.0), 40.0),
        ((-40.0, 20.0, -30.0), (-4.0, 6.0, -5.0), 35.0),
        ((0.0, 40.0, 50.0), (3.0, 4.0, 6.0), 45.0),
    )

    def compute_displacement_mm(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Points:
        """The displacement (ux, uy, uz) at the points, mm."""
        ux, uy, uz = np.zeros_like(x, dtype=float), np.zeros_like(x, dtype=float), np.zeros_like(x, dtype=float)
        for (cx, cy, cz), (dx, dy, dz), sigma in self.bumps:
            weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2.0 * sigma**2))
            ux, uy, uz = ux + dx * weight, uy + dy * weight, uz + dz * weight
        return ux, uy, uz

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Points:
        ux, uy, uz = self.compute_displacement_mm(x, y, z)
        return x + ux, y + uy, z + uz


@dataclass(frozen=True)
class FusionPair:
    """Fixed and moving HU volumes on ``grid`` (nz, ny, nx) and the true fixed → moving ``mapping``."""

    grid: ImageGrid
    fixed_hu: np.ndarray
    moving_hu: np.ndarray
    mapping: Mapping

    def landmarks_mm(self, n: int = 30, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
        """``n`` fixed-image points inside the body and away from the grid edge, and their true moving points."""
        rng = np.random.default_rng(seed)
        origin, spacing = np.asarray(self.grid.origin_mm), np.asarray(self.grid.spacing_mm)
        shape = np.asarray(self.grid.shape[::-1])
        lo = origin + 0.2 * spacing * shape
        hi = origin + 0.8 * spacing * shape
        anatomy = FusionAnatomy()
        points: list[np.ndarray] = []
        while len(points) < n:
            p = rng.uniform(lo, hi)
            if anatomy.compute_hu(*p) > -500:  # inside soft tissue or bone
                points.append(p)
        fixed = np.array(points)
        moving = np.stack(self.mapping(fixed[:, 0], fixed[:, 1], fixed[:, 2]), axis=-1)
        return fixed, moving


def build_fusion_pair(mapping: Mapping, shape: tuple[int, int, int] = (64, 64, 64),
                      spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0), *,
                      anatomy: FusionAnatomy | None = None, noise_hu: float = 0.0, seed: int = 3) -> FusionPair:
    """A fixed/moving pair on a grid centred at the origin; ``noise_hu``: SD of Gaussian noise added to each."""
    anatomy = anatomy or FusionAnatomy()
    grid = centred_grid(shape, spacing_mm)
    fixed, moving = anatomy.sample(grid, mapping), anatomy.sample(grid)
    if noise_hu > 0:
        rng = np.random.default_rng(seed)
        fixed += rng.normal(0.0, noise_hu, fixed.shape).astype(np.float32)
        moving += rng.normal(0.0, noise_hu, moving.shape).astype(np.float32)
    return FusionPair(grid, fixed, moving, mapping)


def build_fusion_ct_series(hu: np.ndarray, grid: ImageGrid, key: str, *,
                           patient: PatientSpec | None = None) -> list[Dataset]:
    """CT slices of ``hu`` (nz, ny, nx) on ``grid``: one study and frame of reference per ``key``."""
    patient = patient or PatientSpec("ONCO-FUSION-001", "Phantom^Fusion")
    study = make_study_spec(patient, f"fusion-{key}", study_id=key[:16], description=f"Fusion phantom {key}")
    series = make_series_spec(study, "ct", series_number=1, description=f"CT {key}", modality="CT",
                              frame_of_reference_uid=uid_for(patient.patient_id, "for", "fusion", key))
    stored = np.clip(np.round(hu - CT_RESCALE_INTERCEPT), 0, 65535).astype("<u2")
    return [build_ct_slice(patient, study, series, grid, k, stored[k].tobytes()) for k in range(grid.nz)]
