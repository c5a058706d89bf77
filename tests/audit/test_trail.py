"""The audit trail: hash chain, tamper detection among 10,000 records, concurrent appends, queries."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditEntry, AuditFilter, AuditTrail, ChainBreak
from oncopacs.errors import AuditError


def event(number: int, *, action: AuditAction = AuditAction.QUERY, actor: str = "alice",
          patients: tuple[str, ...] = ("P1",)) -> AuditEvent:
    return AuditEvent(action=action, outcome=Outcome.SUCCESS, actor=actor, actor_kind=ActorKind.USER,
                      source="10.0.0.7", patient_ids=patients, study_uids=(f"1.2.3.{number}",),
                      detail=f"GET /api/studies/{number}")


def execute(archive: Archive, sql: str, **params) -> None:
    with archive.index.write_connection() as connection:
        connection.execute(text(sql), params)


@pytest.fixture
def trail(archive: Archive) -> AuditTrail:
    return archive.audit  # the platform's trail, sealed with its key


def test_records_chain_and_read_back(trail: AuditTrail):
    first = trail.record(event(1, patients=("P1", "P2")))
    second = trail.record(event(2, action=AuditAction.STORE))
    assert (first, second) == (1, 2)
    result = trail.verify()
    assert result.ok and result.checked == 2 and result.last_id == 2
    page = trail.query()
    assert page.total == 2
    entry = page.entries[0]
    assert entry.patient_ids == ("P1", "P2") and entry.study_uids == ("1.2.3.1",)
    assert entry.actor == "alice" and entry.source == "10.0.0.7" and entry.action == "query"
    assert entry.recorded_at.endswith("+00:00")


def test_an_empty_trail_verifies(trail: AuditTrail):
    result = trail.verify()
    assert result.ok and result.checked == 0 and "0 record(s)" in result.summary()


def test_one_altered_or_deleted_record_among_10000_is_found(archive: Archive, trail: AuditTrail):
    for start in range(0, 10_000, 2_000):
        trail.record_many([event(n) for n in range(start, start + 2_000)])
    began = time.perf_counter()
    intact = trail.verify()
    elapsed_s = time.perf_counter() - began
    assert intact.ok and intact.checked == 10_000
    assert elapsed_s < 10, f"verify took {elapsed_s:.1f} s for 10,000 records"

    # one field altered in SQL, hashes untouched
    execute(archive, "UPDATE audit_records SET actor = 'mallory' WHERE id = 4321")
    altered = trail.verify()
    assert not altered.ok and altered.broken_id == 4321 and altered.reason is ChainBreak.ALTERED
    assert "4321" in altered.summary()
    execute(archive, "UPDATE audit_records SET actor = 'alice' WHERE id = 4321")
    assert trail.verify().ok

    # altered and its hash recomputed without the key: it fails its seal, and the next record no longer follows it
    execute(archive, "UPDATE audit_records SET patient_ids = 'P9' WHERE id = 5000")
    with archive.index.reading() as session:
        from oncopacs.audit.models import AuditRecord
        from oncopacs.audit.sealing import chain_value

        record = session.get(AuditRecord, 5000)
        forged = chain_value(record, record.previous_sha256, None)
    execute(archive, "UPDATE audit_records SET record_sha256 = :h WHERE id = 5000", h=forged)
    rechained = trail.verify()
    assert [(b.first_id, b.reason) for b in rechained.breaks] == [
        (5000, ChainBreak.ALTERED), (5001, ChainBreak.OUT_OF_ORDER)]

    execute(archive, "DELETE FROM audit_records WHERE id >= 5000 AND id <= 5001")
    deleted = trail.verify()
    assert deleted.broken_id == 5000 and deleted.reason is ChainBreak.MISSING


def test_deleting_the_newest_record_or_forging_one_is_found(archive: Archive, trail: AuditTrail):
    trail.record_many([event(n) for n in range(10)])
    execute(archive, "DELETE FROM audit_records WHERE id = 10")
    truncated = trail.verify()
    assert truncated.broken_id == 10 and truncated.reason is ChainBreak.MISSING
    trail2 = archive.audit
    execute(archive, "UPDATE audit_chain_head SET last_record_id = 9, last_sha256 = "
                     "(SELECT record_sha256 FROM audit_records WHERE id = 9)")
    rewound = trail2.verify()  # the head rewound too: the checkpoint outside the database still names record 10
    assert rewound.broken_id == 10 and rewound.reason is ChainBreak.BEHIND_CHECKPOINT
    execute(archive, "INSERT INTO audit_records (id, recorded_at, action, outcome, actor, actor_kind, source, "
                     "patient_ids, study_uids, detail, previous_sha256, record_sha256) VALUES (10, '2030-01-01', "
                     "'query', 0, 'x', 'user', '', '', '', '', 'a', 'b')")
    forged = trail2.verify()
    assert forged.broken_id == 10 and forged.reason is ChainBreak.HEAD_MISMATCH


def test_swapped_records_are_found(archive: Archive, trail: AuditTrail):
    trail.record_many([event(n) for n in range(5)])
    execute(archive, "UPDATE audit_records SET id = 100 WHERE id = 2")
    execute(archive, "UPDATE audit_records SET id = 2 WHERE id = 3")
    execute(archive, "UPDATE audit_records SET id = 3 WHERE id = 100")
    swapped = trail.verify()
    assert swapped.broken_id == 2 and swapped.reason in (ChainBreak.ALTERED, ChainBreak.OUT_OF_ORDER)


def test_concurrent_appends_stay_one_chain(trail: AuditTrail):
    errors: list[Exception] = []

    def append(worker: int) -> None:
        try:
            for n in range(25):
                trail.record(event(n, actor=f"worker{worker}"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    result = trail.verify()
    assert result.ok and result.checked == 200 and result.last_id == 200
    assert trail.query(AuditFilter(actor="worker3")).total == 25


def test_query_filters_and_pages(trail: AuditTrail):
    trail.record(event(1, patients=("P1",)))
    trail.record(event(2, patients=("P10", "X%_/\\"), actor="bob", action=AuditAction.RETRIEVE))
    trail.record(event(3, patients=("A", "P1", "B")))
    middle = trail.query().entries[1].recorded_at
    assert [e.id for e in trail.query(AuditFilter(patient_id="P1")).entries] == [1, 3]
    assert [e.id for e in trail.query(AuditFilter(patient_id="P10")).entries] == [2]
    assert [e.id for e in trail.query(AuditFilter(patient_id="P%")).entries] == []
    assert [e.id for e in trail.query(AuditFilter(actor="bob")).entries] == [2]
    assert [e.id for e in trail.query(AuditFilter(action=AuditAction.RETRIEVE)).entries] == [2]
    assert [e.id for e in trail.query(AuditFilter(since=middle)).entries] == [2, 3]
    assert [e.id for e in trail.query(AuditFilter(until=middle)).entries] == [1]
    assert [e.id for e in trail.query(AuditFilter(since="2000-01-01", until="2000-01-02")).entries] == []
    page = trail.query(limit=2, offset=1)
    assert page.total == 3 and [e.id for e in page.entries] == [2, 3]
    assert [e.id for e in trail.iter_entries(AuditFilter(patient_id="P1"), batch_size=1)] == [1, 3]


def test_the_sink_gets_each_stored_record_and_cannot_fail_it(archive: Archive):
    received: list[AuditEntry] = []

    class Collecting:
        def submit(self, entry: AuditEntry) -> None:
            received.append(entry)

    class Broken:
        def submit(self, entry: AuditEntry) -> None:
            raise OSError("collector down")

    key, checkpoints = archive.audit.key, archive.audit.checkpoints
    AuditTrail(archive.index, Collecting(), key=key, checkpoints=checkpoints).record(event(1))
    assert [e.id for e in received] == [1] and received[0].study_uids == ("1.2.3.1",)
    assert AuditTrail(archive.index, Broken(), key=key, checkpoints=checkpoints).record(event(2)) == 2
    assert archive.audit.verify().ok


def test_an_unavailable_trail_raises_audit_error(archive: Archive, trail: AuditTrail):
    execute(archive, "DROP TABLE audit_records")
    with pytest.raises(AuditError):
        trail.record(event(1))
