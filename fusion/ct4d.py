"""4D CT: respiratory phases, MIP/AIP/MinIP, GTV propagation to every phase, ITV and tumour motion.

Phase recognition, per image slice, first attribute found wins:

1. NominalPercentageOfRespiratoryPhase (0020,9245), percent of the breathing cycle;
2. TemporalPositionIndex (0020,9128), then TemporalPositionIdentifier (0020,0100), 1-based, as
   100 (index - 1) / n with n = NumberOfTemporalPositions (0020,0105) or the number of positions seen;
3. a percentage in SeriesDescription ("4D CT 50%", "T=50 %", "Gated 50.0%").

Slices without any are ignored (e.g. an average CT stored beside the phases). Coordinates are
LPS, mm: LR is x, AP is y, SI is z; amplitudes are peak-to-peak over the phases; volumes cc.

The GTV, drawn on one phase, is found on the others by one of :data:`METHODS`: "track" (the default)
follows the GTV's own neighbourhood (:mod:`fusion.target_tracking`), so static anatomy beside the
tumour (chest wall, ribs, spine) and a diaphragm moving otherwise do not hold it back; "rigid" and
"deformable" register a box around the GTV (:data:`REGISTRATIONS`), which that anatomy can dominate.
The GTV is rasterised at a quarter of the in-plane voxel pitch and resampled straight onto each phase.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from fusion.errors import FusionError
from fusion.propagation import (
    INSIDE_THRESHOLD,
    compute_mask_volume_cc,
    compute_roi_occupancy,
)
from fusion.registration import register_deformable, register_rigid
from fusion.target_tracking import TargetMatch, TrackingSettings, track_target
from fusion.volume import load_series, resample_to
from rt.derived import FRAME_OF_REFERENCE_KEYWORDS, copy_patient_study
from rt.structures import ROI, StructureSet, read_structure_set

log = logging.getLogger(__name__)

#: A registration: (fixed, moving) -> transform mapping fixed physical points to moving physical points.
Register = Callable[[sitk.Image, sitk.Image], sitk.Transform]

_PERCENT_IN_TEXT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
#: Sources of the phase, in order of precedence.
PHASE_SOURCES = ("NominalPercentageOfRespiratoryPhase", "TemporalPositionIndex", "TemporalPositionIdentifier",
                 "SeriesDescription")
#: Margin (mm) around the GTV of the region each phase is registered on; for "track", the search window
#: (mm, per axis) around the neighbouring phase's GTV position.
DEFAULT_MARGIN_MM = 25.0
#: The GTV is rasterised at the in-plane voxel pitch divided by this before it is resampled onto a phase,
#: so that "inside" (occupancy >= 0.5 at a voxel centre) is the voxel's true fraction, not a blur of it.
GTV_SUPERSAMPLING = 4
#: Below this NCC the tracked GTV is reported as a weak match on that phase (logged, and in to_dict()).
WEAK_MATCH_NCC = 0.5


class Ct4dError(FusionError):
    """A 4D CT whose phases cannot be recognised, or a GTV that cannot be followed through them."""


@dataclass(frozen=True, slots=True)
class Phase:
    """One respiratory phase: percent of the cycle, the attribute it was read from, its image slices."""

    percent: float
    source: str
    series_instance_uid: str
    datasets: tuple[Dataset, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Projections:
    """Voxel-wise maximum (MIP), mean (AIP) and minimum (MinIP) over the phases, on the first phase's grid."""

    mip: sitk.Image
    aip: sitk.Image
    minip: sitk.Image


@dataclass(frozen=True, slots=True)
class MotionReport:
    """Tumour centroid per phase (mm), peak-to-peak amplitude per axis (mm), ITV and GTV volumes (cc)."""

    phase_percent: tuple[float, ...]
    centroids_mm: tuple[tuple[float, float, float], ...]
    amplitude_lr_mm: float
    amplitude_ap_mm: float
    amplitude_si_mm: float
    gtv_cc: tuple[float, ...]
    itv_cc: float

    @property
    def amplitude_mm(self) -> dict[str, float]:
        return {"LR": self.amplitude_lr_mm, "AP": self.amplitude_ap_mm, "SI": self.amplitude_si_mm}

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": len(self.phase_percent),
            "phase_percent": list(self.phase_percent),
            "amplitude_mm": {k: round(v, 3) for k, v in self.amplitude_mm.items()},
            "itv_cc": round(self.itv_cc, 3),
            "gtv_cc": [round(v, 3) for v in self.gtv_cc],
            "centroids_mm": [[round(c, 3) for c in centroid] for centroid in self.centroids_mm],
        }


def _temporal_count(datasets: Sequence[Dataset], keyword: str) -> int:
    declared = {int(ds.NumberOfTemporalPositions) for ds in datasets if ds.get("NumberOfTemporalPositions")}
    if len(declared) == 1:
        return declared.pop()
    return len({int(ds.get(keyword)) for ds in datasets if ds.get(keyword) is not None})


def read_phase_label(ds: Dataset) -> tuple[str, float] | None:
    """(source attribute, raw value) of a slice's phase label, by precedence (module docstring); None if none."""
    for keyword in PHASE_SOURCES[:3]:
        value = ds.get(keyword)
        if value is not None and value != "":
            return keyword, float(value)
    match = _PERCENT_IN_TEXT.search(str(ds.get("SeriesDescription", "") or ""))
    if match and float(match.group(1)) <= 100.0:
        return "SeriesDescription", float(match.group(1))
    return None


def group_phases(datasets: Sequence[Dataset]) -> tuple[Phase, ...]:
    """The respiratory phases among ``datasets`` (image slices; other objects are ignored), by percent.

    Raises :class:`Ct4dError` when fewer than two phases are found.
    """
    images = [ds for ds in datasets if "PixelData" in ds and "ImagePositionPatient" in ds]
    labelled = [(ds, read_phase_label(ds)) for ds in images]
    temporal = {kw: [ds for ds, lab in labelled if lab and lab[0] == kw] for kw in PHASE_SOURCES[1:3]}
    counts = {kw: _temporal_count(group, kw) for kw, group in temporal.items() if group}
    groups: dict[float, list[Dataset]] = {}
    sources: dict[float, str] = {}
    ignored = 0
    for ds, label in labelled:
        if label is None:
            ignored += 1
            continue
        source, value = label
        percent = 100.0 * (value - 1.0) / counts[source] if source in counts else value
        key = round(percent, 3)
        groups.setdefault(key, []).append(ds)
        sources.setdefault(key, source)
    if ignored:
        log.info("4D CT: %d image slice(s) without a phase label ignored", ignored)
    if len(groups) < 2:
        raise Ct4dError(f"found {len(groups)} respiratory phase(s); a 4D CT needs at least two "
                        "(NominalPercentageOfRespiratoryPhase, TemporalPositionIndex or a '50%' series description)")
    phases = []
    for percent in sorted(groups):
        slices = groups[percent]
        series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in slices})
        phases.append(Phase(percent, sources[percent], series[0], tuple(slices)))
    return tuple(phases)


def load_phase_images(phases: Sequence[Phase]) -> tuple[sitk.Image, ...]:
    """One volume per phase, every phase resampled (linear) onto the first phase's grid when grids differ."""
    images = [load_series(list(phase.datasets)) for phase in phases]
    reference = images[0]
    same = [image.GetSize() == reference.GetSize() and np.allclose(image.GetOrigin(), reference.GetOrigin())
            and np.allclose(image.GetSpacing(), reference.GetSpacing())
            and np.allclose(image.GetDirection(), reference.GetDirection()) for image in images]
    return tuple(image if ok else resample_to(image, reference, default=-1000.0)
                 for image, ok in zip(images, same, strict=True))


def compute_projections(images: Sequence[sitk.Image]) -> Projections:
    """MIP, AIP and MinIP (float32) of phase volumes sharing one grid."""
    if not images:
        raise Ct4dError("no phase images")
    stack = np.stack([sitk.GetArrayViewFromImage(image) for image in images]).astype(np.float32, copy=False)

    def as_image(values: npt.NDArray[np.floating[Any]]) -> sitk.Image:
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.CopyInformation(images[0])
        return image

    return Projections(as_image(stack.max(axis=0)), as_image(stack.mean(axis=0)), as_image(stack.min(axis=0)))


#: ImageType value 4 and series description per projection.
_PROJECTIONS = {"MIP": "Maximum intensity projection", "AIP": "Average intensity projection",
                "MINIP": "Minimum intensity projection"}


def build_derived_series(image: sitk.Image, template: Dataset, kind: str, *, series_number: int) -> list[Dataset]:
    """CT slices (int16 HU, ImageType DERIVED\\SECONDARY\\AXIAL\\``kind``) of a projection volume.

    ``kind`` is MIP, AIP or MINIP; patient, study and frame of reference come from ``template``
    (a phase slice). UIDs derive from the template's series and ``kind``.
    """
    if kind not in _PROJECTIONS:
        raise ValueError(f"kind must be one of {sorted(_PROJECTIONS)}, not {kind!r}")
    values = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), -32768, 32767).astype("<i2")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    dx, dy, dz = image.GetSpacing()
    seed = [str(template.get("SeriesInstanceUID", "")), str(template.get("FrameOfReferenceUID", "")), kind]
    series_uid = generate_uid(entropy_srcs=[*seed, "series"])
    slices = []
    for k in range(values.shape[0]):
        ds = copy_patient_study(template, Dataset(), also=(*FRAME_OF_REFERENCE_KEYWORDS, "PatientPosition"))
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[*seed, "slice", str(k)])
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = _PROJECTIONS[kind]
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL", kind]
        ds.DerivationDescription = f"{_PROJECTIONS[kind]} over the respiratory phases of a 4D CT"
        ds.Manufacturer = "OncoPACS"
        position = origin + direction[:, 2] * dz * k
        ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
        ds.SliceThickness = f"{dz:.6g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = values.shape[1], values.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = values[k].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        slices.append(ds)
    return slices


def _crop_box(image: sitk.Image, lo_mm: npt.NDArray[np.float64],
              hi_mm: npt.NDArray[np.float64]) -> tuple[list[int], list[int]]:
    """(index, size) of the region of ``image`` holding the box [lo, hi] (mm), clipped to the image."""
    corners = np.array([[x, y, z] for x in (lo_mm[0], hi_mm[0]) for y in (lo_mm[1], hi_mm[1])
                        for z in (lo_mm[2], hi_mm[2])])
    indices = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in c)) for c in corners])
    size = np.array(image.GetSize())
    start = np.clip(np.floor(indices.min(axis=0)).astype(int), 0, size - 1)
    stop = np.clip(np.ceil(indices.max(axis=0)).astype(int), 0, size - 1)
    return start.tolist(), (stop - start + 1).tolist()


def compute_gtv_occupancy(gtv: ROI, reference: sitk.Image) -> sitk.Image:
    """The GTV's fractional occupancy (float32, 0..1) on a fine grid around it (in-plane pitch of ``reference``
    divided by :data:`GTV_SUPERSAMPLING`, at most 1024 voxels across); :class:`Ct4dError` when it misses
    ``reference``."""
    if gtv.is_empty:
        raise Ct4dError(f"GTV {gtv.name!r} has no closed planar contour")
    spacing = reference.GetSpacing()
    lo, hi = gtv.compute_bounds_mm()
    pitch = max(min(spacing[0], spacing[1]) / GTV_SUPERSAMPLING, float(max(hi[:2] - lo[:2])) / 1024.0)
    occupancy = compute_roi_occupancy(gtv, pitch)
    on_reference = sitk.Resample(occupancy, reference, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                                 sitk.sitkFloat32)
    if not np.any(sitk.GetArrayViewFromImage(on_reference) >= INSIDE_THRESHOLD):
        raise Ct4dError(f"GTV {gtv.name!r} lies outside the reference phase")
    return occupancy


def propagate_gtv(gtv: ROI, images: Sequence[sitk.Image], reference_index: int, register: Register | None, *,
                  margin_mm: float = DEFAULT_MARGIN_MM) -> tuple[sitk.Image, ...]:
    """The GTV's occupancy (float32, 0..1) on every phase, drawn on phase ``reference_index``.

    Each other phase is registered (fixed = that phase, moving = the reference phase) on the
    region around the GTV widened by ``margin_mm`` (which must exceed the tumour's motion), and
    the GTV's occupancy is resampled through the result. ``register`` is the registration to
    use; None raises :class:`Ct4dError` (no deformable registration available).
    """
    if not 0 <= reference_index < len(images):
        raise ValueError(f"reference_index {reference_index} outside 0..{len(images) - 1}")
    reference = images[reference_index]
    occupancy = compute_gtv_occupancy(gtv, reference)
    if len(images) > 1 and register is None:
        raise Ct4dError("propagating the GTV to the phases needs a deformable registration, and none is available")
    lo, hi = gtv.compute_bounds_mm()
    index, size = _crop_box(reference, lo - margin_mm, hi + margin_mm)
    moving = sitk.RegionOfInterest(reference, size, index)
    results = []
    for p, image in enumerate(images):
        transform = sitk.Transform(3, sitk.sitkIdentity)
        if p != reference_index:
            assert register is not None  # more than one phase: checked above
            transform = register(sitk.RegionOfInterest(image, size, index), moving)
            log.info("4D CT: GTV propagated to phase %d of %d", p + 1, len(images))
        results.append(sitk.Resample(occupancy, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    return tuple(results)


@dataclass(frozen=True, slots=True)
class GtvTrack:
    """The GTV followed through the phases: its occupancy on each (float32, 0..1), the match found there
    (:class:`fusion.target_tracking.TargetMatch`) and its centroid (x, y, z mm, the reference one moved by
    the match's shift)."""

    occupancies: tuple[sitk.Image, ...] = field(repr=False)
    matches: tuple[TargetMatch, ...]
    centroids_mm: tuple[tuple[float, float, float], ...]


def track_gtv(gtv: ROI, images: Sequence[sitk.Image], reference_index: int, *,
              settings: TrackingSettings | None = None) -> GtvTrack:
    """The GTV, drawn on phase ``reference_index``, found on every phase by tracking its neighbourhood
    (:func:`fusion.target_tracking.track_target`) and moved there (a translation per phase)."""
    if not 0 <= reference_index < len(images):
        raise ValueError(f"reference_index {reference_index} outside 0..{len(images) - 1}")
    reference = images[reference_index]
    occupancy = compute_gtv_occupancy(gtv, reference)
    target = sitk.Resample(occupancy, reference, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                           sitk.sitkFloat32) >= INSIDE_THRESHOLD
    matches = track_target(images, reference_index, target, settings)
    centroid = np.array(compute_centroid_mm(occupancy))
    occupancies, centroids = [], []
    for p, (image, match) in enumerate(zip(images, matches, strict=True)):
        back = sitk.TranslationTransform(3, tuple(-v for v in match.shift_mm))  # phase point -> reference point
        occupancies.append(sitk.Resample(occupancy, image, back, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        x, y, z = (float(v) for v in centroid + np.array(match.shift_mm))
        centroids.append((x, y, z))
        if match.ncc < WEAK_MATCH_NCC:
            log.warning("4D CT: weak match of the GTV's neighbourhood on phase %d of %d (NCC %.2f)", p + 1,
                        len(images), match.ncc)
    return GtvTrack(tuple(occupancies), matches, tuple(centroids))


def compute_centroid_mm(occupancy: sitk.Image) -> tuple[float, float, float]:
    """Occupancy-weighted centroid (x, y, z) of an image, mm (LPS)."""
    weights = sitk.GetArrayViewFromImage(occupancy).astype(np.float64)
    total = weights.sum()
    if total <= 0:
        raise Ct4dError("empty GTV: no centroid")
    k, j, i = (np.tensordot(weights.sum(axis=tuple(a for a in range(3) if a != axis)), np.arange(n), axes=1) / total
               for axis, n in enumerate(weights.shape))
    x, y, z = occupancy.TransformContinuousIndexToPhysicalPoint((i, j, k))
    return float(x), float(y), float(z)


def compute_itv(occupancies: Sequence[sitk.Image]) -> sitk.Image:
    """ITV: union (uint8 mask) of the GTVs (occupancy >= 0.5) of all phases, on the first one's grid."""
    union = np.zeros(sitk.GetArrayViewFromImage(occupancies[0]).shape, dtype=bool)
    for occupancy in occupancies:
        union |= sitk.GetArrayViewFromImage(occupancy) >= INSIDE_THRESHOLD
    mask = sitk.GetImageFromArray(union.astype(np.uint8))
    mask.CopyInformation(occupancies[0])
    return mask


def compute_motion(phase_percent: Sequence[float], occupancies: Sequence[sitk.Image],
                   centroids_mm: Sequence[tuple[float, float, float]] | None = None) -> MotionReport:
    """Centroid trajectory, peak-to-peak amplitude along x (LR), y (AP), z (SI) and the ITV volume.

    The centroids are those of the occupancies unless ``centroids_mm`` (one per phase) gives them.
    """
    if len(phase_percent) != len(occupancies) or not occupancies:
        raise ValueError("one occupancy image per phase is needed")
    if centroids_mm is not None and len(centroids_mm) != len(occupancies):
        raise ValueError("one centroid per phase is needed")
    centroids = tuple(centroids_mm) if centroids_mm is not None else tuple(compute_centroid_mm(o) for o in occupancies)
    span = np.ptp(np.array(centroids), axis=0)
    gtv_cc = tuple(compute_mask_volume_cc(o >= INSIDE_THRESHOLD) for o in occupancies)
    return MotionReport(tuple(float(p) for p in phase_percent), centroids, float(span[0]), float(span[1]),
                        float(span[2]), gtv_cc, compute_mask_volume_cc(compute_itv(occupancies)))


def find_reference_phase(phases: Sequence[Phase], rtstruct: Dataset) -> int:
    """Index of the phase a structure set was drawn on: by the slices its contours reference, else by series UID."""
    referenced: set[str] = set()
    series: set[str] = set()
    for for_item in rtstruct.get("ReferencedFrameOfReferenceSequence", []):
        for study in for_item.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                series.add(str(item.get("SeriesInstanceUID", "")))
                referenced.update(str(ref.ReferencedSOPInstanceUID) for ref in item.get("ContourImageSequence", []))
    for roi in rtstruct.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            referenced.update(str(ref.ReferencedSOPInstanceUID) for ref in contour.get("ContourImageSequence", []))
    for i, phase in enumerate(phases):
        if any(str(ds.SOPInstanceUID) in referenced for ds in phase.datasets):
            return i
    matches = [i for i, phase in enumerate(phases) if phase.series_instance_uid in series
               and len({p.series_instance_uid for p in phases}) == len(phases)]
    if len(matches) == 1:
        return matches[0]
    raise Ct4dError("cannot tell which phase the structure set was drawn on (it references none of the phase images)")


def _register_rigid(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    return register_rigid(fixed, moving).transform


def _register_deformable(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    return register_deformable(fixed, moving).transform


#: How each phase is matched to the reference phase around the GTV: a rigid registration of that
#: region (the tumour moves as a body) or a deformable one (:mod:`fusion.registration`).
REGISTRATIONS: dict[str, Register] = {"rigid": _register_rigid, "deformable": _register_deformable}
#: The ways of finding the GTV on each phase: tracking its neighbourhood (the default), or a registration.
METHODS = ("track", *REGISTRATIONS)


@dataclass(frozen=True, slots=True)
class Ct4dAnalysis:
    """Everything derived from one 4D CT: phases, volumes, projections, GTV per phase, ITV and motion."""

    phases: tuple[Phase, ...]
    images: tuple[sitk.Image, ...] = field(repr=False)
    reference_index: int
    gtv_name: str
    occupancies: tuple[sitk.Image, ...] = field(repr=False)
    itv: sitk.Image = field(repr=False)
    projections: Projections = field(repr=False)
    motion: MotionReport
    method: str = "track"
    matches: tuple[TargetMatch, ...] = ()  # "track" only: the GTV's shift and match quality per phase

    @property
    def weak_match_percents(self) -> tuple[float, ...]:
        """Phases (percent) where the tracked GTV's neighbourhood matched with NCC below :data:`WEAK_MATCH_NCC`."""
        return tuple(phase.percent for phase, match in zip(self.phases, self.matches, strict=False)
                     if match.ncc < WEAK_MATCH_NCC)

    def to_dict(self) -> dict[str, Any]:
        document = {**self.motion.to_dict(), "gtv": self.gtv_name, "method": self.method,
                    "reference_phase_percent": self.phases[self.reference_index].percent,
                    "phase_sources": sorted({p.source for p in self.phases})}
        if self.matches:
            document["match_ncc"] = [round(m.ncc, 3) for m in self.matches]
            document["weak_match_phase_percent"] = list(self.weak_match_percents)
        return document


def select_gtv(structure_set: StructureSet, name: str | None) -> ROI:
    """The ROI called ``name``, else the only ROI of type GTV (or named GTV...)."""
    if name:
        return structure_set.roi(name)
    candidates = [r for r in structure_set.rois if not r.is_empty and r.interpreted_type.upper() == "GTV"]
    candidates = candidates or [r for r in structure_set.rois if not r.is_empty and r.name.upper().startswith("GTV")]
    if len(candidates) != 1:
        raise Ct4dError(f"{len(candidates)} GTV candidates in the structure set "
                        f"({', '.join(structure_set.roi_names)}); name the GTV")
    return candidates[0]


def analyse_4dct(datasets: Sequence[Dataset], *, gtv_name: str | None = None, method: str = "track",
                 margin_mm: float = DEFAULT_MARGIN_MM) -> Ct4dAnalysis:
    """Phases, MIP/AIP/MinIP, the GTV on every phase, ITV and motion of a 4D CT and its GTV structure set.

    ``datasets``: the phase slices and one RT Structure Set holding the GTV, drawn on one phase.
    ``method``: one of :data:`METHODS`. ``margin_mm``: see :data:`DEFAULT_MARGIN_MM`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, not {method!r}")
    structure_sets = [ds for ds in datasets if str(ds.get("Modality", "")) == "RTSTRUCT"]
    if len(structure_sets) != 1:
        raise Ct4dError(f"expected one RT Structure Set with the GTV beside the phases, found {len(structure_sets)}")
    phases = group_phases(datasets)
    reference_index = find_reference_phase(phases, structure_sets[0])
    gtv = select_gtv(read_structure_set(structure_sets[0]), gtv_name)
    images = load_phase_images(phases)
    percents = [p.percent for p in phases]
    matches: tuple[TargetMatch, ...] = ()
    if method == "track":
        track = track_gtv(gtv, images, reference_index, settings=TrackingSettings(search_mm=margin_mm))
        occupancies, matches = track.occupancies, track.matches
        motion = compute_motion(percents, occupancies, track.centroids_mm)
    else:
        occupancies = propagate_gtv(gtv, images, reference_index, REGISTRATIONS[method], margin_mm=margin_mm)
        motion = compute_motion(percents, occupancies)
    return Ct4dAnalysis(phases, images, reference_index, gtv.name, occupancies, compute_itv(occupancies),
                        compute_projections(images), motion, method, matches)
