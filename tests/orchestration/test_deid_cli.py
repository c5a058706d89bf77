"""``oncopacs deid export`` as a researcher's operator runs it: files, summary, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncopacs.cli import main
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY
from tests.orchestration.conftest import ingest, read_export, small_patient


def invoke(data_dir: Path, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), "deid", "export", *args])


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[Path, list[str]]:
    """A data directory holding one phantom patient; its study UIDs."""
    data_dir = tmp_path / "data"
    patient = small_patient("DEID-CLI-001", "Cli^Patient")
    settings = Settings(data_dir=data_dir, dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        ingest(platform, patient.all_datasets())
    return data_dir, sorted({ds.StudyInstanceUID for ds in patient.all_datasets()})


def test_export_writes_pseudonymised_folders_and_a_json_summary(loaded, tmp_path: Path):
    data_dir, studies = loaded
    out = tmp_path / "export"
    result = invoke(data_dir, *[arg for uid in studies for arg in ("--study", uid)], "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    exported = read_export(out)
    assert summary["instances"] == len(exported) == 33 and summary["studies"] == 2
    (pseudonym,) = summary["pseudonyms"]
    assert [p.name for p in out.iterdir()] == [pseudonym]
    assert {ds.PatientID for ds in exported} == {pseudonym}
    assert "DEID-CLI-001" not in result.output


def test_options_reach_the_profile(loaded, tmp_path: Path):
    data_dir, studies = loaded
    out = tmp_path / "export"
    result = invoke(data_dir, "--study", studies[0], "--out", str(out), "--no-date-shift",
                    "--no-patient-characteristics", "--drop-descriptors")
    assert result.exit_code == 0, result.output
    assert "exported" in result.stdout
    for ds in read_export(out):
        assert ds.StudyDate == "" and "PatientSex" not in ds and ds.get("SeriesDescription", "") == ""
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]


def test_unknown_study_is_one_line_without_a_traceback(loaded, tmp_path: Path):
    data_dir, _ = loaded
    out = tmp_path / "export"
    result = invoke(data_dir, "--study", "1.2.3.999", "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == "oncopacs: study 1.2.3.999 is not in the archive"
    assert "Traceback" not in result.output and not out.exists()


def test_out_that_cannot_be_a_folder_is_refused(loaded, tmp_path: Path):
    data_dir, studies = loaded
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = invoke(data_dir, "--study", studies[0], "--out", str(blocker / "export"))
    assert result.exit_code == 2
    assert result.stderr.startswith("oncopacs: cannot write to") and "Traceback" not in result.output


def test_missing_options_are_usage_errors(loaded, tmp_path: Path):
    data_dir, studies = loaded
    assert invoke(data_dir, "--out", str(tmp_path / "x")).exit_code == 2
    assert invoke(data_dir, "--study", studies[0]).exit_code == 2
