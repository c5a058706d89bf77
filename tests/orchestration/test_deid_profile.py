"""The pure PS3.15 transform: dates, cleaning, UIDs, characteristics, what is refused or left out."""

from __future__ import annotations

import copy

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, EncapsulatedPDFStorage

from oncopacs.orchestration.deid_profile import (
    DeidentificationError,
    DeidOptions,
    PatientKeys,
    clean_text,
    deidentify,
    identity_tokens,
    iter_instance_uids,
    shift_date,
    skip_reason,
)

KEYS = PatientKeys("DEID-0000000001", -400)


def _ct() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "1.2.3.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.2", "1.2.3.3", "1.2.3.4"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane^M", "MRN-4711", "19700301"
    ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientBirthTime = "F", "054Y", "61.5", "0412"
    ds.StudyDate, ds.StudyTime, ds.AcquisitionDateTime = "20240229", "101500", "20240229101500.25+0100"
    ds.StudyDescription = "CT thorax Doe MRN-4711"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.OperatorsName = ["Tech^One", "Tech^Two"]
    ds.InstitutionName = "St Elsewhere"
    ds.Manufacturer = "Acme"
    ds.add_new(0x00291010, "LO", "private MRN-4711")
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, "1.2.3.9"
    ds.SourceImageSequence = [item]
    return ds


def _map(ds: Dataset) -> dict[str, str]:
    return {uid: f"2.25.{i}" for i, uid in enumerate(sorted(set(iter_instance_uids(ds))), start=1)}


def test_dates_move_by_the_offset_across_leap_days_and_invalid_dates_are_emptied():
    assert shift_date("20240229", -400) == "20230125"
    assert shift_date("20240301", 1) == "20240302"
    assert shift_date("2024", -1) == "" and shift_date("20241340", -1) == ""


def test_cleaning_removes_every_spelling_of_the_identity():
    original = _ct()
    tokens = identity_tokens(original)
    assert {"Doe", "Jane", "MRN-4711", "1970-03-01", "St Elsewhere", "Tech"} <= tokens
    assert clean_text("CT thorax doe mrn-4711 born 01.03.1970", tokens) == "CT thorax born"
    assert clean_text("Doerfler", tokens) == "Doerfler"  # a short name is removed only as a word
    assert clean_text("plan_MRN-4711x", tokens) == "plan_x"  # a long identifier wherever it stands


def test_deidentify_replaces_uids_shifts_dates_and_keeps_characteristics():
    original = _ct()
    before = copy.deepcopy(original)
    out = deidentify(original, DeidOptions(), KEYS, _map(original))
    assert original == before  # the input is not changed
    assert out.SOPClassUID == CTImageStorage and out.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert {out.SOPInstanceUID, out.StudyInstanceUID, out.SourceImageSequence[0].ReferencedSOPInstanceUID} <= set(
        _map(original).values())
    assert out.PatientID == out.PatientName == KEYS.pseudonym and out.PatientBirthDate == out.PatientBirthTime == ""
    assert (out.PatientSex, out.PatientAge, out.PatientWeight) == ("F", "054Y", 61.5)
    assert out.StudyDate == "20230125" and out.StudyTime == "101500"
    assert out.AcquisitionDateTime == "20230125101500.25+0100"
    assert out.StudyDescription == "CT thorax" and out.Manufacturer == "Acme"
    assert out.OperatorsName == "" and out.InstitutionName == ""
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert not any(elem.tag.is_private for elem in out)
    assert out.PatientIdentityRemoved == "YES" and out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_without_options_dates_times_characteristics_and_descriptors_go():
    original = _ct()
    options = DeidOptions(retain_longitudinal_dates=False, retain_patient_characteristics=False,
                          clean_descriptors=False)
    out = deidentify(original, options, KEYS, _map(original))
    assert out.StudyDate == out.StudyTime == out.AcquisitionDateTime == ""
    assert "PatientSex" not in out and "PatientAge" not in out and "PatientWeight" not in out
    assert out.StudyDescription == "" and "LongitudinalTemporalInformationModified" not in out
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == ["113100"]


def test_a_uid_missing_from_the_map_is_a_programming_error():
    original = _ct()
    partial = _map(original)
    partial.pop(original.FrameOfReferenceUID)
    with pytest.raises(ValueError, match="FrameOfReferenceUID"):
        deidentify(original, DeidOptions(), KEYS, partial)


def test_burned_in_annotation_is_refused_unless_allowed():
    original = _ct()
    original.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationError, match="burned-in annotation"):
        deidentify(original, DeidOptions(), KEYS, _map(original))
    out = deidentify(original, DeidOptions(allow_burned_in_annotation=True), KEYS, _map(original))
    assert out.BurnedInAnnotation == "YES"


def test_encapsulated_documents_are_left_out():
    report = _ct()
    report.SOPClassUID = EncapsulatedPDFStorage
    report.EncapsulatedDocument = b"%PDF-1.4 Doe"
    assert skip_reason(report) == "encapsulated document" and skip_reason(_ct()) == ""
