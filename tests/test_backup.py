"""``oncopacs backup``: an online snapshot that is itself a data directory, incremental, and loud about damage."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from oncopacs.archive import backup as backup_module
from oncopacs.archive.backup import BackupReport, backup
from oncopacs.archive.maintenance import count_indexed, verify
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.cli.main import main
from oncopacs.errors import ConfigError
from oncopacs.index.models import Instance
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from tests.conftest import POSTGRES_SERVER_URL, TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY, empty_database, require
from tests.factories import part10_bytes, small_ct_series


def _settings(data_dir: Path, database_url: str = "") -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, dicom_host="127.0.0.1", dicom_port=0,
                    secret_key=TEST_SECRET_KEY, audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)


def _store(platform: Platform, n: int, prefix: str, under_way: threading.Event | None = None) -> int:
    """Ingest ``n`` CT slices, each with an audit record; ``under_way`` is set after the first tenth."""
    stored = 0
    for dataset in small_ct_series(n, prefix=prefix):
        platform.archive.ingest(part10_bytes(dataset), source="test")
        platform.audit.record(AuditEvent(AuditAction.STORE, Outcome.SUCCESS, "alice", ActorKind.USER, "127.0.0.1",
                                         detail=f"stored {prefix}"))
        stored += 1
        if under_way is not None and stored == n // 10:
            under_way.set()
    return stored


def _readable(platform: Platform) -> int:
    """Every instance the index lists read back and hash-checked; how many."""
    with platform.archive.index.reading() as session:
        rows = session.execute(select(Instance.file_path, Instance.sha256)).all()
    for relative_path, sha256 in rows:
        platform.archive.storage.read(relative_path, expected_sha256=sha256)
    return len(rows)


@pytest.mark.slow
def test_restore_drill_while_storing(tmp_path: Path) -> None:
    """Back up while another thread stores; the backup opens as a platform, whole and hash-verified."""
    before, during = 200, 200
    with open_platform(_settings(tmp_path / "live")) as live:
        _store(live, before, "A")
        under_way = threading.Event()
        writer = threading.Thread(target=_store, args=(live, during, "B", under_way))
        writer.start()
        assert under_way.wait(60)  # the writer is storing when the snapshot is taken, and after
        report = backup(live.settings, tmp_path / "backup")
        writer.join()
        live_count = count_indexed(live.archive)
    assert report.ok and report.new == report.instances
    assert before + during // 10 <= report.instances <= live_count == before + during

    started = time.monotonic()
    with open_platform(_settings(tmp_path / "backup")) as restored:
        checked = verify(restored.archive)
        assert checked.ok, checked.to_dict()
        assert checked.checked == report.instances
        assert _readable(restored) == report.instances
        chain = restored.audit.verify()
        assert chain.ok and chain.checked >= before  # a record may trail its instance past the snapshot
    print(f"\nrestore drill: {report.instances} of {live_count} instances in the snapshot, backup "
          f"{report.seconds:.2f} s, restore check {time.monotonic() - started:.2f} s, {chain.checked} audit records")

    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "backup"), "verify"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "backup"), "audit", "verify"])
    assert result.exit_code == 0, result.output


def test_incremental_copies_only_new_files(tmp_path: Path) -> None:
    with open_platform(_settings(tmp_path / "live")) as live:
        _store(live, 4, "A")
        first = backup(live.settings, tmp_path / "backup")
        _store(live, 3, "B")
        stray = tmp_path / "backup" / "storage" / "1.2" / "1.2.3" / "1.2.3.4.dcm"  # an instance gone from the index
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"gone")
        second = backup(live.settings, tmp_path / "backup")
    assert (first.new, first.skipped) == (4, 0)
    assert (second.instances, second.new, second.skipped, second.removed) == (7, 3, 4, 1)
    assert not stray.exists()
    with open_platform(_settings(tmp_path / "backup")) as restored:
        assert verify(restored.archive).ok and _readable(restored) == 7


def test_damaged_and_missing_source_files_are_reported_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "live"
    with open_platform(_settings(data)) as live:
        _store(live, 4, "A")
        with live.archive.index.reading() as session:
            paths = session.scalars(select(Instance.file_path).order_by(Instance.file_path)).all()
    (data / "storage" / paths[0]).write_bytes(b"bit rot")
    (data / "storage" / paths[1]).unlink()
    result = CliRunner().invoke(main, ["--data-dir", str(data), "backup", "--out", str(tmp_path / "backup"),
                                       "--json"], env={"ONCOPACS_SECRET_KEY": TEST_SECRET_KEY})
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)  # standard output is the one JSON document
    assert report["altered"] == [paths[0]] and report["missing"] == [paths[1]]
    assert (report["new"], report["damaged"], report["ok"]) == (2, 2, False)
    assert "missing or damaged" in result.stderr


def test_summary_names_what_is_not_included(tmp_path: Path) -> None:
    data = tmp_path / "live"
    with open_platform(_settings(data)) as live:
        _store(live, 1, "A")
    (data / "secret_key").write_text("k")
    config = tmp_path / "oncopacs.toml"
    config.write_text(f'data_dir = "{data}"\ntls_cert = "/etc/ssl/server.pem"\ntls_key = "/etc/ssl/server-key.pem"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "backup", "--out", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert "included: index.sqlite, audit-checkpoints, audit-key, audit-spool, secret_key" in result.stdout
    assert f"not included: settings file {config} - back these up yourself" in result.stdout
    assert "not included: tls_key /etc/ssl/server-key.pem - back these up yourself" in result.stdout
    assert "not included: viewer/ (re-install with: oncopacs viewer install)\n" in result.stdout
    assert (tmp_path / "backup" / "secret_key").read_text() == "k"


def test_backup_into_the_data_directory_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "backup", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "must not be the data directory" in result.stderr


def test_postgres_without_pg_dump_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_module.shutil, "which", lambda _name: None)
    settings = _settings(tmp_path / "live", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="pg_dump is not on PATH"):
        backup(settings, tmp_path / "backup")


@pytest.mark.postgres
def test_postgres_index_is_dumped_for_pg_restore(tmp_path: Path, postgres_ok: bool) -> None:
    require(shutil.which("pg_dump") is not None, "pg_dump is not installed (apt-get install postgresql-client)")
    with (
        empty_database("postgresql", tmp_path, postgres_ok) as url,
        open_platform(_settings(tmp_path / "live", url)) as live,
    ):
        _store(live, 3, "A")
        report: BackupReport = backup(live.settings, tmp_path / "backup")
    assert report.ok and (report.index, report.instances, report.new) == ("index.pgdump", 3, 3)
    assert "pg_restore" in report.restore
    listing = subprocess.run(["pg_restore", "--list", str(tmp_path / "backup" / "index.pgdump")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA" in listing and " instances " in listing

    # the drill: the schema is gone (empty_database dropped it); pg_restore brings it back for the backup folder
    server = make_url(POSTGRES_SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = url.rsplit("%3D", 1)[1]
    try:
        subprocess.run(["pg_restore", "--no-owner", "-d", server, str(tmp_path / "backup" / "index.pgdump")],
                       capture_output=True, text=True, check=True)
        with open_platform(_settings(tmp_path / "backup", url)) as restored:
            assert verify(restored.archive).ok and _readable(restored) == 3
            assert restored.audit.verify().ok
    finally:
        engine = create_engine(POSTGRES_SERVER_URL)
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()

def test_file_names_match_the_modules_that_write_them() -> None:
    from oncopacs.cli.demo import DEMO_CREDENTIALS_FILE
    from oncopacs.web.auth import SECRET_KEY_FILE

    assert (backup_module.SECRET_KEY_FILE, backup_module.DEMO_CREDENTIALS_FILE) == (SECRET_KEY_FILE,
                                                                                     DEMO_CREDENTIALS_FILE)


# -- with a storage key (encryption at rest) ------------------------------------------------------


def _key_file(tmp_path: Path) -> Path:
    from oncopacs.archive.encryption import generate_key_file

    (tmp_path / "keys").mkdir(exist_ok=True)
    path = tmp_path / "keys" / "storage.key"
    if not path.exists():
        generate_key_file(path)
    return path


def test_a_keyed_backup_holds_no_plaintext_index_and_restores_with_the_key(tmp_path: Path) -> None:
    key_file = _key_file(tmp_path)
    keyed = _settings(tmp_path / "live").with_overrides(storage_key_file=key_file)
    with open_platform(keyed) as live:
        _store(live, 3, "A")
        first = backup(live.settings, tmp_path / "backup")
        second = backup(live.settings, tmp_path / "backup")
    out = tmp_path / "backup"
    assert first.ok and (first.index, first.new) == ("index.sqlite.enc", 3) and second.skipped == 3
    assert "storage key" in first.restore and first.included[0] == "index.sqlite.enc"
    assert any(item.startswith(f"storage_key_file {key_file}") for item in first.not_included)
    assert not (out / "index.sqlite").exists() and (out / "index.sqlite.enc").is_file()
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"Bench^Patient" not in content and b"SQLite format" not in content, path

    with pytest.raises(ConfigError, match="sealed"):  # without the key the backup does not open
        open_platform(_settings(out))
    result = CliRunner().invoke(main, ["--data-dir", str(out), "verify"],
                                env={"ONCOPACS_SECRET_KEY": TEST_SECRET_KEY,
                                     "ONCOPACS_STORAGE_KEY_FILE": str(key_file)})
    assert result.exit_code == 0, result.output  # unsealed in place at start-up, then verified
    assert (out / "index.sqlite").is_file()
    with open_platform(_settings(out).with_overrides(storage_key_file=key_file)) as restored:
        assert verify(restored.archive).ok and _readable(restored) == 3


@pytest.mark.postgres
def test_a_keyed_postgres_dump_is_sealed_and_unsealed_for_pg_restore(tmp_path: Path, postgres_ok: bool) -> None:
    require(shutil.which("pg_dump") is not None, "pg_dump is not installed (apt-get install postgresql-client)")
    key_file = _key_file(tmp_path)
    with (
        empty_database("postgresql", tmp_path, postgres_ok) as url,
        open_platform(_settings(tmp_path / "live", url).with_overrides(storage_key_file=key_file)) as live,
    ):
        _store(live, 2, "A")
        report = backup(live.settings, tmp_path / "backup")
    assert report.ok and report.index == "index.pgdump.enc" and "oncopacs storage unseal" in report.restore
    assert not (tmp_path / "backup" / "index.pgdump").exists()
    sealed, dump = tmp_path / "backup" / "index.pgdump.enc", tmp_path / "index.pgdump"
    result = CliRunner().invoke(main, ["storage", "unseal", str(sealed), str(dump)],
                                env={"ONCOPACS_STORAGE_KEY_FILE": str(key_file)})
    assert result.exit_code == 0, result.output
    listing = subprocess.run(["pg_restore", "--list", str(tmp_path / "index.pgdump")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA" in listing and " instances " in listing
