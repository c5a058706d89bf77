"""A final report as a DICOM Encapsulated PDF (SOP Class 1.2.840.10008.5.1.4.1.1.104.1) in the patient's study.

Modules: Patient, General Study, Encapsulated Document Series, General Equipment, SC Equipment,
Encapsulated Document, SOP Common. The PDF is padded to even length with one 0x00;
EncapsulatedDocumentLength (0042,0015) keeps the original length so readers strip the pad.
"""

from __future__ import annotations

from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, EncapsulatedPDFStorage, ExplicitVRLittleEndian

from oncopacs import __version__
from oncopacs.uids import uid_for
from reporting.subject import ReportSubject

REPORT_SERIES_NUMBER = 900


def report_series_uid(study_uid: str, report_type: str) -> UID:
    """One series per report type in a study, holding every final version."""
    return uid_for(study_uid, "oncopacs-report-series", report_type)


def report_sop_instance_uid(study_uid: str, report_id: int, version: int, approved_at: datetime) -> UID:
    """The archived instance of one approved version (the approval time makes a retried approval distinct)."""
    return uid_for(study_uid, "oncopacs-report", str(report_id), str(version), approved_at.isoformat())


def build_encapsulated_pdf(pdf: bytes, subject: ReportSubject, *, report_type: str, title: str, report_id: int,
                           version: int, approved_at: datetime) -> Dataset:
    """The Encapsulated PDF dataset of an approved report version (patient/study attributes as archived)."""
    sop_uid = report_sop_instance_uid(subject.study_instance_uid, report_id, version, approved_at)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = subject.patient_name
    ds.PatientID = subject.patient_id
    if subject.issuer_of_patient_id:
        ds.IssuerOfPatientID = subject.issuer_of_patient_id
    ds.PatientBirthDate = subject.patient_birth_date
    ds.PatientSex = subject.patient_sex
    ds.StudyInstanceUID = subject.study_instance_uid
    ds.StudyDate = subject.study_date
    ds.StudyTime = subject.study_time
    ds.StudyID = subject.study_id
    ds.StudyDescription = subject.study_description
    ds.AccessionNumber = subject.accession_number
    ds.ReferringPhysicianName = subject.referring_physician_name
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = report_series_uid(subject.study_instance_uid, report_type)
    ds.SeriesNumber = REPORT_SERIES_NUMBER
    ds.SeriesDescription = f"OncoPACS {title}"[:64]
    ds.Manufacturer = "OncoPACS"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.InstanceNumber = version
    ds.ContentDate = approved_at.strftime("%Y%m%d")
    ds.ContentTime = approved_at.strftime("%H%M%S")
    ds.AcquisitionDateTime = approved_at.strftime("%Y%m%d%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.BurnedInAnnotation = "YES"  # the PDF names the patient
    ds.DocumentTitle = f"{title} v{version}"[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    return ds


def read_encapsulated_pdf(ds: Dataset) -> bytes:
    """The PDF bytes of an Encapsulated PDF dataset, without the padding byte."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None:
        return data[: int(length)]
    return data[:-1] if data.endswith(b"\x00") else data
