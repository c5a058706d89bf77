"""Contour propagation: ROIs of a moving image warped onto a fixed image, and overlap with reference contours.

A ROI is rasterised (:func:`rt.structures.compute_mask`, fractional occupancy) on an axis-aligned
grid around it, with one slice per contour plane; that occupancy is resampled linearly onto the
fixed grid through the registration transform (fixed physical point → moving physical point,
SimpleITK's convention) and thresholded at 0.5. Coordinates are LPS, mm; volumes cc.
Reference contours drawn on the fixed image go through the same path with the identity transform,
so both masks are compared on equal terms.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fusion.errors import FusionError
from fusion.rtstruct_writer import RoiContours, compute_mask_polygons
from rt.grid import MM3_PER_CC, VoxelGrid
from rt.structures import ROI, StructureSet, compute_mask

log = logging.getLogger(__name__)

#: Occupancy at or above which a resampled voxel is inside the ROI.
INSIDE_THRESHOLD = 0.5
#: Voxels of margin around a ROI's bounds in its rasterisation grid.
_MARGIN_VOXELS = 2


@dataclass(frozen=True, slots=True)
class OverlapStats:
    """Agreement of a propagated ROI with a reference ROI on the same grid (volumes cc, distances mm)."""

    roi_name: str
    dice: float
    hausdorff95_mm: float
    hausdorff_max_mm: float
    volume_cc: float
    reference_volume_cc: float

    def to_dict(self) -> dict[str, Any]:
        return {"roi_name": self.roi_name, "dice": round(self.dice, 4), "hausdorff95_mm": round(self.hausdorff95_mm, 3),
                "hausdorff_max_mm": round(self.hausdorff_max_mm, 3), "volume_cc": round(self.volume_cc, 3),
                "reference_volume_cc": round(self.reference_volume_cc, 3)}


@dataclass(frozen=True, slots=True)
class PropagatedROI:
    """One ROI on the fixed grid: its mask (uint8 image, 1 inside), outline polygons (LPS mm) and volume (cc)."""

    name: str
    interpreted_type: str
    colour: tuple[int, int, int] | None
    mask: sitk.Image = field(repr=False)
    polygons_mm: tuple[npt.NDArray[np.float64], ...] = field(repr=False)
    volume_cc: float

    def to_contours(self) -> RoiContours:
        return RoiContours(self.name, self.polygons_mm, self.interpreted_type or "ORGAN", self.colour)


def compute_roi_occupancy(roi: ROI, in_plane_spacing_mm: float) -> sitk.Image:
    """The ROI's fractional occupancy (float32, 0..1) on an axis-aligned grid around it.

    The grid has ``in_plane_spacing_mm`` in x and y, one slice per contour plane (the ROI's
    plane spacing in z) and a margin of two voxels. Raises FusionError for an empty ROI.
    """
    if roi.is_empty:
        raise FusionError(f"ROI {roi.name!r} has no closed planar contour to propagate")
    if in_plane_spacing_mm <= 0:
        raise ValueError("in_plane_spacing_mm must be positive")
    planes = np.array(list(roi.planes()), dtype=np.float64)
    dz = roi.compute_plane_spacing_mm(default_mm=in_plane_spacing_mm)
    lo, hi = roi.compute_bounds_mm()
    d = float(in_plane_spacing_mm)
    origin = (float(lo[0] - _MARGIN_VOXELS * d), float(lo[1] - _MARGIN_VOXELS * d),
              float(planes[0] - _MARGIN_VOXELS * dz))
    nx = int(np.ceil((hi[0] - lo[0]) / d)) + 2 * _MARGIN_VOXELS + 1
    ny = int(np.ceil((hi[1] - lo[1]) / d)) + 2 * _MARGIN_VOXELS + 1
    nz = round((planes[-1] - planes[0]) / dz) + 2 * _MARGIN_VOXELS + 1
    grid = VoxelGrid(origin_mm=origin, spacing_mm=(d, d, float(dz)), shape=(nz, ny, nx))
    occupancy = sitk.GetImageFromArray(compute_mask(roi, grid).astype(np.float32))
    occupancy.SetOrigin(grid.origin_mm)
    occupancy.SetSpacing(grid.spacing_mm)
    return occupancy


def compute_roi_mask(roi: ROI, reference: sitk.Image, transform: sitk.Transform | None = None) -> sitk.Image:
    """The ROI as a uint8 mask (1 inside) on the grid of ``reference``.

    ``transform`` maps reference physical points to the physical space the ROI was drawn in
    (identity when None: the ROI belongs to ``reference``'s frame of reference).
    """
    spacing = reference.GetSpacing()
    occupancy = compute_roi_occupancy(roi, min(spacing[0], spacing[1]))
    warped = sitk.Resample(occupancy, reference, transform or sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear,
                           0.0, sitk.sitkFloat32)
    mask: sitk.Image = sitk.Cast(warped >= INSIDE_THRESHOLD, sitk.sitkUInt8)
    return mask


def compute_mask_volume_cc(mask: sitk.Image) -> float:
    """Volume of the non-zero voxels of ``mask``, cc."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return voxels * float(np.prod(mask.GetSpacing())) / MM3_PER_CC


def propagate_structure_set(structure_set: StructureSet, transform: sitk.Transform, fixed: sitk.Image,
                            roi_names: Sequence[str] | None = None) -> tuple[PropagatedROI, ...]:
    """The ROIs of ``structure_set`` (drawn on the moving image) warped onto the ``fixed`` grid.

    ``transform`` maps fixed physical points to moving physical points. ``roi_names`` picks ROIs
    (default: every ROI with closed planar contours). A ROI that lands entirely outside the
    fixed image raises FusionError.
    """
    rois = [structure_set.roi(name) for name in roi_names] if roi_names else [
        r for r in structure_set.rois if not r.is_empty]
    if not rois:
        raise FusionError("the structure set has no ROI with closed planar contours")
    results = []
    for roi in rois:
        mask = compute_roi_mask(roi, fixed, transform)
        volume = compute_mask_volume_cc(mask)
        if volume == 0.0:
            raise FusionError(f"ROI {roi.name!r} lies entirely outside the fixed image after propagation")
        results.append(PropagatedROI(roi.name, roi.interpreted_type, roi.colour, mask, compute_mask_polygons(mask),
                                     volume))
        log.info("propagated ROI %r: %.2f cc", roi.name, volume)
    return tuple(results)


def _surface_distances_mm(from_mask: sitk.Image, to_mask: sitk.Image) -> npt.NDArray[np.float64]:
    """Distance (mm) from every surface voxel of ``from_mask`` to the surface of ``to_mask``."""
    distance = sitk.Abs(sitk.SignedMaurerDistanceMap(to_mask, insideIsPositive=False, squaredDistance=False,
                                                     useImageSpacing=True))
    surface = sitk.GetArrayFromImage(sitk.LabelContour(from_mask, fullyConnected=True)) != 0
    distances: npt.NDArray[np.float64] = sitk.GetArrayFromImage(distance)[surface].astype(np.float64)
    return distances


def compute_overlap(roi_name: str, mask: sitk.Image, reference: sitk.Image) -> OverlapStats:
    """Dice coefficient and symmetric (95th percentile and maximum) Hausdorff distances of two masks.

    Both masks must be on the same grid. Surface distances are measured between the outer
    voxel layers of the masks, in mm.
    """
    a = sitk.GetArrayViewFromImage(mask) != 0
    b = sitk.GetArrayViewFromImage(reference) != 0
    if a.shape != b.shape:
        raise FusionError(f"masks of {roi_name!r} are on different grids: {a.shape} and {b.shape}")
    if not a.any() or not b.any():
        raise FusionError(f"ROI {roi_name!r} is empty in the propagated or the reference mask")
    dice = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    a_img, b_img = sitk.Cast(mask != 0, sitk.sitkUInt8), sitk.Cast(reference != 0, sitk.sitkUInt8)
    distances = np.concatenate([_surface_distances_mm(a_img, b_img), _surface_distances_mm(b_img, a_img)])
    return OverlapStats(roi_name, float(dice), float(np.percentile(distances, 95)), float(distances.max()),
                        compute_mask_volume_cc(mask), compute_mask_volume_cc(reference))


def compare_with_reference(propagated: Sequence[PropagatedROI], reference: StructureSet,
                           fixed: sitk.Image) -> tuple[OverlapStats, ...]:
    """Overlap of each propagated ROI with the ROI of the same name in ``reference`` (drawn on ``fixed``).

    ROIs missing from the reference, or empty there, are left out.
    """
    names = {r.name.lower(): r for r in reference.rois if not r.is_empty}
    stats = []
    for roi in propagated:
        match = names.get(roi.name.lower())
        if match is None:
            continue
        stats.append(compute_overlap(roi.name, roi.mask, compute_roi_mask(match, fixed)))
    return tuple(stats)
