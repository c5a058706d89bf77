"""The PS3.15 Basic Application Level Confidentiality Profile as a pure per-dataset transform.

The profile's action table is applied by rule rather than tag by tag, and errs on the side of removal:

- private attributes, overlays, curves, digital signatures, original/request attribute sequences and
  attributes of unknown VR are removed;
- person names are emptied (the patient's becomes the pseudonym), Patient ID becomes the pseudonym;
- UIDs that identify instances (study, series, SOP instance, frame of reference, and every reference to
  them) are replaced through one map; class, transfer syntax and coding scheme UIDs are kept;
- dates: shifted by the patient's offset (Retain Longitudinal Temporal Information with Modified
  Dates) or emptied; times are kept only with that option;
- text (LO, SH, LT, ST, UT, UC, UR, AE) is emptied unless it is a technical attribute RT analysis needs
  (:data:`TECHNICAL_TEXT`) or, with Clean Descriptors, a descriptor (:data:`DESCRIPTORS`); whatever is kept
  is cleaned of the patient's names, identifiers and birth date, wherever they occur;
- sex, age, size and weight stay only with Retain Patient Characteristics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from oncopacs.errors import OncopacsError

#: The de-identification method written into every exported object (DeidentificationMethod, LO).
METHOD_TEXT = "OncoPACS PS3.15 Basic Profile"

#: Text attributes kept (cleaned) because RT analysis and image display need them.
TECHNICAL_TEXT = frozenset({
    "ROIName", "ROIObservationLabel", "CodeValue", "CodeMeaning", "CodingSchemeDesignator",
    "CodingSchemeVersion", "LongCodeValue", "URNCodeValue", "Manufacturer", "ManufacturerModelName",
    "SoftwareVersions", "ConvolutionKernel", "RescaleType", "FrameOfReferenceTransformationComment",
    "BeamName", "RadiationType", "TreatmentMachineName", "RangeShifterID", "SnoutID", "LateralSpreadingDeviceID",
    "RangeModulatorID", "BlockName", "FixationDeviceLabel", "DoseReferenceDescription", "ScanSpotTuneID",
    "ToleranceTableLabel", "PatientSupportID", "MaterialID", "Radiopharmaceutical", "CorrectedImage", "Units",
    "DecayCorrection", "ReconstructionMethod", "SeriesType", "DoseUnits", "DoseType", "DoseSummationType",
    "ContentLabel", "PrimaryDosimeterUnit", "ApplicationSetupName",
})

#: Free-text descriptors kept (cleaned) with the Clean Descriptors option, else emptied.
DESCRIPTORS = frozenset({
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "DerivationDescription",
    "StructureSetName", "StructureSetDescription", "ROIDescription", "RTPlanName", "RTPlanDescription",
    "BeamDescription", "PerformedProcedureStepDescription", "RequestedProcedureDescription",
    "AcquisitionDeviceProcessingDescription", "BodyPartExamined", "PrescriptionDescription",
    "TreatmentSite", "AdmittingDiagnosesDescription", "RTPlanLabel", "StructureSetLabel", "DoseComment",
    "ContentDescription", "FractionGroupDescription", "FrameOfReferenceTransformationComment",
})

#: Attributes whose values identify the patient: removed, and their values cleaned out of every kept text.
IDENTIFIERS = frozenset({
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID", "PatientBirthDate",
    "MedicalRecordLocator", "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank", "RegionOfResidence",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "PerformedProcedureStepID", "RequestedProcedureID", "ScheduledProcedureStepID", "AdmissionID",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
})

#: Removed whole, nested content included.
REMOVED_SEQUENCES = frozenset({
    "OriginalAttributesSequence", "RequestAttributesSequence", "DigitalSignaturesSequence", "MACParametersSequence",
    "OtherPatientIDsSequence", "ReferencedPatientSequence", "ReferencedPatientPhotoSequence",
    "ReferringPhysicianIdentificationSequence", "PerformingPhysicianIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence", "OperatorIdentificationSequence", "EncryptedAttributesSequence",
    "ContributingEquipmentSequence", "ReferencedPerformedProcedureStepSequence", "ReferencedStudySequence",
    "ReferencedVisitSequence", "PatientInsurancePlanCodeSequence", "ConsultingPhysicianIdentificationSequence",
})

PATIENT_CHARACTERISTICS = frozenset({"PatientSex", "PatientAge", "PatientSize", "PatientWeight",
                                     "EthnicGroup", "SmokingStatus", "PregnancyStatus", "PatientSexNeutered"})

_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "UR", "AE", "PN"})
_KEPT_UID_KEYWORDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
                                "ImplementationClassUID", "MappingResourceUID", "PrivateInformationCreatorUID"})
_MIN_TOKEN_CHARS = 3
_SUBSTRING_TOKEN_CHARS = 5


class DeidentificationError(OncopacsError):
    """An object cannot be de-identified safely (burned-in annotation, missing identity)."""


@dataclass(frozen=True, slots=True)
class DeidOptions:
    """Which PS3.15 options apply (each adds its code to DeidentificationMethodCodeSequence)."""

    retain_longitudinal_dates: bool = True  # shift dates by the patient's offset instead of emptying them
    retain_patient_characteristics: bool = True  # keep sex, age, size, weight
    clean_descriptors: bool = True  # keep descriptors, cleaned; False: empty them
    allow_burned_in_annotation: bool = False  # export images flagged BurnedInAnnotation YES anyway


@dataclass(frozen=True, slots=True)
class PatientKeys:
    """What replaces one patient's identity: pseudonym (ID and name) and date shift in days."""

    pseudonym: str
    date_offset_days: int


def iter_instance_uids(ds: Dataset) -> Iterator[str]:
    """Every UID value in ``ds`` (nested sequences included) that :func:`deidentify` replaces."""
    for elem in _walk(ds):
        if elem.VR == "UI" and not _keeps_uid(elem):
            yield from (str(v) for v in _values(elem) if v)


def skip_reason(ds: Dataset) -> str:
    """Why ``ds`` is left out of a de-identified export ('' when it is exported): encapsulated documents
    (PDF reports, CDA) carry identity in bytes this profile cannot clean."""
    return "encapsulated document" if "EncapsulatedDocument" in ds else ""


def check_burned_in_annotation(ds: Dataset, options: DeidOptions) -> None:
    """DeidentificationError when ``ds`` declares burned-in annotation and the options do not allow it."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not options.allow_burned_in_annotation:
        raise DeidentificationError(
            f"instance {ds.get('SOPInstanceUID', '?')} has burned-in annotation (BurnedInAnnotation YES): "
            "its pixels may show identity; refused (use --allow-burned-in to export it anyway)")


def identity_tokens(ds: Dataset) -> frozenset[str]:
    """The patient's names (whole and by component), identifiers and dates as text, found anywhere in ``ds``."""
    tokens: set[str] = set()
    for elem in _walk(ds):
        keyword = elem.keyword or ""
        if elem.VR == "PN" or keyword in IDENTIFIERS or keyword == "PatientBirthName":
            for value in _values(elem):
                text = str(value).strip()
                tokens.add(text)
                tokens.update(re.split(r"[\^=\s,]+", text))
                if keyword == "PatientBirthDate" and len(text) == 8:
                    tokens.update({f"{text[:4]}-{text[4:6]}-{text[6:]}", f"{text[6:]}.{text[4:6]}.{text[:4]}",
                                   f"{text[4:6]}/{text[6:]}/{text[:4]}"})
    return frozenset(t for t in tokens if len(t) >= _MIN_TOKEN_CHARS)


def clean_text(text: str, tokens: frozenset[str]) -> str:
    """``text`` with every token removed (case-insensitive), longest first.

    Tokens shorter than :data:`_SUBSTRING_TOKEN_CHARS` go only where they stand as a word ("Ann" leaves
    "Planning" alone); longer ones go wherever they occur ("DoeJane_plan" loses "Jane" only when it is long).
    """
    for token in sorted(tokens, key=len, reverse=True):
        pattern = re.escape(token)
        if len(token) < _SUBSTRING_TOKEN_CHARS:
            pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
        text = re.sub(pattern, "", text, flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", text).strip()


def shift_date(value: str, offset_days: int) -> str:
    """A DA value (YYYYMMDD) moved by ``offset_days``; '' when it is not a valid date."""
    try:
        moved = date(int(value[:4]), int(value[4:6]), int(value[6:8])) + timedelta(days=offset_days)
    except (ValueError, IndexError):
        return ""
    return moved.strftime("%Y%m%d") if len(value.strip()) == 8 else ""


def deidentify(ds: Dataset, options: DeidOptions, patient: PatientKeys, uid_map: Mapping[str, str]) -> Dataset:
    """A de-identified copy of ``ds``; ``uid_map`` must hold every value :func:`iter_instance_uids` yields.

    The input is not changed. The copy has no file meta; DeidentificationError for burned-in annotation.
    """
    check_burned_in_annotation(ds, options)
    tokens = identity_tokens(ds)
    out = _transform(ds, options, patient, uid_map, tokens)
    out.PatientID = patient.pseudonym
    out.PatientName = patient.pseudonym
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD_TEXT
    out.DeidentificationMethodCodeSequence = Sequence([_code(c) for c in _method_codes(options)])
    if options.retain_longitudinal_dates:
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    return out


def _method_codes(options: DeidOptions) -> list:
    chosen = [codes.DCM.BasicApplicationConfidentialityProfile]
    if options.retain_longitudinal_dates:
        chosen.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)
    if options.retain_patient_characteristics:
        chosen.append(codes.DCM.RetainPatientCharacteristicsOption)
    if options.clean_descriptors:
        chosen.append(codes.DCM.CleanDescriptorsOption)
    return chosen


def _code(concept) -> Dataset:
    item = Dataset()
    item.CodeValue = concept.value
    item.CodingSchemeDesignator = concept.scheme_designator
    item.CodeMeaning = concept.meaning
    return item


def _transform(ds: Dataset, options: DeidOptions, patient: PatientKeys, uid_map: Mapping[str, str],
               tokens: frozenset[str]) -> Dataset:
    out = Dataset()
    for elem in ds:
        kept = _transform_element(elem, options, patient, uid_map, tokens)
        if kept is not None:
            out.add(kept)
    return out


def _transform_element(elem: DataElement, options: DeidOptions, patient: PatientKeys, uid_map: Mapping[str, str],
                       tokens: frozenset[str]) -> DataElement | None:
    keyword, vr, group = elem.keyword or "", elem.VR, elem.tag.group
    if (elem.tag.is_private or vr == "UN" or not keyword or keyword in REMOVED_SEQUENCES
            or 0x5000 <= group <= 0x60FF):
        return None
    if keyword in PATIENT_CHARACTERISTICS:
        return elem if options.retain_patient_characteristics else None
    if vr == "SQ":
        items = [_transform(item, options, patient, uid_map, tokens) for item in elem.value]
        return DataElement(elem.tag, vr, Sequence(items))
    if vr == "UI":
        if _keeps_uid(elem):
            return elem
        return DataElement(elem.tag, vr, _mapped(elem, uid_map))
    if vr in ("DA", "DT", "TM"):
        return DataElement(elem.tag, vr, _dated(elem, options, patient.date_offset_days))
    if keyword in IDENTIFIERS or vr == "PN":
        return DataElement(elem.tag, vr, "")
    if vr in _TEXT_VRS or vr == "CS":
        keep = vr == "CS" or keyword in TECHNICAL_TEXT or (options.clean_descriptors and keyword in DESCRIPTORS)
        if not keep:
            return DataElement(elem.tag, vr, "")
        values = [clean_text(str(v), tokens) for v in _values(elem)]
        return DataElement(elem.tag, vr, values if elem.VM > 1 else (values[0] if values else ""))
    return elem


def _keeps_uid(elem: DataElement) -> bool:
    keyword = elem.keyword or ""
    return keyword.endswith("ClassUID") or keyword in _KEPT_UID_KEYWORDS or all(
        UID(str(v)).name != str(v) for v in _values(elem) if v)  # a standard UID (its name is known)


def _mapped(elem: DataElement, uid_map: Mapping[str, str]) -> str | list[str]:
    try:
        values = [uid_map[str(v)] if v else "" for v in _values(elem)]
    except KeyError:
        raise ValueError(f"{elem.keyword} holds a UID missing from the UID map") from None
    return values if elem.VM > 1 else (values[0] if values else "")


def _dated(elem: DataElement, options: DeidOptions, offset_days: int) -> str | list[str]:
    if not options.retain_longitudinal_dates or elem.keyword in ("PatientBirthDate", "PatientBirthTime"):
        return ""
    values = []
    for value in (str(v) for v in _values(elem)):
        if elem.VR == "TM":
            values.append(value)
        elif elem.VR == "DA":
            values.append(shift_date(value, offset_days))
        else:  # DT: the date part moves, time and offset stay
            moved = shift_date(value[:8], offset_days)
            values.append(moved + value[8:] if moved else "")
    return values if elem.VM > 1 else (values[0] if values else "")


def _values(elem: DataElement) -> list:
    if elem.value is None or elem.value == "":
        return []
    return list(elem.value) if elem.VM > 1 else [elem.value]


def _walk(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _walk(item)
        else:
            yield elem
