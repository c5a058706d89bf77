"""A breathing thorax for the 4D CT phantom: static chest wall, ribs and spine, lungs above a moving diaphragm.

Anatomy (LPS, mm: +x patient left, +y posterior, +z head), every part an elliptic cylinder along z
unless said otherwise:

- body: soft tissue (40 HU), semi-axes ``body_semi_axes_mm``, centred on the z axis;
- two lungs (-800 HU) centred at (±``lung_centre_x_mm``, ``lung_centre_y_mm``); the soft tissue between
  them and the body outline is the chest wall (laterally about 15 mm) and the mediastinum;
- ribs (800 HU): bands ``rib_height_mm`` tall every ``rib_pitch_mm`` along z, lying in the chest wall
  between ``rib_depth_mm`` (inner, outer distance below the skin, measured along the semi-axes);
- spine (900 HU): a vertebral-body cylinder behind the mediastinum;
- diaphragm: below a dome, the lungs are soft tissue (liver, spleen). Under each lung the dome's
  surface is ``z = apex - depth * r2`` where ``r2`` is the squared elliptic radius within that lung
  (0 on its axis, 1 at its edge); the apex moves with the breathing (:meth:`ThoraxSpec.compute_apex_mm`).

Only the diaphragm moves: everything else is the static anatomy a tumour-focused registration box holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HU_SOFT_TISSUE = 40.0
HU_RIB = 800.0
HU_SPINE = 900.0
HU_LUNG = -800.0


@dataclass(frozen=True)
class ThoraxSpec:
    """Geometry of the thorax (mm) and the diaphragm's breathing (peak-to-peak SI, mm)."""

    body_semi_axes_mm: tuple[float, float] = (100.0, 70.0)
    lung_centre_x_mm: float = 45.0
    lung_centre_y_mm: float = -5.0
    lung_semi_axes_mm: tuple[float, float] = (40.0, 52.0)
    rib_pitch_mm: float = 25.0
    rib_height_mm: float = 10.0
    rib_depth_mm: tuple[float, float] = (3.0, 11.0)
    spine_centre_y_mm: float = 50.0
    spine_radius_mm: float = 14.0
    diaphragm_apex_z_mm: float = -40.0
    diaphragm_depth_mm: float = 40.0
    diaphragm_amplitude_mm: float = 15.0

    def compute_apex_mm(self, phase: int, phases: int) -> float:
        """z of the dome's apex at ``phase`` of ``phases`` (highest at phase 0, like the tumour's cosine), mm."""
        return self.diaphragm_apex_z_mm + self.diaphragm_amplitude_mm / 2.0 * math.cos(2.0 * math.pi * phase / phases)

    def compute_lung_gap_mm(self, centre_mm: tuple[float, float, float], radius_mm: float) -> float:
        """Shortest distance (mm, in the axial plane, approximate) from a sphere to its lung's outline; < 0 outside."""
        x, y, _ = centre_mm
        cx = math.copysign(self.lung_centre_x_mm, x)
        a, b = self.lung_semi_axes_mm
        angle = np.linspace(0.0, 2.0 * math.pi, 3600, endpoint=False)
        distance = np.hypot(cx + a * np.cos(angle) - x, self.lung_centre_y_mm + b * np.sin(angle) - y).min()
        inside = ((x - cx) / a) ** 2 + ((y - self.lung_centre_y_mm) / b) ** 2 < 1.0
        return float(distance - radius_mm) if inside else -float(distance + radius_mm)

    def compute_static_hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The part of the thorax that does not breathe, at the points (mm): (HU with lung all the way down
        the lungs, their squared elliptic radius r2 inside them and inf elsewhere) for :meth:`apply_diaphragm`."""
        ax, ay = self.body_semi_axes_mm
        hu = np.full(np.broadcast(x, y, z).shape, -1000.0)
        hu[(x / ax) ** 2 + (y / ay) ** 2 <= 1.0] = HU_SOFT_TISSUE
        a, b = self.lung_semi_axes_mm
        lung_r2 = np.full(hu.shape, np.inf)
        for side in (-1.0, 1.0):
            r2 = ((x - side * self.lung_centre_x_mm) / a) ** 2 + ((y - self.lung_centre_y_mm) / b) ** 2
            lung_r2 = np.where(r2 <= 1.0, np.minimum(lung_r2, r2), lung_r2)
        hu[lung_r2 <= 1.0] = HU_LUNG
        inner, outer = self.rib_depth_mm
        within_outer = (x / (ax - inner)) ** 2 + (y / (ay - inner)) ** 2 <= 1.0
        beyond_inner = (x / (ax - outer)) ** 2 + (y / (ay - outer)) ** 2 > 1.0
        on_rib_level = np.abs(np.remainder(z, self.rib_pitch_mm) - self.rib_pitch_mm / 2.0) <= self.rib_height_mm / 2.0
        hu[within_outer & beyond_inner & on_rib_level & (hu == HU_SOFT_TISSUE)] = HU_RIB
        hu[x**2 + (y - self.spine_centre_y_mm) ** 2 <= self.spine_radius_mm**2] = HU_SPINE
        return hu, lung_r2

    def apply_diaphragm(self, static_hu: np.ndarray, lung_r2: np.ndarray, z: np.ndarray, apex_mm: float) -> np.ndarray:
        """A copy of ``static_hu`` (:meth:`compute_static_hu`) with soft tissue below the dome at ``apex_mm``."""
        hu = static_hu.copy()
        hu[z <= apex_mm - self.diaphragm_depth_mm * lung_r2] = HU_SOFT_TISSUE
        return hu

    def compute_hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, apex_mm: float) -> np.ndarray:
        """HU of the thorax at the points (mm) with the dome's apex at ``apex_mm``: air outside the body."""
        static_hu, lung_r2 = self.compute_static_hu(x, y, z)
        return self.apply_diaphragm(static_hu, lung_r2, z, apex_mm)
