"""Closed-form truth for the phantom: structure volumes, DVH metrics and SUVs.

DVH. For the radial dose model (see :mod:`oncopacs.phantom.dose_model`) the set receiving at
least d (0 < d <= Dmax) is the ball B(c, r(d)), r(d) = r1 - (d/Dmax)(r1 - r0). Hence for a
structure S with volume V_S the cumulative DVH fraction is

    V(>=d) / V_S = f(r(d)),   f(r) = |S ∩ B(c, r)| / V_S,

with V(>=d) = 1 for d <= 0 and 0 for d > Dmax. For a sphere S(R) whose centre is at distance s
from c (the "lens" volume of two balls):

    |S ∩ B(r)| = 0                                   if s >= R + r
               = 4/3 pi min(r, R)^3                  if s <= |R - r|
               = pi (R + r - s)^2 (s^2 + 2sr - 3r^2 + 2sR + 6rR - 3R^2) / (12 s)  otherwise.

For a concentric sphere (s = 0, the PTV): f(r) = min(1, (r/R)^3). For a z-axis cylinder the
closed form exists only when B(c, r1) lies entirely inside it (f = 4/3 pi r^3 / V_S, the BODY)
or entirely outside it (f = 0, the SpinalCord); otherwise GeometryError.

Mean dose (integrating the cumulative DVH, substituting d -> r):

    Dmean = ∫_0^Dmax f(r(d)) dd = Dmax / (r1 - r0) * ∫_{r0}^{r1} f(r) dr,

evaluated exactly: f is piecewise polynomial in r (degree <= 4) and each piece is integrated by
Gauss-Legendre with 8 nodes. For the concentric sphere with r0 <= R <= r1 this is
Dmax/(r1 - r0) * [(R^4 - r0^4)/(4 R^3) + (r1 - R)].

D_x (min dose to the hottest fraction x of S) = D(r*) with r* = min{r : f(r) >= x} (Dmax if
f(r0) >= x, 0 if f(r1) < x); r* is found by bisection to machine precision. For the concentric
sphere r* = R x^(1/3). Dmax / Dmin of S are D at the nearest / farthest point of S from c.

SUV (body weight, g/mL):  SUVbw = C * W / (A0 * 2^(-dt / T1/2)), with C the activity
concentration (Bq/mL) at series start, W the weight in g, A0 the injected activity (Bq),
dt = series time - injection time (s) and T1/2 the half-life (s).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from oncopacs.errors import GeometryError
from oncopacs.phantom.activity import PetPhantom
from oncopacs.phantom.anatomy import PhantomAnatomy
from oncopacs.phantom.dose_model import RadialDoseModel
from oncopacs.phantom.geometry import ImageGrid, Vec3
from oncopacs.phantom.shapes import (
    MM3_PER_CC,
    Cylinder,
    Ellipsoid,
    Shell,
    Solid,
    Sphere,
    compute_cross_section_area_mm2,
)

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _distance(a: Vec3, b: Vec3) -> float:
    return math.dist(a, b)


def compute_sphere_ball_overlap_mm3(sphere_radius_mm: float, ball_radius_mm: float, distance_mm: float) -> float:
    """Volume (mm^3) of the intersection of two balls with radii R, r and centre distance s."""
    big_r, r, s = sphere_radius_mm, ball_radius_mm, distance_mm
    if r <= 0.0 or s >= big_r + r:
        return 0.0
    if s <= abs(big_r - r):
        return 4.0 / 3.0 * math.pi * min(r, big_r) ** 3
    return (
        math.pi
        * (big_r + r - s) ** 2
        * (s * s + 2 * s * r - 3 * r * r + 2 * s * big_r + 6 * r * big_r - 3 * big_r * big_r)
        / (12.0 * s)
    )


def _cylinder_relation(cyl: Cylinder, centre: Vec3, radius: float) -> str:
    """'inside' if B(centre, radius) ⊂ cyl, 'outside' if disjoint, else 'partial'."""
    rho = math.hypot(centre[0] - cyl.centre_xy_mm[0], centre[1] - cyl.centre_xy_mm[1])
    cz = centre[2]
    if rho + radius <= cyl.radius_mm and cyl.z_min_mm <= cz - radius and cz + radius <= cyl.z_max_mm:
        return "inside"
    dz = max(0.0, cyl.z_min_mm - cz, cz - cyl.z_max_mm)
    if math.hypot(max(0.0, rho - cyl.radius_mm), dz) >= radius:
        return "outside"
    return "partial"


def compute_ball_fraction(solid: Solid, centre_mm: Vec3, radius_mm: float, support_radius_mm: float) -> float:
    """f(r) = |S ∩ B(centre, r)| / |S| for r <= support_radius_mm (the dose model's r1)."""
    volume_mm3 = solid.volume_cc * MM3_PER_CC
    if isinstance(solid, Shell):  # outer ball minus inner ball, both intersected with B(centre, r)
        s = _distance(solid.centre_mm, centre_mm)
        outer = compute_sphere_ball_overlap_mm3(solid.outer_radius_mm, radius_mm, s)
        return (outer - compute_sphere_ball_overlap_mm3(solid.inner_radius_mm, radius_mm, s)) / volume_mm3
    if isinstance(solid, Ellipsoid):  # closed form only when B(centre, r) contains it or misses it
        near, far = _nearest_farthest_mm(solid, centre_mm)
        if far[1] <= radius_mm:
            return 1.0
        if near[0] >= radius_mm:
            return 0.0
        raise GeometryError("no closed-form DVH for an ellipsoid cut by the dose ball")
    if isinstance(solid, Sphere):
        s = _distance(solid.centre_mm, centre_mm)
        return compute_sphere_ball_overlap_mm3(solid.radius_mm, radius_mm, s) / volume_mm3
    relation = _cylinder_relation(solid, centre_mm, support_radius_mm)
    if relation == "outside":
        return 0.0
    if relation == "inside":
        return 4.0 / 3.0 * math.pi * max(radius_mm, 0.0) ** 3 / volume_mm3
    raise GeometryError("no closed-form DVH for a cylinder partly inside the dose support")


def _f(solid: Solid, model: RadialDoseModel, r: float) -> float:
    return compute_ball_fraction(solid, model.centre_mm, r, model.falloff_radius_mm)


def compute_cumulative_dvh_fraction(solid: Solid, model: RadialDoseModel, dose_gy: float) -> float:
    """Fraction (0..1) of the structure's volume receiving >= dose_gy (Gy): f(r(d))."""
    if dose_gy <= 0.0:
        return 1.0
    if dose_gy > model.dmax_gy:
        return 0.0
    return min(1.0, _f(solid, model, model.compute_radius_for_dose_mm(dose_gy)))


def compute_mean_dose_gy(solid: Solid, model: RadialDoseModel) -> float:
    """Mean dose (Gy) = Dmax / (r1 - r0) * ∫_{r0}^{r1} f(r) dr, exact piecewise quadrature."""
    r0, r1 = model.plateau_radius_mm, model.falloff_radius_mm
    breaks = [r0, r1]
    for sphere in (solid.outer, solid.inner) if isinstance(solid, Shell) else (solid,):
        if isinstance(sphere, Sphere):
            s = _distance(sphere.centre_mm, model.centre_mm)
            breaks += [b for b in (abs(s - sphere.radius_mm), s + sphere.radius_mm) if r0 < b < r1]
    breaks = sorted(breaks)
    integral = 0.0
    for a, b in itertools.pairwise(breaks):
        half, mid = (b - a) / 2.0, (a + b) / 2.0
        nodes = zip(_GL_NODES, _GL_WEIGHTS, strict=True)
        integral += half * sum(w * _f(solid, model, mid + half * t) for t, w in nodes)
    return model.dmax_gy * integral / (r1 - r0)


def _nearest_farthest_mm(solid: Solid, c: Vec3):
    if isinstance(solid, Shell):
        s = _distance(solid.centre_mm, c)
        near = solid.inner_radius_mm - s if s < solid.inner_radius_mm else max(0.0, s - solid.outer_radius_mm)
        return near, s + solid.outer_radius_mm
    if isinstance(solid, Ellipsoid):  # bounds from the smallest and largest semi-axis
        s = _distance(solid.centre_mm, c)
        a_min, a_max = min(solid.semi_axes_mm), max(solid.semi_axes_mm)
        return (max(0.0, s - a_max), max(0.0, s - a_min)), (s + a_min, s + a_max)
    if isinstance(solid, Sphere):
        s = _distance(solid.centre_mm, c)
        return max(0.0, s - solid.radius_mm), s + solid.radius_mm
    rho = math.hypot(c[0] - solid.centre_xy_mm[0], c[1] - solid.centre_xy_mm[1])
    dz_near = max(0.0, solid.z_min_mm - c[2], c[2] - solid.z_max_mm)
    dz_far = max(abs(c[2] - solid.z_min_mm), abs(c[2] - solid.z_max_mm))
    return math.hypot(max(0.0, rho - solid.radius_mm), dz_near), math.hypot(rho + solid.radius_mm, dz_far)


def compute_max_dose_gy(solid: Solid, model: RadialDoseModel) -> float:
    """Dmax of the structure (Gy): D at its point nearest the dose centre."""
    return _dose_at(model, _nearest_farthest_mm(solid, model.centre_mm)[0])


def compute_min_dose_gy(solid: Solid, model: RadialDoseModel) -> float:
    """Dmin of the structure (Gy): D at its point farthest from the dose centre."""
    return _dose_at(model, _nearest_farthest_mm(solid, model.centre_mm)[1])


def _dose_at(model: RadialDoseModel, distance) -> float:
    """D at a distance (mm); for (lo, hi) bounds the dose must be the same at both ends."""
    if isinstance(distance, tuple):
        lo, hi = (float(model.compute_dose_at_radius_gy(d)) for d in distance)
        if lo != hi:
            raise GeometryError("no closed-form dose extreme for an ellipsoid in the dose fall-off")
        return lo
    return float(model.compute_dose_at_radius_gy(distance))


def compute_dose_at_volume_gy(solid: Solid, model: RadialDoseModel, volume_fraction: float) -> float:
    """D_x (Gy): the minimum dose to the hottest ``volume_fraction`` (0..1] of the structure."""
    if volume_fraction <= 0.0:
        return compute_max_dose_gy(solid, model)
    if volume_fraction > 1.0:
        raise ValueError("volume_fraction must be <= 1")
    r0, r1 = model.plateau_radius_mm, model.falloff_radius_mm
    if _f(solid, model, r0) >= volume_fraction:
        return model.dmax_gy
    if _f(solid, model, r1) < volume_fraction:
        return 0.0
    lo, hi = r0, r1  # invariant: f(lo) < x <= f(hi)
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if _f(solid, model, mid) >= volume_fraction:
            hi = mid
        else:
            lo = mid
    return float(model.compute_dose_at_radius_gy(hi))


def compute_contour_stack_volume_cc(solid: Solid, z_planes_mm: np.ndarray, thickness_mm: float) -> float:
    """Volume (cc) a planar-contour reader sees: sum over planes of pi r(z_k)^2 * thickness.

    The RTSTRUCT polygons are area-preserving, so this is exact for the written contours
    (each contour taken as a slab of ``thickness_mm`` centred on its plane).
    """
    area = 0.0
    for z in np.asarray(z_planes_mm, dtype=np.float64):
        area += compute_cross_section_area_mm2(solid, float(z))
    return area * thickness_mm / MM3_PER_CC


def compute_decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """2^(-elapsed / half-life): fraction of activity left after ``elapsed_s`` seconds."""
    return 2.0 ** (-elapsed_s / half_life_s)


def compute_suvbw(
    concentration_bqml: float, weight_kg: float, injected_dose_bq: float, elapsed_s: float, half_life_s: float
) -> float:
    """SUVbw (g/mL) = C[Bq/mL] * W[g] / (A0[Bq] * 2^(-dt/T1/2))."""
    decayed_bq = injected_dose_bq * compute_decay_factor(elapsed_s, half_life_s)
    return concentration_bqml * weight_kg * 1000.0 / decayed_bq


@dataclass(frozen=True)
class PhantomTruth:
    """Everything a demo patient was built from, with its closed-form answers."""

    anatomy: PhantomAnatomy
    dose_model: RadialDoseModel
    ct_grid: ImageGrid
    dose_grid: ImageGrid
    pet: PetPhantom
    weight_kg: float
    prescription_gy: float
    fractions: int

    def _solid(self, structure_name: str) -> Solid:
        return self.anatomy.structure(structure_name).solid

    def compute_volume_cc(self, structure_name: str) -> float:
        """Exact analytic volume of the structure, cc."""
        return self._solid(structure_name).volume_cc

    def compute_contour_volume_cc(self, structure_name: str) -> float:
        """Volume of the structure as contoured on the planning-CT planes (slab rule), cc."""
        return compute_contour_stack_volume_cc(
            self._solid(structure_name), self.ct_grid.z_mm(), self.ct_grid.spacing_mm[2]
        )

    def compute_cumulative_dvh_fraction(self, structure_name: str, dose_gy: float) -> float:
        """Fraction (0..1) of the structure receiving >= dose_gy (Gy)."""
        return compute_cumulative_dvh_fraction(self._solid(structure_name), self.dose_model, dose_gy)

    def compute_mean_dose_gy(self, structure_name: str) -> float:
        """Mean dose over the structure, Gy."""
        return compute_mean_dose_gy(self._solid(structure_name), self.dose_model)

    def compute_max_dose_gy(self, structure_name: str) -> float:
        """Maximum dose in the structure, Gy."""
        return compute_max_dose_gy(self._solid(structure_name), self.dose_model)

    def compute_min_dose_gy(self, structure_name: str) -> float:
        """Minimum dose in the structure, Gy."""
        return compute_min_dose_gy(self._solid(structure_name), self.dose_model)

    def compute_dose_at_volume_gy(self, structure_name: str, volume_percent: float) -> float:
        """D_x% (Gy), e.g. ``volume_percent=95`` for D95%."""
        return compute_dose_at_volume_gy(self._solid(structure_name), self.dose_model, volume_percent / 100.0)

    def compute_suvbw(self, concentration_bqml: float) -> float:
        """SUVbw (g/mL) of an activity concentration (Bq/mL) at series start in the PET study."""
        pet = self.pet
        return compute_suvbw(
            concentration_bqml, self.weight_kg, pet.injected_dose_bq, pet.uptake_seconds, pet.half_life_s
        )

    @property
    def lesion_suvbw(self) -> float:
        """Expected SUVbw of the hot lesion, g/mL."""
        return self.compute_suvbw(self.pet.lesion_bqml)

    @property
    def liver_suvbw(self) -> float:
        """Expected SUVbw of the liver-like region, g/mL."""
        return self.compute_suvbw(self.pet.liver_bqml)

    @property
    def background_suvbw(self) -> float:
        """Expected SUVbw of the body background, g/mL."""
        return self.compute_suvbw(self.pet.background_bqml)
