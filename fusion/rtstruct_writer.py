"""Binary masks → planar contours → a new RT Structure Set referencing an image series.

Contours are traced along the voxel edges of each slice of a mask (a "staircase" outline), so
rasterising them again on the same grid with the even-odd rule of :mod:`rt.structures` gives
back exactly the mask: an outline and the outline of a hole are separate CLOSED_PLANAR
polygons on the same plane. Coordinates are patient LPS, mm; any image orientation works
(each contour lies in its slice plane).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from rt.derived import copy_patient_study

#: The (retired but universally used) Detached Study Management SOP Class for RTReferencedStudySequence.
_DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
#: ROIDisplayColor cycle for ROIs written without a colour.
_DEFAULT_COLOURS = ((255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 200, 0), (200, 0, 200), (0, 200, 200))


@dataclass(frozen=True, slots=True)
class RoiContours:
    """One ROI to write: name, CLOSED_PLANAR polygons ((N, 3) LPS mm arrays), RTROIInterpretedType, colour."""

    name: str
    polygons_mm: tuple[npt.NDArray[np.float64], ...] = field(repr=False)
    interpreted_type: str = "ORGAN"
    colour: tuple[int, int, int] | None = None


def _trace_loops(mask2d: npt.NDArray[np.bool_]) -> list[npt.NDArray[np.float64]]:
    """Closed outlines (corner coordinates (i, j), pixel (j, i) spanning [i, i+1] x [j, j+1]) of a 2D mask."""
    inside = np.pad(np.asarray(mask2d, dtype=bool), 1)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(starts_i: npt.NDArray[np.intp], starts_j: npt.NDArray[np.intp], di: int, dj: int) -> None:
        for i, j in zip(starts_i.tolist(), starts_j.tolist(), strict=True):
            edges.setdefault((i, j), []).append((i + di, j + dj))

    core = inside[1:-1, 1:-1]
    j, i = np.nonzero(core & ~inside[:-2, 1:-1])  # neighbour at j - 1 outside: bottom edge, +i
    add(i, j, 1, 0)
    j, i = np.nonzero(core & ~inside[1:-1, 2:])  # neighbour at i + 1 outside: right edge, +j
    add(i + 1, j, 0, 1)
    j, i = np.nonzero(core & ~inside[2:, 1:-1])  # neighbour at j + 1 outside: top edge, -i
    add(i + 1, j + 1, -1, 0)
    j, i = np.nonzero(core & ~inside[1:-1, :-2])  # neighbour at i - 1 outside: left edge, -j
    add(i, j + 1, 0, -1)

    loops = []
    while edges:
        start = next(iter(edges))
        loop = [start]
        current = start
        while True:
            targets = edges[current]
            nxt = targets.pop()
            if not targets:
                del edges[current]
            if nxt == start:
                break
            loop.append(nxt)
            current = nxt
        loops.append(_drop_collinear(np.asarray(loop, dtype=np.float64)))
    return loops


def _drop_collinear(loop: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The loop without vertices that lie on a straight run (staircase outlines have many)."""
    before = loop - np.roll(loop, 1, axis=0)
    after = np.roll(loop, -1, axis=0) - loop
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    kept: npt.NDArray[np.float64] = loop[cross != 0]
    return kept


def compute_mask_polygons(mask: sitk.Image) -> tuple[npt.NDArray[np.float64], ...]:
    """CLOSED_PLANAR polygons ((N, 3) LPS mm) outlining the non-zero voxels of ``mask``, slice by slice.

    Vertices lie on the voxel corners of each slice, in that slice's plane (the slice centre).
    """
    array = sitk.GetArrayViewFromImage(mask) != 0  # (k, j, i)
    origin = np.asarray(mask.GetOrigin(), dtype=np.float64)
    spacing = np.asarray(mask.GetSpacing(), dtype=np.float64)
    direction = np.asarray(mask.GetDirection(), dtype=np.float64).reshape(3, 3)
    polygons = []
    for k in np.nonzero(array.reshape(array.shape[0], -1).any(axis=1))[0]:
        for loop in _trace_loops(array[k]):
            index = np.column_stack([loop[:, 0] - 0.5, loop[:, 1] - 0.5, np.full(len(loop), float(k))])
            polygons.append(origin + (index * spacing) @ direction.T)
    return tuple(polygons)


def _normal_of(ds: Dataset) -> npt.NDArray[np.float64]:
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    return np.cross(orientation[:3], orientation[3:])


def _slice_lookup(slices: Sequence[Dataset]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """(normal, positions along it, tolerance) of the reference slices, mm."""
    normal = _normal_of(slices[0])
    positions = np.asarray([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for ds in slices])
    gaps = np.diff(np.sort(positions))
    gaps = gaps[gaps > 1e-6]
    tolerance = float(gaps.min()) / 4.0 if gaps.size else 1e-2
    return normal, positions, tolerance


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _format_points(points_mm: npt.NDArray[np.float64]) -> list[str]:
    return [f"{round(float(v), 4) + 0.0:.10g}" for v in points_mm.ravel()]


def build_rtstruct(reference_slices: Sequence[Dataset], rois: Sequence[RoiContours], *, label: str = "Propagated",
                   description: str = "", series_description: str = "Propagated contours",
                   entropy: Sequence[str] = ()) -> Dataset:
    """A new RT Structure Set with ``rois``, on the frame of reference and study of ``reference_slices``.

    ``reference_slices`` are the image datasets the contours belong to (pixel data not needed):
    every contour whose plane matches a slice references that slice in its ContourImageSequence,
    and ReferencedFrameOfReferenceSequence lists them all. The SOP Instance and Series UIDs
    derive from the slices, the ROIs and ``entropy``, so the same inputs give the same UIDs.
    """
    if not reference_slices:
        raise ValueError("an RT Structure Set needs the image slices it refers to")
    first = reference_slices[0]
    normal, positions, tolerance = _slice_lookup(reference_slices)
    seed = [str(first.get("SeriesInstanceUID", "")), *(r.name for r in rois),
            *(str(sum(len(p) for p in r.polygons_mm)) for r in rois), *entropy]

    ds = copy_patient_study(first, Dataset(), also=("FrameOfReferenceUID",))
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*seed, "instance"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*seed, "series"])
    ds.Modality = "RTSTRUCT"
    ds.SeriesNumber = 901
    ds.InstanceNumber = 1
    ds.SeriesDescription = series_description
    ds.Manufacturer = "OncoPACS"
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDescription = description
    ds.StructureSetDate = str(first.get("StudyDate", "") or "")
    ds.StructureSetTime = str(first.get("StudyTime", "") or "")
    for_uid = str(first.get("FrameOfReferenceUID", ""))

    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = DicomSequence([_reference(s.SOPClassUID, s.SOPInstanceUID)
                                                      for s in reference_slices])
    study_item = _reference(_DETACHED_STUDY_MANAGEMENT, str(first.get("StudyInstanceUID", "")))
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = for_uid
    for_item.RTReferencedStudySequence = DicomSequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_item])

    roi_items, contour_items, observations = [], [], []
    for number, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = for_uid
        item.ROIName = roi.name[:64]
        item.ROIGenerationAlgorithm = "AUTOMATIC"
        roi_items.append(item)
        contours: list[Dataset] = []
        for polygon in roi.polygons_mm:
            contour = Dataset()
            nearest = int(np.argmin(np.abs(positions - float(np.dot(normal, polygon[0])))))
            if abs(positions[nearest] - float(np.dot(normal, polygon[0]))) <= tolerance:
                target = reference_slices[nearest]
                contour.ContourImageSequence = DicomSequence([_reference(target.SOPClassUID, target.SOPInstanceUID)])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(polygon)
            contour.ContourNumber = len(contours) + 1
            contour.ContourData = _format_points(polygon)
            contours.append(contour)
        contour_item = Dataset()
        contour_item.ROIDisplayColor = list(roi.colour or _DEFAULT_COLOURS[(number - 1) % len(_DEFAULT_COLOURS)])
        contour_item.ContourSequence = DicomSequence(contours)
        contour_item.ReferencedROINumber = number
        contour_items.append(contour_item)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.ROIObservationLabel = roi.name[:16]
        observation.RTROIInterpretedType = roi.interpreted_type
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(RTStructureSetStorage)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
