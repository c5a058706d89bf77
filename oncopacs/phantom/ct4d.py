"""A synthetic respiratory-correlated 4D CT: a spherical tumour moving in a lung, and a family of harder cases.

Anatomy (LPS, mm): by default a water cylinder (body), a lung cylinder of -800 HU inside it, a static
bone rod behind the lung, and a spherical tumour (30 HU) in the lung; with ``thorax`` set, the breathing
thorax of :mod:`oncopacs.phantom.thorax` (static chest wall, ribs and spine, a moving diaphragm dome).
At phase ``i`` of ``n`` (phase percent 100 i / n, angle t = 2 pi i / n) the tumour centre is
``centre + amplitude / 2 * cos(t) + hysteresis / 2 * sin(t)`` per axis. Without hysteresis the path is
a straight segment whose peak-to-peak length over the phases is exactly ``amplitude_mm`` (for even ``n``)
and the swept volume a capsule, 4/3 pi r^3 + pi r^2 |amplitude|; with it, inhale and exhale follow
different paths (an ellipse). The ITV truth on the image grid is the union of the per-phase spheres
(:meth:`Ct4dSpec.compute_itv_mask`).

Each phase is its own CT series (same frame of reference and grid), labelled with the standard's
NominalPercentageOfRespiratoryPhase and TemporalPositionIndex, or only by its series description
("4D CT 50%") when ``label_with_attributes`` is False. A GTV structure set is drawn on one phase.
HU are averaged over ``supersampling``^3 points per voxel (partial volume at the edges), then
Gaussian noise of ``noise_sd_hu`` (seeded) is added. :data:`CT4D_FAMILY` names the cases the 4D
analysis is proven on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset

from oncopacs.phantom.anatomy import PhantomAnatomy, Structure
from oncopacs.phantom.ct import CT_RESCALE_INTERCEPT, build_ct_slice
from oncopacs.phantom.geometry import ImageGrid, Vec3, centred_grid
from oncopacs.phantom.rtstruct import build_rtstruct
from oncopacs.phantom.shapes import Cylinder, Sphere
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec, make_series_spec, make_study_spec
from oncopacs.phantom.thorax import ThoraxSpec
from oncopacs.uids import uid_for

HU_LUNG = -800.0
HU_TUMOUR = 30.0
HU_BONE = 700.0
HU_WATER = 0.0
HU_AIR = -1000.0
#: Points per voxel and axis when the ITV truth is rasterised.
_TRUTH_SUPERSAMPLING = 4


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
    hysteresis_mm: Vec3 = (0.0, 0.0, 0.0)
    tumour_hu: float = HU_TUMOUR
    thorax: ThoraxSpec | None = None
    noise_sd_hu: float = 0.0
    noise_seed: int = 0

    @property
    def grid(self) -> ImageGrid:
        return centred_grid(self.shape, self.spacing_mm)

    def compute_tumour_centre_mm(self, phase: int) -> Vec3:
        """Tumour centre at ``phase`` (0-based), mm."""
        angle = 2.0 * math.pi * phase / self.phases
        c, s = math.cos(angle), math.sin(angle)
        return tuple(float(p + a / 2.0 * c + h / 2.0 * s)  # type: ignore[return-value]
                     for p, a, h in zip(self.tumour_centre_mm, self.amplitude_mm, self.hysteresis_mm, strict=True))

    def compute_amplitude_mm(self) -> Vec3:
        """True peak-to-peak motion over the phases along x (LR), y (AP), z (SI), mm."""
        centres = np.array([self.compute_tumour_centre_mm(i) for i in range(self.phases)])
        return tuple(float(v) for v in centres.max(axis=0) - centres.min(axis=0))  # type: ignore[return-value]

    def compute_swept_volume_cc(self) -> float:
        """Volume swept by the tumour along its straight path (a capsule), cc.

        Raises ValueError with hysteresis (the path is no segment): use :meth:`compute_itv_cc`.
        """
        if any(self.hysteresis_mm):
            raise ValueError("the swept volume is a capsule only for a straight path; use compute_itv_cc")
        r, length = self.tumour_radius_mm, float(np.linalg.norm(self.compute_amplitude_mm()))
        return (4.0 / 3.0 * math.pi * r**3 + math.pi * r**2 * length) / 1000.0

    def compute_gtv_mask(self, phase: int) -> np.ndarray:
        """GTV truth (nz, ny, nx) bool on ``phase``: voxels at least half inside the tumour.

        Each voxel's fraction inside the sphere is sampled at 4^3 points, so the truth answers the
        question the analysis answers on the same grid (occupancy >= 0.5).
        """
        return _compute_fraction(Sphere(self.compute_tumour_centre_mm(phase), self.tumour_radius_mm),
                                 self.grid) >= 0.5

    def compute_itv_mask(self) -> np.ndarray:
        """ITV truth (nz, ny, nx) bool: the union of :meth:`compute_gtv_mask` over the phases."""
        union = np.zeros(self.grid.shape, dtype=bool)
        for phase in range(self.phases):
            union |= self.compute_gtv_mask(phase)
        return union

    def compute_itv_cc(self) -> float:
        """Volume of :meth:`compute_itv_mask`, cc."""
        return float(self.compute_itv_mask().sum()) * self.grid.voxel_volume_mm3 / 1000.0


def _compute_fraction(sphere: Sphere, grid: ImageGrid) -> np.ndarray:
    """Fraction (nz, ny, nx) of each voxel inside ``sphere``, from 4^3 points per voxel near it."""
    fraction = np.zeros(grid.shape)
    origin, spacing = np.array(grid.origin_mm), np.array(grid.spacing_mm)
    centre = np.array(sphere.centre_mm)
    lo = np.clip(np.floor((centre - sphere.radius_mm - origin) / spacing).astype(int) - 1, 0, None)
    hi = np.minimum(np.ceil((centre + sphere.radius_mm - origin) / spacing).astype(int) + 2,
                    np.array(grid.shape[::-1]))
    if np.any(hi <= lo):
        return fraction
    axes = [origin[a] + spacing[a] * np.arange(lo[a], hi[a]) for a in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    s = _TRUTH_SUPERSAMPLING
    inside = np.zeros(zz.shape)
    for ox, oy, oz in np.ndindex(s, s, s):
        offset = (np.array((ox, oy, oz)) + 0.5) / s - 0.5
        inside += sphere.contains(xx + offset[0] * spacing[0], yy + offset[1] * spacing[1],
                                  zz + offset[2] * spacing[2])
    fraction[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = inside / s**3
    return fraction


@dataclass(frozen=True)
class Ct4dPhantom:
    """The datasets of one 4D CT: the slices of each phase (phase order) and the GTV structure set."""

    spec: Ct4dSpec
    phases: tuple[tuple[Dataset, ...], ...]
    rtstruct: Dataset

    def all_datasets(self) -> list[Dataset]:
        return [ds for phase in self.phases for ds in phase] + [self.rtstruct]


def _compute_hu(spec: Ct4dSpec, grid: ImageGrid) -> list[np.ndarray]:
    """Partial-volume HU (nz, ny, nx) of every phase: the mean over supersampling^3 points per voxel, plus noise."""
    s = spec.supersampling
    offsets = (np.arange(s) + 0.5) / s - 0.5
    tumours = [Sphere(spec.compute_tumour_centre_mm(phase), spec.tumour_radius_mm) for phase in range(spec.phases)]
    body = Cylinder((0.0, 0.0), spec.body_radius_mm, -1e9, 1e9)
    lung = Cylinder((0.0, 0.0), spec.lung_radius_mm, -1e9, 1e9)
    bone = Cylinder((0.0, spec.lung_radius_mm + 5.0), 3.0, -1e9, 1e9)
    xx, yy, zz = grid.compute_voxel_centres_mm()
    dx, dy, dz = grid.spacing_mm
    totals = [np.zeros(grid.shape, dtype=np.float64) for _ in range(spec.phases)]
    for ox, oy, oz in np.ndindex(s, s, s):
        x, y, z = xx + offsets[ox] * dx, yy + offsets[oy] * dy, zz + offsets[oz] * dz
        if spec.thorax is not None:
            static_hu, lung_r2 = spec.thorax.compute_static_hu(x, y, z)
        else:
            static_hu = np.full(grid.shape, HU_AIR)
            static_hu[body.contains(x, y, z)] = HU_WATER
            static_hu[lung.contains(x, y, z)] = HU_LUNG
            static_hu[bone.contains(x, y, z)] = HU_BONE
        for phase, (total, tumour) in enumerate(zip(totals, tumours, strict=True)):
            if spec.thorax is not None:
                hu = spec.thorax.apply_diaphragm(static_hu, lung_r2, z, spec.thorax.compute_apex_mm(phase, spec.phases))
            else:
                hu = static_hu.copy()
            hu[tumour.contains(x, y, z)] = spec.tumour_hu
            total += hu
    volumes = [total / s**3 for total in totals]
    if spec.noise_sd_hu > 0:
        for phase, hu in enumerate(volumes):
            hu += np.random.default_rng([spec.noise_seed, phase]).normal(0.0, spec.noise_sd_hu, grid.shape)
    return volumes


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
    for phase, hu in enumerate(_compute_hu(spec, grid)):
        series = _phase_series(spec, study, frame_uid, phase)
        stored = np.clip(np.rint(hu - CT_RESCALE_INTERCEPT), 0, 65535).astype("<u2")
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
                    (255, 0, 0), spec.tumour_hu)
    body = Cylinder((0.0, 0.0), spec.body_radius_mm, float(grid.z_mm()[0]), float(grid.z_mm()[-1]))
    anatomy = PhantomAnatomy(body=body, bone=body, structures=(gtv,))
    rt_series = make_series_spec(study, "4d-rtstruct", series_number=200, description="GTV",
                                 modality="RTSTRUCT", frame_of_reference_uid=frame_uid)
    rtstruct = build_rtstruct(patient, study, rt_series, anatomy, list(phases[spec.gtv_phase]))
    return Ct4dPhantom(spec=spec, phases=tuple(phases), rtstruct=rtstruct)


#: The thorax grid of the family: 84 x 60 voxels of 2.5 mm in plane, 36 slices (90 mm) unless said otherwise.
_THORAX = Ct4dSpec(shape=(36, 60, 84), spacing_mm=(2.5, 2.5, 2.5), supersampling=2, thorax=ThoraxSpec())

#: The 4D CT cases the tumour tracking is proven on (10 phases, GTV on the 0 % phase, a breathing thorax).
#: ``issue_case``: the case rigid registration of a box around the GTV failed on (r 12 mm, 15 mm SI and
#: 4 mm AP, static chest wall, ribs and spine within the box). ``chest_wall``: the tumour 3 mm from the
#: lateral chest wall. ``diaphragm``: 3 mm above the dome, which moves 18 mm while the tumour moves 12.
#: ``small``: r 6 mm. ``large``: 25 mm SI. ``hysteresis``: an elliptical path (inhale and exhale apart by
#: 8 mm AP, 4 mm LR), left lung. ``low_contrast``: a -450 HU tumour in noise of 30 HU (SD).
#: ``small_chest_wall``: r 6 mm, 2 mm from the chest wall.
CT4D_FAMILY: dict[str, Ct4dSpec] = {
    "issue_case": replace(_THORAX, tumour_centre_mm=(-40.0, 20.0, 0.0), tumour_radius_mm=12.0,
                          amplitude_mm=(0.0, 4.0, 15.0)),
    "chest_wall": replace(_THORAX, tumour_centre_mm=(-71.0, -5.0, 0.0), tumour_radius_mm=12.0,
                          amplitude_mm=(2.0, 4.0, 15.0), hysteresis_mm=(0.0, 3.0, 0.0), noise_sd_hu=10.0),
    "diaphragm": replace(_THORAX, tumour_centre_mm=(-45.0, -5.0, -2.0), tumour_radius_mm=12.0,
                         amplitude_mm=(0.0, 5.0, 12.0), hysteresis_mm=(2.0, 0.0, 0.0), noise_sd_hu=10.0,
                         thorax=replace(ThoraxSpec(), diaphragm_apex_z_mm=-20.0, diaphragm_amplitude_mm=18.0)),
    "small": replace(_THORAX, tumour_centre_mm=(-45.0, -10.0, 0.0), tumour_radius_mm=6.0,
                     amplitude_mm=(2.0, 3.0, 12.0), hysteresis_mm=(0.0, 2.0, 0.0), noise_sd_hu=10.0),
    "large": replace(_THORAX, tumour_centre_mm=(-50.0, -10.0, 0.0), tumour_radius_mm=10.0,
                     amplitude_mm=(3.0, 6.0, 25.0), hysteresis_mm=(2.0, 4.0, 0.0), noise_sd_hu=10.0),
    "hysteresis": replace(_THORAX, tumour_centre_mm=(40.0, -20.0, 0.0), tumour_radius_mm=10.0,
                          amplitude_mm=(0.0, 4.0, 16.0), hysteresis_mm=(4.0, 8.0, 0.0), noise_sd_hu=10.0),
    "low_contrast": replace(_THORAX, tumour_centre_mm=(-45.0, 0.0, 0.0), tumour_radius_mm=10.0,
                            amplitude_mm=(2.0, 4.0, 15.0), hysteresis_mm=(0.0, 4.0, 0.0), tumour_hu=-450.0,
                            noise_sd_hu=30.0),
    "small_chest_wall": replace(_THORAX, tumour_centre_mm=(-77.0, -5.0, 0.0), tumour_radius_mm=6.0,
                                amplitude_mm=(0.0, 4.0, 12.0), hysteresis_mm=(0.0, 3.0, 0.0), noise_sd_hu=10.0),
}
