"""What the 4D and registration review page shows beside the images: series named for people, a rigid
registration's 6 DOF, and the 4D CT's motion analysis (ITV, MIP/AIP, amplitude per axis).

The motion analysis is :func:`fusion.ct4d.analyse_4dct` (the ``oncopacs fusion 4d`` command's) run on the
study's phase series and their GTV structure set; it takes seconds, so :class:`MotionCache` keeps the result
per study (keyed by the files' SHA-256) and the page asks for it in its own callback, after the first image.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from sqlalchemy import select

from fusion.ct4d import analyse_4dct
from fusion.errors import FusionError
from fusion.registration import RegistrationKind, compute_affine_matrix
from fusion.six_dof import SixDof, compute_six_dof
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.display import format_date
from oncopacs.index.models import Series
from oncopacs.viewer.review import find_four_d_inputs, find_pair_inputs
from rt.errors import RTError


def label_series(archive: Archive, series_uids: Iterable[str]) -> dict[str, str]:
    """``description · date`` (SeriesDescription, SeriesDate for people) of each series in the archive."""
    uids = sorted(set(series_uids))
    if not uids:
        return {}
    with archive.index.reading() as session:
        rows = session.execute(select(Series.series_instance_uid, Series.series_description, Series.series_date,
                                      Series.modality, Series.series_number)
                               .where(Series.series_instance_uid.in_(uids))).all()
    labels: dict[str, str] = {}
    for uid, description, day, modality, number in rows:
        name = description or f"{modality} series {number}".strip()
        labels[uid] = " · ".join(p for p in (name, format_date(day) if day else "") if p)
    return labels


def registration_dof(archive: Archive, study_uid: str, registration_uid: str) -> SixDof | str:
    """The moving → fixed rigid correction of a registration (mm, degrees), or a sentence why there is none.

    The stored transform maps fixed points to moving points; its inverse moves the moving image onto the fixed,
    as a couch correction reads (NotFoundError when the registration is not in the study).
    """
    try:
        registration = find_pair_inputs(archive, study_uid, registration_uid).registration
    except ValueError as exc:
        return str(exc)
    if registration.kind is not RegistrationKind.RIGID:
        return "Deformable registration: no single rigid transform (see the QA figures)."
    try:
        return compute_six_dof(np.linalg.inv(compute_affine_matrix(registration.transform)))
    except FusionError as exc:
        return f"The rigid transform cannot be read: {exc}"


@dataclass(frozen=True)
class MotionView:
    """The 4D CT motion analysis: amplitude per axis (mm), ITV and GTV per phase (cc), and coronal MIP / AIP
    (HU, (z, x), superior first) through the GTV centroid with the ITV outline mask on the same pixels."""

    gtv_name: str
    phase_percent: tuple[float, ...]
    amplitude_mm: dict[str, float]
    itv_cc: float
    gtv_cc: tuple[float, ...]
    weak_match_percent: tuple[float, ...]
    pixel_mm: tuple[float, float]  # (row: z, column: x)
    mip_hu: np.ndarray = field(repr=False)
    aip_hu: np.ndarray = field(repr=False)
    itv_mask: np.ndarray = field(repr=False)


def _coronal(image: sitk.Image, row: int) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(image)[::-1, row, :], dtype=np.float32)


def analyse_motion(archive: Archive, study_uid: str) -> MotionView | str | None:
    """The motion analysis of the study's 4D CT; None: no 4D CT; a sentence: why it cannot be analysed."""
    inputs = find_four_d_inputs(archive, study_uid)
    if inputs is None:
        return None
    if not inputs.structure_set:
        return "No GTV structure set on the phases: ITV and motion need the GTV drawn on one phase."
    try:
        datasets = [archive.read_dataset(s.file_path, s.sha256) for s in (*inputs.stored, *inputs.structure_set)]
        analysis = analyse_4dct(datasets)
    except (FusionError, RTError, NotFoundError, ValueError) as exc:
        return f"The 4D motion analysis failed: {exc}"
    motion = analysis.motion
    itv = analysis.itv
    centroid = np.mean(np.asarray(motion.centroids_mm), axis=0)
    row = int(np.clip(round(itv.TransformPhysicalPointToContinuousIndex(tuple(float(c) for c in centroid))[1]),
                      0, itv.GetSize()[1] - 1))
    spacing = itv.GetSpacing()
    return MotionView(analysis.gtv_name, motion.phase_percent, dict(motion.amplitude_mm), motion.itv_cc,
                      motion.gtv_cc, analysis.weak_match_percents, (float(spacing[2]), float(spacing[0])),
                      _coronal(analysis.projections.mip, row), _coronal(analysis.projections.aip, row),
                      _coronal(sitk.Cast(itv, sitk.sitkUInt8), row) > 0)


class MotionCache:
    """:func:`analyse_motion` per study, kept for the app's life (a few studies, keyed by the files' SHA-256);
    one computation per study at a time."""

    def __init__(self, archive: Archive, max_studies: int = 4) -> None:
        self._archive, self._max = archive, max_studies
        self._results: OrderedDict[str, MotionView | str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def motion(self, study_uid: str) -> MotionView | str | None:
        inputs = find_four_d_inputs(self._archive, study_uid)
        if inputs is None:
            return None
        key = inputs.key
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._results:
                    return self._results[key]
            result = analyse_motion(self._archive, study_uid)
            with self._lock:
                self._results[key] = result
                self._building.pop(key, None)
                while len(self._results) > self._max:
                    self._results.popitem(last=False)
        return result
