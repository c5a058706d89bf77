"""Target tracking through the phases of a 4D CT: the GTV's neighbourhood found again on every phase.

The template is the reference phase inside the target (the GTV) dilated by ``margin_mm`` (at least one
voxel along every axis): the tumour and its edge, and little of what lies beside it. It is searched for
on each other phase by masked normalised cross-correlation (NCC; Padfield, IEEE TIP 21, 2012) of every
whole-voxel shift within ``search_mm`` of the neighbouring phase's position, computed by FFT. Phases are
visited outwards from the reference, both ways round the breathing cycle, so the window follows the
tumour and motion larger than the window is still followed; the template is always the reference
phase, so errors do not accumulate. The best shift is refined to a fraction of a voxel by a masked
translation registration (SimpleITK: correlation metric on the template's voxels, linear interpolation)
started there; a refinement that leaves that voxel is replaced by a parabolic fit of the NCC peak.

Static anatomy beside the tumour (chest wall, ribs, spine) and anatomy moving otherwise (the diaphragm)
weigh only through the template's rim, where they dominate a rigid registration of a box around the GTV.
Shifts are LPS, mm (x LR, y AP, z SI), from the target's place on the reference phase to each phase.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fusion.errors import TrackingError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
#: A window whose variance is below this fraction of its mean square is flat.
_FLAT = 1e-8
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """How the target is searched for.

    search_mm: half-width (mm, per axis) of the window searched around the neighbouring phase's position
        (and around the reference position); margin_mm: the template is the target dilated by this (mm; at
        least one voxel along every axis); min_overlap: least fraction of the template that must fall inside
        a phase image for a shift to count.
    """

    search_mm: float = 25.0
    margin_mm: float = 3.0
    min_overlap: float = 0.5


@dataclass(frozen=True, slots=True)
class TargetMatch:
    """The target on one phase: its displacement from the reference phase (x, y, z mm, LPS) and the NCC
    (-1..1) of the template with that phase there (1 on the reference phase)."""

    shift_mm: tuple[float, float, float]
    ncc: float


@dataclass(frozen=True, slots=True)
class _Template:
    """The reference phase inside the dilated target: values (mean removed) and mask on its bounding box."""

    values: FloatArray
    mask: FloatArray
    mean: float
    lo: IntArray  # first voxel (k, j, i) of the box
    hi: IntArray  # one past the last voxel (k, j, i)


def _dilate(target: sitk.Image, margin_mm: float) -> npt.NDArray[np.bool_]:
    inside = sitk.Cast(target > 0, sitk.sitkUInt8)
    distance = sitk.SignedMaurerDistanceMap(inside, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    dilated: npt.NDArray[np.bool_] = sitk.GetArrayViewFromImage(distance) <= margin_mm
    return dilated


def _build_template(reference: sitk.Image, dilated: npt.NDArray[np.bool_]) -> _Template:
    where = np.argwhere(dilated)
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    values = sitk.GetArrayViewFromImage(reference)[box].astype(np.float64)
    inside = dilated[box].astype(np.float64)
    mean = float((values * inside).sum() / inside.sum())
    return _Template((values - mean) * inside, inside, mean, lo.astype(np.int64), hi.astype(np.int64))


def _correlate(image_hat: npt.NDArray[np.complex128], kernel: FloatArray, shape: tuple[int, ...],
               out: tuple[int, ...]) -> FloatArray:
    """sum_x kernel(x) image(x + s) for every s in [0, out) (image given by its rfftn on ``shape``)."""
    padded = np.zeros(shape)
    padded[tuple(slice(0, n) for n in kernel.shape)] = kernel
    full = np.fft.irfftn(image_hat * np.conj(np.fft.rfftn(padded)), s=shape, axes=tuple(range(len(shape))))
    result: FloatArray = full[tuple(slice(0, n) for n in out)]
    return result


def compute_masked_ncc(template: FloatArray, mask: FloatArray, image: FloatArray, valid: FloatArray, *,
                       min_overlap: float = 0.5) -> FloatArray:
    """Masked NCC of ``template`` (inside ``mask``) with ``image`` (where ``valid``) at every whole-voxel shift.

    Element ``s`` compares template voxel ``x`` with image voxel ``x + s``, for ``0 <= s <= image.shape -
    template.shape``, over the voxels inside both masks; -inf where they share fewer than ``min_overlap``
    of the template's voxels or either side is flat there.
    """
    shape = image.shape
    out = tuple(n - m + 1 for n, m in zip(image.shape, template.shape, strict=True))
    if min(out) < 1:
        raise ValueError(f"image {image.shape} smaller than the template {template.shape}")
    masked = template * mask
    valid_hat, image_hat = np.fft.rfftn(valid), np.fft.rfftn(image * valid)
    squares_hat = np.fft.rfftn(image * image * valid)
    overlap = np.rint(_correlate(valid_hat, mask, shape, out))
    n = np.maximum(overlap, 1.0)
    sum_t, sum_t2 = _correlate(valid_hat, masked, shape, out), _correlate(valid_hat, masked * template, shape, out)
    sum_i, sum_i2 = _correlate(image_hat, mask, shape, out), _correlate(squares_hat, mask, shape, out)
    sum_ti = _correlate(image_hat, masked, shape, out)
    spread_t, spread_i = sum_t2 - sum_t**2 / n, sum_i2 - sum_i**2 / n
    variance = np.maximum(spread_t, 0.0) * np.maximum(spread_i, 0.0)
    # flat (to within the FFT's rounding) on either side: nothing to compare
    usable = (overlap >= min_overlap * mask.sum()) & (spread_t > _FLAT * np.abs(sum_t2)) & (spread_i > _FLAT * sum_i2)
    ncc: FloatArray = np.full(out, -np.inf)
    ncc[usable] = (sum_ti[usable] - sum_t[usable] * sum_i[usable] / n[usable]) / np.sqrt(variance[usable])
    return ncc


def _search(template: _Template, phase: FloatArray, centre: IntArray, radius: IntArray,
            min_overlap: float) -> tuple[IntArray, FloatArray, float]:
    """(best whole-voxel shift (k, j, i), sub-voxel parabolic offset, NCC there) of the template within
    ``centre ± radius`` voxels; NCC -inf when no shift there shares enough of the template."""
    start, stop = template.lo + centre - radius, template.hi + centre + radius
    region = np.zeros(tuple(stop - start))
    valid = np.zeros_like(region)
    src_lo, src_hi = np.maximum(start, 0), np.minimum(stop, phase.shape)
    if np.all(src_hi > src_lo):
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(src_lo, src_hi, start, strict=True))
        region[dst] = phase[tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))] - template.mean
        valid[dst] = 1.0
    ncc = compute_masked_ncc(template.values, template.mask, region, valid, min_overlap=min_overlap)
    peak = np.array(np.unravel_index(int(np.argmax(ncc)), ncc.shape))
    return peak - radius + centre, _fit_parabola(ncc, peak), float(ncc[tuple(peak)])


def _fit_parabola(ncc: FloatArray, peak: IntArray) -> FloatArray:
    """Sub-voxel offset (-0.5..0.5 per axis) of the NCC maximum from three points along each axis."""
    offset = np.zeros(3)
    for axis in range(3):
        if not 0 < peak[axis] < ncc.shape[axis] - 1:
            continue
        before, after = peak.copy(), peak.copy()
        before[axis] -= 1
        after[axis] += 1
        f_minus, f_0, f_plus = ncc[tuple(before)], ncc[tuple(peak)], ncc[tuple(after)]
        curvature = f_minus - 2.0 * f_0 + f_plus
        if np.isfinite(curvature) and curvature < 0:
            offset[axis] = float(np.clip(0.5 * (f_minus - f_plus) / curvature, -0.5, 0.5))
    return offset


class _Geometry:
    """Index (k, j, i) shifts <-> physical (x, y, z) mm shifts of one grid."""

    def __init__(self, image: sitk.Image) -> None:
        self.spacing_kji = np.array(image.GetSpacing()[::-1], dtype=np.float64)
        self.direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)

    def to_mm(self, shift_kji: FloatArray) -> FloatArray:
        result: FloatArray = self.direction @ (shift_kji * self.spacing_kji)[::-1]
        return result

    def to_voxels(self, shift_mm: FloatArray) -> FloatArray:
        result: FloatArray = np.linalg.solve(self.direction, shift_mm)[::-1] / self.spacing_kji
        return result


def _region(image: sitk.Image, lo: IntArray, hi: IntArray) -> sitk.Image:
    """The part of ``image`` in voxels [lo, hi) (k, j, i), clipped to the image."""
    size = np.array(image.GetSize()[::-1])
    lo, hi = np.clip(lo, 0, size - 1), np.clip(hi, 1, size)
    region: sitk.Image = sitk.RegionOfInterest(image, [int(v) for v in (hi - lo)[::-1]], [int(v) for v in lo[::-1]])
    return region


def _refine(fixed: sitk.Image, fixed_mask: sitk.Image, moving: sitk.Image, shift_mm: FloatArray) -> FloatArray:
    """Translation (mm) of ``moving`` best matching ``fixed`` inside ``fixed_mask``, started at ``shift_mm``; NaN
    when the registration gives up."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricFixedMask(fixed_mask)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=0.01, numberOfIterations=100,
                                                    relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    transform = sitk.TranslationTransform(3, tuple(float(v) for v in shift_mm))
    method.SetInitialTransform(transform, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as exc:  # ITK gives up, e.g. when too few samples fall inside the moving region
        log.debug("4D CT: sub-voxel refinement skipped: %s", exc)
        return np.full(3, np.nan)
    return np.array(transform.GetOffset(), dtype=np.float64)


def _ncc_at(fixed: sitk.Image, fixed_mask: npt.NDArray[np.bool_], moving: sitk.Image, shift_mm: FloatArray) -> float:
    """NCC of ``fixed`` with ``moving`` translated by ``shift_mm`` (linear interpolation) inside ``fixed_mask``."""
    warped = sitk.Resample(moving, fixed, sitk.TranslationTransform(3, tuple(float(v) for v in shift_mm)),
                           sitk.sitkLinear, math.nan, sitk.sitkFloat64)
    a = sitk.GetArrayViewFromImage(fixed)[fixed_mask]
    b = sitk.GetArrayViewFromImage(warped)[fixed_mask]
    keep = np.isfinite(b)
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _visiting_order(count: int, reference_index: int) -> list[tuple[int, int]]:
    """(phase, neighbour already tracked) pairs, outwards from the reference both ways round the cycle."""
    order: list[tuple[int, int]] = []
    for step in range(1, count // 2 + 1):
        for direction in (1, -1):
            phase = (reference_index + direction * step) % count
            if phase != reference_index and phase not in {p for p, _ in order}:
                order.append((phase, (phase - direction) % count))
    return order


def track_target(images: Sequence[sitk.Image], reference_index: int, target: sitk.Image,
                 settings: TrackingSettings | None = None) -> tuple[TargetMatch, ...]:
    """Where the ``target`` (a mask on the grid of ``images[reference_index]``) lies on every phase.

    ``images`` share one grid (:func:`fusion.ct4d.load_phase_images`). Returns one match per image, in
    order; raises :class:`fusion.errors.TrackingError` for an empty target or a phase with nowhere to look.
    """
    settings = settings or TrackingSettings()
    if not 0 <= reference_index < len(images):
        raise ValueError(f"reference_index {reference_index} outside 0..{len(images) - 1}")
    reference = sitk.Cast(images[reference_index], sitk.sitkFloat32)
    if not np.any(sitk.GetArrayViewFromImage(target)):
        raise TrackingError("the target is empty on the reference phase")
    dilated = _dilate(target, max(settings.margin_mm, *reference.GetSpacing()))
    template = _build_template(reference, dilated)
    geometry = _Geometry(reference)
    radius = np.ceil(settings.search_mm / geometry.spacing_kji).astype(np.int64)
    pad = np.ones(3, dtype=np.int64)
    fixed = _region(reference, template.lo - pad, template.hi + pad)
    mask_image = sitk.GetImageFromArray(dilated.astype(np.uint8))
    mask_image.CopyInformation(reference)
    fixed_mask = _region(mask_image, template.lo - pad, template.hi + pad)
    inside = sitk.GetArrayFromImage(fixed_mask).astype(bool)
    shifts: dict[int, FloatArray] = {reference_index: np.zeros(3)}
    matches: dict[int, TargetMatch] = {reference_index: TargetMatch((0.0, 0.0, 0.0), 1.0)}
    for phase, neighbour in _visiting_order(len(images), reference_index):
        image = sitk.Cast(images[phase], sitk.sitkFloat32)
        values = sitk.GetArrayViewFromImage(image)
        # around the neighbouring phase's place (it follows the breathing), and around the reference place
        # (so a neighbour found in the wrong place does not lead the search astray)
        centres = {tuple(np.rint(shifts[neighbour]).astype(np.int64)), (0, 0, 0)}
        found = [_search(template, values, np.array(c, dtype=np.int64), radius, settings.min_overlap)
                 for c in sorted(centres)]
        whole, offset, best = max(found, key=lambda result: result[2])
        if not np.isfinite(best):
            raise TrackingError(f"phase {phase + 1} of {len(images)}: no place in the search window shares enough "
                                "of the target's neighbourhood to compare with")
        moving = _region(image, template.lo + whole - 2 * pad, template.hi + whole + 2 * pad)
        refined = geometry.to_voxels(_refine(fixed, fixed_mask, moving, geometry.to_mm(whole + offset)))
        shift = refined if np.all(np.isfinite(refined)) and np.all(np.abs(refined - whole) <= 1.0) else whole + offset
        shift_mm = geometry.to_mm(shift)
        shifts[phase] = shift
        matches[phase] = TargetMatch((float(shift_mm[0]), float(shift_mm[1]), float(shift_mm[2])),
                                     _ncc_at(fixed, inside, moving, shift_mm))
        log.debug("4D CT: target found on phase %d of %d (NCC %.3f)", phase + 1, len(images), matches[phase].ncc)
    return tuple(matches[p] for p in range(len(images)))
