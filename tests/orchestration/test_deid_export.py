"""De-identified export of phantom patients: references resolve, one offset per patient, one UID map."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    RTIonPlanStorage,
    RTStructureSetStorage,
    generate_uid,
)

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.errors import NotFoundError, StorageError
from oncopacs.orchestration import DeidentificationError, DeidOptions, DirectorySink, export_deidentified
from tests.orchestration.conftest import (
    assert_references_resolve,
    ingest,
    patient_datasets,
    patient_offsets,
    read_export,
    small_patient,
    uid_map,
    walk_uids,
)


def _days(da: str) -> int:
    return date(int(da[:4]), int(da[4:6]), int(da[6:])).toordinal()


def _export(platform, studies, out: Path, options: DeidOptions | None = None):
    return export_deidentified(platform.archive, platform.audit, sorted(studies), DirectorySink(out), options,
                               actor="researcher", source="test-host")


@pytest.fixture
def two_patients(platform):
    """Two phantom patients (CT, RTSTRUCT, RT Ion Plan, RTDOSE, PET-CT, REG) in an archive on each index back-end."""
    datasets = [*patient_datasets(small_patient("DEID-SRC-001", "Alpha^Patient")),
                *patient_datasets(small_patient("DEID-SRC-002", "Beta^Patient"))]
    ingest(platform, datasets)
    return platform, datasets


def test_every_rt_reference_resolves_inside_the_export(two_patients, tmp_path: Path):
    platform, originals = two_patients
    summary = _export(platform, {ds.StudyInstanceUID for ds in originals}, tmp_path / "out")
    exported = read_export(tmp_path / "out")
    assert summary.instances == len(exported) == len(originals) and summary.studies == 4
    checked = assert_references_resolve(originals, exported, uid_map(platform))
    assert checked > 100  # contour images, frames of reference, plan, structure set, registered series
    by_class = {}
    for ds in exported:
        by_class.setdefault(ds.Modality, []).append(ds)
    sops = {str(ds.SOPInstanceUID) for ds in exported}
    for rtstruct in by_class["RTSTRUCT"]:
        referenced_for = rtstruct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        images = {str(i.ReferencedSOPInstanceUID) for roi in rtstruct.ROIContourSequence
                  for c in roi.ContourSequence for i in c.ContourImageSequence}
        assert images <= sops and referenced_for == rtstruct.FrameOfReferenceUID
        assert {ds.FrameOfReferenceUID for ds in by_class["CT"] if str(ds.SOPInstanceUID) in images} == {referenced_for}
    for plan in by_class["RTPLAN"]:
        structure_set = str(plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID)
        assert structure_set in {str(ds.SOPInstanceUID) for ds in by_class["RTSTRUCT"]}
        assert plan.SOPClassUID == RTIonPlanStorage
    for dose in by_class["RTDOSE"]:
        assert str(dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID) in sops
    series = {str(ds.SeriesInstanceUID) for ds in exported}
    for reg in by_class["REG"]:
        other_studies = reg.get("StudiesContainingOtherReferencedInstancesSequence", [])
        registered = {str(s.SeriesInstanceUID) for s in reg.ReferencedSeriesSequence} | {
            str(s.SeriesInstanceUID) for study in other_studies for s in study.ReferencedSeriesSequence}
        assert {str(study.StudyInstanceUID) for study in other_studies} <= {str(ds.StudyInstanceUID) for ds in exported}
        assert len(registered) == 2 and registered <= series
        frames = {str(item.FrameOfReferenceUID) for item in reg.RegistrationSequence}
        assert frames <= {str(ds.FrameOfReferenceUID) for ds in by_class["CT"]} and len(frames) == 2
    assert RTStructureSetStorage == by_class["RTSTRUCT"][0].file_meta.MediaStorageSOPClassUID


def test_no_original_uid_or_identity_reaches_the_export(two_patients, tmp_path: Path, caplog):
    platform, originals = two_patients
    caplog.set_level(logging.DEBUG)
    _export(platform, {ds.StudyInstanceUID for ds in originals}, tmp_path / "out")
    mapping = uid_map(platform)
    blob = b"".join(p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.dcm")))
    leaked = [uid for uid in mapping if uid.encode() in blob]
    assert not leaked, f"{len(leaked)} original UID(s) in the export"
    for secret in ("DEID-SRC-001", "DEID-SRC-002", "Alpha", "Beta", "19580312"):
        assert secret.encode() not in blob
        assert secret not in caplog.text
    for pseudonym, _offset in patient_offsets(platform).values():
        assert pseudonym.encode() in blob  # the pseudonym, not the patient, names the files' patient
    assert not any(path.name.startswith("DEID-SRC") for path in (tmp_path / "out").iterdir())


def test_dates_move_by_one_offset_per_patient_across_studies(two_patients, tmp_path: Path):
    platform, originals = two_patients
    _export(platform, {ds.StudyInstanceUID for ds in originals}, tmp_path / "out")
    inverse = {new: old for old, new in uid_map(platform).items()}
    by_sop = {str(ds.SOPInstanceUID): ds for ds in originals}
    offsets = patient_offsets(platform)
    shifts: dict[str, set[int]] = {}
    for ds in read_export(tmp_path / "out"):
        original = by_sop[inverse[str(ds.SOPInstanceUID)]]
        for keyword in ("StudyDate", "SeriesDate", "ContentDate", "StructureSetDate", "RTPlanDate"):
            if original.get(keyword):
                shift = _days(ds[keyword].value) - _days(original[keyword].value)
                shifts.setdefault(original.PatientID, set()).add(shift)
        assert ds.PatientID == ds.PatientName == offsets[original.PatientID][0]
        assert ds.PatientBirthDate == "" and ds.PatientSex == original.PatientSex  # characteristics retained
    assert shifts == {pid: {offsets[pid][1]} for pid in ("DEID-SRC-001", "DEID-SRC-002")}
    assert all(offset <= -365 for _, offset in offsets.values())
    assert len({pseudonym for pseudonym, _ in offsets.values()}) == 2


def test_a_second_export_reuses_pseudonym_offset_and_uids(two_patients, tmp_path: Path):
    platform, originals = two_patients
    plan_study = next(ds.StudyInstanceUID for ds in originals if ds.Modality == "RTPLAN")
    pet_study = next(ds.StudyInstanceUID for ds in originals if ds.Modality == "PT")
    _export(platform, {plan_study}, tmp_path / "first")
    first = {str(ds.SOPInstanceUID) for ds in read_export(tmp_path / "first")}
    before = uid_map(platform)
    _export(platform, {plan_study, pet_study}, tmp_path / "second")
    second = read_export(tmp_path / "second")
    assert first <= {str(ds.SOPInstanceUID) for ds in second}
    assert {k: v for k, v in uid_map(platform).items() if k in before} == before
    assert len({ds.PatientID for ds in second}) == 1


def test_codes_and_flags_name_the_profile_and_its_options(two_patients, tmp_path: Path):
    platform, originals = two_patients
    study = next(ds.StudyInstanceUID for ds in originals if ds.Modality == "RTPLAN")
    options = DeidOptions(retain_longitudinal_dates=False, retain_patient_characteristics=False,
                          clean_descriptors=False)
    _export(platform, {study}, tmp_path / "out", options)
    for ds in read_export(tmp_path / "out"):
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
        assert ds.StudyDate == "" and "PatientSex" not in ds and "PatientWeight" not in ds
        assert ds.get("SeriesDescription", "") == ""
    _export(platform, {study}, tmp_path / "full")
    codes = [c.CodeValue for c in read_export(tmp_path / "full")[0].DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113105"]


def test_private_tags_are_removed(two_patients, tmp_path: Path):
    platform, originals = two_patients
    reg = next(ds for ds in originals if ds.Modality == "REG")
    assert any(elem.tag.is_private for elem in reg)  # the registration carries OncoPACS's private QA block
    _export(platform, {reg.StudyInstanceUID}, tmp_path / "out")
    for ds in read_export(tmp_path / "out"):
        assert not [path for path, _, _ in walk_uids(ds) if any(getattr(t, "is_private", False) for t in path)]
        assert not any(elem.tag.is_private for elem in ds.iterall())


def test_burned_in_annotation_is_refused_before_anything_is_written(deid_platform, tmp_path: Path):
    patient = small_patient("DEID-SRC-003", "Gamma^Patient")
    flagged = patient.planning_ct[3]
    flagged.BurnedInAnnotation = "YES"
    ingest(deid_platform, list(patient.planning_ct))
    out = tmp_path / "out"
    with pytest.raises(DeidentificationError, match="burned-in annotation"):
        _export(deid_platform, {flagged.StudyInstanceUID}, out)
    assert not list(out.rglob("*.dcm"))
    failed = deid_platform.audit.query(AuditFilter(action=AuditAction.EXPORT)).entries
    assert failed and failed[0].outcome != 0
    summary = _export(deid_platform, {flagged.StudyInstanceUID}, tmp_path / "allowed",
                      DeidOptions(allow_burned_in_annotation=True))
    assert summary.instances == len(patient.planning_ct)


def test_export_is_audited_and_unknown_studies_fail_cleanly(two_patients, tmp_path: Path):
    platform, originals = two_patients
    study = originals[0].StudyInstanceUID
    _export(platform, {study}, tmp_path / "out")
    entry = platform.audit.query(AuditFilter(action=AuditAction.EXPORT)).entries[0]
    assert entry.actor == "researcher" and study in entry.study_uids and "de-identified" in entry.detail
    with pytest.raises(NotFoundError, match=r"1\.2\.3\.4 is not in the archive"):
        _export(platform, {"1.2.3.4"}, tmp_path / "none")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        DirectorySink(blocker / "out")


def test_an_archived_pdf_report_is_left_out_and_counted(deid_platform, tmp_path: Path):
    patient = small_patient("DEID-SRC-004", "Delta^Patient")
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    template = patient.planning_ct[0]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(report, keyword, template.get(keyword, ""))
    report.SOPClassUID, report.SOPInstanceUID = EncapsulatedPDFStorage, generate_uid(entropy_srcs=["deid", "pdf"])
    report.SeriesInstanceUID, report.Modality = generate_uid(entropy_srcs=["deid", "pdf-series"]), "DOC"
    report.SeriesNumber, report.InstanceNumber, report.BurnedInAnnotation = 99, 1, "YES"
    report.MIMETypeOfEncapsulatedDocument, report.EncapsulatedDocument = "application/pdf", b"%PDF-1.4 Delta^Patient\n"
    ingest(deid_platform, [*patient.planning_ct, report])
    summary = _export(deid_platform, {template.StudyInstanceUID}, tmp_path / "out")
    assert (summary.instances, summary.skipped) == (len(patient.planning_ct), 1)
    assert b"%PDF" not in b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.dcm"))
