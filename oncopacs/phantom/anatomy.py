"""The phantom's anatomy: a water cylinder with a bone rod, a spherical PTV and organs at risk.

All positions are LPS, mm (+x patient left, +y posterior, +z head). The default layout is
pelvis-like: PTV at the origin, Bladder anterior-superior (-y, +z), Rectum posterior (+y),
SpinalCord a posterior rod behind a bone rod (vertebral body). Structure names follow TG-263.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncopacs.phantom.geometry import ImageGrid
from oncopacs.phantom.shapes import Cylinder, Solid, Sphere

#: CT numbers, HU.
HU_AIR = -1000.0
HU_WATER = 0.0
HU_BONE = 700.0


@dataclass(frozen=True)
class Structure:
    """A named ROI: its solid, RTROIInterpretedType, display colour (R, G, B) and HU in the CT."""

    roi_number: int
    name: str
    solid: Solid
    interpreted_type: str
    colour: tuple[int, int, int]
    hu: float


@dataclass(frozen=True)
class PhantomAnatomy:
    """Body, bone rod and the RT structures (BODY first) of one phantom patient."""

    body: Cylinder
    bone: Cylinder
    structures: tuple[Structure, ...]

    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (case-sensitive); KeyError if absent."""
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(f"no structure {name!r}; have {[s.name for s in self.structures]}")

    @property
    def structure_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.structures)

    @property
    def ptv(self) -> Structure:
        return self.structure("PTV")

    def compute_hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """CT number (HU) at the points (mm): air, water body, bone rod, then organs, PTV on top."""
        hu = np.full(np.broadcast(x, y, z).shape, HU_AIR, dtype=np.float64)
        hu[self.body.contains(x, y, z)] = HU_WATER
        hu[self.bone.contains(x, y, z)] = HU_BONE
        for s in sorted(self.structures, key=lambda s: s.interpreted_type == "PTV"):
            if s.interpreted_type != "EXTERNAL":
                hu[s.solid.contains(x, y, z)] = s.hu
        return hu


def build_default_anatomy(ct_grid: ImageGrid, body_radius_mm: float = 100.0) -> PhantomAnatomy:
    """The default phantom; cylinders span the CT grid's full slab extent in z.

    BODY: cylinder R = body_radius_mm about the z axis. PTV: sphere R = 30 mm at the origin.
    Bladder: sphere R = 25 mm at (0, -50, 25). Rectum: sphere R = 15 mm at (0, 50, -10).
    SpinalCord: rod R = 5 mm at (x, y) = (0, 90). Bone rod (CT only): R = 8 mm at (0, 75).
    """
    dz = ct_grid.spacing_mm[2]
    z_lo = float(ct_grid.z_mm()[0] - dz / 2.0)
    z_hi = float(ct_grid.z_mm()[-1] + dz / 2.0)
    body = Cylinder((0.0, 0.0), body_radius_mm, z_lo, z_hi)
    structures = (
        Structure(1, "BODY", body, "EXTERNAL", (0, 255, 0), HU_WATER),
        Structure(2, "PTV", Sphere((0.0, 0.0, 0.0), 30.0), "PTV", (255, 0, 0), 40.0),
        Structure(3, "Bladder", Sphere((0.0, -50.0, 25.0), 25.0), "ORGAN", (255, 255, 0), 10.0),
        Structure(4, "Rectum", Sphere((0.0, 50.0, -10.0), 15.0), "ORGAN", (165, 80, 40), 30.0),
        Structure(
            5, "SpinalCord", Cylinder((0.0, 90.0), 5.0, z_lo, z_hi), "ORGAN", (0, 128, 255), 35.0
        ),
    )
    bone = Cylinder((0.0, 75.0), 8.0, z_lo, z_hi)
    return PhantomAnatomy(body=body, bone=bone, structures=structures)
