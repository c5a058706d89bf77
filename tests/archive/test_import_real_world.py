"""``oncopacs import`` on folders as they arrive: README/LICENSE/CSV beside the images, DICOMDIRs, empty Patient IDs,
and a study that another patient already holds (issue 17, item 6)."""

from __future__ import annotations

import copy
import io
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from oncopacs.archive.importer import DICOMDIR, NOT_DICOM, SkipKind, classify
from oncopacs.archive.ingest import Archive, IngestOutcome, Status
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.cli import main
from oncopacs.errors import ConfigError
from oncopacs.platform import open_archive
from oncopacs.settings import Settings
from tests.factories import part10_bytes, small_ct_series, without, write_files

ACCEPT = "ONCOPACS_ACCEPT_EMPTY_PATIENT_ID"


def invoke(data_dir: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env=env, catch_exceptions=False)


def dicomdir_dataset() -> Dataset:
    """A minimal DICOMDIR (Media Storage Directory Storage, no records)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["dicomdir"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "ONCOPACS"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = []
    return ds


def bare_dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` as a bare implicit VR little endian dataset: no preamble, no DICM prefix, no File Meta."""
    bare = copy.deepcopy(ds)
    if hasattr(bare, "file_meta"):
        del bare.file_meta
    buffer = io.BytesIO()
    dcmwrite(buffer, bare, implicit_vr=True, little_endian=True)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM"
    return data


@pytest.fixture
def real_folder(tmp_path: Path) -> Path:
    """A folder as a hospital or a data set ships it: images, and the files that come with them."""
    folder = tmp_path / "in"
    write_files(small_ct_series(3, prefix="R"), folder / "CT")
    (folder / "README.md").write_text("# Phantom study\n")
    (folder / "LICENSE").write_text("CC-BY-4.0\n")
    (folder / "CT" / "dvh.csv").write_text("structure,volume_cc\nPTV,12.5\n")
    (folder / "empty.dat").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    dcmwrite(folder / "DICOMDIR", dicomdir_dataset(), enforce_file_format=True)
    dcmwrite(folder / "CT" / "INDEX.DIR", dicomdir_dataset(), enforce_file_format=True)  # a DICOMDIR by another name
    return folder


def test_non_dicom_files_are_skipped_and_listed(tmp_path: Path, real_folder: Path):
    result = invoke(tmp_path / "data", "import", str(real_folder), "--json")
    assert result.exit_code == 0, result.stdout
    summary = json.loads(result.stdout)
    assert summary["stored"] == 3 and summary["duplicate"] == 0 and summary["rejected"] == []
    skipped = {Path(item["path"]).relative_to(real_folder).as_posix(): item["reason"] for item in summary["skipped"]}
    assert set(skipped) == {"README.md", "LICENSE", "CT/dvh.csv", "empty.dat", ".DS_Store", "DICOMDIR", "CT/INDEX.DIR"}
    assert skipped["README.md"] == skipped["LICENSE"] == skipped["CT/dvh.csv"] == NOT_DICOM.reason
    assert skipped["empty.dat"] == "not DICOM (empty file)"
    assert skipped["DICOMDIR"] == skipped["CT/INDEX.DIR"] == DICOMDIR.reason
    assert "hidden" in skipped[".DS_Store"]


def test_text_output_counts_and_names_the_skipped_files(tmp_path: Path, real_folder: Path):
    result = invoke(tmp_path / "data", "import", str(real_folder))
    assert result.exit_code == 0
    assert "stored 3, duplicate 0, rejected 0, skipped 7" in result.stdout
    assert f"  skipped {real_folder / 'README.md'}: not DICOM" in result.stdout
    assert f"  skipped {real_folder / 'CT' / 'INDEX.DIR'}: DICOMDIR" in result.stdout


def test_strict_rejects_what_is_not_dicom_but_still_skips_dicomdir_and_hidden_files(tmp_path: Path,
                                                                                    real_folder: Path):
    result = invoke(tmp_path / "data", "import", "--strict", str(real_folder), "--json")
    assert result.exit_code == 1 and "4 file(s) rejected" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["stored"] == 3
    assert sorted(Path(r["path"]).name for r in summary["rejected"]) == ["LICENSE", "README.md", "dvh.csv", "empty.dat"]
    assert all("not DICOM" in r["reason"] and "--strict" in r["reason"] for r in summary["rejected"])
    assert sorted(Path(s["path"]).name for s in summary["skipped"]) == [".DS_Store", "DICOMDIR", "INDEX.DIR"]


def test_a_refused_dicom_file_still_fails_the_import(tmp_path: Path, real_folder: Path):
    broken = without(small_ct_series(1, prefix="B")[0], "StudyInstanceUID")
    dcmwrite(real_folder / "broken.dcm", broken, enforce_file_format=True)
    result = invoke(tmp_path / "data", "import", str(real_folder), "--json")
    summary = json.loads(result.stdout)
    assert result.exit_code == 1 and "1 file(s) rejected" in result.stderr
    assert [Path(r["path"]).name for r in summary["rejected"]] == ["broken.dcm"]
    assert "StudyInstanceUID missing" in summary["rejected"][0]["reason"]
    assert len(summary["skipped"]) == 7 and summary["stored"] == 3


def test_counts_add_up_to_the_files_found(tmp_path: Path, real_folder: Path):
    files = [p for p in real_folder.rglob("*") if p.is_file()]
    summary = json.loads(invoke(tmp_path / "data", "import", str(real_folder), "--json").stdout)
    counted = summary["stored"] + summary["duplicate"] + len(summary["rejected"]) + len(summary["skipped"])
    assert counted == len(files) == 10


# -- what counts as DICOM --------------------------------------------------------------------


def test_classify_decides_by_content():
    ct = small_ct_series(1, prefix="C")[0]
    assert classify(part10_bytes(ct)) is None
    assert classify(bare_dataset_bytes(ct)) is None  # no preamble, but a valid SOP Class/Instance UID
    assert classify(part10_bytes(dicomdir_dataset())) is DICOMDIR
    for text in (b"structure,volume_cc\nPTV,12.5\n", b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n" + bytes(200), b"\x00" * 300):
        skip = classify(text)
        assert skip is not None and skip.kind is SkipKind.NOT_DICOM, text[:10]
    no_uids = Dataset()
    no_uids.PatientName = "Only^Names"
    assert classify(bare_dataset_bytes(no_uids)) is NOT_DICOM  # reads as a dataset, but is nothing to store


def test_a_bare_dataset_is_imported(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "IM0001").write_bytes(bare_dataset_bytes(small_ct_series(1, prefix="N")[0]))
    result = invoke(tmp_path / "data", "import", str(folder), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["stored"] == 1


# -- empty Patient ID ------------------------------------------------------------------------


def with_empty_patient_id(datasets: list[Dataset]) -> list[Dataset]:
    for ds in datasets:
        ds.PatientID = ""
    return datasets


def test_an_empty_patient_id_is_refused_with_the_setting_to_accept_it(tmp_path: Path):
    write_files(with_empty_patient_id(small_ct_series(2, prefix="E")), tmp_path / "in")
    result = invoke(tmp_path / "data", "import", str(tmp_path / "in"), "--json")
    assert result.exit_code == 1
    reasons = [r["reason"] for r in json.loads(result.stdout)["rejected"]]
    assert len(reasons) == 2
    assert all(r.startswith("PatientID (0010,0020) is empty") and f"{ACCEPT}=true" in r for r in reasons)


def test_an_accepted_empty_patient_id_is_stored_and_audited_once_per_object(tmp_path: Path):
    datasets = with_empty_patient_id(small_ct_series(3, prefix="A"))
    write_files(datasets, tmp_path / "in")
    result = invoke(tmp_path / "data", "import", str(tmp_path / "in"), "--json", env={ACCEPT: "true"})
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["stored"] == 3
    again = invoke(tmp_path / "data", "import", str(tmp_path / "in"), "--json", env={ACCEPT: "true"})
    assert json.loads(again.stdout)["duplicate"] == 3  # nothing newly accepted: no new audit record

    archive = open_archive(Settings(data_dir=tmp_path / "data"))
    try:
        records = AuditTrail(archive.index).query(AuditFilter(action=AuditAction.STORE)).entries
    finally:
        archive.close()
    accepted = [r for r in records if "empty Patient ID" in r.detail]
    assert len(accepted) == 3
    assert {uid for r in accepted for uid in r.study_uids} == {str(datasets[0].StudyInstanceUID)}
    assert sorted(r.detail.split("SOP Instance ")[1].split(" ")[0] for r in accepted) == sorted(
        str(ds.SOPInstanceUID) for ds in datasets)
    assert all(r.patient_ids == () and r.actor == "import" and ACCEPT in r.detail for r in accepted)


def test_an_absent_patient_id_is_refused_even_when_empty_ones_are_accepted(archive: Archive):
    archive.accept_empty_patient_id = True
    result = archive.ingest(part10_bytes(without(small_ct_series(1, prefix="M")[0], "PatientID")), source="t")
    assert result.outcome is IngestOutcome.REJECTED and result.reason.startswith("PatientID missing")


def test_empty_patient_id_over_the_ingest_path_keeps_a_dimse_status(archive: Archive):
    ds = with_empty_patient_id(small_ct_series(1, prefix="S"))[0]
    refused = archive.ingest(part10_bytes(ds), source="dimse:MODALITY")
    assert refused.outcome is IngestOutcome.REJECTED and refused.status == Status.CANNOT_UNDERSTAND
    archive.accept_empty_patient_id = True
    stored = archive.ingest(part10_bytes(ds), source="dimse:MODALITY")
    assert stored.outcome is IngestOutcome.STORED and stored.status == Status.SUCCESS
    entry = archive.audit.query(AuditFilter(action=AuditAction.STORE)).entries[-1]
    assert (entry.actor, entry.actor_kind) == ("MODALITY", "ae") and "empty Patient ID" in entry.detail


def test_the_setting_reads_from_the_environment():
    assert Settings.load(env={}).accept_empty_patient_id is False
    assert Settings.load(env={ACCEPT: "yes"}).accept_empty_patient_id is True
    with pytest.raises(ConfigError, match="not a boolean"):
        Settings.load(env={ACCEPT: "sometimes"})


# -- a study under another patient ------------------------------------------------------------


def test_a_study_under_another_patient_names_both_patient_ids_to_the_user_not_the_log(
        archive: Archive, caplog: pytest.LogCaptureFixture):
    first = small_ct_series(2, prefix="P")
    archive.ingest(part10_bytes(first[0]), source="a")
    other = copy.deepcopy(first[1])
    other.PatientID, other.IssuerOfPatientID = "OTHER-PID-7", "HOSPITAL-B"
    with caplog.at_level(logging.DEBUG):
        result = archive.ingest(part10_bytes(other), source="b")
    assert result.outcome is IngestOutcome.CONFLICT and result.status == Status.CONFLICTING_PATIENT
    stored_id = str(first[0].PatientID)
    told = result.reason_for_sender
    assert "Patient ID 'OTHER-PID-7' (issuer 'HOSPITAL-B')" in told and f"stored under {stored_id!r}" in told
    assert "another patient" in told and str(other.StudyInstanceUID) in told
    assert "OTHER-PID-7" not in result.reason and stored_id not in result.reason  # the loggable reason
    assert "OTHER-PID-7" not in caplog.text and stored_id not in caplog.text
    assert "another patient" in caplog.text


def test_the_import_names_both_patient_ids(tmp_path: Path):
    first = small_ct_series(2, prefix="Q")
    second = copy.deepcopy(first[1])
    second.PatientID = "SOMEONE-ELSE"
    write_files([first[0]], tmp_path / "a")
    write_files([second], tmp_path / "b")
    result = invoke(tmp_path / "data", "import", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert result.exit_code == 1
    [rejected] = json.loads(result.stdout)["rejected"]
    assert rejected["reason"].startswith(f"this object has Patient ID 'SOMEONE-ELSE', its study is stored under "
                                         f"{str(first[0].PatientID)!r}")
    assert "SOMEONE-ELSE" not in result.stderr  # standard error carries the log: no patient data



@pytest.mark.parametrize("accept", [False, True])
def test_the_setting_holds_over_stow_rs(sqlite_settings: Settings, accept: bool):
    from oncopacs.auth.roles import Role
    from oncopacs.platform import open_platform
    from oncopacs.web.app import create_app
    from tests.web.conftest import TEST_PASSWORD, basic_auth

    ds = with_empty_patient_id(small_ct_series(1, prefix="W"))[0]
    body = b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + part10_bytes(ds) + b"\r\n--b0undary--\r\n"
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'}
    with open_platform(sqlite_settings.with_overrides(accept_empty_patient_id=accept)) as platform:
        platform.users.add_user("stow-user", Role.PHYSICIST, TEST_PASSWORD)
        reply = create_app(platform).test_client().post("/dicom-web/studies", data=body,
                                                          headers={**headers, **basic_auth("stow-user")})
        accepted = [r for r in platform.audit.query(AuditFilter(action=AuditAction.STORE)).entries
                    if "empty Patient ID" in r.detail]
    assert reply.status_code == (200 if accept else 409)
    assert [(r.actor, r.actor_kind) for r in accepted] == ([("stow-user", "user")] if accept else [])
