"""Load a study's PET-CT fusion from the archive: SUVbw on the CT grid, the CT, ROI statistics.

The study's first PET series (by series number) is read through the archive (every file checked
against its recorded SHA-256) and converted to SUVbw (g/mL) with :mod:`fusion.pet.suv`. When a CT
shares the PET's frame of reference, the SUV volume is resampled onto the CT grid (linear,
:func:`fusion.volume.resample_to`). ROI statistics (:mod:`fusion.pet.stats`) come from the RTSTRUCTs on
the PET's frame of reference (EXTERNAL ROIs skipped). A :class:`PetViewer` (one per app) keeps the
fused volumes of a few studies in an LRU keyed by the instances' SHA-256, as
:class:`oncopacs.viewer.scene.Viewer` keeps plan scenes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

from fusion.errors import VolumeError
from fusion.pet.errors import PetGeometryError, SuvTagError
from fusion.pet.stats import RoiStats, compute_structure_stats
from fusion.pet.suv import SuvImage, SuvType, read_suv_image
from fusion.volume import load_series, resample_to
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.oncology import summarize_study
from oncopacs.index.query import StoredInstance, find_instances, find_study_patient
from rt.errors import RTError
from rt.structures import read_structure_set


@dataclass(frozen=True)
class PetFusion:
    """A study's PET (SUVbw, g/mL) with, when present, the CT (HU) and the SUV resampled onto it.

    Arrays are (z, y, x); *_mm are the voxel-centre coordinates of the displayed grid (LPS, mm).
    """

    study_uid: str
    patient_id: str
    patient_name: str
    suv: SuvImage
    ct_hu: np.ndarray | None
    suv_display: np.ndarray  # on the CT grid when there is a CT, else the PET grid
    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    roi_stats: tuple[RoiStats, ...]
    notes: tuple[str, ...]

    @property
    def suv_max(self) -> float:
        return float(np.max(self.suv.values)) if self.suv.values.size else 0.0


@dataclass(frozen=True)
class FusionInputs:
    """The stored instances a study's fusion is made of (read from the index alone) and its cache key."""

    study_uid: str
    patient_id: str
    patient_name: str
    pet_series_number: str
    other_pet_series: int  # PET series of the study not shown
    pet: tuple[StoredInstance, ...] = field(repr=False)
    ct: tuple[StoredInstance, ...] = field(repr=False)  # empty: no CT on the PET's frame of reference
    structure_sets: tuple[tuple[str, tuple[StoredInstance, ...]], ...] = field(repr=False)  # (SOP UID, stored)
    key: tuple


def find_fusion_inputs(archive: Archive, study_uid: str) -> FusionInputs | str:
    """The PET, CT and RTSTRUCTs a fusion of the study shows, or a sentence saying why there is none."""
    with archive.index.reading() as session:
        try:
            summary = summarize_study(session, study_uid)
        except NotFoundError:
            return f"No study {study_uid} in the archive."
        patient = find_study_patient(session, study_uid)
        if patient is None:
            return f"No study {study_uid} in the archive."
        pets = sorted((s for s in summary.image_series if s.modality == "PT"),
                      key=lambda s: (_series_number(s.series_number), s.series_instance_uid))
        if not pets:
            return "This study holds no PET series."
        pet = pets[0]
        pet_stored = find_instances(session, {"SeriesInstanceUID": pet.series_instance_uid})
        ct_uid = next((p.ct_series_uid for p in summary.pet_ct_pairs
                       if p.pet_series_uid == pet.series_instance_uid), None)
        ct_stored = find_instances(session, {"SeriesInstanceUID": ct_uid}) if ct_uid else []
        rtstructs = [s.sop_instance_uid for s in summary.structure_sets
                     if s.frame_of_reference_uid == pet.frame_of_reference_uid]
        structure_sets = tuple((uid, tuple(find_instances(session, {"SOPInstanceUID": uid}))) for uid in rtstructs)
    key = (study_uid, tuple(sorted(s.sha256 for s in [*pet_stored, *ct_stored])), tuple(rtstructs))
    return FusionInputs(study_uid, patient.patient_id, patient.patient_name, pet.series_number, len(pets) - 1,
                        tuple(pet_stored), tuple(ct_stored), structure_sets, key)


def _read(archive: Archive, stored) -> list[Dataset]:
    return [archive.read_dataset(s.file_path, s.sha256) for s in stored]


def _axes(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (ox, oy, oz), (dx, dy, dz), (nx, ny, nz) = image.GetOrigin(), image.GetSpacing(), image.GetSize()
    return ox + dx * np.arange(nx), oy + dy * np.arange(ny), oz + dz * np.arange(nz)


def _suv_volume(suv: SuvImage) -> sitk.Image:
    image = sitk.GetImageFromArray(suv.values.astype(np.float32))
    image.SetOrigin(tuple(float(v) for v in suv.grid.origin_mm))
    image.SetSpacing(tuple(float(v) for v in suv.grid.spacing_mm))
    return image  # axial PET (fusion.pet.suv.read_pet_grid checks it): identity direction


def _roi_stats(archive: Archive, suv: SuvImage, inputs: FusionInputs) -> tuple[list[RoiStats], list[str]]:
    stats: list[RoiStats] = []
    notes: list[str] = []
    for sop_uid, stored in inputs.structure_sets:
        try:
            structure_set = read_structure_set(_read(archive, stored)[0])
        except (RTError, ValueError, KeyError, AttributeError) as exc:
            notes.append(f"RTSTRUCT {sop_uid} could not be read: {exc}")
            continue
        for roi in structure_set.rois:
            if roi.is_empty or roi.interpreted_type.upper() == "EXTERNAL":
                continue
            try:
                stats += compute_structure_stats(suv, structure_set, [roi.name])
            except (PetGeometryError, SuvTagError) as exc:
                notes.append(f"ROI {roi.name}: {exc}")
    return stats, notes


def build_fusion(archive: Archive, inputs: FusionInputs) -> PetFusion | str:
    """Read the inputs' files (SHA-256 checked) and fuse them, or a sentence saying why SUV cannot be shown."""
    notes = ([f"{inputs.other_pet_series} more PET series in this study; showing series {inputs.pet_series_number}."]
             if inputs.other_pet_series else [])
    try:
        suv = read_suv_image(_read(archive, inputs.pet), SuvType.BW)
    except (SuvTagError, PetGeometryError) as exc:
        return f"SUV cannot be computed from this PET: {exc}"
    stats, roi_notes = _roi_stats(archive, suv, inputs)
    notes += roi_notes
    pet_volume = _suv_volume(suv)
    ct_hu = None
    display, reference = suv.values, pet_volume
    if inputs.ct:
        try:
            ct = load_series(_read(archive, inputs.ct))
            display = sitk.GetArrayFromImage(resample_to(pet_volume, ct, default=0.0))
            ct_hu, reference = sitk.GetArrayFromImage(ct), ct
        except VolumeError as exc:
            notes.append(f"The CT could not be used ({exc}); PET shown alone.")
    else:
        notes.append("No CT shares the PET's frame of reference: PET shown alone.")
    x_mm, y_mm, z_mm = _axes(reference)
    return PetFusion(inputs.study_uid, inputs.patient_id, inputs.patient_name, suv, ct_hu, display, x_mm, y_mm, z_mm,
                     tuple(stats), tuple(notes))


def load_fusion(archive: Archive, study_uid: str) -> PetFusion | str:
    """The study's fused PET-CT, or a sentence saying why there is none (uncached; :meth:`PetViewer.fusion` caches)."""
    inputs = find_fusion_inputs(archive, study_uid)
    return inputs if isinstance(inputs, str) else build_fusion(archive, inputs)


class PetViewer:
    """Fused PET-CT volumes of one app: an LRU of at most ``max_fusions`` studies, keyed by the files' SHA-256."""

    def __init__(self, archive: Archive, max_fusions: int = 4) -> None:
        self.archive = archive
        self._fusions: OrderedDict[tuple, PetFusion] = OrderedDict()
        self._lock = threading.Lock()
        self._max_fusions = max_fusions

    def fusion(self, study_uid: str) -> PetFusion | str:
        """The study's fused PET-CT (cached), or a sentence saying why there is none (never cached)."""
        inputs = find_fusion_inputs(self.archive, study_uid)
        if isinstance(inputs, str):
            return inputs
        with self._lock:
            found = self._fusions.get(inputs.key)
            if found is not None:
                self._fusions.move_to_end(inputs.key)
                return found
        fusion = build_fusion(self.archive, inputs)
        if isinstance(fusion, str):
            return fusion
        with self._lock:
            self._fusions[inputs.key] = fusion
            while len(self._fusions) > self._max_fusions:
                self._fusions.popitem(last=False)
        return fusion


def _series_number(text: str) -> int:
    """A stored SeriesNumber as an integer for sorting; 0 unless plain ASCII digits (``²`` is a digit to Python)."""
    return int(text) if text.isascii() and text.isdigit() else 0
