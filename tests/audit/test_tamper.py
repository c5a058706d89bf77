"""An informed attacker who can write the index database, but holds neither the audit key nor the checkpoints.

Each case changes the trail as such an attacker would (in SQL, recomputing whatever can be recomputed without the
key) and ``verify`` must report it, every break of it, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from oncopacs.audit.checkpoints import Checkpoint, CheckpointWriter, read_checkpoints
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.models import AuditRecord
from oncopacs.audit.sealing import AuditKey, chain_value, create_key_file, read_key_file
from oncopacs.audit.trail import GENESIS_SHA256, AuditTrail, ChainBreak, VerifyResult
from oncopacs.cli import main
from oncopacs.errors import ConfigError
from oncopacs.platform import Platform, open_archive, open_platform
from oncopacs.settings import Settings


def event(number: int) -> AuditEvent:
    return AuditEvent(AuditAction.RETRIEVE, Outcome.SUCCESS, "viewer", ActorKind.USER, "10.0.0.9",
                      (f"PAT{number % 7}",), (f"1.2.3.{number}",), f"GET /dicom-web/studies/1.2.3.{number}")


def execute(platform: Platform, sql: str, **params) -> None:
    with platform.archive.index.write_connection() as connection:
        connection.execute(text(sql), params)


def rechain_unkeyed(platform: Platform, *, from_id: int) -> None:
    """What the attacker can do without the key: recompute every chain value from ``from_id`` with SHA-256,
    and the head to match."""
    with platform.archive.index.reading() as session:
        rows = session.query(AuditRecord).order_by(AuditRecord.id).all()
        previous = GENESIS_SHA256
        updates = []
        for row in rows:
            if row.id >= from_id:
                updates.append((row.id, previous, chain_value(row, previous, None)))
                previous = updates[-1][2]
            else:
                previous = row.record_sha256
    for record_id, link, value in updates:
        execute(platform, "UPDATE audit_records SET previous_sha256 = :p, record_sha256 = :v WHERE id = :i",
                p=link, v=value, i=record_id)
    execute(platform, "UPDATE audit_chain_head SET last_record_id = :i, last_sha256 = :v", i=rows[-1].id,
            v=previous)


def breaks(result: VerifyResult) -> list[tuple[int, int, ChainBreak]]:
    return [(found.first_id, found.last_id, found.reason) for found in result.breaks]


@pytest.fixture
def sealed(platform: Platform) -> Platform:
    """The platform's trail with 50 records, every one anchored by a checkpoint written at once."""
    trail = platform.audit
    assert trail.key is not None and trail.checkpoints is not None
    trail.checkpoints.interval_s = 0
    trail.record_many([event(n) for n in range(1, 51)])
    assert trail.verify().ok
    return platform


def test_records_are_sealed_with_the_key_outside_the_database(sealed: Platform):
    trail = sealed.audit
    key_file = sealed.settings.effective_audit_key_file
    assert read_key_file(key_file) == trail.key and oct(key_file.stat().st_mode & 0o777) == "0o600"
    with sealed.archive.index.reading() as session:
        record = session.get(AuditRecord, 7)
        assert record.record_sha256 == chain_value(record, record.previous_sha256, trail.key)
        assert record.record_sha256 != chain_value(record, record.previous_sha256, None)
    [*lines] = read_checkpoints(sealed.settings.effective_audit_checkpoint_file)
    assert lines and all(line.checkpoint and line.checkpoint.is_sealed_by(trail.key) for line in lines)
    assert lines[-1].checkpoint and lines[-1].checkpoint.record_id == 50
    result = trail.verify()
    assert result.keyed_from == 1 and result.anchored_id == 50 and "sealed with the audit key from record 1" in \
        result.summary()


def test_truncating_and_rewinding_the_head_is_found(sealed: Platform):
    execute(sealed, "DELETE FROM audit_records WHERE id > 40")
    execute(sealed, "UPDATE audit_chain_head SET last_record_id = 40, last_sha256 = "
                    "(SELECT record_sha256 FROM audit_records WHERE id = 40)")
    result = sealed.audit.verify()
    assert breaks(result) == [(41, 50, ChainBreak.BEHIND_CHECKPOINT)]
    assert "names record 50; the trail now ends at 40" in result.summary()


def test_editing_and_rehashing_every_later_record_is_found(sealed: Platform):
    execute(sealed, "UPDATE audit_records SET patient_ids = 'SOMEONE-ELSE' WHERE id = 20")
    rechain_unkeyed(sealed, from_id=20)
    result = sealed.audit.verify()
    assert (20, 50, ChainBreak.ALTERED) in breaks(result)  # one range: every re-sealed record, not just the first
    assert (50, 50, ChainBreak.CHECKPOINT_MISMATCH) in breaks(result)


def test_pretending_the_trail_predates_the_key_is_found(sealed: Platform):
    """Clearing the key marker and re-chaining everything unkeyed: the checkpoints still say where keys began."""
    execute(sealed, "UPDATE audit_records SET actor = 'nobody' WHERE id = 33")
    execute(sealed, "UPDATE audit_chain_head SET key_id = NULL, keyed_from = NULL")
    rechain_unkeyed(sealed, from_id=1)
    found = breaks(sealed.audit.verify())
    assert (0, 0, ChainBreak.CHECKPOINT_MISMATCH) in found and (1, 50, ChainBreak.ALTERED) in found


def test_every_break_is_reported_not_only_the_first(sealed: Platform):
    execute(sealed, "UPDATE audit_records SET detail = 'nothing to see' WHERE id = 10")
    execute(sealed, "DELETE FROM audit_records WHERE id IN (20, 21)")
    execute(sealed, "UPDATE audit_records SET outcome = 0, actor = 'x' WHERE id = 30")
    result = sealed.audit.verify()
    assert breaks(result) == [(10, 10, ChainBreak.ALTERED), (20, 21, ChainBreak.MISSING),
                              (30, 30, ChainBreak.ALTERED)]
    assert result.to_dict()["breaks"][1] == {"first_id": 20, "last_id": 21, "reason": "missing",
                                             "explanation": "deleted from the trail"}

    settings = sealed.settings
    cli = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "audit", "verify"],
                             env={"ONCOPACS_DATABASE_URL": settings.effective_database_url})
    assert cli.exit_code == 1
    for line in ("record 10: altered", "records 20-21: missing", "record 30: altered"):
        assert line in cli.stdout
    assert "3 break(s)" in cli.stderr


def test_forged_or_removed_checkpoints_are_found(sealed: Platform):
    checkpoints = sealed.settings.effective_audit_checkpoint_file
    wrong_key = AuditKey.from_secret(b"\x01" * 32)
    forged = dataclasses.replace(Checkpoint.seal(wrong_key, 40, "0" * 64, 1), key_id=sealed.audit.key.key_id)
    with checkpoints.open("ab") as file:
        file.write(forged.to_line() + b"not json\n")
    found = breaks(sealed.audit.verify())
    assert found.count((0, 0, ChainBreak.CHECKPOINT_FORGED)) == 2

    checkpoints.unlink()
    assert breaks(sealed.audit.verify()) == [(0, 0, ChainBreak.NO_CHECKPOINTS)]


def test_a_trail_refuses_to_start_without_its_key_or_with_another(sealed: Platform, tmp_path: Path):
    settings = sealed.settings
    key_file = settings.effective_audit_key_file
    saved = key_file.read_bytes()
    key_file.unlink()
    with pytest.raises(ConfigError, match="is missing, and the audit trail's records from 1 are sealed"):
        open_platform(settings)
    other = tmp_path / "other.key"
    create_key_file(other)
    with pytest.raises(ConfigError, match="is not the key the audit trail is sealed with"):
        open_platform(dataclasses.replace(settings, audit_key_file=other))
    os.chmod(other, 0o644)
    with pytest.raises(ConfigError, match="open to other users"):
        open_platform(dataclasses.replace(settings, audit_key_file=other))
    key_file.write_bytes(saved)
    os.chmod(key_file, 0o600)
    # an unkeyed writer cannot slip records into a sealed trail either
    with pytest.raises(Exception, match="sealed with audit key"):
        AuditTrail(sealed.archive.index).record(event(99))


def test_a_trail_older_than_keys_is_sealed_from_its_next_record(sqlite_settings: Settings):
    archive = open_archive(sqlite_settings)  # as a version without keys wrote it
    try:
        AuditTrail(archive.index).record_many([event(n) for n in range(1, 6)])
    finally:
        archive.close()
    with open_platform(sqlite_settings) as platform:  # the upgrade: the head is anchored at once
        platform.audit.record(event(6))
        result = platform.audit.verify()
        assert result.ok and result.keyed_from == 6 and "records before it predate the key" in result.summary()
        # the unkeyed part rewritten consistently: its last record no longer has the value the first checkpoint holds
        execute(platform, "UPDATE audit_records SET patient_ids = 'SOMEONE-ELSE' WHERE id = 2")
        rechain_unkeyed(platform, from_id=2)
        found = breaks(platform.audit.verify())
        assert (5, 5, ChainBreak.CHECKPOINT_MISMATCH) in found


def test_checkpoints_are_throttled_and_the_last_is_written(tmp_path: Path):
    key = AuditKey.from_secret(os.urandom(32))
    path = tmp_path / "checkpoints"
    writer = CheckpointWriter(path, key, interval_s=0.3)
    for record_id in range(1, 101):
        writer.note(record_id, f"{record_id:064x}", 1)
    assert [line.checkpoint.record_id for line in read_checkpoints(path) if line.checkpoint] == [1]
    deadline = time.monotonic() + 5
    while writer.written < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line.checkpoint.record_id for line in read_checkpoints(path) if line.checkpoint] == [1, 100]
    writer.note(101, "f" * 64, 1)
    writer.close()  # the pending one is written at close
    written = [line.checkpoint for line in read_checkpoints(path) if line.checkpoint]
    assert [c.record_id for c in written] == [1, 100, 101] and all(c.is_sealed_by(key) for c in written)
    with path.open("ab") as file:
        file.write(b'{"v":1,"at":"2026')  # a write cut short by a crash is not a checkpoint, nor a forgery
    assert len(list(read_checkpoints(path))) == 3
