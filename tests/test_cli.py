"""The oncopacs command line as a user runs it: import, verify, demo, serve, and clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncopacs.cli import main
from tests.conftest import ServerProcess, shared_data
from tests.factories import small_ct_series, write_files


def invoke(data_dir: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env=env, catch_exceptions=False)


def test_import_summary_and_exit_codes(tmp_path: Path):
    folder = tmp_path / "in"
    write_files(small_ct_series(4, prefix="I"), folder / "nested")
    (folder / "notes.txt").write_text("not DICOM")
    result = invoke(tmp_path / "data", "import", str(folder), "--json")
    summary = json.loads(result.stdout)
    assert result.exit_code == 0  # a file that is not DICOM is skipped and listed, not refused
    assert summary["stored"] == 4 and summary["duplicate"] == 0 and summary["rejected"] == []
    assert [r["path"] for r in summary["skipped"]] == [str(folder / "notes.txt")]
    assert "not DICOM" in summary["skipped"][0]["reason"]
    strict = invoke(tmp_path / "data", "import", "--strict", str(folder), "--json")
    assert strict.exit_code == 1 and "1 file(s) rejected" in strict.stderr
    assert [r["path"] for r in json.loads(strict.stdout)["rejected"]] == [str(folder / "notes.txt")]
    again = invoke(tmp_path / "data", "import", str(folder / "nested"))
    assert again.exit_code == 0 and "stored 0, duplicate 4, rejected 0, skipped 0" in again.stdout


def test_import_of_a_missing_path_fails_cleanly(tmp_path: Path):
    result = invoke(tmp_path / "data", "import", str(tmp_path / "nope"))
    assert result.exit_code != 0 and "no such file or folder" in result.stderr


def test_import_real_planning_system_files(tmp_path: Path):
    folder = shared_data("eclipse-prostate-phantom")
    files = [str(p) for p in folder.glob("*.dcm")]
    result = invoke(tmp_path / "data", "import", *files, "--json")
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["stored"] == len(files) == 3


def test_import_refuses_a_patient_id_conflict_in_real_data(tmp_path: Path):
    folder = shared_data("dcpt-proton-phantom")
    result = invoke(
        tmp_path / "data", "import", str(folder / "plan03_ramp_full"), str(folder / "plan04_ramp_middle"), "--json"
    )
    summary = json.loads(result.stdout)
    assert result.exit_code == 1 and summary["stored"] >= 4
    assert summary["rejected"] and all("another patient" in r["reason"] for r in summary["rejected"])


def test_verify_reports_damage(tmp_path: Path):
    write_files(small_ct_series(3, prefix="VF"), tmp_path / "in")
    invoke(tmp_path / "data", "import", str(tmp_path / "in"))
    assert invoke(tmp_path / "data", "verify").exit_code == 0
    victim = next((tmp_path / "data" / "storage").rglob("*.dcm"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    result = invoke(tmp_path / "data", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and len(report["altered"]) == 1 and report["checked"] == 3


def test_demo_loads_patients_once(tmp_path: Path):
    first = invoke(tmp_path / "data", "demo", "--no-serve", "--patients", "1")
    assert first.exit_code == 0 and "stored" in first.stderr
    second = invoke(tmp_path / "data", "demo", "--no-serve", "--patients", "1")
    assert second.exit_code == 0 and " 0 stored" in second.stderr


def test_demo_is_analysed_when_it_says_ready(tmp_path: Path):
    from oncopacs.analysis.pet import PET_TIMEPOINT
    from oncopacs.analysis.pet_job import PET_STATISTICS, RULE_ACTOR
    from oncopacs.analysis.results import count_results
    from oncopacs.analysis.rt import MetricBounds, search_metrics
    from oncopacs.platform import open_platform
    from oncopacs.settings import Settings

    result = invoke(tmp_path / "data", "demo", "--no-serve", "--patients", "1")
    assert result.exit_code == 0
    # the demo patient's plan and the two response patients' plans (their RT course on the response timeline)
    assert "demo analysed: 3 plan(s) with DVHs and clinical goals, 6 PET series with SUV statistics" in result.stderr
    with open_platform(Settings(data_dir=tmp_path / "data")) as platform, platform.index.reading() as session:
        total, ptvs = search_metrics(session, "PTV", "D95%[Gy]", MetricBounds(greater_than=0.0))
        # four analysed doses: ONCO-DEMO-001's plan dose and its independent dose check (2 % lower), two RESP doses
        assert total == 4 and sorted(p.patient_id for p in ptvs) == [
            "ONCO-DEMO-001", "ONCO-DEMO-001", "ONCO-RESP-001", "ONCO-RESP-002"]
        assert all(p.value > 55.0 for p in ptvs)
        assert count_results(session, PET_TIMEPOINT) == 6
        # the PET rule saw each contoured PET series complete (the demo's catch-up would reuse a queued job)
        jobs = platform.jobs.queue.list(kind=PET_STATISTICS, limit=100).jobs
        ruled = {m["pet_series_uid"] for job in jobs if job.created_by == RULE_ACTOR for m in job.result["measured"]}
        assert len(ruled) == 6


def test_demo_creates_a_sign_in_account_kept_across_runs(tmp_path: Path):
    from oncopacs.auth.users import UserStore
    from oncopacs.platform import open_archive
    from oncopacs.settings import Settings

    first = invoke(tmp_path / "data", "demo", "--no-serve", "--patients", "1")
    credentials = tmp_path / "data" / "demo-credentials.txt"
    username, _, password = credentials.read_text().strip().partition(":")
    assert first.exit_code == 0 and repr(password) in first.stderr
    assert credentials.stat().st_mode & 0o077 == 0  # readable by its owner only
    second = invoke(tmp_path / "data", "demo", "--no-serve", "--patients", "1")
    assert repr(password) in second.stderr  # same account, same password
    archive = open_archive(Settings(data_dir=tmp_path / "data"))
    try:
        assert UserStore(archive.index).authenticate(username, password).role.value == "admin"
    finally:
        archive.close()


def test_bad_setting_is_one_line_and_non_zero(tmp_path: Path):
    env = {**os.environ, "ONCOPACS_HTTP_PORT": "eighty", "ONCOPACS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "oncopacs.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "oncopacs: setting http_port (ONCOPACS_HTTP_PORT) has an invalid value 'eighty'"
    ]


def test_serve_health_and_clean_stop(server_process: ServerProcess):
    server_process.start()
    with urllib.request.urlopen(f"http://127.0.0.1:{server_process.http_port}/health", timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "ok" and body["checks"] == {"index": "ok", "storage": "ok"}
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # no credentials: 401 before any 404
        urllib.request.urlopen(f"http://127.0.0.1:{server_process.http_port}/nothing-here", timeout=5)
    assert anonymous.value.code == 401 and json.load(anonymous.value)["status"] == 401
    assert (server_process.data_dir / "serve.running").exists()
    assert server_process.stop() == 0
    assert not (server_process.data_dir / "serve.running").exists()


def test_port_in_use_is_one_line_and_non_zero(tmp_path: Path):
    import socket

    from tests.conftest import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            **os.environ,
            "ONCOPACS_DATA_DIR": str(tmp_path),
            "ONCOPACS_HTTP_PORT": str(port),
            "ONCOPACS_DICOM_PORT": str(free_port()),
            "ONCOPACS_DICOM_HOST": "127.0.0.1",
        }
        done = subprocess.run(
            [sys.executable, "-m", "oncopacs.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"oncopacs: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "serve.running").exists()


def _store_records(data_dir: Path) -> list:
    from oncopacs.audit.events import AuditAction
    from oncopacs.audit.trail import AuditFilter, AuditTrail
    from oncopacs.platform import open_archive
    from oncopacs.settings import Settings

    archive = open_archive(Settings(data_dir=data_dir))
    try:
        return list(AuditTrail(archive.index).iter_entries(AuditFilter(action=AuditAction.STORE)))
    finally:
        archive.close()


def test_import_is_audited_under_the_os_user_with_its_patients_and_refusals(tmp_path: Path):
    import copy
    import getpass
    import socket

    from oncopacs.audit.events import Outcome

    first, second = small_ct_series(2, prefix="AUA"), small_ct_series(1, prefix="AUB")
    write_files(first, tmp_path / "one")
    assert invoke(tmp_path / "data", "import", str(tmp_path / "one")).exit_code == 0
    changed = copy.deepcopy(first[0])
    changed.SeriesDescription = "other content, same SOP Instance UID"
    write_files([changed], tmp_path / "two" / "a")
    write_files(second, tmp_path / "two" / "b")
    assert invoke(tmp_path / "data", "import", str(tmp_path / "two")).exit_code == 1

    stored, partial = _store_records(tmp_path / "data")
    user = getpass.getuser()
    assert (stored.actor, stored.actor_kind, stored.source) == (user, "user", socket.gethostname())
    assert stored.patient_ids == (str(first[0].PatientID),) and stored.study_uids == (str(first[0].StudyInstanceUID),)
    assert stored.outcome == Outcome.SUCCESS and "import: 2 stored, 0 failed" in stored.detail
    assert (partial.actor, partial.source, partial.outcome) == (user, socket.gethostname(), Outcome.MINOR_FAILURE)
    assert set(partial.patient_ids) == {str(first[0].PatientID), str(second[0].PatientID)}
    assert "1 stored, 1 failed" in partial.detail
    assert f"refused: 0x0111 already stored with different content (first copy kept): SOP Instance " \
           f"{first[0].SOPInstanceUID}" in partial.detail
