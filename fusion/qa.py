"""Registration QA: Jacobian determinant, inverse consistency and target registration error, with a verdict.

Thresholds (:class:`QAThresholds`) follow AAPM TG-132's tolerances for clinical use:

* folding: the Jacobian determinant of ``T`` must be positive; at most ``max_folding_percent`` (0.01 %)
  of the fixed grid's voxels may have det J ≤ 0; det J must also lie within
  [``min_jacobian``, ``max_jacobian``] = [0.05, 20] (no implausible collapse or blow-up).
* inverse consistency: mean ``|T⁻¹(T(x)) − x|`` over the body (HU > −500, or the whole grid) at most
  ``max_inverse_consistency_mm`` (2 mm). ``T⁻¹`` is the reverse registration (moving → fixed) when
  given (method "reverse registration"), else the numerically inverted displacement field
  ("field inversion"); for a rigid result without a reverse run it is not computed.
* target registration error: mean ``|T(p_fixed) − p_moving|`` over the landmarks at most
  ``max_mean_tre_mm`` (2 mm), when landmarks are given.

A registration that fails any of them is *flagged*: :func:`check_usable` refuses it for dose
accumulation unless the caller passes an explicit override.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fusion.errors import UnusableRegistrationError
from fusion.registration import Registration, RegistrationKind

log = logging.getLogger(__name__)

BODY_THRESHOLD_HU = -500.0
MAX_QA_POINTS = 20_000
INVERSION_SPACING_MM = 2.0


@dataclass(frozen=True, slots=True)
class QAThresholds:
    """QA limits (see the module docstring): percent of voxels, Jacobian bounds, mm."""

    max_folding_percent: float = 0.01
    min_jacobian: float = 0.05
    max_jacobian: float = 20.0
    max_inverse_consistency_mm: float = 2.0
    max_mean_tre_mm: float = 2.0


@dataclass(frozen=True, slots=True)
class RegistrationQA:
    """QA figures of one registration and the verdict.

    jacobian_min/max: extremes of det J over the fixed grid; folding_percent: % of voxels with det J ≤ 0.
    inverse_consistency_mean_mm/max_mm: round-trip error (None when not computed) and its method.
    tre_mean_mm/max_mm, landmark_count: against the given landmarks (None/0 without).
    passed: every check within its threshold; failures: one line per failed check.
    """

    jacobian_min: float
    jacobian_max: float
    folding_percent: float
    inverse_consistency_mean_mm: float | None
    inverse_consistency_max_mm: float | None
    inverse_consistency_method: str
    tre_mean_mm: float | None
    tre_max_mm: float | None
    landmark_count: int
    passed: bool
    failures: tuple[str, ...] = ()
    thresholds: QAThresholds = field(default_factory=QAThresholds)

    @property
    def flagged(self) -> bool:
        return not self.passed

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (floats rounded to 1e-4)."""
        document = asdict(self)
        document["failures"] = list(self.failures)
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in document.items()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RegistrationQA:
        """The inverse of :meth:`to_dict`."""
        values = dict(document)
        values["failures"] = tuple(values.get("failures", ()))
        values["thresholds"] = QAThresholds(**values.get("thresholds", {}))
        names = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in names})


def compute_registration_qa(registration: Registration, fixed: sitk.Image, *, reverse: Registration | None = None,
                            landmarks_mm: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
                            thresholds: QAThresholds | None = None) -> RegistrationQA:
    """QA of ``registration`` on the grid of ``fixed``.

    reverse: the moving → fixed registration of the same pair, for inverse consistency.
    landmarks_mm: (fixed points (n, 3), corresponding moving points (n, 3)), mm, for the TRE.
    """
    thresholds = thresholds or QAThresholds()
    jacobian_min, jacobian_max, folding = compute_jacobian_stats(registration, fixed)
    points = _qa_points(fixed)
    ic_mean = ic_max = None
    method = "not computed"
    if reverse is not None:
        errors = compute_round_trip_errors_mm(registration.transform, reverse.transform, points)
        ic_mean, ic_max, method = float(errors.mean()), float(errors.max()), "reverse registration"
    elif registration.kind is RegistrationKind.DEFORMABLE and registration.displacement_field is not None:
        inverse = _invert_field(registration.displacement_field)
        errors = compute_round_trip_errors_mm(registration.transform, inverse, points)
        ic_mean, ic_max, method = float(errors.mean()), float(errors.max()), "field inversion"
    tre_mean = tre_max = None
    count = 0
    if landmarks_mm is not None:
        fixed_points, moving_points = (np.atleast_2d(np.asarray(p, dtype=float)) for p in landmarks_mm)
        if fixed_points.shape != moving_points.shape or fixed_points.shape[-1] != 3:
            raise ValueError("landmarks need matching (n, 3) fixed and moving point arrays")
        tre = compute_tre_mm(registration, fixed_points, moving_points)
        tre_mean, tre_max, count = float(tre.mean()), float(tre.max()), len(tre)
    failures = []
    if folding > thresholds.max_folding_percent:
        failures.append(f"folding in {folding:.3f}% of voxels (limit {thresholds.max_folding_percent}%)")
    if jacobian_min < thresholds.min_jacobian or jacobian_max > thresholds.max_jacobian:
        failures.append(f"Jacobian determinant {jacobian_min:.3f}..{jacobian_max:.3f} outside "
                        f"{thresholds.min_jacobian}..{thresholds.max_jacobian}")
    if ic_mean is not None and ic_mean > thresholds.max_inverse_consistency_mm:
        failures.append(f"inverse consistency {ic_mean:.2f} mm (limit {thresholds.max_inverse_consistency_mm} mm)")
    if tre_mean is not None and tre_mean > thresholds.max_mean_tre_mm:
        failures.append(f"mean TRE {tre_mean:.2f} mm (limit {thresholds.max_mean_tre_mm} mm)")
    return RegistrationQA(jacobian_min, jacobian_max, folding, ic_mean, ic_max, method, tre_mean, tre_max, count,
                          not failures, tuple(failures), thresholds)


def check_usable(registration_qa: RegistrationQA | None, override: bool) -> None:
    """Raise :class:`UnusableRegistrationError` for a flagged (or un-QA'd) registration unless ``override``."""
    if registration_qa is None:
        problem = "has no QA"
    elif registration_qa.flagged:
        problem = "failed QA: " + "; ".join(registration_qa.failures)
    else:
        return
    if override:
        log.warning("registration %s; used anyway (explicit override)", problem)
        return
    raise UnusableRegistrationError(f"the registration {problem}; pass an explicit override to use it anyway")


def compute_jacobian_stats(registration: Registration, fixed: sitk.Image) -> tuple[float, float, float]:
    """(min, max, % of voxels ≤ 0) of the Jacobian determinant of the fixed → moving mapping."""
    if registration.displacement_field is not None:
        return _field_jacobian_stats(registration.displacement_field)
    if hasattr(registration.transform, "GetMatrix"):  # linear: one determinant everywhere
        det = float(np.linalg.det(np.array(registration.transform.GetMatrix()).reshape(3, 3)))
        return det, det, 0.0 if det > 0 else 100.0
    field_image = sitk.TransformToDisplacementField(registration.transform, sitk.sitkVectorFloat64, fixed.GetSize(),
                                                    fixed.GetOrigin(), fixed.GetSpacing(), fixed.GetDirection())
    return _field_jacobian_stats(field_image)


def compute_tre_mm(registration: Registration, fixed_points_mm: npt.NDArray[np.float64],
                   moving_points_mm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Target registration error per landmark: ``|T(p_fixed) − p_moving|``, mm."""
    mapped = registration.map_points_mm(fixed_points_mm)
    errors: npt.NDArray[np.float64] = np.linalg.norm(mapped - moving_points_mm, axis=1)
    return errors


def compute_round_trip_errors_mm(forward: sitk.Transform, backward: sitk.Transform,
                                 points_mm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``|backward(forward(x)) − x|`` for each point, mm."""
    errors = np.empty(len(points_mm))
    for i, point in enumerate(points_mm):
        there = forward.TransformPoint(tuple(float(v) for v in point))
        errors[i] = np.linalg.norm(np.asarray(backward.TransformPoint(there)) - point)
    return errors


def _field_jacobian_stats(field_image: sitk.Image) -> tuple[float, float, float]:
    det_image = sitk.DisplacementFieldJacobianDeterminant(field_image)
    det = sitk.GetArrayViewFromImage(det_image)  # a view: det_image must stay alive while it is used
    return float(det.min()), float(det.max()), float(100.0 * np.count_nonzero(det <= 0) / det.size)


def _qa_points(fixed: sitk.Image) -> npt.NDArray[np.float64]:
    """Up to :data:`MAX_QA_POINTS` voxel centres on a regular sub-grid, inside the body when there is one."""
    size = np.array(fixed.GetSize())
    step = max(1, int(np.ceil((size.prod() / MAX_QA_POINTS) ** (1 / 3))))
    values = sitk.GetArrayViewFromImage(fixed)[::step, ::step, ::step]
    k, j, i = np.nonzero(values > BODY_THRESHOLD_HU)
    if len(k) < 10:
        k, j, i = (axis.ravel() for axis in np.indices(values.shape))
    index = np.column_stack([i, j, k]) * step
    return np.array([fixed.TransformIndexToPhysicalPoint(tuple(int(v) for v in p)) for p in index])


def _invert_field(field_image: sitk.Image) -> sitk.Transform:
    """The numerical inverse of a displacement field, computed at about :data:`INVERSION_SPACING_MM`."""
    shrink = [max(1, int(INVERSION_SPACING_MM // s)) for s in field_image.GetSpacing()]
    coarse = sitk.BinShrink(field_image, shrink) if max(shrink) > 1 else field_image
    inverse = sitk.InvertDisplacementField(coarse, maximumNumberOfIterations=30, maxErrorToleranceThreshold=0.01,
                                           meanErrorToleranceThreshold=0.0001, enforceBoundaryCondition=False)
    return sitk.DisplacementFieldTransform(sitk.Cast(inverse, sitk.sitkVectorFloat64))
