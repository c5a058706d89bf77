"""Analytic solids of the phantom: spheres and z-axis cylinders (LPS, mm).

Each solid knows its exact volume, whether voxel centres lie inside it, and its circular
cross-section on an axial plane. Contours are regular polygons whose circumradius is
enlarged so that the polygon *area* equals the circle area exactly:

    r_poly = r * sqrt(2*pi / (n * sin(2*pi / n)))

so a planar-contour reader (sum of polygon areas x slice thickness) sees the same
cross-sectional areas as the analytic solid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from oncopacs.phantom.geometry import Vec3

MM3_PER_CC = 1000.0


@dataclass(frozen=True)
class Sphere:
    """A ball of ``radius_mm`` centred at ``centre_mm`` (x, y, z), mm."""

    centre_mm: Vec3
    radius_mm: float

    @property
    def volume_cc(self) -> float:
        """Exact volume 4/3 * pi * R^3, cc."""
        return 4.0 / 3.0 * math.pi * self.radius_mm**3 / MM3_PER_CC

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """Boolean mask of the points (mm) inside or on the sphere."""
        cx, cy, cz = self.centre_mm
        return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= self.radius_mm**2

    def cross_section(self, z_mm: float) -> tuple[float, float, float] | None:
        """(cx, cy, r) of the circle cut by the plane z = z_mm, mm; None if it misses."""
        cx, cy, cz = self.centre_mm
        h2 = self.radius_mm**2 - (z_mm - cz) ** 2
        if h2 <= 0.0:
            return None
        return cx, cy, math.sqrt(h2)


@dataclass(frozen=True)
class Cylinder:
    """A right circular cylinder along z: axis at ``centre_xy_mm``, z in [z_min_mm, z_max_mm], mm."""

    centre_xy_mm: tuple[float, float]
    radius_mm: float
    z_min_mm: float
    z_max_mm: float

    @property
    def volume_cc(self) -> float:
        """Exact volume pi * R^2 * (z_max - z_min), cc."""
        return math.pi * self.radius_mm**2 * (self.z_max_mm - self.z_min_mm) / MM3_PER_CC

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """Boolean mask of the points (mm) inside or on the cylinder."""
        cx, cy = self.centre_xy_mm
        radial = (x - cx) ** 2 + (y - cy) ** 2 <= self.radius_mm**2
        return radial & (z >= self.z_min_mm) & (z <= self.z_max_mm)

    def cross_section(self, z_mm: float) -> tuple[float, float, float] | None:
        """(cx, cy, r) of the circle cut by the plane z = z_mm, mm; None outside [z_min, z_max]."""
        if not self.z_min_mm <= z_mm <= self.z_max_mm:
            return None
        cx, cy = self.centre_xy_mm
        return cx, cy, self.radius_mm


@dataclass(frozen=True)
class Shell:
    """A hollow ball: points of the sphere ``outer_radius_mm`` not inside ``inner_radius_mm`` (same centre), mm."""

    centre_mm: Vec3
    inner_radius_mm: float
    outer_radius_mm: float

    def __post_init__(self) -> None:
        if not 0.0 < self.inner_radius_mm < self.outer_radius_mm:
            raise ValueError("need 0 < inner_radius_mm < outer_radius_mm")

    @property
    def outer(self) -> Sphere:
        return Sphere(self.centre_mm, self.outer_radius_mm)

    @property
    def inner(self) -> Sphere:
        return Sphere(self.centre_mm, self.inner_radius_mm)

    @property
    def volume_cc(self) -> float:
        """Exact volume 4/3 * pi * (R_out^3 - R_in^3), cc."""
        return self.outer.volume_cc - self.inner.volume_cc

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """Boolean mask of the points (mm) in the shell (outer sphere minus the open inner ball)."""
        cx, cy, cz = self.centre_mm
        r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        return (r2 <= self.outer_radius_mm**2) & (r2 >= self.inner_radius_mm**2)


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid with semi-axes ``semi_axes_mm`` (a, b, c along x, y, z) about ``centre_mm``."""

    centre_mm: Vec3
    semi_axes_mm: Vec3

    @property
    def volume_cc(self) -> float:
        """Exact volume 4/3 * pi * a * b * c, cc."""
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c / MM3_PER_CC

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """Boolean mask of the points (mm) inside or on the ellipsoid."""
        (cx, cy, cz), (a, b, c) = self.centre_mm, self.semi_axes_mm
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0


Solid = Sphere | Cylinder | Shell | Ellipsoid


def compute_cross_section_area_mm2(solid: Solid, z_mm: float) -> float:
    """Exact area (mm^2) of the solid's cut by the plane z = z_mm (0 if it misses)."""
    return sum(sign * math.pi * rx * ry for sign, rx, ry, _, _ in _cross_section_ellipses(solid, z_mm))


def _cross_section_ellipses(solid: Solid, z_mm: float) -> list[tuple[float, float, float, float, float]]:
    """The cut as signed axis-aligned ellipses (sign +1 solid, -1 hole, rx, ry, cx, cy), mm."""
    if isinstance(solid, Shell):
        outer = _cross_section_ellipses(solid.outer, z_mm)
        inner = _cross_section_ellipses(solid.inner, z_mm)
        return outer + [(-1.0, *e[1:]) for e in inner]
    if isinstance(solid, Ellipsoid):
        (cx, cy, cz), (a, b, c) = solid.centre_mm, solid.semi_axes_mm
        h = 1.0 - ((z_mm - cz) / c) ** 2
        return [] if h <= 0.0 else [(1.0, a * math.sqrt(h), b * math.sqrt(h), cx, cy)]
    cut = solid.cross_section(z_mm)
    return [] if cut is None else [(1.0, cut[2], cut[2], cut[0], cut[1])]


def compute_cross_section_polygons(solid: Solid, z_mm: float, n_points: int = 48) -> list[np.ndarray]:
    """Area-preserving (n_points, 3) polygons (mm) of the cut at z = z_mm; a shell's inner one is its hole."""
    polygons = []
    for _, rx, ry, cx, cy in _cross_section_ellipses(solid, z_mm):
        if rx == ry:
            polygons.append(compute_circle_polygon(cx, cy, rx, z_mm, n_points))
            continue
        unit = compute_circle_polygon(0.0, 0.0, 1.0, z_mm, n_points)  # area-preserving scaling survives x/y stretch
        unit[:, 0] = cx + rx * unit[:, 0]
        unit[:, 1] = cy + ry * unit[:, 1]
        polygons.append(unit)
    return polygons


def compute_area_preserving_radius(radius_mm: float, n_points: int) -> float:
    """Circumradius (mm) of a regular ``n_points``-gon with the area of a circle of ``radius_mm``."""
    return radius_mm * math.sqrt(2.0 * math.pi / (n_points * math.sin(2.0 * math.pi / n_points)))


def compute_circle_polygon(
    cx: float, cy: float, radius_mm: float, z_mm: float, n_points: int = 48
) -> np.ndarray:
    """(n_points, 3) vertices (mm), counter-clockwise, of the area-preserving polygon of a circle."""
    r = compute_area_preserving_radius(radius_mm, n_points)
    angles = 2.0 * math.pi * np.arange(n_points) / n_points
    pts = np.empty((n_points, 3))
    pts[:, 0] = cx + r * np.cos(angles)
    pts[:, 1] = cy + r * np.sin(angles)
    pts[:, 2] = z_mm
    return pts
