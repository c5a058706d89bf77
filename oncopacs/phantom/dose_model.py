"""The analytic, spherically symmetric dose distribution of the phantom plan.

With r the distance (mm) from ``centre_mm``, r0 the plateau radius and r1 the fall-off radius:

    D(r) = Dmax                            for r <= r0
    D(r) = Dmax * (r1 - r) / (r1 - r0)     for r0 < r < r1
    D(r) = 0                               for r >= r1

D is non-increasing in r, so {D >= d} is the ball of radius r(d) for 0 < d <= Dmax, with

    r(d) = r1 - (d / Dmax) * (r1 - r0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncopacs.phantom.geometry import Vec3


@dataclass(frozen=True)
class RadialDoseModel:
    """Plateau-plus-linear-fall-off dose: dmax_gy (Gy) within plateau_radius_mm, 0 beyond falloff_radius_mm."""

    centre_mm: Vec3 = (0.0, 0.0, 0.0)
    dmax_gy: float = 63.6
    plateau_radius_mm: float = 28.0
    falloff_radius_mm: float = 58.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.plateau_radius_mm < self.falloff_radius_mm:
            raise ValueError("need 0 <= plateau_radius_mm < falloff_radius_mm")
        if self.dmax_gy <= 0.0:
            raise ValueError("dmax_gy must be positive")

    def compute_dose_at_radius_gy(self, r_mm: np.ndarray | float) -> np.ndarray:
        """D(r), Gy, for distances ``r_mm`` (mm) from the centre."""
        r = np.asarray(r_mm, dtype=np.float64)
        r0, r1 = self.plateau_radius_mm, self.falloff_radius_mm
        return self.dmax_gy * np.clip((r1 - r) / (r1 - r0), 0.0, 1.0)

    def compute_dose_gy(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """D at the points (x, y, z), mm, in Gy."""
        cx, cy, cz = self.centre_mm
        r = np.sqrt((np.asarray(x) - cx) ** 2 + (np.asarray(y) - cy) ** 2 + (np.asarray(z) - cz) ** 2)
        return self.compute_dose_at_radius_gy(r)

    def compute_radius_for_dose_mm(self, dose_gy: float) -> float:
        """r(d) = r1 - (d / Dmax)(r1 - r0), mm: the radius of the ball receiving >= dose_gy.

        Valid for 0 < dose_gy <= Dmax; raises ValueError otherwise.
        """
        if not 0.0 < dose_gy <= self.dmax_gy:
            raise ValueError(f"dose {dose_gy} Gy outside (0, {self.dmax_gy}]")
        r0, r1 = self.plateau_radius_mm, self.falloff_radius_mm
        return r1 - dose_gy / self.dmax_gy * (r1 - r0)
