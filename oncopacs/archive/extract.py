"""Reading a received object: parse and validate it, and pull out what the index records.

Nothing here writes; :mod:`oncopacs.archive.ingest` decides what to do with the result.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID

from oncopacs.archive.decoding import current_collector, decoding, describe_tag
from oncopacs.errors import DicomInputError
from oncopacs.index.models import Level, Relation
from oncopacs.uids import is_valid_uid

UNDEFINED_LENGTH = 0xFFFFFFFF

#: Attributes that must be present and non-empty in everything the archive accepts.
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: The VRs a required text element may arrive with: its own, UN (PS3.5 6.2.2), or for Patient ID any string VR.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR",
                       "UT", "UN"})


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

    Raises :class:`DicomInputError` naming the problem when the bytes are not DICOM or are truncated;
    its message names elements, never their values. pydicom's reports are counted in the active
    :func:`~oncopacs.archive.decoding.decoding` block (one is opened when none is).
    """
    if data[128:132] != b"DICM" and data[:2] not in (b"\x02\x00", b"\x08\x00"):
        raise DicomInputError("Dataset", "is not DICOM (no DICM prefix and no dataset header)")
    with decoding(current_collector()):
        try:
            dataset = dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
        except Exception as exc:  # noqa: BLE001 - pydicom raises a variety on corrupt input; its text may quote values
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
    last = dataset.get_item(tags[-1], keep_deferred=True)
    if not isinstance(last, RawDataElement):
        return
    sop_uid = uid_or_none(_text_getter(dataset)("SOPInstanceUID"))
    # A tag the dictionary does not know may be bytes of a value read out of step (a name, an ID): it is not
    # named, nor is the length read after it.
    known = keyword_for_tag(last.tag) != ""
    label = describe_tag(last.tag) if known else "Dataset"
    if last.length == UNDEFINED_LENGTH:
        if data[-8:] not in _SEQUENCE_DELIMITERS:
            problem = "is truncated (no sequence delimiter)" if known else "is truncated (an undelimited last element)"
            raise DicomInputError(label, problem, sop_uid)
        return
    received = 0 if last.value is None else len(last.value)
    if received < last.length:
        problem = (f"is truncated ({received} of {last.length} bytes)" if known else
                   f"is truncated or out of step (its last element, of a tag the dictionary does not know, "
                   f"runs past the end; {received} bytes follow its header)")
        raise DicomInputError(label, problem, sop_uid)


_TRANSFER_SYNTAX = Tag("TransferSyntaxUID")

#: Image geometry the index records and the frame and rendering routes rely on, with its largest value.
_COUNTS = {"Rows": 0xFFFF, "Columns": 0xFFFF, "NumberOfFrames": 2**31 - 1}


#: The problem reported for a Patient ID that is present but empty (or only padding).
EMPTY_PATIENT_ID = "(0010,0020) is empty (set ONCOPACS_ACCEPT_EMPTY_PATIENT_ID=true to accept such objects)"


def validate(dataset: Dataset, *, accept_empty_patient_id: bool = False) -> None:
    """Check the UIDs, Patient ID, image geometry and file meta the archive relies on.

    A Patient ID that is present but empty passes only with ``accept_empty_patient_id``; an absent one never.
    Problems are reported by element keyword and tag; values never appear in the message (it is logged).
    """
    text = _text_getter(dataset)
    sop_uid = uid_or_none(text("SOPInstanceUID"))
    for keyword in _REQUIRED_UIDS:
        value = _required_text(dataset, keyword, sop_uid)
        if not is_valid_uid(value):
            raise DicomInputError(keyword, f"malformed {_tag_of(keyword)}: not a valid UID", sop_uid)
    if not _required_text(dataset, "PatientID", sop_uid, allow_empty=True) and not accept_empty_patient_id:
        raise DicomInputError("PatientID", EMPTY_PATIENT_ID, sop_uid)
    for keyword, largest in _COUNTS.items():
        try:
            _read_count(dataset, keyword, largest)
        except _BadValue as exc:
            raise DicomInputError(keyword, f"malformed {_tag_of(keyword)}: {exc}", sop_uid) from None
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        meta_text = _text_getter(meta)
        for meta_keyword, keyword in (
            ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
            ("MediaStorageSOPClassUID", "SOPClassUID"),
        ):
            meta_value = meta_text(meta_keyword)
            if meta_value and meta_value != text(keyword):
                raise DicomInputError(meta_keyword, f"does not match {keyword}", sop_uid)
        if meta.get_item(_TRANSFER_SYNTAX, keep_deferred=True) is not None:
            _required_text(meta, "TransferSyntaxUID", sop_uid)
        syntax = meta_text("TransferSyntaxUID")
        if syntax and not is_valid_uid(syntax):
            raise DicomInputError("TransferSyntaxUID", f"malformed {_tag_of('TransferSyntaxUID')}", sop_uid)


def _tag_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return str(Tag(tag)) if tag is not None else ""


def uid_or_none(text: str) -> str | None:
    """``text`` when it is a valid UID (safe to log and to echo: never patient data), else None."""
    return text if text and is_valid_uid(text) else None


def _required_text(dataset: Dataset, keyword: str, sop_uid: str | None, *, allow_empty: bool = False) -> str:
    """The text of an element the archive cannot do without; DicomInputError when absent, empty (unless
    ``allow_empty``: then ""), encoded with a VR other than its own (or UN), or undecodable."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    element = dataset.get_item(tag, keep_deferred=True)
    if element is None:
        raise DicomInputError(keyword, "missing", sop_uid)
    expected = dictionary_VR(tag)
    allowed = _TEXT_VRS if keyword == "PatientID" else {expected, "UN"}
    if element.VR is not None and element.VR not in allowed:
        raise DicomInputError(keyword, f"malformed {Tag(tag)}: VR {_printable(element.VR)}, expected {expected}",
                              sop_uid)
    try:
        value = _decoded_text(dataset, tag)
    except _BadValue as exc:
        raise DicomInputError(keyword, f"malformed {Tag(tag)}: {exc}", sop_uid) from None
    if not value and not allow_empty:
        raise DicomInputError(keyword, "missing", sop_uid)
    return value


def _printable(vr: object) -> str:
    text = str(vr)
    return text if text.isascii() and text.isprintable() else repr(text)


class _BadValue(Exception):
    """An element's bytes do not give a usable value (the message says why, without the value)."""


def _decoded(dataset: Dataset, tag: int) -> object:
    """The value of an element, decoded by pydicom with its reports attributed to the element."""
    collector = current_collector()
    raw = dataset.get_item(tag, keep_deferred=True)
    try:
        if collector is None:
            return dataset[tag].value
        with collector.element(describe_tag(tag)):
            return dataset[tag].value
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on damaged values; their text quotes them
        encoding = f"VR {_printable(raw.VR)}, " if raw is not None and raw.VR else ""
        length = getattr(raw, "length", None)
        size = f"{length} bytes, " if isinstance(length, int) else ""
        raise _BadValue(f"cannot be decoded ({encoding}{size}{type(exc).__name__})") from None


def _decoded_text(dataset: Dataset, tag: int) -> str:
    """A header string: plain ASCII straight from the raw bytes, anything else through pydicom.

    pydicom's conversion validates every value (~15 us each); ingest reads ~30 per instance.
    Values with other characters go through pydicom so the Specific Character Set applies.
    """
    element = dataset.get_item(tag, keep_deferred=True)
    if element is None:
        return ""
    if isinstance(element, RawDataElement):
        raw = element.value
        if raw is None:
            return ""
        if raw.isascii():
            return raw.decode("ascii").strip(" \x00")
    value = _decoded(dataset, tag) if isinstance(element, RawDataElement) else element.value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        raise _BadValue("is binary where text is expected")
    return str(value).strip().replace("\x00", "")


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
    """The references; pydicom's reports on invalid values are counted, and a damaged reference is skipped."""
    collector = current_collector()
    with decoding(collector) as active, active.element("references"):
        try:
            return tuple(dict.fromkeys(read_references(dataset)))
        except Exception:  # noqa: BLE001 - a damaged optional sequence must not block storage
            return ()


def _text_getter(dataset: Dataset):
    """A reader of optional header strings (:func:`_decoded_text`): empty when absent or undecodable."""

    def text(keyword: str) -> str:
        tag = tag_for_keyword(keyword)
        if tag is None:
            return ""
        try:
            return _decoded_text(dataset, tag)
        except _BadValue:  # a malformed optional value must not block storage
            return ""

    return text


def _read_count(dataset: Dataset, keyword: str, largest: int) -> int | None:
    """An unsigned integer element (Rows, NumberOfFrames): None when absent or empty; _BadValue when it
    holds several values, a negative, fractional or too large number, or no number at all."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    if dataset.get_item(tag, keep_deferred=True) is None:
        return None
    value = _decoded(dataset, tag)
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list):
        raise _BadValue(f"{len(value)} values where one is expected")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise _BadValue("not a number") from None
    if not 0 <= number <= largest or number != int(number):
        raise _BadValue(f"not an integer from 0 to {largest}")
    return int(number)


def _int_or_none(dataset: Dataset, keyword: str) -> int | None:
    try:
        return _read_count(dataset, keyword, 2**31 - 1)
    except _BadValue:
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
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed optional sequence must not block storage
        return []
    return [item for item in value if isinstance(item, Dataset)] if isinstance(value, Sequence) else []


def _uid(item: Dataset, keyword: str) -> str:
    try:
        value = str(item.get(keyword, "") or "").strip()
    except Exception:  # noqa: BLE001 - a malformed optional reference is skipped
        return ""
    return value if is_valid_uid(value) else ""


def transfer_syntax_of(dataset: Dataset) -> str:
    """The transfer syntax the dataset was encoded in."""
    meta = getattr(dataset, "file_meta", None)
    syntax = _text_getter(meta)("TransferSyntaxUID") if meta is not None else ""
    if syntax:
        return syntax
    implicit = dataset.original_encoding[0] if dataset.original_encoding else True
    return str(UID("1.2.840.10008.1.2") if implicit else UID("1.2.840.10008.1.2.1"))
