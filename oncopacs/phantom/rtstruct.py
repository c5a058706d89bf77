"""RT Structure Set (RTStructureSetStorage) of the phantom, contoured on the CT slice planes.

Every structure is cut by each CT slice plane it crosses; the circle is written as an
area-preserving CLOSED_PLANAR polygon (see :mod:`oncopacs.phantom.shapes`) in mm, with a
ContourImageSequence pointing at that CT slice.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RTStructureSetStorage

from oncopacs.phantom.anatomy import PhantomAnatomy, Structure
from oncopacs.phantom.common import build_base_dataset, build_reference, format_position
from oncopacs.phantom.shapes import compute_cross_section_polygons
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for

#: The (retired but universally used) Detached Study Management SOP Class for RTReferencedStudySequence.
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
CONTOUR_POINTS = 48


def _slice_z(ct: Dataset) -> float:
    return float(ct.ImagePositionPatient[2])


def build_referenced_frame_of_reference(ct_slices: Sequence[Dataset]) -> Dataset:
    """ReferencedFrameOfReferenceSequence item: FoR -> study -> series -> every CT slice."""
    first = ct_slices[0]
    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = DicomSequence(
        [build_reference(ct.SOPClassUID, ct.SOPInstanceUID) for ct in ct_slices]
    )
    study_item = build_reference(DETACHED_STUDY_MANAGEMENT, first.StudyInstanceUID)
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = first.FrameOfReferenceUID
    for_item.RTReferencedStudySequence = DicomSequence([study_item])
    return for_item


def build_roi_contour(structure: Structure, ct_slices: Sequence[Dataset]) -> Dataset:
    """ROIContourSequence item: one CLOSED_PLANAR polygon per CT plane the structure crosses."""
    contours: list[Dataset] = []
    for ct in ct_slices:
        z = _slice_z(ct)
        for points in compute_cross_section_polygons(structure.solid, z, CONTOUR_POINTS):  # a shell's hole too
            contour = Dataset()
            contour.ContourImageSequence = DicomSequence([build_reference(ct.SOPClassUID, ct.SOPInstanceUID)])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourNumber = len(contours) + 1
            points[:, 2] = z
            contour.ContourData = format_position(points.ravel())
            contours.append(contour)
    item = Dataset()
    item.ROIDisplayColor = list(structure.colour)
    item.ContourSequence = DicomSequence(contours)
    item.ReferencedROINumber = structure.roi_number
    return item


def build_rtstruct(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    anatomy: PhantomAnatomy,
    ct_slices: Sequence[Dataset],
) -> Dataset:
    """The structure set of ``anatomy`` on ``ct_slices`` (same study and FrameOfReferenceUID)."""
    if not ct_slices:
        raise ValueError("an RT structure set needs at least one CT slice")
    for_uid = ct_slices[0].FrameOfReferenceUID
    sop_uid = uid_for(series.series_instance_uid, "rtstruct")
    ds = build_base_dataset(RTStructureSetStorage, sop_uid, patient, study, series)
    ds.StructureSetLabel = "Phantom"
    ds.StructureSetName = "Analytic phantom"
    ds.StructureSetDescription = "BODY, PTV and organs at risk of the OncoPACS phantom"
    ds.StructureSetDate = series.series_date
    ds.StructureSetTime = series.series_time
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([build_referenced_frame_of_reference(ct_slices)])

    rois, observations = [], []
    for s in anatomy.structures:
        roi = Dataset()
        roi.ROINumber = s.roi_number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = s.name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        obs = Dataset()
        obs.ObservationNumber = s.roi_number
        obs.ReferencedROINumber = s.roi_number
        obs.ROIObservationLabel = s.name
        obs.RTROIInterpretedType = s.interpreted_type
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence([build_roi_contour(s, ct_slices) for s in anatomy.structures])
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewDate = series.series_date
    ds.ReviewTime = series.series_time
    ds.ReviewerName = "Physicist^Phantom"
    return ds
