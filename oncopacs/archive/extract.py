"""Reading a received object: parse and validate it, and pull out what the index records.

Nothing here writes; :mod:`oncopacs.archive.ingest` decides what to do with the result.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom import Dataset, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from oncopacs.errors import DicomInputError
from oncopacs.index.models import Level, Relation
from oncopacs.uids import is_valid_uid

UNDEFINED_LENGTH = 0xFFFFFFFF

#: Attributes that must be present and non-empty in everything the archive accepts.
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@dataclass(frozen=True, slots=True)
class Reference:
    """One link from a stored object to another UID."""

    relation: Relation
    level: Level
    uid: str


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Everything the index stores about one instance, taken from its header."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    series_instance_uid: str
    modality: str
    series_number: str
    series_description: str
    series_date: str
    series_time: str
    body_part_examined: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: str
    content_date: str
    content_time: str
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    frame_of_reference_uid: str
    references: tuple[Reference, ...] = field(default=())
    # PET only (read for Modality PT, else left empty): how many instances the series will have, and its kind
    number_of_slices: int | None = None
    series_type: str = ""  # SeriesType value 1: STATIC, DYNAMIC, GATED or WHOLE BODY


def parse_dataset(data: bytes) -> Dataset:
    """Parse a DICOM file (Part 10, or a bare dataset) and check that no element is cut short.

    Raises :class:`DicomInputError` naming the problem when the bytes are not DICOM or are truncated.
    """
    if data[128:132] != b"DICM" and data[:2] not in (b"\x02\x00", b"\x08\x00"):
        raise DicomInputError("Dataset", "is not DICOM (no DICM prefix and no dataset header)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on many harmless real-world deviations
            dataset = dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise DicomInputError("Dataset", f"cannot be parsed ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises a variety on corrupt input
        raise DicomInputError("Dataset", f"cannot be parsed ({type(exc).__name__})") from None
    _check_not_truncated(dataset, data)
    return dataset


_SEQUENCE_DELIMITERS = (b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\xdd\x00\x00\x00\x00")


def _check_not_truncated(dataset: Dataset, data: bytes) -> None:
    """Only the last element can be cut short: a defined length must be all there, and an
    undefined length (encapsulated pixel data, a sequence) must end with its delimiter."""
    tags = list(dataset.keys())
    if not tags:
        raise DicomInputError("Dataset", "is empty or not DICOM")
    last = dataset.get_item(tags[-1])
    if not isinstance(last, RawDataElement):
        return
    if last.length == UNDEFINED_LENGTH:
        if data[-8:] not in _SEQUENCE_DELIMITERS:
            raise DicomInputError(
                str(last.tag), "is truncated (no sequence delimiter)", sop_instance_uid=dataset.get("SOPInstanceUID")
            )
        return
    received = 0 if last.value is None else len(last.value)
    if received < last.length:
        raise DicomInputError(
            str(last.tag),
            f"is truncated ({received} of {last.length} bytes)",
            sop_instance_uid=dataset.get("SOPInstanceUID"),
        )


def validate(dataset: Dataset) -> None:
    """Check the UIDs, Patient ID and file meta the archive relies on."""
    text = _text_getter(dataset)
    sop_uid = text("SOPInstanceUID")
    for keyword in _REQUIRED_UIDS:
        value = text(keyword)
        if not value:
            raise DicomInputError(keyword, "missing", sop_instance_uid=sop_uid)
        if not is_valid_uid(value):
            raise DicomInputError(keyword, f"malformed ({value[:70]!r})", sop_instance_uid=sop_uid)
    if not text("PatientID"):
        raise DicomInputError("PatientID", "missing", sop_instance_uid=sop_uid)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        meta_text = _text_getter(meta)
        for meta_keyword, keyword in (
            ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
            ("MediaStorageSOPClassUID", "SOPClassUID"),
        ):
            meta_value = meta_text(meta_keyword)
            if meta_value and meta_value != text(keyword):
                raise DicomInputError(meta_keyword, f"does not match {keyword}", sop_instance_uid=sop_uid)
        syntax = meta_text("TransferSyntaxUID")
        if syntax and not is_valid_uid(syntax):
            raise DicomInputError("TransferSyntaxUID", "malformed", sop_instance_uid=sop_uid)


def read_identity(dataset: Dataset) -> tuple[str, str]:
    """``(SOPClassUID, SOPInstanceUID)`` as stored."""
    text = _text_getter(dataset)
    return text("SOPClassUID"), text("SOPInstanceUID")


def build_record(dataset: Dataset, transfer_syntax_uid: str) -> InstanceRecord:
    """The index record of a validated dataset."""
    text = _text_getter(dataset)
    pet = text("Modality") == "PT"
    return InstanceRecord(
        patient_id=text("PatientID"),
        issuer_of_patient_id=text("IssuerOfPatientID"),
        patient_name=text("PatientName"),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"),
        study_instance_uid=text("StudyInstanceUID"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        accession_number=text("AccessionNumber"),
        study_id=text("StudyID"),
        study_description=text("StudyDescription"),
        referring_physician_name=text("ReferringPhysicianName"),
        series_instance_uid=text("SeriesInstanceUID"),
        modality=text("Modality"),
        series_number=text("SeriesNumber"),
        series_description=text("SeriesDescription"),
        series_date=text("SeriesDate"),
        series_time=text("SeriesTime"),
        body_part_examined=text("BodyPartExamined"),
        sop_instance_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        transfer_syntax_uid=transfer_syntax_uid,
        instance_number=text("InstanceNumber"),
        content_date=text("ContentDate"),
        content_time=text("ContentTime"),
        rows=_int_or_none(dataset, "Rows"),
        columns=_int_or_none(dataset, "Columns"),
        number_of_frames=_int_or_none(dataset, "NumberOfFrames"),
        frame_of_reference_uid=text("FrameOfReferenceUID"),
        references=_read_references_quietly(dataset),
        number_of_slices=_int_or_none(dataset, "NumberOfSlices") if pet else None,
        series_type=text("SeriesType").split("\\")[0].strip().upper() if pet else "",
    )


def _read_references_quietly(dataset: Dataset) -> tuple[Reference, ...]:
    """The references, without pydicom's warnings about invalid values (an invalid UID is simply skipped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(dict.fromkeys(read_references(dataset)))


def _text_getter(dataset: Dataset):
    """A reader of header strings that decodes plain ASCII values straight from the raw bytes.

    pydicom's conversion validates every value (~15 us each); ingest reads ~30 per instance.
    Values with other characters go through pydicom so the Specific Character Set applies.
    """

    def text(keyword: str) -> str:
        tag = tag_for_keyword(keyword)
        try:
            element = dataset.get_item(tag) if tag is not None else None
            if element is None:
                return ""
            if isinstance(element, RawDataElement):
                raw = element.value
                if raw is None:
                    return ""
                if raw.isascii():
                    return raw.decode("ascii").strip(" \x00")
                element = dataset[tag]
            value = element.value
        except Exception:  # noqa: BLE001 - a malformed optional value must not block storage
            return ""
        if value is None:
            return ""
        return str(value).strip().replace("\x00", "")

    return text


def _int_or_none(dataset: Dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def read_references(dataset: Dataset) -> Iterator[Reference]:
    """The links from an RT, registration, SEG or SR object to the objects it depends on."""
    for frame_ref in _items(dataset, "ReferencedFrameOfReferenceSequence"):
        if uid := _uid(frame_ref, "FrameOfReferenceUID"):
            yield Reference(Relation.FRAME_OF_REFERENCE, Level.FRAME_OF_REFERENCE, uid)
        for study in _items(frame_ref, "RTReferencedStudySequence"):
            for series in _items(study, "RTReferencedSeriesSequence"):
                if uid := _uid(series, "SeriesInstanceUID"):
                    yield Reference(Relation.IMAGE_SERIES, Level.SERIES, uid)
    for item in _items(dataset, "ReferencedStructureSetSequence"):
        if uid := _uid(item, "ReferencedSOPInstanceUID"):
            yield Reference(Relation.STRUCTURE_SET, Level.INSTANCE, uid)
    for item in _items(dataset, "ReferencedRTPlanSequence"):
        if uid := _uid(item, "ReferencedSOPInstanceUID"):
            yield Reference(Relation.PLAN, Level.INSTANCE, uid)
    for item in _items(dataset, "ReferencedDoseSequence"):
        if uid := _uid(item, "ReferencedSOPInstanceUID"):
            yield Reference(Relation.DOSE, Level.INSTANCE, uid)
    yield from _registration_references(dataset)
    for item in _items(dataset, "ReferencedSeriesSequence"):  # SEG, SR, registrations
        relation = Relation.REGISTERED_SERIES if _is_registration(dataset) else Relation.IMAGE_SERIES
        if uid := _uid(item, "SeriesInstanceUID"):
            yield Reference(relation, Level.SERIES, uid)
    for study in _items(dataset, "StudiesContainingOtherReferencedInstancesSequence"):
        for item in _items(study, "ReferencedSeriesSequence"):
            relation = Relation.REGISTERED_SERIES if _is_registration(dataset) else Relation.IMAGE_SERIES
            if uid := _uid(item, "SeriesInstanceUID"):
                yield Reference(relation, Level.SERIES, uid)
    for study in _items(dataset, "CurrentRequestedProcedureEvidenceSequence"):  # SR evidence
        for item in _items(study, "ReferencedSeriesSequence"):
            if uid := _uid(item, "SeriesInstanceUID"):
                yield Reference(Relation.IMAGE_SERIES, Level.SERIES, uid)


def _registration_references(dataset: Dataset) -> Iterator[Reference]:
    for item in _items(dataset, "RegistrationSequence"):
        if uid := _uid(item, "FrameOfReferenceUID"):
            yield Reference(Relation.FRAME_OF_REFERENCE, Level.FRAME_OF_REFERENCE, uid)
    for item in _items(dataset, "DeformableRegistrationSequence"):
        if uid := _uid(item, "SourceFrameOfReferenceUID"):
            yield Reference(Relation.FRAME_OF_REFERENCE, Level.FRAME_OF_REFERENCE, uid)


def _is_registration(dataset: Dataset) -> bool:
    return str(dataset.get("Modality", "")) == "REG"


def _items(dataset: Dataset, keyword: str) -> list[Dataset]:
    try:
        return list(dataset.get(keyword) or [])
    except Exception:  # noqa: BLE001 - a malformed optional sequence must not block storage
        return []


def _uid(item: Dataset, keyword: str) -> str:
    value = str(item.get(keyword, "") or "").strip()
    return value if is_valid_uid(value) else ""


def transfer_syntax_of(dataset: Dataset) -> str:
    """The transfer syntax the dataset was encoded in."""
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return str(meta.TransferSyntaxUID)
    implicit = dataset.original_encoding[0] if dataset.original_encoding else True
    return str(UID("1.2.840.10008.1.2") if implicit else UID("1.2.840.10008.1.2.1"))
