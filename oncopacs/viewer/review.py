"""Load what the 4D and registration review shows from the archive: 4D CT phases and registered image pairs.

* 4D CT: the study's CT series whose slices carry a respiratory-phase label are grouped into phases with
  :func:`fusion.ct4d.group_phases` (percent of the cycle, in order) and loaded on one grid
  (:func:`fusion.ct4d.load_phase_images`), one :class:`~oncopacs.viewer.slices.Scene` per phase, with the
  contours of an RTSTRUCT drawn on the phases when there is one.
* Registration: one of the study's REG objects (rigid or deformable, :func:`fusion.dicom_reg.read_registration`);
  the moving series is resampled onto the fixed grid through it (:func:`fusion.volume.resample_to`, -1000 HU
  outside), with its stored ``registration_qa`` document (:func:`oncopacs.analysis.registration.load_registration_qa`).

Every file is read through the archive with its SHA-256 checked. A :class:`ReviewViewer` (one per app) keeps the
loaded volumes of a few studies in an LRU keyed by the files' SHA-256, and the rendered slices in a
:class:`~oncopacs.viewer.slices.SliceCache`, as :class:`oncopacs.viewer.scene.Viewer` does for plan scenes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import numpy as np
from pydicom import Dataset
from sqlalchemy.orm import Session

from fusion.ct4d import group_phases, load_phase_images, read_phase_label
from fusion.dicom_reg import read_registration
from fusion.errors import FusionError
from fusion.registration import Registration
from fusion.volume import load_series, resample_to
from oncopacs.analysis.registration import RegistrationVerdict, find_registration_verdicts, load_registration_qa
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.oncology import OncologySummary, summarize_study
from oncopacs.index.query import StoredInstance, find_instances, find_study_patient
from oncopacs.viewer.scene import read_axis_aligned_volume as axis_aligned
from oncopacs.viewer.slices import Scene, SliceCache, build_scene
from rt.errors import RTError
from rt.structures import read_structure_set

_T = TypeVar("_T")


@dataclass(frozen=True)
class FourDCT:
    """A 4D CT: phase percent (ascending), one scene per phase on one grid, ROIs shared by every scene."""

    phase_percent: tuple[float, ...]
    series_uids: tuple[str, ...]
    scenes: tuple[Scene, ...] = field(repr=False)
    structure_set_uid: str | None
    patient_ids: tuple[str, ...] = ()

    @property
    def roi_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.scenes[0].rois)


@dataclass(frozen=True)
class RegistrationPair:
    """A registration with its fixed image and its moving image resampled onto the fixed grid (HU)."""

    sop_instance_uid: str
    kind: str
    fixed_series_uid: str
    moving_series_uid: str
    patient_ids: tuple[str, ...]
    study_uids: tuple[str, ...]
    fixed: Scene = field(repr=False)
    moving: Scene = field(repr=False)
    qa: dict[str, Any] | None  # the stored registration_qa document (None: no QA stored)


@dataclass(frozen=True, slots=True)
class ReviewRegistration:
    """A REG object of the study and its stored QA verdict (None: no QA stored)."""

    sop_instance_uid: str
    series_instance_uid: str
    verdict: RegistrationVerdict | None


@dataclass(frozen=True, slots=True)
class ReviewStudy:
    """What the review page lists of a study, read from the index alone: its patient and its registrations."""

    study_uid: str
    patient_id: str
    patient_name: str
    registrations: tuple[ReviewRegistration, ...]


def find_review_study(archive: Archive, study_uid: str) -> ReviewStudy:
    """The study's patient and registrations with their QA verdicts; NotFoundError for an unknown study."""
    with archive.index.reading() as session:
        summary = summarize_study(session, study_uid)
        patient = find_study_patient(session, study_uid)
        verdicts = find_registration_verdicts(session, (r.sop_instance_uid for r in summary.registrations))
    if patient is None:
        raise NotFoundError(f"study {study_uid} is not in the archive")
    registrations = tuple(ReviewRegistration(r.sop_instance_uid, r.series_instance_uid,
                                             verdicts.get(r.sop_instance_uid)) for r in summary.registrations)
    return ReviewStudy(study_uid, patient.patient_id, patient.patient_name, registrations)


def _key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _read_all(archive: Archive, stored: tuple[StoredInstance, ...] | list[StoredInstance]) -> list[Dataset]:
    return [archive.read_dataset(s.file_path, s.sha256) for s in stored]


# -- 4D CT ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FourDInputs:
    """The stored phase slices and RTSTRUCT of a study's 4D CT (read from the index alone) and its cache key."""

    study_uid: str
    stored: tuple[StoredInstance, ...] = field(repr=False)
    structure_set_uid: str | None
    structure_set: tuple[StoredInstance, ...] = field(repr=False)  # empty: no RTSTRUCT on the phases
    key: str


def _phase_series(archive: Archive, session: Session, summary: OncologySummary) -> list[str]:
    """CT series whose first slice carries a respiratory-phase label (header only)."""
    found = []
    for series in summary.image_series:
        if series.modality != "CT":
            continue
        stored = find_instances(session, {"SeriesInstanceUID": series.series_instance_uid})
        if not stored:
            continue
        head = archive.read_dataset(stored[0].file_path, stored[0].sha256, stop_before_pixels=True)
        if read_phase_label(head) is not None:
            found.append(series.series_instance_uid)
    return found


def find_four_d_inputs(archive: Archive, study_uid: str) -> FourDInputs | None:
    """The study's phase-labelled CT series and their RTSTRUCT (None: no 4D CT); NotFoundError for an unknown study."""
    with archive.index.reading() as session:
        summary = summarize_study(session, study_uid)
        candidates = _phase_series(archive, session, summary)
        if not candidates:
            return None
        stored = [s for uid in candidates for s in find_instances(session, {"SeriesInstanceUID": uid})]
        rtstruct = next((s for s in summary.structure_sets if set(s.image_series_uids) & set(candidates)), None)
        rt_stored = find_instances(session, {"SOPInstanceUID": rtstruct.sop_instance_uid}) if rtstruct else []
    key = _key("4d", study_uid, *sorted(s.sha256 for s in stored), *(s.sha256 for s in rt_stored))
    return FourDInputs(study_uid, tuple(stored), rtstruct.sop_instance_uid if rtstruct else None, tuple(rt_stored),
                       key)


def build_four_d(archive: Archive, inputs: FourDInputs) -> FourDCT | str:
    """Read the phases (SHA-256 checked) and build one scene per phase, or a sentence saying why it cannot be shown."""
    try:
        phases = group_phases(_read_all(archive, inputs.stored))
        images = load_phase_images(phases)
        volumes = [axis_aligned(image) for image in images]
    except (FusionError, NotFoundError) as exc:
        return f"The 4D CT cannot be shown: {exc}"
    structures = None
    if inputs.structure_set:
        try:
            structures = read_structure_set(_read_all(archive, inputs.structure_set)[0])
        except (RTError, ValueError, KeyError, AttributeError):
            structures = None
    key = inputs.key
    first_hu, grid = volumes[0]
    first = build_scene(f"{key}-0", first_hu, grid, structures=structures)
    scenes = [first] + [replace(first, key=f"{key}-{p}", ct_hu=np.ascontiguousarray(hu, dtype=np.float32))
                        for p, (hu, _grid) in enumerate(volumes[1:], start=1)]
    return FourDCT(tuple(p.percent for p in phases), tuple(p.series_instance_uid for p in phases), tuple(scenes),
                   inputs.structure_set_uid if structures is not None else None,
                   tuple(dict.fromkeys(s.patient_id for s in inputs.stored)))


def load_four_d(archive: Archive, study_uid: str) -> FourDCT | str | None:
    """The study's 4D CT (uncached; :meth:`ReviewViewer.four_d` caches), a sentence saying why it cannot be shown,
    or None when it has none."""
    inputs = find_four_d_inputs(archive, study_uid)
    return None if inputs is None else build_four_d(archive, inputs)


# -- registration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairInputs:
    """A registration of a study (read from its REG file), the stored fixed and moving series, QA and cache key."""

    study_uid: str
    registration_uid: str
    registration: Registration = field(repr=False)
    fixed: tuple[StoredInstance, ...] = field(repr=False)
    moving: tuple[StoredInstance, ...] = field(repr=False)
    qa: dict[str, Any] | None
    key: str


def find_pair_inputs(archive: Archive, study_uid: str, registration_uid: str) -> PairInputs:
    """The registration ``registration_uid`` of the study and its series (NotFoundError; ValueError: unreadable)."""
    with archive.index.reading() as session:
        summary = summarize_study(session, study_uid)
        if registration_uid not in {r.sop_instance_uid for r in summary.registrations}:
            raise NotFoundError(f"registration {registration_uid} is not in study {study_uid}")
        reg_stored = find_instances(session, {"SOPInstanceUID": registration_uid})
        qa = load_registration_qa(session, registration_uid)
    try:
        registration = read_registration(_read_all(archive, reg_stored)[0])
    except FusionError as exc:
        raise ValueError(f"the registration cannot be read: {exc}") from None
    fixed_uid, moving_uid = registration.fixed.series_instance_uid, registration.moving.series_instance_uid
    with archive.index.reading() as session:
        fixed_stored = find_instances(session, {"SeriesInstanceUID": fixed_uid}) if fixed_uid else []
        moving_stored = find_instances(session, {"SeriesInstanceUID": moving_uid}) if moving_uid else []
    if not fixed_stored or not moving_stored:
        raise NotFoundError("the fixed or the moving series of this registration is not in the archive")
    key = _key("reg", reg_stored[0].sha256, *sorted(s.sha256 for s in fixed_stored), "|",
               *sorted(s.sha256 for s in moving_stored))
    return PairInputs(study_uid, registration_uid, registration, tuple(fixed_stored), tuple(moving_stored), qa, key)


def build_pair(archive: Archive, inputs: PairInputs) -> RegistrationPair:
    """Read both series (SHA-256 checked), resample the moving one onto the fixed grid (ValueError: unloadable)."""
    registration = inputs.registration
    try:
        fixed = load_series(_read_all(archive, inputs.fixed))
        moved = resample_to(load_series(_read_all(archive, inputs.moving)), fixed, registration.transform,
                            default=-1000.0)
    except FusionError as exc:
        raise ValueError(f"the registered images cannot be loaded: {exc}") from None
    fixed_hu, grid = axis_aligned(fixed)
    moved_hu, _ = axis_aligned(moved)
    first_fixed, first_moving = inputs.fixed[0], inputs.moving[0]
    patients = tuple(dict.fromkeys(s.patient_id for s in (first_fixed, first_moving)))
    studies = tuple(dict.fromkeys((inputs.study_uid, first_fixed.study_instance_uid, first_moving.study_instance_uid)))
    return RegistrationPair(inputs.registration_uid, registration.kind.value, registration.fixed.series_instance_uid,
                            registration.moving.series_instance_uid, patients, studies,
                            build_scene(f"{inputs.key}-fixed", fixed_hu, grid),
                            build_scene(f"{inputs.key}-moving", moved_hu, grid), inputs.qa)


def load_pair(archive: Archive, study_uid: str, registration_uid: str) -> RegistrationPair:
    """A registration of the study with fixed and resampled moving images (uncached; :meth:`ReviewViewer.pair`
    caches); NotFoundError/ValueError."""
    return build_pair(archive, find_pair_inputs(archive, study_uid, registration_uid))


# -- the per-app cache -----------------------------------------------------------------------------


class ReviewViewer:
    """Loaded 4D CTs and registration pairs of one app (LRU of ``max_volumes`` by the files' SHA-256)
    and their rendered slices (LRU of ``max_slices``)."""

    def __init__(self, archive: Archive, max_volumes: int = 4, max_slices: int = 1024) -> None:
        self.archive = archive
        self.slices = SliceCache(max_entries=max_slices)
        self._volumes: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self._max_volumes = max_volumes

    def study(self, study_uid: str) -> ReviewStudy:
        """The study's patient and registrations (:func:`find_review_study`; not cached: it reads the index only)."""
        return find_review_study(self.archive, study_uid)

    def four_d(self, study_uid: str) -> FourDCT | str | None:
        """The study's 4D CT (cached, as is a sentence saying why it cannot be shown), or None when it has none."""
        inputs = find_four_d_inputs(self.archive, study_uid)
        if inputs is None:
            return None
        return self._cached(inputs.key, lambda: build_four_d(self.archive, inputs))

    def pair(self, study_uid: str, registration_uid: str) -> RegistrationPair:
        """A registration of the study with fixed and resampled moving images (cached); NotFoundError/ValueError."""
        inputs = find_pair_inputs(self.archive, study_uid, registration_uid)
        return self._cached(inputs.key, lambda: build_pair(self.archive, inputs))

    def _cached(self, key: str, build: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return cast(_T, self._volumes[key])
        value = build()
        with self._lock:
            self._volumes[key] = value
            while len(self._volumes) > self._max_volumes:
                self._volumes.popitem(last=False)
        return value
