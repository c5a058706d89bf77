"""The outbox service on both index back-ends: idempotent enqueue, exclusive claims, back-off, dead letters."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect

from oncopacs.errors import ConfigError, NotFoundError
from oncopacs.index.db import _alembic_config, open_index
from oncopacs.index.models import OutboxItem
from oncopacs.orchestration.outbox import (
    DestinationKind,
    Outbox,
    OutboxState,
    OutboxStateError,
    RetryPolicy,
    parse_destination,
)
from oncopacs.platform import Platform
from oncopacs.settings import RemoteAE

PEER = RemoteAE("DEST", "127.0.0.1", 11199)
STOW_URL = "http://127.0.0.1:9/dicom-web"


class FakeClock:
    """A clock the test moves by hand (UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def uids(n: int, prefix: str = "1.2.826.0.1.3680043.10.1") -> list[str]:
    return [f"{prefix}.{i}" for i in range(1, n + 1)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(platform: Platform, clock: FakeClock) -> Outbox:
    return Outbox(platform.index, [PEER], policy=RetryPolicy(base_s=5.0, cap_s=40.0, max_attempts=4, lease_s=60.0),
                  clock=clock)


def test_destinations_are_configured_ae_titles_or_http_urls() -> None:
    assert parse_destination(" DEST ", [PEER]).kind is DestinationKind.DIMSE
    assert parse_destination(STOW_URL + "/", [PEER]) == parse_destination(STOW_URL, [])
    assert parse_destination(STOW_URL, []).kind is DestinationKind.STOW
    with pytest.raises(ConfigError, match="ONCOPACS_REMOTE_AES"):
        parse_destination("UNKNOWN", [PEER])
    with pytest.raises(ConfigError, match="credentials"):
        parse_destination("https://user:secret@pacs.example/dicom-web", [])


def test_back_off_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=5.0, cap_s=600.0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 8, 20)] == [5.0, 10.0, 20.0, 40.0, 600.0, 600.0]
    with pytest.raises(ValueError):
        RetryPolicy(base_s=10.0, cap_s=5.0)


def test_enqueue_is_idempotent_per_destination_and_instance(outbox: Outbox) -> None:
    assert outbox.enqueue(uids(3), "DEST", "to-dest") == 3
    assert outbox.enqueue([*uids(4), uids(1)[0]], "DEST", "again") == 1  # only the fourth is new
    assert outbox.enqueue(uids(2), STOW_URL, "to-web") == 2  # another destination: its own rows
    page = outbox.list_items(destination="DEST")
    assert page.total == 4
    assert [item.rule for item in page.items] == ["to-dest"] * 3 + ["again"]
    assert {item.kind for item in outbox.list_items(destination=STOW_URL).items} == {DestinationKind.STOW}
    with pytest.raises(ConfigError):
        outbox.enqueue(uids(1), "NOBODY")


def test_a_delivered_row_is_not_sent_again_by_a_second_enqueue(outbox: Outbox) -> None:
    outbox.enqueue(uids(1), "DEST")
    [claimed] = outbox.claim_due()
    assert outbox.mark_delivered(claimed)
    assert outbox.enqueue(uids(1), "DEST") == 0
    assert outbox.claim_due() == []
    assert not outbox.mark_delivered(claimed), "a delivery is acknowledged once"
    [row] = outbox.list_items().items
    assert row.state is OutboxState.DELIVERED and row.attempts == 1 and row.delivered_at is not None


def test_failures_back_off_then_go_dead_and_an_admin_requeues(outbox: Outbox, clock: FakeClock) -> None:
    outbox.enqueue(uids(1), "DEST")
    delays = []
    for attempt in range(1, 5):
        [claimed] = outbox.claim_due()
        assert claimed.attempts == attempt
        state = outbox.mark_failed(claimed, f"C-STORE status 0xA700 (try {attempt})")
        row = outbox.get(claimed.id)
        assert row is not None and row.state is state
        if state is OutboxState.PENDING:
            delays.append((row.next_attempt_at - clock.now).total_seconds())
            assert outbox.claim_due() == [], "not due before its back-off"
            clock.advance(delays[-1])
    assert delays == [5.0, 10.0, 20.0]
    assert state is OutboxState.DEAD
    clock.advance(3600)
    assert outbox.claim_due() == [], "a dead row is not tried again"
    [status] = outbox.status()
    assert (status.dead, status.pending, status.last_error) == (1, 0, "C-STORE status 0xA700 (try 4)")
    assert outbox.list_items(state=OutboxState.DEAD).total == 1

    requeued = outbox.requeue(claimed.id)
    assert (requeued.state, requeued.attempts, requeued.last_error) == (OutboxState.PENDING, 0, "")
    assert [item.id for item in outbox.claim_due()] == [claimed.id]
    with pytest.raises(OutboxStateError):
        outbox.requeue(claimed.id)  # being delivered
    with pytest.raises(NotFoundError):
        outbox.requeue(999_999)


def test_a_permanent_failure_is_dead_at_once(outbox: Outbox) -> None:
    outbox.enqueue(uids(1), "DEST")
    [claimed] = outbox.claim_due()
    assert outbox.mark_failed(claimed, "not in the archive", permanent=True) is OutboxState.DEAD


def test_a_lapsed_claim_is_taken_over_and_the_old_claim_can_no_longer_mark(outbox: Outbox, clock: FakeClock) -> None:
    outbox.enqueue(uids(2), "DEST")
    first = outbox.claim_due()
    assert len(first) == 2 and outbox.claim_due() == []  # claimed: not due for anyone else
    clock.advance(61)  # the worker died; its lease lapsed
    again = outbox.claim_due()
    assert [item.attempts for item in again] == [2, 2]
    assert not outbox.mark_delivered(first[0]) and outbox.mark_failed(first[1], "late") is None
    assert all(outbox.mark_delivered(item) for item in again)
    assert {row.state for row in outbox.list_items().items} == {OutboxState.DELIVERED}


def test_concurrent_workers_never_claim_the_same_row(platform: Platform, clock: FakeClock) -> None:
    workers = [Outbox(platform.index, [PEER], clock=clock) for _ in range(4)]
    workers[0].enqueue(uids(120), "DEST")
    claimed: list[list[int]] = [[] for _ in workers]
    start = threading.Barrier(len(workers))

    def work(index: int) -> None:
        start.wait()
        while batch := workers[index].claim_due(7):
            claimed[index] += [item.id for item in batch]
            for item in batch:
                assert workers[index].mark_delivered(item)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [item_id for ids in claimed for item_id in ids]
    assert len(every) == len(set(every)) == 120
    assert all(row.attempts == 1 for row in workers[0].list_items(limit=200).items)


def test_status_per_destination(outbox: Outbox, clock: FakeClock) -> None:
    outbox.enqueue(uids(3), "DEST")
    clock.advance(10)
    outbox.enqueue(uids(2), STOW_URL)
    first, second, _ = outbox.claim_due(3)
    outbox.mark_delivered(first)
    outbox.mark_failed(second, "DEST at 127.0.0.1:11199 could not be reached")
    by_name = {status.destination: status for status in outbox.status()}
    dest, web = by_name["DEST"], by_name[STOW_URL]
    assert (dest.pending, dest.delivering, dest.delivered, dest.dead) == (1, 1, 1, 0)
    assert dest.oldest_pending_at == clock.now - timedelta(seconds=10)
    assert dest.last_error == "DEST at 127.0.0.1:11199 could not be reached"
    assert (web.kind, web.pending, web.last_error) == (DestinationKind.STOW, 2, "")
    assert dest.to_dict()["counts"] == {"pending": 1, "delivering": 1, "delivered": 1, "dead": 0}


def test_migration_0007_creates_the_table_of_the_model_and_downgrades(database_url: str) -> None:
    index = open_index(database_url)
    try:
        with index.read_connection() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("outbox_items")}
        assert columns == set(OutboxItem.__table__.columns.keys())
        with index.write_engine.begin() as connection:
            config = _alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
        with index.read_connection() as connection:
            assert "outbox_items" not in inspect(connection).get_table_names()
        index.migrate()
        with index.read_connection() as connection:
            assert "outbox_items" in inspect(connection).get_table_names()
    finally:
        index.dispose()


def test_concurrent_enqueues_of_the_same_instances_add_each_row_once(platform: Platform, clock: FakeClock) -> None:
    producers = [Outbox(platform.index, [PEER], clock=clock) for _ in range(4)]
    added = [0] * len(producers)
    start = threading.Barrier(len(producers))

    def produce(index: int) -> None:
        start.wait()
        added[index] = producers[index].enqueue(uids(300), "DEST", f"rule-{index}")

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(len(producers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(added) == 300
    assert producers[0].list_items(limit=1000).total == 300
