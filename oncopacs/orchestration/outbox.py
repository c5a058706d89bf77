"""The durable outbox: each forward of an instance to a destination is a row that survives restarts.

A row goes ``pending`` → ``delivering`` (claimed by one worker) → ``delivered``, or back to ``pending``
with an exponential back-off after a failure, and ``dead`` after ``max_attempts`` tries (an
administrator may re-queue it). Claims are one conditional ``UPDATE … RETURNING``: of several workers
racing for a row, exactly one changes it (SQLite serialises writers; PostgreSQL re-checks the
``WHERE`` after the row lock). A claim lasts ``lease_s`` seconds; a row whose worker died is claimed
again after that. ``attempts`` is the claim's token: a row is marked delivered or failed only by the
claim that holds it, and a delivered row is never marked twice.

A crash between the peer's acknowledgement and the mark can make the row be sent once more after the
lease lapses; C-STORE and STOW-RS of the same SOP Instance UID are idempotent at the receiver, and our
outbox still shows one delivery.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from oncopacs.errors import ConfigError, NotFoundError, OncopacsError
from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import OutboxItem
from oncopacs.settings import RemoteAE

ERROR_LENGTH = 500  # the last_error column
RULE_LENGTH = 128
DESTINATION_LENGTH = 512
INSERT_BATCH = 500  # rows inserted per statement by enqueue


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


class DestinationKind(str, enum.Enum):
    DIMSE = "dimse"  # C-STORE to a configured remote AE
    STOW = "stow"  # STOW-RS to a DICOMweb base URL


class OutboxStateError(OncopacsError):
    """The row is not in a state that allows what was asked (re-queueing one that is still pending)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Back-off after a failed try: ``base_s`` doubling per attempt up to ``cap_s``; dead after ``max_attempts``."""

    base_s: float = 5.0
    cap_s: float = 600.0
    max_attempts: int = 8
    lease_s: float = 600.0  # how long a claim lasts before another worker may take the row over

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < self.base_s or self.max_attempts < 1 or self.lease_s <= 0:
            raise ValueError("need 0 <= base_s <= cap_s, max_attempts >= 1 and lease_s > 0")

    def delay_s(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try (1-based)."""
        return min(self.cap_s, self.base_s * 2.0 ** max(attempts - 1, 0))


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a row goes: an AE title (DIMSE) or a DICOMweb base URL (STOW-RS)."""

    name: str
    kind: DestinationKind


def parse_destination(text: str, remote_aes: Iterable[RemoteAE]) -> Destination:
    """An http(s) base URL is a STOW-RS destination, else a configured AE title; ConfigError otherwise."""
    name = text.strip()
    if name.lower().startswith(("http://", "https://")):
        if len(name) > DESTINATION_LENGTH or "@" in name.split("/", 3)[2]:
            raise ConfigError(f"DICOMweb destination {name[:60]!r}: too long, or carries credentials")
        return Destination(name.rstrip("/"), DestinationKind.STOW)
    if not any(remote.ae_title == name for remote in remote_aes):
        raise ConfigError(f"destination {name[:40]!r} is neither an http(s) URL nor an AE title of "
                          "ONCOPACS_REMOTE_AES")
    return Destination(name, DestinationKind.DIMSE)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One row as stored; ``attempts`` counts the tries started."""

    id: int
    sop_instance_uid: str
    destination: str
    kind: DestinationKind
    rule: str
    state: OutboxState
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    delivered_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "sop_instance_uid": self.sop_instance_uid, "destination": self.destination,
            "kind": self.kind.value, "rule": self.rule, "state": self.state.value, "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at), "last_error": self.last_error,
            "created_at": _iso(self.created_at), "delivered_at": _iso(self.delivered_at),
        }


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """How forwarding to one destination stands: rows per state, the oldest waiting, the latest failure."""

    destination: str
    kind: DestinationKind
    pending: int
    delivering: int
    delivered: int
    dead: int
    oldest_pending_at: datetime | None
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination, "kind": self.kind.value,
            "counts": {"pending": self.pending, "delivering": self.delivering, "delivered": self.delivered,
                       "dead": self.dead},
            "oldest_pending_at": _iso(self.oldest_pending_at), "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class OutboxPage:
    """A page of rows (oldest first) and how many match in all."""

    total: int
    items: tuple[OutboxRecord, ...]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """The outbox table of ``index``; forwarding targets are AE titles of ``remote_aes`` or DICOMweb URLs."""

    def __init__(self, index: IndexDatabase, remote_aes: Iterable[RemoteAE] = (), *,
                 policy: RetryPolicy | None = None, clock: Callable[[], datetime] = utc_now):
        self.index = index
        self.remote_aes = tuple(remote_aes)
        self.policy = policy or RetryPolicy()
        self.clock = clock

    def enqueue(self, sop_instance_uids: Iterable[str], destination: str, rule_name: str = "") -> int:
        """Queue each instance for ``destination``; how many rows are new (a queued or delivered pair is kept).

        ConfigError when ``destination`` is neither a configured AE title nor an http(s) URL.
        """
        target = parse_destination(destination, self.remote_aes)
        wanted = list(dict.fromkeys(str(uid).strip() for uid in sop_instance_uids if str(uid).strip()))
        if any(len(uid) > 64 for uid in wanted):
            raise ValueError("a SOP Instance UID is longer than 64 characters")
        added = 0
        for start in range(0, len(wanted), INSERT_BATCH):
            batch = wanted[start:start + INSERT_BATCH]
            try:
                added += self._insert_missing(batch, target, rule_name[:RULE_LENGTH])
            except SqlIntegrityError:  # another process queued some of them meanwhile: the rest are still missing
                added += self._insert_missing(batch, target, rule_name[:RULE_LENGTH])
        return added

    def claim_due(self, limit: int = 50) -> list[OutboxRecord]:
        """Claim up to ``limit`` due rows (pending ones, and delivering ones whose claim lapsed), oldest due first."""
        now = self.clock()
        due = and_(OutboxItem.state.in_([OutboxState.PENDING.value, OutboxState.DELIVERING.value]),
                   OutboxItem.next_attempt_at <= now)
        with self.index.reading() as session:
            candidates = session.scalars(select(OutboxItem.id).where(due)
                                         .order_by(OutboxItem.next_attempt_at, OutboxItem.id).limit(limit)).all()
        if not candidates:
            return []
        with self.index.write_connection() as connection:
            claimed = connection.execute(
                update(OutboxItem).where(OutboxItem.id.in_(candidates), due).values(
                    state=OutboxState.DELIVERING.value, attempts=OutboxItem.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=self.policy.lease_s))
                .returning(OutboxItem.id)
            ).scalars().all()
        return sorted(self._records(claimed), key=lambda r: (r.destination, r.id))

    def mark_delivered(self, item: OutboxRecord) -> bool:
        """Record the peer's success for the claim ``item``; False when the claim was lost (nothing changed)."""
        return self._finish_claim(item, state=OutboxState.DELIVERED.value, delivered_at=self.clock(), last_error="")

    def mark_failed(self, item: OutboxRecord, error: str, *, permanent: bool = False) -> OutboxState | None:
        """Record a failed try of the claim ``item``: pending after a back-off, or dead after the last try
        (at once when ``permanent``); the new state, or None when the claim was lost."""
        now = self.clock()
        if permanent or item.attempts >= self.policy.max_attempts:
            state, due = OutboxState.DEAD, now
        else:
            state, due = OutboxState.PENDING, now + timedelta(seconds=self.policy.delay_s(item.attempts))
        changed = self._finish_claim(item, state=state.value, next_attempt_at=due,
                                     last_error=" ".join(error.split())[:ERROR_LENGTH])
        return state if changed else None

    def requeue(self, item_id: int) -> OutboxRecord:
        """Queue a dead (or delivered) row again with fresh attempts; NotFoundError, or OutboxStateError
        when it is still pending or being delivered."""
        with self.index.write_connection() as connection:
            changed = connection.execute(
                update(OutboxItem).where(OutboxItem.id == item_id, OutboxItem.state.in_(
                    [OutboxState.DEAD.value, OutboxState.DELIVERED.value]))
                .values(state=OutboxState.PENDING.value, attempts=0, next_attempt_at=self.clock(), last_error="",
                        delivered_at=None)
            ).rowcount
        record = self.get(item_id)
        if record is None:
            raise NotFoundError(f"outbox item {item_id} does not exist")
        if not changed:
            raise OutboxStateError(f"outbox item {item_id} is {record.state.value}; only dead or delivered "
                                   "items can be queued again")
        return record

    def get(self, item_id: int) -> OutboxRecord | None:
        found = self._records([item_id])
        return found[0] if found else None

    def list_items(self, *, state: OutboxState | None = None, destination: str | None = None,
             limit: int = 100, offset: int = 0) -> OutboxPage:
        """Rows matching ``state`` and ``destination`` (None: any), oldest first."""
        statement = select(OutboxItem)
        if state is not None:
            statement = statement.where(OutboxItem.state == OutboxState(state).value)
        if destination:
            statement = statement.where(OutboxItem.destination == destination)
        with self.index.reading() as session:
            total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
            rows = session.scalars(statement.order_by(OutboxItem.id).limit(limit).offset(offset)).all()
            return OutboxPage(total, tuple(_record(row) for row in rows))

    def status(self) -> list[DestinationStatus]:
        """Per destination (by name): rows in each state, the oldest pending row's age, the latest failure."""
        with self.index.reading() as session:
            counts = session.execute(select(OutboxItem.destination, OutboxItem.kind, OutboxItem.state,
                                            func.count(), func.min(OutboxItem.created_at))
                                     .group_by(OutboxItem.destination, OutboxItem.kind, OutboxItem.state)).all()
            failures = session.execute(
                select(OutboxItem.destination, OutboxItem.last_error, OutboxItem.next_attempt_at)
                .where(OutboxItem.last_error != "",
                       or_(OutboxItem.state == OutboxState.PENDING.value, OutboxItem.state == OutboxState.DEAD.value))
                .order_by(OutboxItem.destination, OutboxItem.next_attempt_at.desc(), OutboxItem.id.desc())
            ).all()
        latest_error: dict[str, str] = {}
        for destination, error, _ in failures:
            latest_error.setdefault(destination, error)
        by_destination: dict[str, dict[str, Any]] = {}
        for destination, kind, state, count, oldest in counts:
            entry = by_destination.setdefault(destination, {"kind": DestinationKind(kind), "oldest": None})
            entry[state] = count
            if state == OutboxState.PENDING.value:
                entry["oldest"] = _aware(oldest)
        return [DestinationStatus(name, entry["kind"], entry.get("pending", 0), entry.get("delivering", 0),
                                  entry.get("delivered", 0), entry.get("dead", 0), entry["oldest"],
                                  latest_error.get(name, ""))
                for name, entry in sorted(by_destination.items())]

    def next_due_at(self) -> datetime | None:
        """When the next pending row falls due (or a claim lapses); None when nothing waits."""
        with self.index.reading() as session:
            moment = session.scalar(select(func.min(OutboxItem.next_attempt_at)).where(
                OutboxItem.state.in_([OutboxState.PENDING.value, OutboxState.DELIVERING.value])))
        return _aware(moment)

    def next_due_by_destination(self) -> dict[str, datetime]:
        """Per destination with pending rows: when its next pending row falls due (the outbox page's "next try")."""
        with self.index.reading() as session:
            rows = session.execute(select(OutboxItem.destination, func.min(OutboxItem.next_attempt_at))
                                   .where(OutboxItem.state == OutboxState.PENDING.value)
                                   .group_by(OutboxItem.destination)).all()
        return {destination: _aware(moment) or moment for destination, moment in rows}

    def _insert_missing(self, uids: list[str], target: Destination, rule: str) -> int:
        if not uids:
            return 0
        now = self.clock()
        with self.index.write_connection() as connection:
            present = set(connection.execute(select(OutboxItem.sop_instance_uid).where(
                OutboxItem.destination == target.name, OutboxItem.sop_instance_uid.in_(uids))).scalars())
            missing = [uid for uid in uids if uid not in present]
            if missing:
                connection.execute(insert(OutboxItem), [
                    {"sop_instance_uid": uid, "destination": target.name, "kind": target.kind.value,
                     "rule": rule, "state": OutboxState.PENDING.value, "attempts": 0, "next_attempt_at": now,
                     "last_error": "", "created_at": now, "delivered_at": None}
                    for uid in missing])
        return len(missing)

    def _finish_claim(self, item: OutboxRecord, **values: Any) -> bool:
        with self.index.write_connection() as connection:
            return connection.execute(
                update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.state == OutboxState.DELIVERING.value,
                                         OutboxItem.attempts == item.attempts).values(**values)
            ).rowcount == 1

    def _records(self, ids: Iterable[int]) -> list[OutboxRecord]:
        wanted = list(ids)
        if not wanted:
            return []
        with self.index.reading() as session:
            return [_record(row) for row in session.scalars(
                select(OutboxItem).where(OutboxItem.id.in_(wanted)).order_by(OutboxItem.id))]


def _record(row: OutboxItem) -> OutboxRecord:
    return OutboxRecord(
        id=row.id, sop_instance_uid=row.sop_instance_uid, destination=row.destination,
        kind=DestinationKind(row.kind), rule=row.rule, state=OutboxState(row.state), attempts=row.attempts,
        next_attempt_at=_aware(row.next_attempt_at) or row.next_attempt_at, last_error=row.last_error,
        created_at=_aware(row.created_at) or row.created_at, delivered_at=_aware(row.delivered_at),
    )


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; they were stored in UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
