"""The PET phantom's activity layout and radiopharmaceutical administration (no DICOM here).

Activity concentration (Bq/mL) at a point: lesion if inside the lesion sphere, else liver if
inside the liver sphere, else background if inside the body cylinder, else 0 (air).
Concentrations are those at series start (the images are decay corrected to START).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from oncopacs.phantom.shapes import Cylinder, Sphere

#: F-18 half-life, s (DICOM RadionuclideHalfLife).
F18_HALF_LIFE_S = 6586.2
F18_POSITRON_FRACTION = 0.9673


@dataclass(frozen=True)
class PetPhantom:
    """Activity layout (Bq/mL) and administration of an FDG PET-CT.

    injected_dose_bq: RadionuclideTotalDose, Bq, at injection time.
    scan_date: DA of injection and acquisition; injection_time / series_time: TM (HHMMSS).
    """

    body: Cylinder
    lesion: Sphere
    liver: Sphere
    background_bqml: float = 3000.0
    liver_bqml: float = 6000.0
    lesion_bqml: float = 25000.0
    injected_dose_bq: float = 350.0e6
    half_life_s: float = F18_HALF_LIFE_S
    scan_date: str = "20240122"
    injection_time: str = "090000"
    series_time: str = "100000"

    @property
    def uptake_seconds(self) -> float:
        """Series time minus injection time, s (3600 s by default)."""
        fmt = "%Y%m%d%H%M%S"
        t0 = datetime.strptime(self.scan_date + self.injection_time, fmt)
        t1 = datetime.strptime(self.scan_date + self.series_time, fmt)
        return (t1 - t0).total_seconds()

    def compute_activity_bqml(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """Activity concentration at the points (mm), Bq/mL."""
        c = np.zeros(np.broadcast(x, y, z).shape, dtype=np.float64)
        c[self.body.contains(x, y, z)] = self.background_bqml
        c[self.liver.contains(x, y, z)] = self.liver_bqml
        c[self.lesion.contains(x, y, z)] = self.lesion_bqml
        return c


def build_default_pet_phantom(body: Cylinder) -> PetPhantom:
    """Lesion: sphere R = 15 mm at the origin (the tumour); liver: sphere R = 35 mm at (-55, -10, 30)."""
    return PetPhantom(
        body=body,
        lesion=Sphere((0.0, 0.0, 0.0), 15.0),
        liver=Sphere((-55.0, -10.0, 30.0), 35.0),
    )
