"""The DICOM modules every phantom dataset shares, and value formatting helpers.

``build_base_dataset`` fills File Meta, SOP Common, Patient, Patient Study, General Study,
General Series, Frame of Reference and General Equipment, so each builder only adds the
modules of its own IOD.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from oncopacs.phantom.geometry import ImageGrid
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for

MANUFACTURER = "OncoPACS phantom"
MODEL_NAME = "Analytic phantom"
SOFTWARE_VERSION = "oncopacs-phantom 1"
INSTITUTION = "OncoPACS Phantom Clinic"
IMPLEMENTATION_CLASS_UID = uid_for("oncopacs", "phantom", "implementation")
IMPLEMENTATION_VERSION_NAME = "ONCOPACS_PH1"
PIXEL_DATA_TAG = Tag(0x7FE0, 0x0010)


def format_ds(value: float) -> str:
    """A Decimal String (≤ 16 chars) for ``value``; integral values print without a fraction."""
    value = float(value)
    if value == 0.0:
        return "0"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format_number_as_ds(value)


def format_ds_list(values: Iterable[float], decimals: int | None = None) -> list[str]:
    """Decimal Strings for ``values``, optionally rounded to ``decimals`` places first."""
    if decimals is None:
        return [format_ds(v) for v in values]
    return [format_ds(round(float(v), decimals) + 0.0) for v in values]


def compute_age(birth_date: str, on_date: str) -> str:
    """DICOM AS age (``NNNY``) of someone born on ``birth_date`` at ``on_date`` (both DA)."""
    by, bm, bd = int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8])
    y, m, d = int(on_date[:4]), int(on_date[4:6]), int(on_date[6:8])
    years = y - by - ((m, d) < (bm, bd))
    return f"{max(years, 0):03d}Y"


def build_reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """A sequence item with ReferencedSOPClassUID and ReferencedSOPInstanceUID."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def build_base_dataset(
    sop_class_uid: str,
    sop_instance_uid: str,
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    instance_number: int = 1,
) -> Dataset:
    """A dataset with file meta and the patient/study/series/FoR/equipment/SOP common modules."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid  # type: ignore[assignment]  # pydicom takes a str for UI
    meta.MediaStorageSOPInstanceUID = sop_instance_uid  # type: ignore[assignment]  # pydicom takes a str for UI
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = series.series_date
    ds.InstanceCreationTime = series.series_time
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    # General Study
    ds.StudyDate = study.study_date
    ds.SeriesDate = series.series_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = series.series_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.StationName = "PHANTOM01"
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = MODEL_NAME
    # Patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    # Patient Study
    ds.PatientAge = compute_age(patient.birth_date, study.study_date)
    ds.PatientSize = format_ds(patient.height_m)
    ds.PatientWeight = format_ds(patient.weight_kg)
    if study.admitting_diagnoses:
        ds.AdmittingDiagnosesDescription = study.admitting_diagnoses
    ds.SoftwareVersions = SOFTWARE_VERSION
    # General Study / Series / Frame of Reference
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    return ds


def format_position(values: Iterable[float]) -> list[str]:
    """Patient-coordinate Decimal Strings rounded to 1e-4 mm (positions, contour points)."""
    return format_ds_list(values, decimals=4)


def apply_image_plane(ds: Dataset, grid: ImageGrid, k: int) -> None:
    """Image Plane module for slice ``k`` of an axial ``grid`` (positions and spacings in mm)."""
    dx, dy, dz = grid.spacing_mm
    position = grid.slice_position_mm(k)
    ds.ImagePositionPatient = format_position(position)
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = format_ds_list((dy, dx))  # row spacing (y), column spacing (x)
    ds.SliceThickness = format_ds(dz)
    ds.SliceLocation = format_position([position[2]])[0]


def apply_pixel_data(ds: Dataset, pixels: np.ndarray | bytes, rows: int, columns: int, *, signed: bool) -> None:
    """Image Pixel module for 16-bit monochrome data (little-endian ``pixels``)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    data = pixels if isinstance(pixels, bytes) else pixels.astype("<i2" if signed else "<u2").tobytes()
    ds.add_new(PIXEL_DATA_TAG, "OW", data)
