"""Load what a plan view shows from the archive: the planning CT, its structure set, one dose, the plan.

A :class:`~oncopacs.viewer.slices.Scene` is built once per inputs (its key hashes the stored files' SHA-256)
and kept in a small LRU with the rendered slices (:class:`Viewer`, one per app).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from sqlalchemy import func, select

from fusion.volume import load_series
from oncopacs.analysis.rt import PlanningSet, find_planning_sets
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.models import Instance, Series, Study
from oncopacs.index.oncology import summarize_study
from oncopacs.index.query import find_instances
from oncopacs.viewer.layers import LayerCache
from oncopacs.viewer.slices import Scene, SliceCache, build_scene
from rt.dose import read_dose
from rt.grid import VoxelGrid
from rt.plan import PlanSummary, read_plan_summary
from rt.structures import read_structure_set

_AXIS_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class SceneInputs:
    """The stored instances of one scene (UIDs) and its cache key."""

    patient_id: str
    study_instance_uid: str
    ct_series_uid: str
    structure_set_uid: str | None
    dose_uid: str | None
    plan_uid: str | None
    key: str


@dataclass(frozen=True, slots=True)
class LoadedScene:
    inputs: SceneInputs
    scene: Scene
    plan: PlanSummary | None


def find_scene_inputs(archive: Archive, study_uid: str, dose_uid: str | None = None) -> SceneInputs:
    """The CT, structure set, dose (``dose_uid`` or the study's first) and plan a view of the study shows."""
    with archive.index.reading() as session:
        summary = summarize_study(session, study_uid)  # NotFoundError for an unknown study
        sets = find_planning_sets(session, study_uid)
        chosen: PlanningSet | None = None
        if dose_uid:
            chosen = next((s for s in sets if s.dose_uid == dose_uid), None)
            if chosen is None:
                raise NotFoundError(f"dose {dose_uid} is not a dose of study {study_uid} with a structure set")
        elif sets:
            chosen = sets[0]
        # Without a planning set (contours but no dose: an auto-contoured CT), the study's last structure set.
        structure_set_uid = chosen.structure_set_uid if chosen else next(
            (s.sop_instance_uid for s in reversed(summary.structure_sets)), None)
        ct_uid = _ct_series(summary, structure_set_uid)
        uids = [u for u in (chosen.uids if chosen else (structure_set_uid,)) if u]
        hashes = dict(session.execute(select(Instance.sop_instance_uid, Instance.sha256)
                                      .where(Instance.sop_instance_uid.in_(uids))).all()) if uids else {}
        ct_files = find_instances(session, {"SeriesInstanceUID": ct_uid})
        patient_id = ct_files[0].patient_id if ct_files else ""
    digest = hashlib.sha256()
    for part in [study_uid, ct_uid, *sorted(f.sha256 for f in ct_files), *(hashes.get(u, "") for u in uids)]:
        digest.update(part.encode() + b"\0")
    return SceneInputs(patient_id, study_uid, ct_uid, structure_set_uid,
                       chosen.dose_uid if chosen else None, chosen.plan_uid if chosen else None, digest.hexdigest())


def _ct_series(summary, structure_set_uid: str | None) -> str:
    cts = [s for s in summary.image_series if s.modality == "CT"]
    if structure_set_uid:
        drawn_on = next((s.image_series_uids for s in summary.structure_sets
                         if s.sop_instance_uid == structure_set_uid), ())
        for series in cts:
            if series.series_instance_uid in drawn_on:
                return series.series_instance_uid
    if not cts:
        raise NotFoundError(f"study {summary.study_instance_uid} holds no CT series to show")
    return max(cts, key=lambda s: s.number_of_instances).series_instance_uid


def load_scene(archive: Archive, inputs: SceneInputs) -> LoadedScene:
    """Read the inputs' files (SHA-256 checked) and build the scene."""
    with archive.index.reading() as session:
        ct_files = find_instances(session, {"SeriesInstanceUID": inputs.ct_series_uid})
        wanted = (inputs.structure_set_uid, inputs.dose_uid, inputs.plan_uid)
        in_study = find_instances(session, {"StudyInstanceUID": inputs.study_instance_uid})
        others = {f.sop_instance_uid: f for f in in_study if f.sop_instance_uid in wanted}
    image = load_series([archive.read_dataset(f.file_path, f.sha256) for f in ct_files])
    ct_hu, grid = read_axis_aligned_volume(image)

    def read(uid: str | None):
        return archive.read_dataset(others[uid].file_path, others[uid].sha256) if uid and uid in others else None

    structures_ds, dose_ds, plan_ds = read(inputs.structure_set_uid), read(inputs.dose_uid), read(inputs.plan_uid)
    plan = read_plan_summary(plan_ds) if plan_ds is not None else None
    scene = build_scene(inputs.key, ct_hu, grid,
                        structures=read_structure_set(structures_ds) if structures_ds is not None else None,
                        dose=read_dose(dose_ds) if dose_ds is not None else None,
                        prescription_gy=plan.prescription_gy if plan else None)
    return LoadedScene(inputs, scene, plan)


def read_axis_aligned_volume(image: sitk.Image) -> tuple[np.ndarray, VoxelGrid]:
    """The volume as (nz, ny, nx) HU on an axis-aligned grid (flipping axes stored in reverse)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(np.abs(direction), np.eye(3), atol=_AXIS_TOLERANCE):
        raise NotFoundError("the CT is not axis-aligned (oblique series are not shown yet)")
    array = sitk.GetArrayFromImage(image)
    origin = np.array(image.GetOrigin(), dtype=float)
    spacing = np.array(image.GetSpacing(), dtype=float)
    size = np.array(image.GetSize())
    for axis in range(3):
        if direction[axis, axis] < 0:
            origin[axis] -= spacing[axis] * (size[axis] - 1)
            array = np.flip(array, axis=2 - axis)
    (ox, oy, oz), (dx, dy, dz), (nz, ny, nx) = (float(v) for v in origin), (float(v) for v in spacing), array.shape
    return np.ascontiguousarray(array), VoxelGrid((ox, oy, oz), (dx, dy, dz), (int(nz), int(ny), int(nx)))


class Viewer:
    """Loaded scenes (LRU by inputs), rendered slices and the plan page's layers for one app."""

    def __init__(self, archive: Archive, max_scenes: int = 4) -> None:
        self.archive = archive
        self.slices = SliceCache()
        self.layers = LayerCache()
        self._scenes: OrderedDict[str, LoadedScene] = OrderedDict()
        self._inputs: OrderedDict[tuple[str, str | None], tuple[tuple, SceneInputs]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_scenes = max_scenes

    def scene(self, study_uid: str, dose_uid: str | None = None) -> LoadedScene:
        inputs = self.scene_inputs(study_uid, dose_uid)
        with self._lock:
            found = self._scenes.get(inputs.key)
            if found is not None:
                self._scenes.move_to_end(inputs.key)
                return found
        loaded = load_scene(self.archive, inputs)
        with self._lock:
            self._scenes[inputs.key] = loaded
            while len(self._scenes) > self._max_scenes:
                self._scenes.popitem(last=False)
        return loaded

    def scene_inputs(self, study_uid: str, dose_uid: str | None = None) -> SceneInputs:
        """The scene's inputs, looked up again only when the study's instances changed (one indexed query).

        Every slice of a scroll asks for its scene; the study's stamp (instance count, newest row, newest
        arrival) spares the oncology summary behind :func:`find_scene_inputs` until something is stored,
        replaced or removed.
        """
        stamp = read_study_stamp(self.archive, study_uid)
        key = (study_uid, dose_uid)
        with self._lock:
            known = self._inputs.get(key)
            if known is not None and known[0] == stamp:
                self._inputs.move_to_end(key)
                return known[1]
        inputs = find_scene_inputs(self.archive, study_uid, dose_uid)
        with self._lock:
            self._inputs[key] = (stamp, inputs)
            while len(self._inputs) > 8 * self._max_scenes:
                self._inputs.popitem(last=False)
        return inputs


def read_study_stamp(archive: Archive, study_uid: str) -> tuple:
    """(instances, highest row id, newest arrival) of the study: changes whenever its instances do."""
    with archive.index.reading() as session:
        row = session.execute(
            select(func.count(Instance.id), func.max(Instance.id), func.max(Instance.received_at))
            .join(Series, Instance.series_pk == Series.id).join(Study, Series.study_pk == Study.id)
            .where(Study.study_instance_uid == study_uid)).one()
    return tuple(row)
