"""Rigid and deformable registration of two volumes (SimpleITK).

Convention (SimpleITK's, used throughout :mod:`fusion`): a registration's ``transform`` maps a point
of the FIXED image's physical space (LPS, mm) to the corresponding point of the MOVING image's
physical space. Resampling the moving image through it onto the fixed grid
(:func:`fusion.volume.resample_to`) therefore aligns it with the fixed image; the displacement field
of a deformable result holds ``T(x) - x`` (mm) at the fixed grid's voxel centres.

* Rigid: Mattes mutual information (works for CT–CT, CBCT–CT, PET/MR–CT), multi-resolution
  (shrink 4, 2, 1), gradient descent with physical-shift scales; 6 parameters (Euler angles about
  the fixed image centre, translation). Image gradients are taken at the sampled points only.
* Deformable: a rigid stage on the demons' finest level with few samples (10,000 per level: it only
  has to bring the images within the demons' reach), then multi-resolution fast symmetric-forces
  demons (a dense displacement field; each update and the whole field Gaussian-smoothed) on a
  pyramid whose finest level is about :attr:`DeformableSettings.finest_spacing_mm`. Each level
  stops once its mean squared difference levels off (its mean over 5 iterations under 0.5 % below
  that over the 5 before), at most after 60, 40 and 10 iterations (the finest level costs most and
  gains least; on noisy images more of it fits the noise). The field is composed with the rigid
  transform on the finest level's grid and resampled to the full fixed grid. Demons assume the
  intensities of one modality (CT–CT, CBCT–CT after HU calibration).
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fusion.errors import RegistrationError
from fusion.volume import SeriesInfo, read_series_info

if TYPE_CHECKING:
    from fusion.qa import RegistrationQA

log = logging.getLogger(__name__)

#: progress(fraction 0..1, message) for long runs.
Progress = Callable[[float, str], None]


class RegistrationKind(str, enum.Enum):
    RIGID = "rigid"
    DEFORMABLE = "deformable"


@dataclass(frozen=True, eq=False)
class Registration:
    """A registration result.

    transform: maps FIXED physical points (mm, LPS) to MOVING physical points (SimpleITK convention);
        an ``Euler3DTransform`` (rigid) or a ``DisplacementFieldTransform`` (deformable).
    kind: rigid or deformable. fixed, moving: the series each image came from (UIDs, FoR).
    seconds: wall time of the registration, s.
    displacement_field: deformable only: ``T(x) - x`` on the fixed grid (sitkVectorFloat64, mm).
    metric_value: final value of the optimised metric (MI: negative, lower is better; demons: MSE).
    qa: the QA figures, once computed (:func:`fusion.qa.compute_registration_qa`) or read back.
    """

    transform: sitk.Transform
    kind: RegistrationKind
    fixed: SeriesInfo
    moving: SeriesInfo
    seconds: float
    displacement_field: sitk.Image | None = None
    metric_value: float | None = None
    qa: RegistrationQA | None = None

    def map_points_mm(self, points_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Fixed-space points (n, 3) mm mapped to moving space (n, 3) mm."""
        return np.array([self.transform.TransformPoint(tuple(float(v) for v in p))
                         for p in np.atleast_2d(points_mm)])

    @property
    def rigid_matrix(self) -> npt.NDArray[np.float64]:
        """The 4x4 homogeneous fixed → moving matrix of a rigid registration (RegistrationError otherwise)."""
        if self.kind is not RegistrationKind.RIGID:
            raise RegistrationError("a deformable registration has no single matrix")
        return compute_affine_matrix(self.transform)


@dataclass(frozen=True, slots=True)
class RigidSettings:
    """Rigid registration parameters (defaults work for CT–CT, CBCT–CT, PET/MR–CT).

    shrink_factors / smoothing_sigmas_mm: the pyramid (coarse → fine); histogram_bins: Mattes MI bins;
    min_samples: voxels sampled per level at least (all voxels if fewer); max_iterations per level;
    max_step_mm / min_step_mm: first and last step of the regular-step gradient descent (physical shift).
    """

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    histogram_bins: int = 50
    min_samples: int = 50_000
    sampling_fraction: float = 0.1
    max_iterations: int = 200
    max_step_mm: float = 2.0
    min_step_mm: float = 1e-3
    seed: int = 20240115


@dataclass(frozen=True, slots=True)
class DeformableSettings:
    """Deformable (demons) parameters; defaults work for CT–CT of one patient without tuning.

    level_spacings_mm: target voxel pitch of each pyramid level (coarse → fine); a level is not made
        finer than the image. iterations: the most demons iterations per level. A level stops sooner once
        the mean of its mean squared difference over the last ``convergence_window`` iterations is less
        than ``convergence_tolerance`` (a fraction) below the mean over the window before (0: no early
        stop). smoothing_sigma_voxels: Gaussian regularisation of the whole field after each iteration
        (diffusion-like), voxels; update_smoothing_sigma_voxels: of each iteration's update (fluid-like),
        voxels, 0 for none. max_step_voxels: largest update per iteration.
    intensity_window: intensities are clipped to this range first (HU for CT).
    rigid: the rigid stage before the demons; it only has to bring the images within the demons' reach,
        so it samples fewer voxels than :func:`register_rigid`'s default.
    """

    level_spacings_mm: tuple[float, ...] = (8.0, 4.0, 2.0)
    iterations: tuple[int, ...] = (60, 40, 10)
    smoothing_sigma_voxels: float = 1.5
    update_smoothing_sigma_voxels: float = 1.5
    max_step_voxels: float = 1.0
    convergence_window: int = 5
    convergence_tolerance: float = 0.005
    intensity_window: tuple[float, float] = (-1000.0, 1500.0)
    rigid: RigidSettings = field(default_factory=lambda: RigidSettings(min_samples=10_000, sampling_fraction=0.0))

    @property
    def finest_spacing_mm(self) -> float:
        return self.level_spacings_mm[-1]


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, settings: RigidSettings | None = None,
                   progress: Progress | None = None) -> Registration:
    """Rigid registration of ``moving`` to ``fixed`` (mutual information, multi-resolution)."""
    settings = settings or RigidSettings()
    started = time.perf_counter()
    transform, metric = _run_rigid(_as_float(fixed), _as_float(moving), settings, _share_frame(fixed, moving),
                                   progress, 0.0, 1.0)
    seconds = time.perf_counter() - started
    if progress:
        progress(1.0, "rigid registration done")
    return Registration(transform, RegistrationKind.RIGID, read_series_info(fixed), read_series_info(moving),
                        seconds, metric_value=metric)


def register_deformable(fixed: sitk.Image, moving: sitk.Image, *, settings: DeformableSettings | None = None,
                        initial: Registration | None = None, progress: Progress | None = None) -> Registration:
    """Deformable registration: rigid (or ``initial``), then multi-resolution demons; T(x) on the fixed grid."""
    settings = settings or DeformableSettings()
    if len(settings.iterations) != len(settings.level_spacings_mm):
        raise ValueError("one iteration count per pyramid level")
    if settings.convergence_window < 0 or settings.convergence_tolerance < 0:
        raise ValueError("the convergence window and tolerance cannot be negative")
    started = time.perf_counter()
    fixed_f, moving_f = _as_float(fixed), _as_float(moving)
    rigid: sitk.Transform
    if initial is None:  # on the demons' finest level: the rigid result cannot be finer than the field after it
        finest, least = settings.finest_spacing_mm, 4 * max(settings.rigid.shrink_factors)  # 4 voxels at its coarsest
        rigid, _ = _run_rigid(_coarsen(fixed_f, finest, least), _coarsen(moving_f, finest, least), settings.rigid,
                              _share_frame(fixed, moving), progress, 0.0, 0.25)
    else:
        rigid = initial.transform
    low, high = settings.intensity_window
    fixed_w = sitk.Clamp(fixed_f, sitk.sitkFloat32, low, high)
    moving_w = sitk.Clamp(sitk.Resample(moving_f, fixed_f, rigid, sitk.sitkLinear, low, sitk.sitkFloat32),
                          sitk.sitkFloat32, low, high)
    residual, metric = _run_demons(fixed_w, moving_w, settings, progress)
    if progress:
        progress(0.97, "composing the displacement field")
    # T(x) - x = R(x + d(x)) - x is linear in x and d, so composing on the finest level's grid and then
    # interpolating linearly gives what composing on the full grid would (but at its outermost half voxel)
    size, origin, spacing, direction = (residual.GetSize(), residual.GetOrigin(), residual.GetSpacing(),
                                        residual.GetDirection())
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(rigid)  # applied last: T(x) = R(x + d(x))
    composite.AddTransform(sitk.DisplacementFieldTransform(residual))  # takes (and empties) the residual
    total = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64, size, origin, spacing, direction)
    if (size, origin, spacing) != (fixed_f.GetSize(), fixed_f.GetOrigin(), fixed_f.GetSpacing()):
        total = _resample_field(total, fixed_f)
    seconds = time.perf_counter() - started
    if progress:
        progress(1.0, "deformable registration done")
    return Registration(build_field_transform(total), RegistrationKind.DEFORMABLE, read_series_info(fixed),
                        read_series_info(moving), seconds, displacement_field=total, metric_value=metric)


def build_field_transform(displacement_field: sitk.Image) -> sitk.DisplacementFieldTransform:
    """A transform applying ``displacement_field`` (mm, sitkVectorFloat64; the field image is copied)."""
    field_copy = sitk.Cast(displacement_field, sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(field_copy)  # takes ownership of (and empties) its argument


def compute_affine_matrix(transform: sitk.Transform) -> npt.NDArray[np.float64]:
    """The 4x4 homogeneous matrix of a linear (rigid/affine) SimpleITK transform."""
    linear = sitk.AffineTransform(3)
    source: Any = transform  # duck-typed: only the linear subclasses have GetMatrix/GetTranslation/GetCenter
    try:
        linear.SetMatrix(source.GetMatrix())
        linear.SetTranslation(source.GetTranslation())
        linear.SetCenter(source.GetCenter())
    except (AttributeError, RuntimeError):
        raise RegistrationError(f"{transform.GetName()} is not a linear transform") from None
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(linear.GetMatrix()).reshape(3, 3)
    centre = np.array(linear.GetCenter())
    matrix[:3, 3] = np.array(linear.GetTranslation()) + centre - matrix[:3, :3] @ centre
    return matrix


def build_rigid_transform(matrix: npt.ArrayLike) -> sitk.Euler3DTransform:
    """A rigid Euler3DTransform from a 4x4 homogeneous matrix (RegistrationError if not a rotation)."""
    matrix = np.asarray(matrix, dtype=float)
    rotation = matrix[:3, :3]
    if matrix.shape != (4, 4) or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) \
            or np.linalg.det(rotation) < 0:
        raise RegistrationError("the matrix is not a rigid transformation (rotation + translation)")
    transform = sitk.Euler3DTransform()
    transform.SetMatrix(tuple(float(v) for v in rotation.ravel()), 1e-4)
    transform.SetTranslation(tuple(float(v) for v in matrix[:3, 3]))
    return transform


def _as_float(image: sitk.Image) -> sitk.Image:
    if image.GetDimension() != 3:
        raise RegistrationError(f"registration needs 3D volumes, got {image.GetDimension()}D")
    return image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)


def _share_frame(fixed: sitk.Image, moving: sitk.Image) -> bool:
    """Whether both images carry the same (non-empty) FrameOfReferenceUID."""
    key = "FrameOfReferenceUID"
    fixed_frame = fixed.GetMetaData(key) if fixed.HasMetaDataKey(key) else ""
    return bool(fixed_frame) and moving.HasMetaDataKey(key) and moving.GetMetaData(key) == fixed_frame


def _coarsen(image: sitk.Image, target_mm: float, min_voxels: int) -> sitk.Image:
    """``image`` bin-shrunk to voxels of about ``target_mm`` (:func:`_level_shrink`), or itself."""
    shrink = _level_shrink(image, target_mm, min_voxels)
    return sitk.BinShrink(image, shrink) if max(shrink) > 1 else image


def _run_rigid(fixed: sitk.Image, moving: sitk.Image, settings: RigidSettings, same_frame: bool,
               progress: Progress | None, start: float, end: float) -> tuple[sitk.Euler3DTransform, float]:
    if same_frame:  # one scanner frame: start from identity about the fixed centre
        initial = sitk.Euler3DTransform()
        initial.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    else:  # different frames: start with the image centres aligned
        initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                    sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.MetricUseFixedImageGradientFilterOff()  # gradients at the samples only, not smoothed images
    method.MetricUseMovingImageGradientFilterOff()
    voxels = [math.prod(max(1, n // s) for n in fixed.GetSize()) for s in settings.shrink_factors]
    fractions = [min(1.0, max(settings.sampling_fraction, settings.min_samples / n)) for n in voxels]
    method.SetMetricSamplingPercentagePerLevel(fractions, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=settings.max_step_mm, minStep=settings.min_step_mm,
                                                    numberOfIterations=settings.max_iterations,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    levels = len(settings.shrink_factors)

    if progress:
        def on_iteration() -> None:
            level = method.GetCurrentLevel()
            done = (level + min(1.0, method.GetOptimizerIteration() / settings.max_iterations)) / levels
            progress(start + (end - start) * done, f"rigid level {level + 1}/{levels}, "
                                                   f"metric {method.GetMetricValue():.4f}")
        method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    try:
        result = method.Execute(fixed, moving)
    except RuntimeError as exc:
        raise RegistrationError(f"rigid registration failed: {str(exc).splitlines()[-1][:200]}") from None
    log.debug("rigid: %s after %d iterations, metric %.5f", method.GetOptimizerStopConditionDescription(),
              method.GetOptimizerIteration(), method.GetMetricValue())
    transform = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetNthTransform(0)
                                      if result.GetName() == "CompositeTransform" else result)
    return transform, float(method.GetMetricValue())


def _resample_field(field_image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A displacement field on the grid of ``reference`` (linear; nearest value beyond its edge, never 0)."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkVectorFloat64)
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampled: sitk.Image = resampler.Execute(field_image)
    return resampled


def _level_shrink(image: sitk.Image, target_mm: float, min_voxels: int = 4) -> list[int]:
    """Per-axis shrink factors giving about ``target_mm`` voxels; an axis left with fewer than
    ``min_voxels`` voxels is not shrunk."""
    factors = [max(1, round(target_mm / spacing)) for spacing in image.GetSpacing()]
    return [f if n // f >= min_voxels else 1 for f, n in zip(factors, image.GetSize(), strict=True)]


def _run_demons(fixed: sitk.Image, moving: sitk.Image, settings: DeformableSettings,
                progress: Progress | None) -> tuple[sitk.Image, float]:
    plan: list[tuple[list[int], int]] = []
    for target, iterations in zip(settings.level_spacings_mm, settings.iterations, strict=True):
        shrink = _level_shrink(fixed, target)
        if plan and plan[-1][0] == shrink:  # the image is coarser than this level: merge
            plan[-1] = (shrink, plan[-1][1] + iterations)
        else:
            plan.append((shrink, iterations))
    total_iterations = sum(n for _, n in plan)
    done_iterations = 0
    field_image: sitk.Image | None = None
    metric = float("nan")
    for level, (shrink, iterations) in enumerate(plan):
        fixed_l = sitk.BinShrink(fixed, shrink) if max(shrink) > 1 else fixed
        moving_l = sitk.BinShrink(moving, shrink) if max(shrink) > 1 else moving
        if field_image is None:
            initial = sitk.Image(fixed_l.GetSize(), sitk.sitkVectorFloat64, 3)
            initial.CopyInformation(fixed_l)
        else:
            initial = _resample_field(field_image, fixed_l)
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(iterations)
        demons.SetSmoothDisplacementField(True)
        demons.SetStandardDeviations(settings.smoothing_sigma_voxels)
        if settings.update_smoothing_sigma_voxels > 0:
            demons.SetSmoothUpdateField(True)
            demons.SetUpdateFieldStandardDeviations(settings.update_smoothing_sigma_voxels)
        demons.SetMaximumUpdateStepLength(settings.max_step_voxels)
        demons.SetUseImageSpacing(True)
        message = f"demons level {level + 1}/{len(plan)}"
        demons.AddCommand(sitk.sitkIterationEvent, _DemonsMonitor(demons, settings, progress, message,
                                                                  done_iterations, total_iterations))
        try:
            field_image = demons.Execute(fixed_l, moving_l, initial)
        except RuntimeError as exc:
            raise RegistrationError(f"deformable registration failed: {str(exc).splitlines()[-1][:200]}") from None
        finally:
            demons.RemoveAllCommands()  # the monitor refers to the filter: no cycle through SimpleITK
        metric = float(demons.GetMetric())
        done_iterations += iterations
        log.debug("demons level %d shrink %s: %d iterations, MSE %.2f", level, shrink,
                  demons.GetElapsedIterations(), metric)
    assert field_image is not None
    return field_image, metric


class _DemonsMonitor:
    """Per-iteration callback of one demons level: progress, and the stop once the MSE has levelled off."""

    def __init__(self, demons: sitk.FastSymmetricForcesDemonsRegistrationFilter, settings: DeformableSettings,
                 progress: Progress | None, message: str, offset: int, total: int) -> None:
        self._demons, self._progress, self._message = demons, progress, message
        self._window, self._tolerance = settings.convergence_window, settings.convergence_tolerance
        self._offset, self._total = offset, total
        self._metrics: list[float] = []

    def __call__(self) -> None:
        metric = float(self._demons.GetMetric())
        self._metrics.append(metric)
        if self._progress:
            done = (self._offset + self._demons.GetElapsedIterations()) / self._total
            self._progress(0.25 + 0.7 * done, f"{self._message}, MSE {metric:.1f}")
        window = self._window
        if window > 0 and len(self._metrics) >= 2 * window:  # means of two windows: the MSE oscillates a little
            before = sum(self._metrics[-2 * window:-window]) / window
            now = sum(self._metrics[-window:]) / window
            if before - now < self._tolerance * before:
                self._demons.StopRegistration()
