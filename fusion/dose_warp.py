"""RT Dose warped through a registration onto a fixed grid, and courses accumulated (physical or EQD2).

A dose grid (:class:`rt.dose.DoseGrid`, Gy, canonical axis-aligned) is resampled trilinearly onto
the target grid through the registration's transform, which maps fixed physical points to moving
physical points (SimpleITK's convention): the dose at fixed point x is the moving dose at T(x).
Target points whose T(x) falls outside the moving dose grid get NaN (unknown), the coverage policy
of :mod:`rt.summation`; :func:`rt.dose.build_rt_dose` stores them as 0 Gy.

Accumulation: each course is warped, then added voxel by voxel. For EQD2, each warped course is
converted per voxel with its own number of fractions and the alpha/beta of the fixed image's ROI
the voxel belongs to (:func:`rt.summation.compute_eqd2_map`), and the EQD2 maps are summed.
A registration that failed QA is refused unless overridden (:func:`fusion.qa.check_usable`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.qa import RegistrationQA, check_usable
from rt.dose import DoseGrid
from rt.grid import VoxelGrid
from rt.summation import compute_dose_sum, compute_eqd2_map

log = logging.getLogger(__name__)

_CANONICAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_AXIS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DoseCourse:
    """One treatment course to accumulate.

    dose: its RT Dose (total over the course, Gy) in the moving frame of reference.
    fractions: number of fractions it was delivered in (for EQD2).
    transform: fixed physical point → moving physical point (None: the dose is already in the fixed frame).
    registration_qa: the QA of the registration behind ``transform``; without it (or when it failed)
        the course is refused unless overridden.
    """

    dose: DoseGrid
    fractions: float
    transform: sitk.Transform | None = None
    registration_qa: RegistrationQA | None = None


def compute_voxel_grid(image: sitk.Image) -> VoxelGrid:
    """The canonical :class:`VoxelGrid` (indices along +x, +y, +z) of an image whose axes are patient axes.

    The grid has the image's voxel centres (permuted/flipped into canonical order). Oblique
    images raise FusionError.
    """
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if np.max(np.abs(np.abs(direction) - np.round(np.abs(direction)))) > _AXIS_TOLERANCE:
        raise FusionError("the image is oblique; dose grids need axes along the patient axes")
    size, spacing = np.asarray(image.GetSize()), np.asarray(image.GetSpacing(), dtype=np.float64)
    corner_far = image.TransformIndexToPhysicalPoint(tuple(int(n - 1) for n in size))
    lo = np.minimum(np.asarray(image.GetOrigin()), np.asarray(corner_far))
    axis_of_column = np.argmax(np.abs(direction), axis=0)  # image axis c runs along patient axis axis_of_column[c]
    patient_spacing, patient_size = np.zeros(3), np.zeros(3, dtype=int)
    for c, axis in enumerate(axis_of_column):
        patient_spacing[axis], patient_size[axis] = spacing[c], size[c]
    x0, y0, z0 = (float(v) for v in lo)
    dx, dy, dz = (float(v) for v in patient_spacing)
    return VoxelGrid(origin_mm=(x0, y0, z0), spacing_mm=(dx, dy, dz),
                     shape=(int(patient_size[2]), int(patient_size[1]), int(patient_size[0])))


def compute_covering_grid(image: sitk.Image, spacing_mm: tuple[float, float, float]) -> VoxelGrid:
    """An axis-aligned grid of ``spacing_mm`` (dx, dy, dz) whose voxels cover the whole of ``image``, mm."""
    size = image.GetSize()
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint((i, j, k))
                        for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5) for k in (-0.5, size[2] - 0.5)])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if np.any(spacing <= 0):
        raise ValueError(f"spacing must be positive: {spacing_mm}")
    counts = np.maximum(np.ceil((hi - lo) / spacing - 1e-6).astype(int), 1)
    origin = (lo + hi) / 2.0 - (counts - 1) * spacing / 2.0
    x0, y0, z0 = (float(v) for v in origin)
    dx, dy, dz = (float(v) for v in spacing)
    return VoxelGrid(origin_mm=(x0, y0, z0), spacing_mm=(dx, dy, dz),
                     shape=(int(counts[2]), int(counts[1]), int(counts[0])))


def _grid_image(grid: VoxelGrid, values: npt.NDArray[np.float64] | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros(grid.shape, np.float32) if values is None else values.astype(np.float64))
    image.SetOrigin(grid.origin_mm)
    image.SetSpacing(grid.spacing_mm)
    return image


def warp_dose(dose: DoseGrid, transform: sitk.Transform | None, target: VoxelGrid, *,
              frame_of_reference_uid: str = "") -> DoseGrid:
    """``dose`` resampled (trilinear, Gy) at the voxel centres of ``target`` through ``transform``.

    ``transform`` maps target (fixed) points to the dose's (moving) points; None is the identity.
    Points mapped outside the dose grid are NaN. The result carries ``frame_of_reference_uid``
    (the fixed image's) and the source's units and type.
    """
    moving = _grid_image(dose.grid, np.asarray(dose.dose_gy, dtype=np.float64))
    warped = sitk.Resample(moving, _grid_image(target), transform or sitk.Transform(3, sitk.sitkIdentity),
                           sitk.sitkLinear, float("nan"), sitk.sitkFloat64)
    values = sitk.GetArrayFromImage(warped)
    if np.all(np.isnan(values)):
        raise FusionError("the warped dose does not overlap the target grid at all")
    return DoseGrid(dose_gy=values, grid=target, orientation=_CANONICAL_ORIENTATION, dose_units=dose.dose_units,
                    dose_type=dose.dose_type, dose_summation_type=dose.dose_summation_type,
                    frame_of_reference_uid=frame_of_reference_uid or dose.frame_of_reference_uid)


def accumulate_doses(courses: Sequence[DoseCourse], target: VoxelGrid, *, frame_of_reference_uid: str = "",
                     mode: str = "physical",
                     alpha_beta_by_roi: Mapping[str, tuple[npt.NDArray[np.float64], float]] | None = None,
                     default_alpha_beta_gy: float = 3.0, outside: str = "nan",
                     override_qa: bool = False) -> DoseGrid:
    """The sum of ``courses`` on ``target`` (Gy), physical (``mode="physical"``) or EQD2 (``mode="eqd2"``).

    ``alpha_beta_by_roi`` maps ROI name → (occupancy 0..1 on ``target``, alpha/beta Gy) for EQD2;
    other voxels use ``default_alpha_beta_gy``. ``outside`` ("nan" or "zero") decides what a voxel
    outside a course's dose grid contributes (see :mod:`rt.summation`). A course whose
    registration failed QA, or has none, raises :class:`fusion.errors.UnusableRegistrationError` unless
    ``override_qa``. The result is in ``frame_of_reference_uid`` (the fixed image's).
    """
    if not courses:
        raise FusionError("no dose courses given")
    if mode not in ("physical", "eqd2"):
        raise ValueError(f"mode must be 'physical' or 'eqd2', not {mode!r}")
    for course in courses:
        if course.transform is not None:  # a registration without QA counts as not checked: refused too
            check_usable(course.registration_qa, override_qa)
    warped = []
    for number, course in enumerate(courses, start=1):
        dose = warp_dose(course.dose, course.transform, target, frame_of_reference_uid=frame_of_reference_uid)
        if mode == "eqd2":
            dose = compute_eqd2_map(dose, course.fractions, alpha_beta_by_roi or {}, default_alpha_beta_gy)
        warped.append(dose)
        log.info("dose course %d of %d warped (%s)", number, len(courses), mode)
    total = compute_dose_sum(warped, target_grid=target, outside=outside)
    return DoseGrid(dose_gy=total.dose_gy, grid=target, orientation=_CANONICAL_ORIENTATION,
                    dose_units=total.dose_units, dose_type="EFFECTIVE" if mode == "eqd2" else "PHYSICAL",
                    dose_summation_type="MULTI_PLAN" if len(courses) > 1 else "PLAN",
                    frame_of_reference_uid=frame_of_reference_uid)
