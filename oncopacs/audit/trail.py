"""Appending to the audit trail, reading it back, and checking its hash chain.

Each record's SHA-256 covers its own fields and the previous record's hash, so altering or
deleting any record breaks the chain from that point on (``oncopacs audit verify``).
Appends lock the one-row chain head, so concurrent writers on SQLite or PostgreSQL stay in order.
Recording fails loudly (:class:`~oncopacs.errors.AuditError`): callers fail closed. A stored
record is then handed to an optional :class:`AuditSink` (syslog), which must never block or fail.

When the index cannot grow because the disk is full, events go to the reserved spool
(:mod:`oncopacs.audit.spool`) instead, so audited reads keep working; the next append that succeeds
first appends everything spooled, with the times it happened, in order, through the same chain.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Connection, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.audit.events import AuditAction, AuditEvent
from oncopacs.audit.models import AuditChainHead, AuditRecord, AuditSpoolMark
from oncopacs.audit.spool import HEADER_BYTES, AuditSpool, SpooledEvent, is_disk_full
from oncopacs.errors import AuditError, ConfigError
from oncopacs.index.db import IndexDatabase

log = logging.getLogger(__name__)

GENESIS_SHA256 = "0" * 64
_MULTI_VALUE_SEPARATOR = "\\"
_APPEND_ATTEMPTS = 3  # the first append on an empty PostgreSQL trail can race on creating the head row
VERIFY_BATCH = 5_000
_LIKE_ESCAPE = "/"


def compute_record_sha256(record: Any, previous_sha256: str) -> str:
    """The chain hash of ``record`` (an AuditRecord or a row with its columns) given the hash before it."""
    fields = [
        record.id,
        record.recorded_at,
        record.action,
        record.outcome,
        record.actor,
        record.actor_kind,
        record.source,
        record.patient_ids,
        record.study_uids,
        record.detail,
        previous_sha256,
    ]
    canonical = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored audit record, as read back (API, export, syslog)."""

    id: int
    recorded_at: str  # ISO 8601, UTC, microseconds
    action: str
    outcome: int
    actor: str
    actor_kind: str
    source: str
    patient_ids: tuple[str, ...]
    study_uids: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["patient_ids"], values["study_uids"] = list(self.patient_ids), list(self.study_uids)
        return values


class AuditSink(Protocol):
    """Where stored records are also sent (a syslog collector). ``submit`` must not block or raise."""

    def submit(self, entry: AuditEntry) -> None: ...


class ChainBreak(str, enum.Enum):
    """Why the chain is broken at a record."""

    ALTERED = "altered"  # the record's fields no longer give its stored hash
    MISSING = "missing"  # a record id is absent: the record was deleted
    OUT_OF_ORDER = "out_of_order"  # the record does not follow the one before it (reordered or re-chained)
    HEAD_MISMATCH = "head_mismatch"  # the last record is not the one the chain head names (truncated or appended)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking the whole chain."""

    checked: int  # records read
    last_id: int  # id of the last record read (0 when empty)
    broken_id: int | None = None  # first record id where the chain breaks
    reason: ChainBreak | None = None
    explanation: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_id is None

    def summary(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} record(s) checked, last id {self.last_id}"
        reason = cast(ChainBreak, self.reason)  # set with broken_id
        return f"audit trail broken at record {self.broken_id} ({reason.value}): {self.explanation}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "last_id": self.last_id,
            "broken_id": self.broken_id,
            "reason": self.reason.value if self.reason else None,
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to read; every field is optional. Times are ISO 8601 (naive means UTC)."""

    since: str | None = None  # inclusive
    until: str | None = None  # exclusive
    actor: str | None = None
    patient_id: str | None = None
    action: AuditAction | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of records, oldest first, and how many match in all."""

    entries: tuple[AuditEntry, ...]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
            "records": [entry.to_dict() for entry in self.entries],
        }


def iter_json_export(entries: Iterable[AuditEntry]) -> Iterator[bytes]:
    """An export document, in chunks: a JSON array with one object per record."""
    yield b"["
    for number, entry in enumerate(entries):
        yield (b",\n" if number else b"\n") + json.dumps(entry.to_dict(), ensure_ascii=False).encode("utf-8")
    yield b"\n]\n"


def normalize_time(text: str) -> str:
    """``text`` (ISO 8601 date or date-time) as the trail stores times; ValueError when malformed."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class AuditTrail:
    """The append-only audit trail kept in the index database (and, while the disk is full, in ``spool``)."""

    def __init__(self, index: IndexDatabase, sink: AuditSink | None = None, spool: AuditSpool | None = None):
        self.index = index
        self.sink = sink
        self.spool = spool

    def close(self) -> None:
        """Release the spool's file and stop the sink (a syslog sender's thread and socket), if any."""
        if self.spool is not None:
            self.spool.close()
        close_sink = getattr(self.sink, "close", None)
        if callable(close_sink):
            close_sink()

    # -- appending ------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> int:
        """Append ``event``; its record id (0 while it waits in the spool). Raises AuditError when it cannot be kept."""
        return self.record_many([event])[0]

    def record_many(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append ``events`` in one transaction, in order; their record ids (0 for events held in the spool)."""
        if not events:
            return []
        recorded_at = _now()
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                entries = self._append_with_spooled(events, recorded_at)
                break
            except SqlIntegrityError as exc:
                if attempt == _APPEND_ATTEMPTS:
                    raise AuditError(
                        f"the audit trail could not record a {events[0].action.value} event: {exc.__class__.__name__}"
                    ) from exc
            except (SQLAlchemyError, OSError) as exc:
                if self.spool is not None and is_disk_full(exc):
                    first = not self.spool.has_entries()
                    self.spool.append(events, recorded_at)  # AuditError when the spool is used up too
                    log.log(logging.WARNING if first else logging.DEBUG,  # once per episode, not once per request
                            "disk full: audit records are held in the reserved spool until the index has room")
                    return [0] * len(events)
                if not isinstance(exc, SQLAlchemyError):
                    raise
                raise AuditError(
                    f"the audit trail could not record a {events[0].action.value} event: {exc.__class__.__name__}"
                ) from exc
        self._hand_to_sink(entries)
        return [entry.id for entry in entries[len(entries) - len(events):]]

    def replay_spool(self) -> int:
        """Append what waits in the spool now (at start-up); how many records. Errors as :meth:`record_many`."""
        if self.spool is None or not self.spool.has_entries():
            return 0
        try:
            entries = self._append_with_spooled((), _now())
        except (SQLAlchemyError, OSError) as exc:
            raise AuditError(f"the audit trail could not take the spooled records: {exc.__class__.__name__}") from exc
        self._hand_to_sink(entries)
        return len(entries)

    def _append_with_spooled(self, events: Sequence[AuditEvent], recorded_at: str) -> list[AuditEntry]:
        """One transaction: the spooled events not yet replayed (when there are any), then ``events``."""
        if self.spool is None or not self.spool.has_entries():
            with self.index.write_connection() as connection:
                return _append(connection, events, [recorded_at] * len(events))
        with self.spool.replaying() as waiting, self.index.write_connection() as connection:
            fresh = _not_yet_replayed(connection, waiting)
            entries = _append(connection, [*(item.event for item in fresh), *events],
                              [*(item.recorded_at for item in fresh), *([recorded_at] * len(events))])
            if entries:
                log.info("appended %d audit record(s) from the reserved spool", len(fresh))
            return entries

    def _hand_to_sink(self, entries: Sequence[AuditEntry]) -> None:
        if self.sink is not None:
            for entry in entries:
                try:
                    self.sink.submit(entry)
                except Exception:  # forwarding never fails the recorded operation
                    log.exception("could not hand audit record %d to the audit sink", entry.id)

    # -- reading --------------------------------------------------------------------------

    def query(self, where: AuditFilter = AuditFilter(), *, limit: int = 100, offset: int = 0) -> AuditPage:
        """A page of records matching ``where``, oldest first."""
        conditions = _conditions(where)
        try:
            with self.index.reading() as session:
                total = session.scalar(select(func.count()).select_from(AuditRecord).where(*conditions)) or 0
                rows = session.execute(
                    select(*_COLUMNS).where(*conditions).order_by(AuditRecord.id).limit(limit).offset(offset)
                ).all()
        except SQLAlchemyError as exc:
            raise AuditError(f"the audit trail could not be read: {exc.__class__.__name__}") from exc
        return AuditPage(tuple(_entry(row) for row in rows), total, limit, offset)

    def iter_entries(
        self, where: AuditFilter = AuditFilter(), *, batch_size: int = VERIFY_BATCH
    ) -> Iterator[AuditEntry]:
        """Every record matching ``where``, oldest first, read in batches (exports)."""
        for batch in self._batches(_conditions(where), batch_size):
            yield from (_entry(row) for row in batch)

    # -- checking -------------------------------------------------------------------------

    def verify(self, *, batch_size: int = VERIFY_BATCH) -> VerifyResult:
        """Walk the chain from the first record to the chain head; where and why it first breaks, if it does.

        Records appended while this runs are past the head read at the start and are not checked.
        """
        head_id, head_sha256 = self._head()
        previous_sha256, expected_id, checked = GENESIS_SHA256, 1, 0
        for batch in self._batches([AuditRecord.id <= head_id], batch_size):
            for row in batch:
                checked += 1
                if row.id != expected_id:
                    return VerifyResult(checked, row.id, expected_id, ChainBreak.MISSING,
                                        f"record {expected_id} is missing (the next record is {row.id})")
                if row.previous_sha256 != previous_sha256:
                    return VerifyResult(checked, row.id, row.id, ChainBreak.OUT_OF_ORDER,
                                        "the record does not follow the record before it")
                if compute_record_sha256(row, previous_sha256) != row.record_sha256:
                    return VerifyResult(checked, row.id, row.id, ChainBreak.ALTERED,
                                        "the record's contents do not match its hash")
                previous_sha256, expected_id = row.record_sha256, expected_id + 1
        last_id = expected_id - 1
        if last_id < head_id:
            return VerifyResult(checked, last_id, last_id + 1, ChainBreak.MISSING,
                                f"records {last_id + 1} to {head_id} are missing (the trail was truncated)")
        if previous_sha256 != head_sha256:
            return VerifyResult(checked, last_id, last_id, ChainBreak.HEAD_MISMATCH,
                                "the last record's hash is not the one the chain head holds")
        newest_id = self._newest_id()
        now_head_id, _ = self._head()
        if newest_id > now_head_id:
            return VerifyResult(checked, last_id, now_head_id + 1, ChainBreak.HEAD_MISMATCH,
                                f"record(s) after {now_head_id} were added outside the trail")
        return VerifyResult(checked, last_id)

    def _head(self) -> tuple[int, str]:
        try:
            with self.index.reading() as session:
                head = session.get(AuditChainHead, 1)
                return (head.last_record_id, head.last_sha256) if head else (0, GENESIS_SHA256)
        except SQLAlchemyError as exc:
            raise AuditError(f"the audit trail could not be read: {exc.__class__.__name__}") from exc

    def _newest_id(self) -> int:
        try:
            with self.index.reading() as session:
                return session.scalar(select(func.max(AuditRecord.id))) or 0
        except SQLAlchemyError as exc:
            raise AuditError(f"the audit trail could not be read: {exc.__class__.__name__}") from exc

    def _batches(self, conditions: list, batch_size: int) -> Iterator[Sequence[Any]]:
        after_id = 0
        while True:
            try:
                with self.index.reading() as session:
                    batch = session.execute(
                        select(*_COLUMNS, AuditRecord.previous_sha256, AuditRecord.record_sha256)
                        .where(AuditRecord.id > after_id, *conditions)
                        .order_by(AuditRecord.id)
                        .limit(batch_size)
                    ).all()
            except SQLAlchemyError as exc:
                raise AuditError(f"the audit trail could not be read: {exc.__class__.__name__}") from exc
            if not batch:
                return
            yield batch
            after_id = batch[-1].id


_COLUMNS = (
    AuditRecord.id,
    AuditRecord.recorded_at,
    AuditRecord.action,
    AuditRecord.outcome,
    AuditRecord.actor,
    AuditRecord.actor_kind,
    AuditRecord.source,
    AuditRecord.patient_ids,
    AuditRecord.study_uids,
    AuditRecord.detail,
)


def open_audit_trail(index: IndexDatabase, sink: AuditSink | None = None, *, spool_path: Path | None = None,
                     spool_bytes: int = 0) -> AuditTrail:
    """The trail of ``index`` with a reserved spool of ``spool_bytes`` at ``spool_path`` (0: none).

    Records spooled before a restart are appended now if the disk has room again (else at the next record).
    """
    if 0 < spool_bytes < 2 * HEADER_BYTES:
        raise ConfigError(f"audit_spool_bytes must be 0 or at least {2 * HEADER_BYTES} (got {spool_bytes})")
    spool = AuditSpool.reserve(spool_path, spool_bytes) if spool_path is not None and spool_bytes else None
    trail = AuditTrail(index, sink, spool)
    try:
        trail.replay_spool()
    except AuditError as exc:
        log.warning("the reserved audit spool could not be appended to the trail yet: %s", exc)
    return trail


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _not_yet_replayed(connection: Connection, waiting: Sequence[SpooledEvent]) -> list[SpooledEvent]:
    """The spooled events past their generation's mark, with the mark moved past them (same transaction)."""
    fresh: list[SpooledEvent] = []
    for generation in dict.fromkeys(item.generation for item in waiting):
        mark = connection.execute(
            select(AuditSpoolMark.last_sequence).where(AuditSpoolMark.generation == generation)
        ).scalar()
        mine = [item for item in waiting if item.generation == generation and item.sequence > (mark or 0)]
        if not mine:
            continue
        last = max(item.sequence for item in mine)
        if mark is None:
            connection.execute(insert(AuditSpoolMark).values(generation=generation, last_sequence=last))
        else:
            connection.execute(update(AuditSpoolMark).where(AuditSpoolMark.generation == generation)
                               .values(last_sequence=last))
        fresh.extend(mine)
    return fresh


def _append(session: Connection, events: Sequence[AuditEvent], times: Sequence[str]) -> list[AuditEntry]:
    """Insert ``events`` (that happened at ``times``) after the chain head (locked) and move the head."""
    if not events:
        return []
    head = session.execute(
        select(AuditChainHead.last_record_id, AuditChainHead.last_sha256)
        .where(AuditChainHead.id == 1)
        .with_for_update()
    ).first()
    if head is None:  # a racing first writer fails on the primary key, and the append is retried
        session.execute(insert(AuditChainHead).values(id=1, last_record_id=0, last_sha256=GENESIS_SHA256))
        last_id, last_sha256 = 0, GENESIS_SHA256
    else:
        last_id, last_sha256 = head
    rows, entries = [], []
    for event, recorded_at in zip(events, times, strict=True):
        record = AuditRecord(
            id=last_id + 1,
            recorded_at=recorded_at,
            action=event.action.value,
            outcome=int(event.outcome),
            actor=event.actor,
            actor_kind=event.actor_kind.value,
            source=event.source,
            patient_ids=_MULTI_VALUE_SEPARATOR.join(event.patient_ids),
            study_uids=_MULTI_VALUE_SEPARATOR.join(event.study_uids),
            detail=event.detail,
            previous_sha256=last_sha256,
        )
        record.record_sha256 = compute_record_sha256(record, last_sha256)
        rows.append({column: getattr(record, column) for column in _RECORD_COLUMNS})
        entries.append(_entry(record))
        last_id, last_sha256 = record.id, record.record_sha256
    session.execute(insert(AuditRecord), rows)
    session.execute(
        update(AuditChainHead).where(AuditChainHead.id == 1).values(last_record_id=last_id, last_sha256=last_sha256)
    )
    return entries


_RECORD_COLUMNS = tuple(column.key for column in AuditRecord.__table__.columns)


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(_MULTI_VALUE_SEPARATOR)) if text else ()


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        recorded_at=row.recorded_at,
        action=row.action,
        outcome=row.outcome,
        actor=row.actor,
        actor_kind=row.actor_kind,
        source=row.source,
        patient_ids=_split(row.patient_ids),
        study_uids=_split(row.study_uids),
        detail=row.detail,
    )


def _conditions(where: AuditFilter) -> list:
    conditions = []
    if where.since:
        conditions.append(AuditRecord.recorded_at >= normalize_time(where.since))
    if where.until:
        conditions.append(AuditRecord.recorded_at < normalize_time(where.until))
    if where.actor:
        conditions.append(AuditRecord.actor == where.actor)
    if where.action is not None:
        conditions.append(AuditRecord.action == AuditAction(where.action).value)
    if where.patient_id:
        # patient_ids is backslash-separated: match one whole value, wherever it is in the list
        escaped = "".join(_LIKE_ESCAPE + c if c in "%_" + _LIKE_ESCAPE else c for c in where.patient_id)
        sep = _MULTI_VALUE_SEPARATOR
        padded = literal(sep) + AuditRecord.patient_ids + literal(sep)
        conditions.append(padded.like(f"%{sep}{escaped}{sep}%", escape=_LIKE_ESCAPE))
    return conditions
