"""The ``registration`` job kind: register two image series already in the archive and store the result.

Parameters: ``fixed_series_uid`` and ``moving_series_uid`` (required), ``deformable`` (bool, default
false: rigid only) and ``landmarks_mm`` (optional ``{"fixed": [[x, y, z], ...], "moving": [...]}``,
LPS mm, corresponding points for the target registration error). The series are read through the
archive (SHA-256 checked); the (Deformable) Spatial Registration object and its QA are stored with
:func:`oncopacs.analysis.registration.store_registration`. A registration that fails QA is still stored, flagged.
Registered by the composition root (:func:`install_registration`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from oncopacs.analysis.registration import store_registration
from oncopacs.archive.ingest import Archive
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.worker import Handler, ProgressCallback

REGISTRATION = "registration"
SOURCE = "job:registration"
#: Progress fractions: reading the series, registering, QA, storing.
READ_END, REGISTER_END, QA_END = 0.05, 0.8, 0.95


def build_registration_handler(archive: Archive) -> Handler:
    """A handler registering the job's two series and storing the registration with its QA."""

    def run_registration(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        from fusion.dicom_reg import build_registration_dataset
        from fusion.qa import compute_registration_qa
        from fusion.registration import register_deformable, register_rigid
        from fusion.volume import load_series

        fixed_uid, moving_uid = _uid(params, "fixed_series_uid"), _uid(params, "moving_series_uid")
        deformable = params.get("deformable", False)
        if not isinstance(deformable, bool):
            raise ValueError("deformable must be true or false")
        landmarks = _landmarks(params.get("landmarks_mm"))
        progress(0.0, "reading the series from the archive")
        fixed = load_series(archive.read_series(fixed_uid), series_instance_uid=fixed_uid)
        moving = load_series(archive.read_series(moving_uid), series_instance_uid=moving_uid)

        def step(fraction: float, message: str) -> None:
            progress(READ_END + (REGISTER_END - READ_END) * fraction, message)

        register = register_deformable if deformable else register_rigid
        registration = register(fixed, moving, progress=step)
        progress(REGISTER_END, "registration QA")
        reverse = None if deformable else register_rigid(moving, fixed)  # inverse consistency of a rigid result
        qa = compute_registration_qa(registration, fixed, reverse=reverse, landmarks_mm=landmarks)
        progress(QA_END, "storing the registration")
        stored = store_registration(archive, build_registration_dataset(registration, fixed, moving, qa=qa),
                                    source=SOURCE)
        progress(1.0, "registration stored" + (" (flagged by QA)" if stored.flagged else ""))
        return {**stored.to_dict(), "registration_seconds": round(registration.seconds, 3)}

    return run_registration


def install_registration(archive: Archive, jobs: JobSystem) -> None:
    """Register the ``registration`` job kind on ``jobs``."""
    jobs.registry.register(REGISTRATION, build_registration_handler(archive))


def _uid(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} (a Series Instance UID) is required")
    return value.strip()


def _landmarks(value: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if value is None:
        return None
    try:
        fixed = np.asarray(value["fixed"], dtype=float)
        moving = np.asarray(value["moving"], dtype=float)
    except (KeyError, TypeError, ValueError):
        raise ValueError('landmarks_mm must be {"fixed": [[x, y, z], ...], "moving": [[x, y, z], ...]}') from None
    if fixed.ndim != 2 or fixed.shape[1:] != (3,) or fixed.shape != moving.shape or not len(fixed):
        raise ValueError("landmarks_mm needs as many fixed as moving points, each [x, y, z] in mm")
    return fixed, moving
