"""A synthetic respiratory-correlated 4D CT: a spherical tumour moving sinusoidally in a lung.

Anatomy (LPS, mm): a water cylinder (body), a lung cylinder of -800 HU inside it, a static bone
rod behind the lung, and a spherical tumour (30 HU) in the lung. At phase ``i`` of ``n`` (phase
percent 100 i / n) the tumour centre is ``centre + amplitude / 2 * cos(2 pi i / n)`` per axis, so the
peak-to-peak motion over the phases is exactly ``amplitude_mm`` (for even ``n``) along a straight
segment; the volume it sweeps is a capsule, 4/3 pi r^3 + pi r^2 |amplitude|.

Each phase is its own CT series (same frame of reference and grid), labelled with the standard's
NominalPercentageOfRespiratoryPhase and TemporalPositionIndex, or only by its series description
("4D CT 50%") when ``label_with_attributes`` is False. A GTV structure set is drawn on one phase.
HU are averaged over ``supersampling``^3 points per voxel (partial volume at the edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from oncopacs.phantom.anatomy import PhantomAnatomy, Structure
from oncopacs.phantom.ct import CT_RESCALE_INTERCEPT, build_ct_slice
from oncopacs.phantom.geometry import ImageGrid, Vec3, centred_grid
from oncopacs.phantom.rtstruct import build_rtstruct
from oncopacs.phantom.shapes import Cylinder, Sphere
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec, make_series_spec, make_study_spec
from oncopacs.uids import uid_for

HU_LUNG = -800.0
HU_TUMOUR = 30.0
HU_BONE = 700.0
HU_WATER = 0.0
HU_AIR = -1000.0


@dataclass(frozen=True)
class Ct4dSpec:
    """Geometry and motion of the 4D CT phantom (mm, HU)."""

    shape: tuple[int, int, int] = (28, 64, 64)
    spacing_mm: Vec3 = (2.0, 2.0, 2.5)
    phases: int = 10
    tumour_centre_mm: Vec3 = (0.0, 0.0, 0.0)
    tumour_radius_mm: float = 9.0
    amplitude_mm: Vec3 = (2.0, 4.0, 12.0)
    body_radius_mm: float = 62.0
    lung_radius_mm: float = 52.0
    gtv_phase: int = 0
    label_with_attributes: bool = True
    supersampling: int = 3

    @property
    def grid(self) -> ImageGrid:
        return centred_grid(self.shape, self.spacing_mm)

    def compute_tumour_centre_mm(self, phase: int) -> Vec3:
        """Tumour centre at ``phase`` (0-based), mm."""
        c = math.cos(2.0 * math.pi * phase / self.phases)
        return tuple(float(p + a / 2.0 * c) for p, a in zip(self.tumour_centre_mm, self.amplitude_mm, strict=False))  # type: ignore[return-value]

    def compute_amplitude_mm(self) -> Vec3:
        """True peak-to-peak motion over the phases along x (LR), y (AP), z (SI), mm."""
        centres = np.array([self.compute_tumour_centre_mm(i) for i in range(self.phases)])
        return tuple(float(v) for v in centres.max(axis=0) - centres.min(axis=0))  # type: ignore[return-value]

    def compute_swept_volume_cc(self) -> float:
        """Volume swept by the tumour along its straight path (a capsule), cc."""
        r, length = self.tumour_radius_mm, float(np.linalg.norm(self.compute_amplitude_mm()))
        return (4.0 / 3.0 * math.pi * r**3 + math.pi * r**2 * length) / 1000.0


@dataclass(frozen=True)
class Ct4dPhantom:
    """The datasets of one 4D CT: the slices of each phase (phase order) and the GTV structure set."""

    spec: Ct4dSpec
    phases: tuple[tuple[Dataset, ...], ...]
    rtstruct: Dataset

    def all_datasets(self) -> list[Dataset]:
        return [ds for phase in self.phases for ds in phase] + [self.rtstruct]


def _compute_hu(spec: Ct4dSpec, tumour: Sphere, grid: ImageGrid) -> np.ndarray:
    """Partial-volume HU (nz, ny, nx): the mean over supersampling^3 points per voxel."""
    s = spec.supersampling
    offsets = (np.arange(s) + 0.5) / s - 0.5
    body = Cylinder((0.0, 0.0), spec.body_radius_mm, -1e9, 1e9)
    lung = Cylinder((0.0, 0.0), spec.lung_radius_mm, -1e9, 1e9)
    bone = Cylinder((0.0, spec.lung_radius_mm + 5.0), 3.0, -1e9, 1e9)
    xx, yy, zz = grid.compute_voxel_centres_mm()
    dx, dy, dz = grid.spacing_mm
    total = np.zeros(grid.shape, dtype=np.float64)
    for ox in offsets:
        for oy in offsets:
            for oz in offsets:
                x, y, z = xx + ox * dx, yy + oy * dy, zz + oz * dz
                hu = np.full(grid.shape, HU_AIR)
                hu[body.contains(x, y, z)] = HU_WATER
                hu[lung.contains(x, y, z)] = HU_LUNG
                hu[bone.contains(x, y, z)] = HU_BONE
                hu[tumour.contains(x, y, z)] = HU_TUMOUR
                total += hu
    return total / s**3


def _phase_series(spec: Ct4dSpec, study: StudySpec, frame_uid: str, phase: int) -> SeriesSpec:
    percent = 100 * phase // spec.phases
    return make_series_spec(study, f"4d-phase-{phase}", series_number=100 + phase,
                            description=f"4D CT {percent}%", modality="CT", frame_of_reference_uid=frame_uid)


def build_ct4d_phantom(spec: Ct4dSpec | None = None, *, patient_id: str = "PH4D001") -> Ct4dPhantom:
    """Every phase of the 4D CT phantom and a GTV structure set on phase ``spec.gtv_phase``."""
    spec = spec or Ct4dSpec()
    if not 0 <= spec.gtv_phase < spec.phases:
        raise ValueError(f"gtv_phase {spec.gtv_phase} outside 0..{spec.phases - 1}")
    patient = PatientSpec(patient_id=patient_id, name="Phantom^FourD")
    study = make_study_spec(patient, "4dct", study_id="4DCT", description="Synthetic 4D CT")
    frame_uid = uid_for(study.study_instance_uid, "frame")
    grid = spec.grid
    phases = []
    for phase in range(spec.phases):
        series = _phase_series(spec, study, frame_uid, phase)
        tumour = Sphere(spec.compute_tumour_centre_mm(phase), spec.tumour_radius_mm)
        stored = (_compute_hu(spec, tumour, grid) - CT_RESCALE_INTERCEPT).round().astype("<u2")
        slices = []
        for k in range(grid.nz):
            ds = build_ct_slice(patient, study, series, grid, k, stored[k].tobytes())
            if spec.label_with_attributes:
                ds.NominalPercentageOfRespiratoryPhase = 100.0 * phase / spec.phases
                ds.TemporalPositionIndex = phase + 1
                ds.NumberOfTemporalPositions = spec.phases
            slices.append(ds)
        phases.append(tuple(slices))
    gtv = Structure(1, "GTV", Sphere(spec.compute_tumour_centre_mm(spec.gtv_phase), spec.tumour_radius_mm), "GTV",
                    (255, 0, 0), HU_TUMOUR)
    body = Cylinder((0.0, 0.0), spec.body_radius_mm, float(grid.z_mm()[0]), float(grid.z_mm()[-1]))
    anatomy = PhantomAnatomy(body=body, bone=body, structures=(gtv,))
    rt_series = make_series_spec(study, "4d-rtstruct", series_number=200, description="GTV",
                                 modality="RTSTRUCT", frame_of_reference_uid=frame_uid)
    rtstruct = build_rtstruct(patient, study, rt_series, anatomy, list(phases[spec.gtv_phase]))
    return Ct4dPhantom(spec=spec, phases=tuple(phases), rtstruct=rtstruct)
