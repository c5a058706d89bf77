"""Per-ROI PET statistics: SUVmax, SUVmean, SUVpeak, MTV, TLG and SULpeak.

Definitions (values in the SUV image's unit, g/mL; volumes cc; TLG in g = SUV[g/mL] * cc):

- **ROI voxels.** A ROI is a fractional occupancy (0..1) on the PET grid: RTSTRUCT contours are
  rasterised straight onto the PET grid with :func:`rt.structures.compute_mask` (exact sub-voxel
  weights, i.e. the contours resampled onto the PET grid). A voxel *belongs* to the ROI when its
  occupancy is >= 0.5.
- **SUVmax**: the highest voxel value among the ROI voxels.
- **SUVmean**: occupancy-weighted mean over every voxel the ROI touches.
- **SUVpeak**: the highest mean over a 1 cm^3 sphere (radius 6.2035 mm) whose centre is a voxel centre
  of the ROI. The sphere's mean weights every voxel by the volume it shares with the sphere
  (5 x 5 x 5 sub-samples per voxel) and uses image values inside and outside the ROI; centres whose
  sphere leaves the image are skipped. SULpeak is SUVpeak converted to SUL (lean body mass,
  Janmahasatian), i.e. times LBM / body size.
- **MTV41** (``MTV_cc``): volume of the ROI voxels with SUV >= 41 % of SUVmax; **TLG** = its SUVmean * MTV41.
  **MTV2.5** / **TLG2.5**: the same with SUVbw >= 2.5 (the threshold converted to this image's SUV type).
- **Seeded segmentation** (:func:`segment_from_seed`): the 6-connected region of voxels at or above a
  threshold containing the seed; with no absolute threshold, 41 % of the hottest voxel within 10 mm
  of the seed, grown from that hottest voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fusion.pet.errors import PetGeometryError, SuvTagError
from fusion.pet.suv import SuvImage, SuvType
from rt.grid import VoxelGrid
from rt.structures import StructureSet, compute_mask

PEAK_SPHERE_VOLUME_CC = 1.0
#: Radius of the 1 cm^3 SUVpeak sphere, mm: (3 * 1000 / (4 pi))^(1/3).
PEAK_SPHERE_RADIUS_MM = (3.0 * 1000.0 * PEAK_SPHERE_VOLUME_CC / (4.0 * math.pi)) ** (1.0 / 3.0)
MTV_FRACTION_OF_MAX = 0.41
MTV_ABSOLUTE_SUVBW = 2.5
ROI_OCCUPANCY = 0.5
SEED_SEARCH_RADIUS_MM = 10.0
_SUBSAMPLES = 5


@dataclass(frozen=True, slots=True)
class RoiStats:
    """PET statistics of one ROI (see module docstring); SUV values in ``unit``, volumes cc, TLG g."""

    name: str
    suv_type: str
    unit: str
    volume_cc: float
    suv_max: float
    suv_mean: float
    suv_sd: float
    suv_peak: float
    sul_peak: float | None
    mtv41_cc: float
    tlg41: float
    mtv25_cc: float
    tlg25: float
    max_position_mm: tuple[float, float, float]
    peak_position_mm: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "suv_type": self.suv_type, "unit": self.unit, "volume_cc": self.volume_cc,
            "SUVmax": self.suv_max, "SUVmean": self.suv_mean, "SUVsd": self.suv_sd, "SUVpeak": self.suv_peak,
            "SULpeak": self.sul_peak, "MTV_cc": self.mtv41_cc, "TLG": self.tlg41,
            "MTV2.5_cc": self.mtv25_cc, "TLG2.5": self.tlg25,
            "max_position_mm": list(self.max_position_mm), "peak_position_mm": list(self.peak_position_mm),
        }


def compute_sphere_kernel(spacing_mm: Sequence[float], radius_mm: float = PEAK_SPHERE_RADIUS_MM,
                          subsamples: int = _SUBSAMPLES) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Voxel offsets (n, 3) as (dz, dy, dx) and weights (n,) summing to 1: each voxel's share of a sphere."""
    dx, dy, dz = spacing_mm
    reach = [math.ceil(radius_mm / d + 0.5) for d in (dz, dy, dx)]
    sub = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    offsets, weights = [], []
    for k in range(-reach[0], reach[0] + 1):
        for j in range(-reach[1], reach[1] + 1):
            for i in range(-reach[2], reach[2] + 1):
                z = (k + sub[:, None, None]) * dz
                y = (j + sub[None, :, None]) * dy
                x = (i + sub[None, None, :]) * dx
                fraction = float(np.mean(x * x + y * y + z * z <= radius_mm * radius_mm))
                if fraction > 0.0:
                    offsets.append((k, j, i))
                    weights.append(fraction)
    w = np.array(weights)
    return np.array(offsets, dtype=np.int64), w / w.sum()


def compute_peak(values: npt.NDArray[np.float64], centres: npt.NDArray[np.bool_], spacing_mm: Sequence[float],
                 radius_mm: float = PEAK_SPHERE_RADIUS_MM) -> tuple[float, tuple[int, int, int]]:
    """Highest sphere mean over the voxel centres where ``centres`` is True, and that voxel's index (z, y, x)."""
    if not centres.any():
        raise PetGeometryError("no voxel to centre the SUVpeak sphere on")
    offsets, weights = compute_sphere_kernel(spacing_mm, radius_mm)
    reach = np.abs(offsets).max(axis=0)
    idx = np.argwhere(centres)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    padded = np.pad(values.astype(np.float64), [(r, r) for r in reach], constant_values=np.nan)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    means = np.zeros(tuple(int(b - a) for a, b in zip(lo, hi, strict=True)))
    for (k, j, i), w in zip(offsets, weights, strict=True):
        sl = tuple(slice(int(a + r + o), int(b + r + o)) for a, b, r, o in zip(lo, hi, reach, (k, j, i), strict=True))
        means += w * padded[sl]
    means[~centres[box]] = np.nan
    if np.isnan(means).all():
        raise PetGeometryError("every SUVpeak sphere of the ROI leaves the image")
    flat = int(np.nanargmax(means))
    where = np.unravel_index(flat, means.shape)
    k, j, i = (int(w + a) for w, a in zip(where, lo, strict=True))
    return float(means[where]), (k, j, i)


def _position_mm(grid: VoxelGrid, index: Sequence[int | np.integer[Any]]) -> tuple[float, float, float]:
    k, j, i = index
    ox, oy, oz = grid.origin_mm
    dx, dy, dz = grid.spacing_mm
    return (ox + i * dx, oy + j * dy, oz + k * dz)


def compute_roi_stats(image: SuvImage, occupancy: npt.NDArray[np.float64], name: str) -> RoiStats:
    """Statistics of the ROI with fractional ``occupancy`` (0..1, the image's shape) in ``image``."""
    if occupancy.shape != image.values.shape:
        raise PetGeometryError(f"ROI {name!r} mask {occupancy.shape} != PET grid {image.values.shape}")
    inside = occupancy >= ROI_OCCUPANCY
    if not inside.any():
        raise PetGeometryError(f"ROI {name!r} covers no voxel of the PET grid (occupancy >= {ROI_OCCUPANCY})")
    values = image.values
    voxel_cc = image.grid.voxel_volume_cc
    touched = occupancy > 0
    w = occupancy[touched]
    mean = float(np.sum(w * values[touched]) / np.sum(w))
    sd = float(np.sqrt(np.sum(w * (values[touched] - mean) ** 2) / np.sum(w)))
    inside_values = np.where(inside, values, -np.inf)
    max_index = np.unravel_index(int(np.argmax(inside_values)), values.shape)
    suv_max = float(values[max_index])
    peak, peak_index = compute_peak(values, inside, image.grid.spacing_mm)
    try:
        sul_peak: float | None = peak * image.compute_ratio_to(SuvType.LBM)
    except SuvTagError:
        sul_peak = None  # height or sex missing: SUL cannot be given, SUVbw still can
    mtv41, tlg41 = _threshold_volume(values, inside, MTV_FRACTION_OF_MAX * suv_max, voxel_cc)
    threshold25 = MTV_ABSOLUTE_SUVBW / image.compute_ratio_to(SuvType.BW)
    mtv25, tlg25 = _threshold_volume(values, inside, threshold25, voxel_cc)
    return RoiStats(
        name=name, suv_type=image.suv_type.value, unit=image.suv_type.unit,
        volume_cc=float(occupancy.sum() * voxel_cc), suv_max=suv_max, suv_mean=mean, suv_sd=sd,
        suv_peak=peak, sul_peak=sul_peak, mtv41_cc=mtv41, tlg41=tlg41, mtv25_cc=mtv25, tlg25=tlg25,
        max_position_mm=_position_mm(image.grid, max_index), peak_position_mm=_position_mm(image.grid, peak_index),
    )


def _threshold_volume(values: npt.NDArray[np.float64], inside: npt.NDArray[np.bool_], threshold: float,
                      voxel_cc: float) -> tuple[float, float]:
    """(volume cc, TLG g) of the ROI voxels at or above ``threshold``."""
    region = inside & (values >= threshold)
    volume = float(region.sum() * voxel_cc)
    return volume, float(values[region].mean() * volume) if volume else 0.0


def compute_structure_stats(image: SuvImage, structure_set: StructureSet, roi_names: Sequence[str], *,
                            allow_other_frame: bool = False) -> list[RoiStats]:
    """Statistics of RTSTRUCT ROIs, rasterised onto the PET grid (the ROI must share the PET's frame of reference)."""
    results = []
    for name in roi_names:
        roi = structure_set.roi(name)
        frame = roi.frame_of_reference_uid or structure_set.frame_of_reference_uid
        if frame and image.frame_of_reference_uid and frame != image.frame_of_reference_uid and not allow_other_frame:
            raise PetGeometryError(
                f"ROI {roi.name!r} is on frame of reference {frame}, the PET on {image.frame_of_reference_uid}: "
                "register them first (or use the CT of the PET-CT study)")
        results.append(compute_roi_stats(image, compute_mask(roi, image.grid), roi.name))
    return results


def _index_of(grid: VoxelGrid, point_mm: Sequence[float]) -> tuple[int, int, int]:
    index = []
    for axis, p in enumerate(point_mm):
        n = grid.shape[2 - axis]
        i = round((p - grid.origin_mm[axis]) / grid.spacing_mm[axis])
        if not 0 <= i < n:
            raise PetGeometryError(f"seed {tuple(point_mm)} mm lies outside the PET grid")
        index.append(i)
    return index[2], index[1], index[0]


def _grow(candidates: npt.NDArray[np.bool_], start: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    """The 6-connected component of ``candidates`` containing ``start``."""
    region = np.zeros_like(candidates)
    region[start] = True
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown[:, :, 1:] |= region[:, :, :-1]
        grown[:, :, :-1] |= region[:, :, 1:]
        grown &= candidates
        if np.array_equal(grown, region):
            return region
        region = grown


def segment_from_seed(image: SuvImage, seed_mm: Sequence[float], *, threshold: float | None = None,
                      fraction_of_max: float = MTV_FRACTION_OF_MAX,
                      search_radius_mm: float = SEED_SEARCH_RADIUS_MM) -> npt.NDArray[np.float64]:
    """Occupancy (0/1) of the threshold region grown from a user's seed point (x, y, z mm; module docstring)."""
    values = image.values
    start = _index_of(image.grid, seed_mm)
    if threshold is None:
        xs, ys, zs = image.grid.x_mm(), image.grid.y_mm(), image.grid.z_mm()
        near = ((zs[:, None, None] - seed_mm[2]) ** 2 + (ys[None, :, None] - seed_mm[1]) ** 2
                + (xs[None, None, :] - seed_mm[0]) ** 2) <= search_radius_mm ** 2
        near[start] = True
        k, j, i = np.unravel_index(int(np.argmax(np.where(near, values, -np.inf))), values.shape)
        start = (int(k), int(j), int(i))
        threshold = fraction_of_max * float(values[start])
    if values[start] < threshold:
        raise PetGeometryError(f"the seed's SUV {values[start]:.3g} is below the threshold {threshold:.3g}")
    return _grow(values >= threshold, start).astype(np.float64)
