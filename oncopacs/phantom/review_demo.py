"""Demo data for the 4D and registration review: a small 4D CT and a stored rigid registration with its QA.

Patient :data:`PATIENT_ID` gets a 4D CT study (:mod:`oncopacs.phantom.ct4d`, :data:`SPEC`: 10 phases of
64 × 64 × 24 voxels, a GTV structure set on phase 0 %) and a repeat CT study: the 0 % phase image
in its own frame of reference, translated by :data:`REPEAT_SHIFT_MM` (a repositioned patient). The repeat
CT (moving) is registered rigidly to the 0 % phase (fixed) with :func:`fusion.registration.register_rigid`;
its QA (:func:`fusion.qa.compute_registration_qa`) uses the reverse registration for inverse consistency
and landmarks whose true positions are known (TRE, mm). :func:`oncopacs.cli.demo.load_review_demo` stores both
through the one ingest path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import numpy as np
from pydicom.dataset import Dataset

from fusion.dicom_reg import build_registration_dataset
from fusion.qa import compute_registration_qa
from fusion.registration import RigidSettings, register_rigid
from fusion.volume import load_series
from oncopacs.phantom.ct import build_ct_slice
from oncopacs.phantom.ct4d import Ct4dPhantom, Ct4dSpec
from oncopacs.phantom.geometry import ImageGrid, Vec3
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.uids import uid_for

PATIENT_ID = "ONCO-4D-001"
SPEC = Ct4dSpec(shape=(24, 64, 64), phases=10, supersampling=2)
REPEAT_SHIFT_MM = (4.0, -6.0, 5.0)  # repeat-CT position of an anatomical point minus its 4D CT (0 %) position
_RIGID = RigidSettings(shrink_factors=(2, 1), smoothing_sigmas_mm=(2.0, 0.0), histogram_bins=32, max_step_mm=1.0,
                       min_step_mm=1e-2)  # a coarse pyramid is enough for 64 x 64 x 24 voxels (~0.3 s)


@dataclass(frozen=True)
class ReviewDemo:
    """What :func:`load_review_demo` stored: the 4D CT phantom, the repeat CT slices and the registration."""

    ct4d: Ct4dPhantom
    repeat_ct: tuple[Dataset, ...]
    registration_uid: str  # SOPInstanceUID of the stored REG


def build_repeat_ct(
    phantom: Ct4dPhantom, shift_mm: tuple[float, float, float] = REPEAT_SHIFT_MM
) -> tuple[Dataset, ...]:
    """The 0 % phase's pixels as a CT of a new study and frame of reference, every voxel moved by ``shift_mm``."""
    first = phantom.phases[0][0]
    patient = PatientSpec(patient_id=str(first.PatientID), name=str(first.PatientName))
    study = make_study_spec(patient, "repeat-ct", study_id="RCT", description="Repeat CT", study_date="20240205")
    frame_uid = uid_for(study.study_instance_uid, "frame")
    series = make_series_spec(study, "repeat-ct", series_number=1, description="Repeat CT", modality="CT",
                              frame_of_reference_uid=frame_uid)
    grid = phantom.spec.grid
    origin = cast(Vec3, tuple(float(o + s) for o, s in zip(grid.origin_mm, shift_mm, strict=False)))
    moved = ImageGrid(origin, grid.spacing_mm, grid.shape)
    return tuple(build_ct_slice(patient, study, series, moved, k, phantom.phases[0][k].PixelData)
                 for k in range(grid.nz))


def _landmarks_mm(phantom: Ct4dPhantom, shift_mm: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-space points (tumour centre at 0 %, bone rod, lung edges) and their true repeat-CT positions."""
    spec = phantom.spec
    fixed = np.array([spec.compute_tumour_centre_mm(0), (0.0, spec.lung_radius_mm + 5.0, 0.0),
                      (spec.lung_radius_mm, 0.0, 10.0), (-spec.lung_radius_mm, 0.0, -10.0)])
    return fixed, fixed + np.asarray(shift_mm)


def build_review_registration(phantom: Ct4dPhantom, repeat_ct: tuple[Dataset, ...]) -> Dataset:
    """The rigid registration (fixed: the 0 % phase, moving: the repeat CT) as a DICOM REG with its QA."""
    fixed = load_series(list(phantom.phases[0]))
    moving = load_series(list(repeat_ct))
    forward = register_rigid(fixed, moving, settings=_RIGID)
    reverse = register_rigid(moving, fixed, settings=_RIGID)
    qa = compute_registration_qa(forward, fixed, reverse=reverse, landmarks_mm=_landmarks_mm(phantom, REPEAT_SHIFT_MM))
    return build_registration_dataset(replace(forward, qa=qa), fixed, moving, series_number=900,
                                      description="Repeat CT to 4D CT 0% (rigid)")
