"""Property-based tests (hypothesis) of rt.dvh against closed-form DVHs, on random geometry.

Each example draws a structure (sphere, ellipsoid, spherical shell, tiny sphere), its contour
planes (slice thickness t 1-5 mm at a random phase), a dose grid (spacing 1-5 mm, random origin,
any of the 48 axis-aligned ImageOrientationPatient / frame-order variants: HFS, HFP, FFS, FFP, the
decubitus positions, sagittal and coronal grids) and a dose whose DVH has a closed form:

- a linear gradient over an ellipsoid: d = d0 + s u with u distributed as 3/4 (1 - u^2) on [-1, 1]
  (s = |A g|, A the semi-axes), so V(>= d) / V = (1 - u)^2 (2 + u) / 4 and the mean is d0;
- the phantom's spherical dose fall-off (:mod:`oncopacs.phantom.dose_model`) over a sphere or shell,
  whose DVH is the lens volume of two balls (:mod:`oncopacs.phantom.truth`).

Further families: a dose grid that stops across the structure (the uncovered part reported, the
covered part's closed form), the same dose stored in every orientation (identical DVHs), boxes whose
sides and planes lie exactly on voxel edges and centres (degenerate alignments), and contours that
enclose nothing (an RTError naming it, never a crash).

Tolerances. The DVH-verification literature checks DVHs against analytic structures and doses
(Nelms et al., Med Phys 42(8):4435, 2015); a volume or D-metric within 3 % of the analytic value
is the criterion commonly applied there for structures of a few cc and more, and the dose error
a grid can reach grows with the dose gradient times the sampling distance (voxel, slice). This
project already holds itself to tighter bounds on fixed phantoms (tests/rt/test_dvh.py: volume
2 %, 3 % under 3.5 cc; mean and D_x 1 % or 0.1 Gy, 0.3 Gy for small lesions). Here, over random
geometry, with h the coarsest of slice thickness and dose voxel (mm) and |grad D| the dose gradient:

- volume (contour stack over three slices tall): 2 % of the solid (3 % under 3.5 cc; 5 % for
  shells, whose net section area is not one quadratic across the hole's poles: up to 4.1 % over
  3,000 random shells whose hole spans 3-4 slices), plus what scanlines may miss on a section only
  a few scanlines tall (:func:`scanline_allowance_cc`);
- mean dose: 1 % or 0.1 Gy, plus 0.05 |grad D| h;
- D2 / D50 / D95 / D98 %: 1 % or 0.1 Gy, plus |grad D| h: a plane's dose is sampled at one height
  of its slab, and an end plane's at its own height for the cap beyond it (up to a slice away),
  so a volume element's dose may be off by up to that;
- near a kink of the radial dose (its plateau edge, its zero edge, its apex), which a grid
  sampling every h mm cannot show, the mean too within |grad D| h;
- Max / Min: within |grad D| h of the structure's (samples lie in it; between grid points the
  dose is reconstructed, not known).

Over soaks of 5-8 times these examples (with fresh seeds) the largest errors were 39 % of these
bounds for D_x (1.9 Gy at most outside the tiny family: D98 of a flat ellipsoid over few slices in
a gradient along z), 49 % for volumes (a thin-walled shell, 2.8 %) and 39 % for means. Tiny
structures (< 0.5 cc) on 5 mm dose grids have wider, separate bounds: see
:func:`test_tiny_structure_on_a_coarse_dose_grid`. Every valid input gives a DVH; the errors allowed
are :class:`rt.errors.OutsideDoseGridError` for a structure that does not reach into the dose grid
and an RTError for contours that enclose no volume.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage

from oncopacs.phantom import truth
from oncopacs.phantom.dose_model import RadialDoseModel
from oncopacs.phantom.shapes import Ellipsoid, Shell, Solid, Sphere, compute_cross_section_polygons
from rt.dose import DoseGrid, read_dose
from rt.dvh import (
    DEFAULT_SUPERSAMPLING,
    DVH,
    SMALL_ROI_BOX_CC,
    SMALL_ROI_SUPERSAMPLING,
    compute_available_metrics,
    compute_metric,
    compute_roi_dvh,
)
from rt.errors import OutsideDoseGridError, RTError
from rt.polygons import compute_polygon_areas_mm2
from rt.structures import StructureSet, read_structure_set
from tests.rt.helpers import build_structure_set, contour_item

#: Reproducible in CI: the same examples every run, no example database. No shrinking: an example costs up
#: to 0.2 s and shrinking one can take minutes; a failure is reported as drawn, with its reproduction blob.
PROPERTY = settings(deadline=None, database=None, derandomize=True, print_blob=True,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))
#: Gy per stored unit of the RT Doses built here (80 Gy fits a uint32 with room to spare).
DOSE_GRID_SCALING = 1e-6
PERCENTS = (2, 50, 95, 98)

# -- geometry: orientations, contour planes, dose grids --------------------------------------------


@dataclass(frozen=True)
class Orientation:
    """How an RT Dose stores its voxels: the patient axis (0 x, 1 y, 2 z) and sign of its rows and
    columns directions, and whether frames go along (+1) or against (-1) the slice normal."""

    row_axis: int
    row_sign: int
    column_axis: int
    column_sign: int
    frame_sign: int

    @property
    def iop(self) -> list[int]:
        row, column = [0, 0, 0], [0, 0, 0]
        row[self.row_axis], column[self.column_axis] = self.row_sign, self.column_sign
        return row + column


#: All 48: 6 (row, column) axis pairs x 4 direction signs x 2 frame orders. The axial ones with
#: normal +-z are HFS (1,0,0,0,1,0), FFS (-1,0,0,0,1,0), HFP (-1,0,0,0,-1,0), FFP (1,0,0,0,-1,0)
#: and the four decubitus positions (rows along +-y, columns along +-x).
ORIENTATIONS = tuple(
    Orientation(row_axis, row_sign, column_axis, column_sign, frame_sign)
    for row_axis in range(3) for column_axis in range(3) if column_axis != row_axis
    for row_sign in (1, -1) for column_sign in (1, -1) for frame_sign in (1, -1)
)
HFS = Orientation(0, 1, 1, 1, 1)


@dataclass(frozen=True)
class Grid:
    """A canonical dose grid: origin (x, y, z) of voxel (0, 0, 0), spacing and counts along x, y, z (mm)."""

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    counts: tuple[int, int, int]

    @classmethod
    def around(cls, lo: np.ndarray, hi: np.ndarray, spacing_mm: tuple[float, ...], phase: tuple[float, ...],
               margin: int = 2) -> Grid:
        """The grid whose voxel centres cover [lo, hi] with ``margin`` voxels beyond, shifted by phase (0..1) voxels."""
        spacing = np.asarray(spacing_mm, dtype=np.float64)
        origin = lo - (margin + np.asarray(phase)) * spacing
        counts = np.ceil((hi - origin) / spacing).astype(int) + margin + 1
        return cls(tuple(float(v) for v in origin), tuple(float(v) for v in spacing),
                   tuple(int(v) for v in counts))

    def centres_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre x, y, z as (nz, ny, nx) arrays."""
        axes = [self.origin_mm[a] + self.spacing_mm[a] * np.arange(self.counts[a]) for a in range(3)]
        z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return x, y, z

    def extent_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners of the voxels' extent, mm."""
        origin, spacing = np.asarray(self.origin_mm), np.asarray(self.spacing_mm)
        return origin - spacing / 2.0, origin + (np.asarray(self.counts) - 0.5) * spacing


def build_rt_dose(dose_gy: np.ndarray, grid: Grid, orientation: Orientation = HFS) -> Dataset:
    """An RT Dose holding ``dose_gy`` ((nz, ny, nx) on ``grid``, Gy) stored in ``orientation``."""
    normal_axis = 3 - orientation.row_axis - orientation.column_axis
    row_dir, column_dir = np.array(orientation.iop[:3]), np.array(orientation.iop[3:])
    normal_sign = int(np.cross(row_dir, column_dir)[normal_axis])
    frame_step_sign = normal_sign * orientation.frame_sign  # along +/- patient axis
    array_axis = {0: 2, 1: 1, 2: 0}  # patient axis -> axis of the (z, y, x) array
    stored_axes = (normal_axis, orientation.column_axis, orientation.row_axis)  # frames, rows, columns
    stored = np.transpose(dose_gy, [array_axis[a] for a in stored_axes])
    signs = (frame_step_sign, orientation.column_sign, orientation.row_sign)
    flips = tuple(k for k, sign in enumerate(signs) if sign < 0)
    stored = np.flip(stored, axis=flips) if flips else stored
    first = np.array(grid.origin_mm)
    for axis, sign in zip(stored_axes, signs, strict=True):
        if sign < 0:
            first[axis] += (grid.counts[axis] - 1) * grid.spacing_mm[axis]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTDoseStorage, "1.2.826.0.1.3680043.8.498.77", "RTDOSE"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in first]
    ds.ImageOrientationPatient = orientation.iop
    ds.PixelSpacing = [f"{grid.spacing_mm[axis]:.6f}" for axis in (orientation.column_axis, orientation.row_axis)]
    step = grid.spacing_mm[normal_axis]
    ds.SliceThickness = f"{step:.6f}"  # what a single frame stands for
    ds.GridFrameOffsetVector = [f"{orientation.frame_sign * k * step:.6f}" for k in range(stored.shape[0])]
    ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = f"{DOSE_GRID_SCALING:g}"
    ds.PixelData = np.rint(np.ascontiguousarray(stored) / DOSE_GRID_SCALING).astype("<u4").tobytes()
    return ds


def contour_planes_mm(centre_z: float, half_height: float, thickness: float, phase: float) -> np.ndarray:
    """Contour plane heights (mm): the slices (k + phase) * thickness strictly within centre_z +- half_height."""
    first = math.floor((centre_z - half_height) / thickness - phase)
    z = (np.arange(first, first + int(2 * half_height / thickness) + 3) + phase) * thickness
    return z[np.abs(z - centre_z) < half_height]


def build_roi(solid: Solid, planes_mm: np.ndarray, name: str = "ROI") -> StructureSet:
    """A structure set with one ROI: the solid's area-preserving 64-gon sections (a shell's hole too) on the planes."""
    contours = [contour_item(polygon)
                for z in planes_mm for polygon in compute_cross_section_polygons(solid, float(z), 64)]
    return read_structure_set(build_structure_set({name: contours}))


def read_dose_of(dose_gy: np.ndarray, grid: Grid, orientation: Orientation) -> DoseGrid:
    """The RT Dose of ``dose_gy`` in ``orientation``, as rt.dose reads it (no frame of reference to match)."""
    return read_dose(build_rt_dose(dose_gy, grid, orientation))


# -- closed forms ----------------------------------------------------------------------------------


def linear_ellipsoid_u(volume_fraction: float) -> float:
    """u in [-1, 1] with (1 - u)^2 (2 + u) / 4 = volume_fraction: the root of u^3 - 3u + 2 - 4x in [-1, 1]."""
    return 2.0 * math.cos(math.acos(2.0 * volume_fraction - 1.0) / 3.0 - 2.0 * math.pi / 3.0)


@dataclass(frozen=True)
class Truth:
    """Closed-form DVH numbers of one structure (Gy, cc) and the dose gradient that scales its tolerances."""

    volume_cc: float
    mean_gy: float
    max_gy: float
    min_gy: float
    d_gy: dict[int, float]  # D<x>% for x in PERCENTS
    gradient_gy_per_mm: float


def linear_truth(solid: Ellipsoid, d0: float, gradient: np.ndarray) -> Truth:
    spread = float(np.linalg.norm(np.asarray(solid.semi_axes_mm) * gradient))
    d = {x: d0 + spread * linear_ellipsoid_u(x / 100.0) for x in PERCENTS}
    return Truth(solid.volume_cc, d0, d0 + spread, d0 - spread, d, float(np.linalg.norm(gradient)))


def radial_truth(solid: Sphere | Shell, model: RadialDoseModel) -> Truth:
    d = {x: truth.compute_dose_at_volume_gy(solid, model, x / 100.0) for x in PERCENTS}
    gradient = model.dmax_gy / (model.falloff_radius_mm - model.plateau_radius_mm)
    return Truth(solid.volume_cc, truth.compute_mean_dose_gy(solid, model), truth.compute_max_dose_gy(solid, model),
                 truth.compute_min_dose_gy(solid, model), d, gradient)


@dataclass(frozen=True)
class Errors:
    """Signed errors of a DVH against its truth: volume (fraction), mean and D_x (Gy)."""

    volume: float
    mean_gy: float
    d_gy: dict[int, float]


def check_against_truth(dvh: DVH, expected: Truth, sampling_mm: float, *, volume_tolerance: float,
                        scanline_cc: float = 0.0, mean_allowance: float = 0.05) -> Errors:
    """Assert the DVH is within the module docstring's bounds of ``expected``; return its errors.

    ``scanline_cc`` widens the volume bound by what the scanline areas may miss (:func:`scanline_allowance_cc`).
    """
    slope_mm = expected.gradient_gy_per_mm * sampling_mm  # Gy one sampling step can move a dose level
    errors = Errors(dvh.total_volume_cc / expected.volume_cc - 1.0, dvh.mean_gy - expected.mean_gy,
                    {x: compute_metric(dvh, f"D{x}%[Gy]") - expected.d_gy[x] for x in PERCENTS})
    assert dvh.uncovered_volume_cc == 0.0
    assert abs(errors.volume) <= volume_tolerance + scanline_cc / expected.volume_cc, errors
    assert abs(errors.mean_gy) <= max(0.01 * expected.mean_gy, 0.1) + mean_allowance * slope_mm, errors
    for x, error in errors.d_gy.items():
        assert abs(error) <= max(0.01 * expected.d_gy[x], 0.1) + slope_mm, (x, errors)
    assert expected.min_gy - slope_mm <= dvh.min_gy <= expected.min_gy + slope_mm
    assert expected.max_gy - slope_mm <= dvh.max_gy <= expected.max_gy + slope_mm
    check_consistent(dvh)
    return errors


def check_consistent(dvh: DVH) -> None:
    """Internal laws of any DVH: non-increasing cumulative volumes, ordered statistics, D_x monotone in x."""
    cumulative = dvh.cumulative_volume_cc
    assert np.all(np.diff(cumulative) <= 1e-9 * max(dvh.volume_cc, 1e-12))
    assert cumulative[0] == pytest.approx(dvh.volume_cc, rel=1e-9)
    assert dvh.min_gy <= dvh.mean_gy * (1 + 1e-12) and dvh.mean_gy <= dvh.max_gy * (1 + 1e-12)
    d = [compute_metric(dvh, f"D{x}%[Gy]") for x in (0.1, 2, 50, 95, 98, 100)]
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(d)), d
    assert dvh.min_gy - 1e-9 <= d[-1] and d[0] <= dvh.max_gy + 1e-9


# -- strategies ------------------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
spacing = st.floats(min_value=1.0, max_value=5.0)
position = st.floats(min_value=-30.0, max_value=30.0)
orientations = st.sampled_from(ORIENTATIONS)


@st.composite
def directions(draw: st.DrawFn) -> np.ndarray:
    """A unit vector, uniform in angle (cos polar uniform)."""
    cos_polar, azimuth = draw(st.floats(-1.0, 1.0)), draw(st.floats(0.0, 2.0 * math.pi))
    sin_polar = math.sqrt(max(0.0, 1.0 - cos_polar * cos_polar))
    return np.array([sin_polar * math.cos(azimuth), sin_polar * math.sin(azimuth), cos_polar])


@dataclass(frozen=True)
class Sampling:
    """How a structure is contoured and the dose gridded: slice thickness and phase, dose spacing and phase."""

    thickness_mm: float
    plane_phase: float
    dose_spacing_mm: tuple[float, float, float]
    dose_phase: tuple[float, float, float]
    orientation: Orientation

    @property
    def coarsest_mm(self) -> float:
        return max(self.thickness_mm, *self.dose_spacing_mm)


@st.composite
def samplings(draw: st.DrawFn, dose_spacing: st.SearchStrategy[float] = spacing,
              thickness: st.SearchStrategy[float] = spacing) -> Sampling:
    return Sampling(draw(thickness), draw(unit), (draw(dose_spacing), draw(dose_spacing), draw(dose_spacing)),
                    (draw(unit), draw(unit), draw(unit)), draw(orientations))


# -- families --------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=80)
@given(semi_axes=st.tuples(st.floats(2.0, 40.0), st.floats(2.0, 40.0), st.floats(2.0, 40.0)),
       sphere=st.booleans(), centre=st.tuples(position, position, position), sampling=samplings(),
       direction=directions(), gradient=st.floats(0.05, 3.0), d0=st.floats(20.0, 70.0))
# Found: an end plane 0.1 mm from the pole (4.5 mm slices) lost its cap (volume -6.8 %) to a thickness bound.
@example(semi_axes=(7.0, 7.0, 7.0), sphere=True, centre=(0.0, 0.0, 0.0),
         sampling=Sampling(4.5, 0.4667, (2.0, 2.0, 2.0), (0.3, 0.6, 0.2), Orientation(0, -1, 1, -1, 1)),
         direction=np.array([0.0, 0.6, 0.8]), gradient=1.0, d0=50.0)
def test_ellipsoid_in_a_linear_dose_gradient(semi_axes, sphere, centre, sampling, direction, gradient, d0):
    """Spheres and ellipsoids (semi-axes 2-40 mm, >= 3 contour planes) in a linear dose: volume, mean, D_x."""
    a, b, c = (semi_axes[0],) * 3 if sphere else semi_axes
    c = max(c, 1.55 * sampling.thickness_mm)  # over 3 slices tall: >= 3 contour planes (fewer cannot describe it)
    solid = Ellipsoid(centre, (a, b, c))
    planes = contour_planes_mm(centre[2], c, sampling.thickness_mm, sampling.plane_phase)
    half = np.array([a, b, c])
    grid = Grid.around(np.array(centre) - half, np.array(centre) + half, sampling.dose_spacing_mm, sampling.dose_phase)
    x, y, z = grid.centres_mm()
    lo, hi = grid.extent_mm()
    farthest = float(np.linalg.norm(np.maximum(np.abs(lo - centre), np.abs(hi - centre))))
    g = direction * min(gradient, (d0 - 1.0) / farthest)  # >= 1 Gy everywhere on the grid
    dose = d0 + g[0] * (x - centre[0]) + g[1] * (y - centre[1]) + g[2] * (z - centre[2])
    structure_set, dose_grid = build_roi(solid, planes), read_dose_of(dose, grid, sampling.orientation)
    dvh = compute_roi_dvh(structure_set, "ROI", dose_grid)
    check_against_truth(dvh, linear_truth(solid, d0, g), sampling.coarsest_mm,
                        volume_tolerance=0.02 if solid.volume_cc >= 3.5 else 0.03,
                        scanline_cc=scanline_allowance_cc(structure_set, dose_grid))


@settings(PROPERTY, max_examples=80)
@given(radius=st.floats(3.0, 40.0), shell=st.booleans(), inner_fraction=st.floats(0.3, 0.8),
       centre=st.tuples(position, position, position), sampling=samplings(),
       dose_centre=st.tuples(st.floats(-10.0, 10.0), st.floats(-10.0, 10.0), st.floats(-10.0, 10.0)),
       plateau=st.floats(0.0, 30.0), falloff=st.floats(10.0, 50.0), dmax=st.floats(10.0, 80.0))
def test_sphere_or_shell_in_a_spherical_dose_falloff(radius, shell, inner_fraction, centre, sampling, dose_centre,
                                                    plateau, falloff, dmax):
    """Spheres and shells (the hole a separate inner contour on the same planes) in the phantom's radial dose."""
    radius = max(radius, 1.55 * sampling.thickness_mm)
    if shell:  # the hole needs >= 3 planes of its own, and a wall the dose grid and planes can see
        inner = max(inner_fraction * radius, 1.55 * sampling.thickness_mm)
        radius = max(radius, inner + sampling.coarsest_mm)
        solid: Sphere | Shell = Shell(centre, inner, radius)
    else:
        solid = Sphere(centre, radius)
    model = RadialDoseModel(dose_centre, dmax, plateau, plateau + falloff)
    planes = contour_planes_mm(centre[2], radius, sampling.thickness_mm, sampling.plane_phase)
    support = model.falloff_radius_mm
    lo = np.minimum(np.array(centre) - radius, np.array(dose_centre) - support)
    hi = np.maximum(np.array(centre) + radius, np.array(dose_centre) + support)
    grid = Grid.around(lo, hi, sampling.dose_spacing_mm, sampling.dose_phase)
    dose = model.compute_dose_gy(*grid.centres_mm())
    structure_set, dose_grid = build_roi(solid, planes), read_dose_of(dose, grid, sampling.orientation)
    dvh = compute_roi_dvh(structure_set, "ROI", dose_grid)
    volume_tolerance = 0.05 if shell else 0.02 if solid.volume_cc >= 3.5 else 0.03
    kinked = has_kink_near(Sphere(centre, radius), model, sampling.coarsest_mm)
    check_against_truth(dvh, radial_truth(solid, model), sampling.coarsest_mm, volume_tolerance=volume_tolerance,
                        scanline_cc=scanline_allowance_cc(structure_set, dose_grid),
                        mean_allowance=1.0 if kinked else 0.05)


@settings(PROPERTY, max_examples=100)
@given(radius=st.floats(2.0, 4.9), centre=st.tuples(position, position, position),
       sampling=samplings(dose_spacing=st.floats(4.5, 5.0)), radial=st.booleans(), direction=directions(),
       gradient=st.floats(0.05, 3.0), d0=st.floats(20.0, 70.0), offset=st.tuples(position, position, position),
       plateau=st.floats(0.0, 30.0), falloff=st.floats(10.0, 50.0), dmax=st.floats(10.0, 80.0))
def test_tiny_structure_on_a_coarse_dose_grid(radius, centre, sampling, radial, direction, gradient, d0, offset,
                                              plateau, falloff, dmax):
    """Spheres under 0.5 cc (radius 2-4.9 mm) on a 4.5-5 mm dose grid, contoured on 1-5 mm slices.

    Tolerances. Small spheres on coarse grids are where DVH tools disagree most: an SRS comparison of
    five commercial DVH tools on analytic 3-20 mm diameter spheres (J Appl Clin Med Phys 2021,
    PMC8248418) reports volume errors from -33 % to +10 %. Here, with >= 3 contour planes (which the
    Cavalieri volume makes exact for a sphere): volume 3 %, mean 1 % or 0.1 Gy plus 0.1 |grad D| h,
    D_x 1 % or 0.1 Gy plus |grad D| h (h = 5 mm at most); near a kink of the radial dose (which a
    5 mm grid cannot show) the mean too within |grad D| h. With 1 or 2 planes the stack does not
    determine the solid (a single plane stands for one dose-grid slice, as a slab): the volume must be
    the stack's own (area x effective thickness) within the scanline bound (:func:`scanline_allowance_cc`:
    sections of 1-2 mm radius are crossed by a few 0.4 mm scanlines), and the mean within half a
    sampling step (|grad D| h / 2) of the solid's, as a plane lies within h / 2 of the sphere's centre.
    Never an exception: every such sphere has a DVH.
    """
    solid = Sphere(centre, radius)
    planes = contour_planes_mm(centre[2], radius, sampling.thickness_mm, sampling.plane_phase)
    if planes.size == 0:  # it falls between two slices: contour it on one plane through it instead
        planes = np.array([centre[2] + (sampling.plane_phase - 0.5) * radius])
    grid = Grid.around(np.array(centre) - radius, np.array(centre) + radius, sampling.dose_spacing_mm,
                       sampling.dose_phase)
    x, y, z = grid.centres_mm()
    if radial:
        model = RadialDoseModel(tuple(np.add(centre, offset)), dmax, plateau, plateau + falloff)
        dose, expected = model.compute_dose_gy(x, y, z), radial_truth(solid, model)
    else:
        lo, hi = grid.extent_mm()
        farthest = float(np.linalg.norm(np.maximum(np.abs(lo - centre), np.abs(hi - centre))))
        g = direction * min(gradient, (d0 - 1.0) / farthest)
        dose = d0 + g[0] * (x - centre[0]) + g[1] * (y - centre[1]) + g[2] * (z - centre[2])
        expected = linear_truth(Ellipsoid(centre, (radius,) * 3), d0, g)
    structure_set, dose_grid = build_roi(solid, planes), read_dose_of(dose, grid, sampling.orientation)
    dvh = compute_roi_dvh(structure_set, "ROI", dose_grid)
    slope_mm = expected.gradient_gy_per_mm * sampling.coarsest_mm
    kinked = radial and has_kink_near(solid, model, sampling.coarsest_mm)
    scanline_cc = scanline_allowance_cc(structure_set, dose_grid)
    if planes.size >= 3:
        check_against_truth(dvh, expected, sampling.coarsest_mm, volume_tolerance=0.03, scanline_cc=scanline_cc,
                            mean_allowance=1.0 if kinked else 0.1)
        return
    roi = structure_set.roi("ROI")
    stack_cc = float(roi.compute_plane_areas_mm2() @ roi.compute_plane_thickness_mm(default_mm=grid.spacing_mm[2]))
    assert dvh.uncovered_volume_cc == 0.0
    assert abs(dvh.total_volume_cc - stack_cc / 1000.0) <= scanline_cc, (dvh.total_volume_cc, stack_cc, scanline_cc)
    mean_allowance = 1.0 if kinked else 0.5
    assert abs(dvh.mean_gy - expected.mean_gy) <= max(0.01 * expected.mean_gy, 0.1) + mean_allowance * slope_mm
    assert expected.min_gy - slope_mm <= dvh.min_gy and dvh.max_gy <= expected.max_gy + slope_mm
    check_consistent(dvh)


#: The midpoint rule on scanlines h apart misses at most this x (h / b)^1.5 of an ellipse's area (b its
#: half-height): 0.37 for h << b, found over every scanline offset for h / b up to 2.
SCANLINE_AREA_FACTOR = 0.38


def scanline_allowance_cc(structure_set: StructureSet, dose: DoseGrid) -> float:
    """How much volume (cc) rt.dvh's scanline areas may miss or add on the ROI's convex, round sections.

    compute_roi_dvh integrates each plane's area exactly along x on scanlines in y (12 per dose
    pixel row for a ROI whose box is under 10 cc, else 4); a section only a few scanlines tall (a
    flat ellipsoid on a coarse grid) can be some % off, as its docstring says.
    """
    roi = structure_set.roi("ROI")
    lo, hi = roi.compute_bounds_mm()
    small = float(np.prod(hi - lo)) / 1000.0 < SMALL_ROI_BOX_CC
    h = dose.spacing_mm[1] / (SMALL_ROI_SUPERSAMPLING if small else DEFAULT_SUPERSAMPLING)
    thickness = roi.compute_plane_thickness_mm(default_mm=dose.spacing_mm[2])
    total_mm3 = 0.0
    for polygons, t in zip(roi.planes().values(), thickness, strict=True):
        for polygon, area in zip(polygons, compute_polygon_areas_mm2(list(polygons)), strict=True):
            half_height = float(np.ptp(polygon[:, 1])) / 2.0
            share = min(1.0, SCANLINE_AREA_FACTOR * (h / half_height) ** 1.5) if half_height > 0.0 else 1.0
            total_mm3 += float(area) * float(t) * share
    return total_mm3 / 1000.0


def has_kink_near(solid: Sphere, model: RadialDoseModel, distance_mm: float) -> bool:
    """Whether a kink of the radial dose (the fall-off's ends; its apex when it has no plateau) passes
    within ``distance_mm`` of the sphere: there the dose grid, sampling every few mm, cannot show it."""
    s = math.dist(solid.centre_mm, model.centre_mm)
    kinks = (model.plateau_radius_mm if model.plateau_radius_mm > 0.0 else 0.0, model.falloff_radius_mm)
    return any(s - solid.radius_mm - distance_mm <= k <= s + solid.radius_mm + distance_mm for k in kinks)


def segment_volume_mm3(radius: float, a: float, b: float) -> float:
    """Volume of the ball of ``radius`` between the planes x = a and x = b (relative to its centre), mm^3."""
    a, b = max(a, -radius), min(b, radius)
    if b <= a:
        return 0.0
    return math.pi * ((radius * radius * b - b**3 / 3.0) - (radius * radius * a - a**3 / 3.0))


@settings(PROPERTY, max_examples=80)
@given(radius=st.floats(5.0, 40.0), centre=st.tuples(position, position, position), sampling=samplings(),
       cut_axis=st.sampled_from((0, 1, 2)), cut=st.floats(-1.3, 0.9), side=st.sampled_from((-1, 1)),
       gradient=st.floats(-3.0, 3.0).filter(lambda g: abs(g) >= 0.05), d0=st.floats(20.0, 70.0))
# Found: the pixels on the grid's edge had no slope across it (D50 18.98 Gy for 20.17 Gy).
@example(radius=5.0, centre=(-29.688479115190436, 0.0, -17.708477798508405),
         sampling=Sampling(1.4954566586407214, 0.0, (5.0, 3.0817819520437477, 3.529060437931577),
                           (0.7165960693254043, 0.0, 0.99999), Orientation(0, 1, 2, 1, 1)),
         cut_axis=0, cut=0.5, side=-1, gradient=2.4087988000576797, d0=20.0)
def test_partial_dose_coverage(radius, centre, sampling, cut_axis, cut, side, gradient, d0):
    """A sphere that the dose grid covers only up to a plane across it (x, y or z; either side).

    The DVH is the covered part's, the rest is reported as ``uncovered_volume_cc`` (never dropped):
    covered + uncovered is the ROI's volume; a D<v>cc beyond the covered volume is not evaluable
    (with the reason) rather than an exception. A ROI wholly beyond the grid, or reaching into it by
    less than a slice (z) or a dose voxel (x, y: between scanlines), is an OutsideDoseGridError with
    the ROI's volume. Across x or y the cut is exact: the covered
    volume is the ball segment's within 2 % (3 % under 3.5 cc) and, with the dose linear along the
    cut axis (in-plane: reconstructed exactly but at the grid's edge), mean and D_x are the segment's
    closed form within 1 % or 0.1 Gy plus 0.05 (mean) and 0.25 (D_x) |grad D| h, for a covered part at
    least a dose voxel thick (a thinner sliver is sampled by a few scanlines).
    Across z a contour plane counts wholly when it lies on the grid, so the covered volume is
    the segment's within one slab (largest section x slice thickness).
    """
    radius = max(radius, 1.55 * sampling.thickness_mm)
    solid = Sphere(centre, radius)
    planes = contour_planes_mm(centre[2], radius, sampling.thickness_mm, sampling.plane_phase)
    c = np.asarray(centre)
    lo, hi = c - radius, c + radius
    if side > 0:  # the grid ends at centre + cut * radius on its high side along the cut axis
        hi[cut_axis] = c[cut_axis] + cut * radius
    else:
        lo[cut_axis] = c[cut_axis] - cut * radius
    grid = Grid.around(lo, hi, sampling.dose_spacing_mm, sampling.dose_phase)
    # Trim the margin on the cut side: the grid's extent ends within one voxel of the cut.
    counts, origin = list(grid.counts), list(grid.origin_mm)
    step = grid.spacing_mm[cut_axis]
    if side > 0:
        counts[cut_axis] = max(1, math.floor((hi[cut_axis] - origin[cut_axis]) / step + 0.5))
    else:
        first = math.ceil((lo[cut_axis] - origin[cut_axis]) / step - 0.5)
        origin[cut_axis] += first * step
        counts[cut_axis] = max(1, counts[cut_axis] - first)  # (a grid wholly beyond the sphere: a voxel or more)
    grid = Grid(tuple(origin), grid.spacing_mm, tuple(counts))
    extent_lo, extent_hi = grid.extent_mm()
    # Covered along the cut axis: [a, b] relative to the centre.
    a, b = extent_lo[cut_axis] - c[cut_axis], extent_hi[cut_axis] - c[cut_axis]
    x, y, z = grid.centres_mm()
    along = (x, y, z)[cut_axis] - c[cut_axis]
    g = math.copysign(min(abs(gradient), (d0 - 1.0) / (radius + 3 * step)), gradient)  # >= 1 Gy on the grid
    dose = d0 + g * along
    structure_set = build_roi(solid, planes)
    total_cc = structure_set.roi("ROI").compute_volume_cc()
    covered_mm3 = segment_volume_mm3(radius, a, b)
    covered_thickness_mm = min(b, radius) - max(a, -radius)
    try:
        dvh = compute_roi_dvh(structure_set, "ROI", read_dose_of(dose, grid, sampling.orientation))
    except OutsideDoseGridError as exc:  # only where no contour plane / scanline reaches into the grid
        assert covered_thickness_mm < (sampling.thickness_mm if cut_axis == 2 else step), covered_thickness_mm
        assert exc.volume_cc == pytest.approx(total_cc, rel=0.01)
        return
    check_consistent(dvh)
    assert dvh.total_volume_cc == pytest.approx(total_cc, rel=0.01)  # scanline areas vs exact polygon areas
    assert dvh.uncovered_volume_cc >= 0.0
    beyond = dvh.volume_cc + 0.5 * dvh.uncovered_volume_cc
    if dvh.uncovered_volume_cc > 1e-3 * dvh.total_volume_cc:
        available = compute_available_metrics(dvh, [f"D{beyond:.3f}cc[Gy]", "D50%[Gy]", "Mean[Gy]"])
        assert set(available.not_evaluable) == {f"D{beyond:.3f}cc[Gy]"}
        assert "exceeds the volume" in available.not_evaluable[f"D{beyond:.3f}cc[Gy]"]
    if cut_axis == 2:
        largest_section_mm2 = math.pi * radius * radius
        assert abs(dvh.volume_cc * 1000.0 - covered_mm3) <= largest_section_mm2 * sampling.thickness_mm
        return
    if covered_thickness_mm < step:  # a sliver a few scanlines cover: no closed-form check
        return
    expected = segment_truth(radius, a, b, d0, g, (float(along.min()), float(along.max())))
    small = covered_mm3 < 3500.0
    assert dvh.volume_cc == pytest.approx(covered_mm3 / 1000.0, rel=0.03 if small else 0.02)
    assert dvh.total_volume_cc == pytest.approx(solid.volume_cc, rel=0.02)
    slope_mm = abs(g) * sampling.coarsest_mm
    assert abs(dvh.mean_gy - expected.mean_gy) <= max(0.01 * expected.mean_gy, 0.1) + 0.05 * slope_mm, (
        dvh.mean_gy, expected.mean_gy)
    for x_percent, value in expected.d_gy.items():
        error = compute_metric(dvh, f"D{x_percent}%[Gy]") - value
        assert abs(error) <= max(0.01 * value, 0.1) + 0.25 * slope_mm, (x_percent, error)  # in-plane dose: exact


def segment_truth(radius: float, a: float, b: float, d0: float, g: float, centres: tuple[float, float]) -> Truth:
    """Closed-form DVH of the ball segment a <= u <= b (u along the cut axis from the ball's centre) in the
    dose d0 + g u between the grid's outermost voxel centres ``centres`` and their values beyond (rt.dose's
    convention: the edge value between the outermost centre and the grid's edge)."""
    a, b = max(a, -radius), min(b, radius)
    first, last = centres
    volume = segment_volume_mm3(radius, a, b)

    def dose(u: float) -> float:
        return d0 + g * min(max(u, first), last)

    def moment(u: float) -> float:  # antiderivative of pi u (R^2 - u^2)
        return math.pi * (radius * radius * u * u / 2.0 - u**4 / 4.0)

    lo, hi = max(a, first), min(b, last)
    integral = dose(first) * segment_volume_mm3(radius, a, min(b, first)) + dose(last) * segment_volume_mm3(
        radius, max(a, last), b)
    if hi > lo:
        integral += d0 * segment_volume_mm3(radius, lo, hi) + g * (moment(hi) - moment(lo))

    def hottest(fraction: float) -> float:  # u at which the hottest ``fraction`` of the segment begins (ends if g < 0)
        target = fraction * volume
        low, high = a, b
        for _ in range(100):
            mid = (low + high) / 2.0
            hot = segment_volume_mm3(radius, mid, b) if g > 0 else segment_volume_mm3(radius, a, mid)
            if (hot >= target) == (g > 0):
                low = mid
            else:
                high = mid
        return (low + high) / 2.0

    d = {x: dose(hottest(x / 100.0)) for x in PERCENTS}
    return Truth(volume / 1000.0, integral / volume, max(dose(a), dose(b)), min(dose(a), dose(b)), d, abs(g))


def build_rt_dose_with_absolute_offsets(dose_gy: np.ndarray, grid: Grid, orientation: Orientation) -> Dataset:
    """:func:`build_rt_dose` with GridFrameOffsetVector as each frame's patient z (slice normal along +-z)."""
    ds = build_rt_dose(dose_gy, grid, orientation)
    first_z = float(ds.ImagePositionPatient[2])
    normal_sign = int(np.cross(orientation.iop[:3], orientation.iop[3:])[2])
    ds.GridFrameOffsetVector = [f"{first_z + normal_sign * float(v):.6f}" for v in ds.GridFrameOffsetVector]
    return ds


@settings(PROPERTY, max_examples=30)
@given(kind=st.sampled_from(("sphere", "ellipsoid", "shell")),
       size=st.tuples(st.integers(16, 200), st.integers(16, 200), st.integers(16, 200)),
       centre=st.tuples(st.integers(-160, 160), st.integers(-160, 160), st.integers(-160, 160)),
       thickness=st.integers(8, 40),
       spacing_eighths=st.tuples(st.integers(8, 40), st.integers(8, 40), st.integers(8, 40)),
       reach=st.tuples(st.floats(0.5, 1.3), st.floats(0.5, 1.3), st.floats(0.5, 1.3)), seed=st.integers(0, 2**32 - 1),
       stored_as=st.lists(orientations, min_size=4, max_size=4, unique=True))
def test_dvh_is_the_same_in_every_dose_orientation(kind, size, centre, thickness, spacing_eighths, reach, seed,
                                                    stored_as):
    """The same dose in patient coordinates, stored in any of the 48 orientations and both frame orders (and,
    along z, with absolute frame offsets), gives the identical DVH: the reader canonicalises the grid exactly.

    The dose is random noise with an undosed block (no closed form needed: only equality is asserted);
    the grid may stop short of the structure (``reach`` < 1), so the uncovered volume must agree too.
    Coordinates are multiples of 1/8 mm, exact in binary and in the 6-decimal strings written.
    """
    semi = np.array(size) / 8.0 * (np.array([1.0, 1.0, 1.0]) if kind != "ellipsoid" else np.array([1.0, 0.6, 0.8]))
    if kind != "ellipsoid":
        semi[:] = semi[0]
    t = thickness / 8.0
    semi[2] = max(semi[2], 1.55 * t)
    c = np.array(centre) / 8.0
    solid: Solid = (Shell(tuple(c), semi[0] * 0.5, semi[0]) if kind == "shell" and semi[0] * 0.5 >= 1.5 * t
                    else Ellipsoid(tuple(c), tuple(semi)))
    planes = contour_planes_mm(c[2], semi[2], t, 0.5)
    spacing_mm = tuple(v / 8.0 for v in spacing_eighths)
    lo = np.floor((c - semi * np.array(reach)) * 8.0) / 8.0
    counts = tuple(int(v) for v in np.ceil(2.0 * semi * np.array(reach) / spacing_mm) + 1)
    grid = Grid(tuple(float(v) for v in lo), spacing_mm, counts)
    rng = np.random.default_rng(seed)
    dose = rng.uniform(0.0, 70.0, (counts[2], counts[1], counts[0]))
    k, j, i = (rng.integers(0, n) for n in (counts[2], counts[1], counts[0]))
    dose[k:, j:, :i] = 0.0  # an undosed corner: the support's edges and near-dose masks
    structure_set = build_roi(solid, planes)
    reference = compute_roi_dvh(structure_set, "ROI", read_dose_of(dose, grid, HFS))
    check_consistent(reference)
    for orientation in stored_as:
        datasets = [build_rt_dose(dose, grid, orientation)]
        if 3 - orientation.row_axis - orientation.column_axis == 2:
            absolute = build_rt_dose_with_absolute_offsets(dose, grid, orientation)
            # (a first value of 0 means relative offsets: for frames along -z that would reverse them)
            if float(absolute.GridFrameOffsetVector[0]) != 0.0 or absolute.GridFrameOffsetVector[-1] >= 0.0:
                datasets.append(absolute)
        for ds in datasets:
            dvh = compute_roi_dvh(structure_set, "ROI", read_dose(ds))
            assert (dvh.volume_cc, dvh.uncovered_volume_cc, dvh.mean_gy, dvh.min_gy, dvh.max_gy) == (
                reference.volume_cc, reference.uncovered_volume_cc, reference.mean_gy, reference.min_gy,
                reference.max_gy), orientation
            np.testing.assert_array_equal(dvh.cumulative_volume_cc, reference.cumulative_volume_cc)


def mean_beyond_mm(p: float, q: float, first: float, last: float) -> tuple[float, float]:
    """Means over u uniform on [p, q] of how far u lies below ``first`` and above ``last`` (0 within), mm."""
    below = max(0.0, min(q, first) - p) ** 2 / 2.0 if p < first else 0.0
    above = max(0.0, q - max(p, last)) ** 2 / 2.0 if q > last else 0.0
    return below / (q - p), above / (q - p)


@settings(PROPERTY, max_examples=60)
@given(spacing_eighths=st.tuples(st.integers(8, 40), st.integers(8, 40), st.integers(8, 40)),
       cells=st.tuples(st.integers(1, 12), st.integers(1, 12)), halves=st.tuples(*[st.integers(0, 1)] * 4),
       plane_step_halves=st.integers(1, 4), plane_count=st.integers(1, 8), margins=st.tuples(st.integers(0, 2),
       st.integers(0, 2)), orientation=orientations, direction=directions(), gradient=st.floats(0.0, 2.0),
       corner_cells=st.tuples(st.integers(-20, 20), st.integers(-20, 20), st.integers(-20, 20)))
# Found: plane heights rounded to 1 µm (-9.6875 mm read as -9.688: the dose sampled 0.5 µm off).
@example(spacing_eighths=(24, 33, 31), cells=(6, 11), halves=(1, 0, 1, 1), plane_step_halves=2, plane_count=1,
         margins=(2, 1), orientation=Orientation(2, 1, 0, 1, 1), direction=np.array([0.0, 0.0, 1.0]),
         gradient=1.6, corner_cells=(-1, -12, -6))
def test_box_aligned_with_the_dose_grid(spacing_eighths, cells, halves, plane_step_halves, plane_count, margins,
                                        orientation, direction, gradient, corner_cells):
    """Degenerate alignments: a box whose sides lie exactly on dose voxel edges or centres, whose contour planes
    lie on frame centres or edges, and whose sides may coincide with the grid's own edge or outermost centres.

    In a linear dose the DVH's volume is the prism's (planes x slice thickness, a single plane standing for one
    dose slice) to 1e-9, and its mean the closed form d0 + g . (centroid) to 1e-5 Gy, as the reconstruction is
    exact in every pixel. In the half voxel beyond the grid's outermost voxel centres the edge pixel's inner
    slope is clamped to its neighbours' values, so there the dose lies between the linear one and the edge
    value (rt.dose's resampling convention): the mean lies within the closed-form shifts towards the latter.
    """
    dx, dy, dz = (v / 8.0 for v in spacing_eighths)
    origin = np.array(corner_cells) * np.array([dx, dy, dz])
    # Box sides: from a voxel edge or centre (halves) over a whole number of half voxels.
    x0 = origin[0] + (margins[0] - 0.5 + 0.5 * halves[0]) * dx
    y0 = origin[1] + (margins[1] - 0.5 + 0.5 * halves[1]) * dy
    x1, y1 = x0 + (cells[0] + 0.5 * halves[2]) * dx, y0 + (cells[1] + 0.5 * halves[3]) * dy
    t = plane_step_halves * dz / 2.0
    first_z = origin[2] + (2 + plane_count) * dz + 0.5 * dz * halves[0]  # >= 1 voxel + t / 2 inside along z
    planes = first_z + t * np.arange(plane_count)
    thickness = t if plane_count > 1 else dz
    counts = (math.ceil((x1 - origin[0]) / dx + 0.5) + margins[0], math.ceil((y1 - origin[1]) / dy + 0.5) + margins[1],
              math.ceil((planes[-1] + thickness - origin[2]) / dz) + 3)
    grid = Grid((float(origin[0]), float(origin[1]), float(origin[2])), (dx, dy, dz), counts)
    square = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    contours = [contour_item(np.column_stack([square, np.full(4, z)])) for z in planes]
    structure_set = read_structure_set(build_structure_set({"Box": contours}))
    x, y, z = grid.centres_mm()
    d0 = 40.0
    g = direction * gradient
    centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0, (planes[0] + planes[-1]) / 2.0])
    g = g * min(1.0, (d0 - 1.0) / max(1e-9, float(np.abs(g) @ (np.array(grid.extent_mm()[1]) - grid.extent_mm()[0]))))
    dose = d0 + g[0] * (x - centre[0]) + g[1] * (y - centre[1]) + g[2] * (z - centre[2])
    dvh = compute_roi_dvh(structure_set, "Box", read_dose_of(dose, grid, orientation))
    volume_cc = (x1 - x0) * (y1 - y0) * thickness * plane_count / 1000.0
    assert dvh.uncovered_volume_cc == pytest.approx(0.0, abs=1e-9 * volume_cc)
    assert dvh.volume_cc == pytest.approx(volume_cc, rel=1e-9)
    first_centres = np.array(grid.origin_mm)
    last_centres = first_centres + (np.array(counts) - 1) * (dx, dy, dz)
    # Beyond the outermost centres the dose moves from the linear one (d0 on average) towards the edge value, by
    # g_a (first - u) below the first centre along axis a and g_a (last - u) above the last: each side's mean shift.
    shifts = []
    for a, (lo, hi) in enumerate(((x0, x1), (y0, y1))):
        below, above = mean_beyond_mm(lo, hi, first_centres[a], last_centres[a])
        shifts += [g[a] * below, -g[a] * above]
    low, high = d0 + sum(min(0.0, v) for v in shifts), d0 + sum(max(0.0, v) for v in shifts)
    assert low - 1e-5 <= dvh.mean_gy <= high + 1e-5, (dvh.mean_gy, low, high)
    check_consistent(dvh)


@st.composite
def degenerate_polygons(draw: st.DrawFn) -> np.ndarray:
    """A closed contour that encloses little or nothing: collinear points, one point repeated, a sliver
    thinner than a scanline, a needle, or a tiny triangle (x/y within +-20 mm, up to 8 points)."""
    kind = draw(st.sampled_from(("collinear", "repeated", "sliver", "needle", "tiny")))
    x0, y0 = draw(st.floats(-20.0, 20.0)), draw(st.floats(-20.0, 20.0))
    n = draw(st.integers(3, 8))
    t = np.linspace(0.0, 1.0, n)
    if kind == "collinear":
        dx, dy = draw(st.floats(-10.0, 10.0)), draw(st.floats(-10.0, 10.0))
        return np.column_stack([x0 + dx * t, y0 + dy * t])
    if kind == "repeated":
        return np.tile([x0, y0], (n, 1))
    if kind == "sliver":  # far thinner (in y) than any scanline spacing
        return np.column_stack([x0 + 5.0 * t, y0 + draw(st.floats(0.0, 1e-3)) * np.sin(np.pi * t)])
    if kind == "needle":
        return np.array([[x0, y0], [x0 + draw(st.floats(1.0, 30.0)), y0 + 1e-6], [x0, y0 + 2e-6]])
    size = draw(st.floats(1e-4, 0.2))
    return np.array([[x0, y0], [x0 + size, y0], [x0, y0 + size]])


@settings(PROPERTY, max_examples=80)
@given(polygons=st.lists(degenerate_polygons(), min_size=1, max_size=4), z=st.lists(st.floats(-10.0, 10.0),
       min_size=1, max_size=4), with_body=st.booleans(), spacing_mm=st.tuples(spacing, spacing, spacing),
       orientation=orientations)
# Found: three planes of collinear points raised numpy's ValueError; one plane read as outside the grid.
@example(polygons=[np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])], z=[0.0, 2.0, 4.0], with_body=False,
         spacing_mm=(2.0, 2.0, 2.0), orientation=HFS)
def test_degenerate_contours_give_a_dvh_or_a_clear_error(polygons, z, with_body, spacing_mm, orientation):
    """Contours with no area, or too little to sample, on one or more planes, alone or on the planes of a real
    body beside them: the DVH is computed, or an RTError says why not (no ValueError from an empty array, no
    misleading 'outside the dose grid' for a ROI that lies inside it)."""
    body_planes = (-4.0, -2.0, 0.0, 2.0, 4.0)
    heights = [body_planes[int(abs(h)) % len(body_planes)] for h in z] if with_body else z
    contours = [contour_item(np.column_stack([p, np.full(len(p), height)])) for p in polygons for height in heights]
    if with_body:
        contours += [contour_item(polygon) for height in body_planes
                     for polygon in compute_cross_section_polygons(Sphere((0.0, 0.0, 0.0), 6.0), height, 16)]
    structure_set = read_structure_set(build_structure_set({"ROI": contours}))
    grid = Grid.around(np.full(3, -35.0), np.full(3, 35.0), spacing_mm, (0.5, 0.5, 0.5))
    x, y, zz = grid.centres_mm()
    dose = read_dose_of(40.0 + 0.3 * x - 0.2 * y + 0.1 * zz, grid, orientation)
    try:
        dvh = compute_roi_dvh(structure_set, "ROI", dose)
    except OutsideDoseGridError:
        raise AssertionError("a ROI inside the dose grid reported outside it") from None
    except RTError as exc:
        assert not with_body and "encloses no volume" in str(exc)
        return
    check_consistent(dvh)
    assert dvh.uncovered_volume_cc == 0.0
    if with_body:
        assert dvh.volume_cc == pytest.approx(4.0 / 3.0 * math.pi * 6.0**3 / 1000.0, rel=0.05)
