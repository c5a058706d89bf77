"""The reserved audit spool: records survive a full disk, reach the chain once, in order, with their own times."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg.errors
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.spool import HEADER_BYTES, SPOOL_FILE, AuditSpool, is_disk_full
from oncopacs.audit.trail import AuditTrail, open_audit_trail
from oncopacs.errors import AuditError, ConfigError
from oncopacs.index.db import IndexDatabase, open_index

SPOOL_BYTES = 64 * 1024


def event(number: int) -> AuditEvent:
    return AuditEvent(action=AuditAction.RETRIEVE, outcome=Outcome.SUCCESS, actor="alice", actor_kind=ActorKind.USER,
                      source="10.0.0.7", patient_ids=(f"P{number}",), study_uids=(f"1.2.3.{number}",),
                      detail=f"GET /dicom-web/studies/1.2.3.{number} \N{LATIN SMALL LETTER E WITH ACUTE}")


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@contextmanager
def full_disk(index: IndexDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every index write fails as on a full disk (the archive's own OSError), until the block ends."""

    @contextmanager
    def refuse():
        raise disk_full()
        yield  # pragma: no cover

    with monkeypatch.context() as patch:
        patch.setattr(index, "write_connection", refuse)
        patch.setattr(index, "writing", refuse)
        yield


@pytest.fixture
def index(database_url: str) -> Iterator[IndexDatabase]:
    index = open_index(database_url)
    yield index
    index.dispose()


@pytest.fixture
def trail(index: IndexDatabase, tmp_path: Path) -> Iterator[AuditTrail]:
    trail = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    yield trail
    trail.close()


def details(trail: AuditTrail) -> list[str]:
    return [entry.detail for entry in trail.query(limit=1000).entries]


def test_disk_full_is_recognised_from_every_back_end():
    assert is_disk_full(disk_full()) and is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EIO, "I/O error"))
    postgres = psycopg.errors.DiskFull("could not extend file: No space left on device")
    assert is_disk_full(OperationalError("INSERT", {}, postgres))
    locked = sqlite3.OperationalError("database is locked")
    assert not is_disk_full(OperationalError("INSERT", {}, locked))
    try:
        raise AuditError("wrapped") from OperationalError("INSERT", {}, postgres)
    except AuditError as exc:
        assert is_disk_full(exc)


def test_the_spool_is_reserved_in_full_at_start(trail: AuditTrail, tmp_path: Path):
    path = tmp_path / SPOOL_FILE
    assert path.stat().st_size == SPOOL_BYTES and path.stat().st_blocks * 512 >= SPOOL_BYTES  # not sparse
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it holds patient IDs until replayed
    assert trail.spool is not None and not trail.spool.has_entries()


def test_records_wait_in_the_spool_and_join_the_chain_in_order(trail: AuditTrail, index: IndexDatabase,
                                                               monkeypatch: pytest.MonkeyPatch):
    assert trail.record(event(1)) == 1
    with full_disk(index, monkeypatch):
        assert trail.record(event(2)) == 0
        assert trail.record_many([event(3), event(4)]) == [0, 0]
    assert trail.spool is not None and trail.spool.has_entries()
    assert details(trail) == [event(1).detail]  # not in the index yet
    assert trail.record(event(5)) == 5  # the disk has room again: the spooled records go first
    assert not trail.spool.has_entries()
    entries = trail.query().entries
    assert [entry.detail for entry in entries] == [event(n).detail for n in range(1, 6)]
    assert [entry.patient_ids for entry in entries] == [(f"P{n}",) for n in range(1, 6)]
    times = [entry.recorded_at for entry in entries]
    assert times == sorted(times)  # each record keeps the time it happened
    assert trail.verify().ok and trail.verify().checked == 5


def test_a_real_sqlite_full_error_spools(tmp_path: Path):
    """SQLite itself answers SQLITE_FULL ("database or disk is full") when the file may not grow."""
    index = open_index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    trail = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    trail.record(event(1))
    limit = {"pages": 0}

    @sa_event.listens_for(index.write_engine, "begin")
    def _cap(connection):  # runs after BEGIN IMMEDIATE: the file may not grow past its size now
        if limit["pages"]:
            connection.exec_driver_sql(f"PRAGMA max_page_count = {limit['pages']}")

    with index.read_connection() as connection:
        limit["pages"] = connection.exec_driver_sql("PRAGMA page_count").scalar()
    big = AuditEvent(action=AuditAction.RETRIEVE, outcome=Outcome.SUCCESS, actor="alice", actor_kind=ActorKind.USER,
                     source="10.0.0.7", detail="x" * 20_000)  # more than the free pages left
    assert trail.record_many([big] * 2) == [0, 0]
    limit["pages"] = 1_000_000
    assert trail.record(event(2)) == 4
    assert trail.verify().ok and trail.verify().checked == 4
    trail.close()
    index.dispose()


def test_a_used_up_spool_fails_closed_with_a_reason(index: IndexDatabase, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    trail = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=2 * HEADER_BYTES)
    with full_disk(index, monkeypatch):
        while True:
            try:
                trail.record(event(1))
            except AuditError as exc:
                assert "disk is full and the reserved audit spool is used up" in str(exc)
                break
    kept = len((tmp_path / SPOOL_FILE).read_bytes().rstrip(b"\0").splitlines()) - 1
    trail.record(event(2))
    assert len(trail.query().entries) == kept + 1 and trail.verify().ok
    trail.close()


def test_without_a_spool_a_full_disk_fails_closed(index: IndexDatabase, monkeypatch: pytest.MonkeyPatch):
    trail = AuditTrail(index)
    with full_disk(index, monkeypatch), pytest.raises(OSError, match="No space"):
        trail.record(event(1))


def test_a_crash_after_the_append_never_appends_twice(trail: AuditTrail, index: IndexDatabase,
                                                      monkeypatch: pytest.MonkeyPatch):
    with full_disk(index, monkeypatch):
        trail.record_many([event(1), event(2)])
    with monkeypatch.context() as patch:  # the process dies after the commit, before the spool is emptied
        patch.setattr(AuditSpool, "_clear", lambda self, end: (_ for _ in ()).throw(OSError(errno.EIO, "crash")))
        with pytest.raises(OSError):
            trail.record(event(3))
    assert details(trail) == [event(n).detail for n in (1, 2, 3)]
    assert trail.spool is not None and trail.spool.has_entries()  # still there...
    trail.record(event(4))  # ...and skipped: its generation's mark says it was appended
    assert details(trail) == [event(n).detail for n in (1, 2, 3, 4)] and trail.verify().ok
    assert not trail.spool.has_entries()


def test_a_line_cut_by_a_crash_is_skipped(trail: AuditTrail, index: IndexDatabase, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    with full_disk(index, monkeypatch):
        trail.record(event(1))
    path = tmp_path / SPOOL_FILE
    data = path.read_bytes()
    end = data.index(b"\0", HEADER_BYTES)
    with path.open("r+b") as file:  # half a line, as a crash in the middle of a write leaves it
        file.seek(end)
        file.write(b'{"g":"0123","n":2,"t":"2030-01-01T')
    with full_disk(index, monkeypatch):
        trail.record(event(3))
    trail.record(event(4))
    assert details(trail) == [event(n).detail for n in (1, 3, 4)] and trail.verify().ok


def test_processes_sharing_the_spool_append_each_record_once(index: IndexDatabase, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    first = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    second = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    with full_disk(index, monkeypatch):
        first.record(event(1))
        second.record(event(2))
        first.record(event(3))
    second.record(event(4))
    first.record(event(5))
    second.record(event(6))
    assert details(first) == [event(n).detail for n in range(1, 7)] and first.verify().ok
    first.close()
    second.close()


def test_records_spooled_before_a_restart_are_appended_at_start(index: IndexDatabase, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    before = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    with full_disk(index, monkeypatch):
        before.record(event(1))
    before.close()
    after = open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    assert details(after) == [event(1).detail]
    after.close()


def test_no_room_for_the_spool_is_not_fatal(index: IndexDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    trail = open_audit_trail(index, spool_path=blocker / SPOOL_FILE, spool_bytes=SPOOL_BYTES)
    assert trail.spool is None and "no reserved audit spool" in caplog.text
    assert trail.record(event(1)) == 1
    with pytest.raises(ConfigError, match="audit_spool_bytes"):
        open_audit_trail(index, spool_path=tmp_path / SPOOL_FILE, spool_bytes=100)
