"""Appending to the audit trail, reading it back, and checking its chain.

Each record's chain value is an HMAC-SHA256, under the audit key (:mod:`oncopacs.audit.sealing`, kept outside
the database), of its own fields and the previous record's chain value, so altering, deleting or re-chaining
records breaks the chain, and without the key nobody can compute the values that would hide it. Checkpoints of
the chain head sealed with the same key are kept outside the database too (:mod:`oncopacs.audit.checkpoints`),
so deleting the newest records and rewinding the head is found as well (``oncopacs audit verify`` reports every
break). Records written before the trail had a key keep their unkeyed SHA-256 chain; the head and every
checkpoint say where keyed records begin.

Appends lock the one-row chain head, so concurrent writers on SQLite or PostgreSQL stay in order.
Recording fails loudly (:class:`~oncopacs.errors.AuditError`): callers fail closed. A stored
record is then handed to an optional :class:`AuditSink` (syslog), which must never block or fail.

When the index cannot grow because the disk is full, events go to the reserved spool
(:mod:`oncopacs.audit.spool`) instead, so audited reads keep working; the next append that succeeds
first appends everything spooled, with the times it happened, in order, through the same chain.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.audit.checkpoints import Checkpoint, CheckpointWriter, read_checkpoints
from oncopacs.audit.events import AuditAction, AuditEvent
from oncopacs.audit.models import AuditChainHead, AuditRecord, AuditSpoolMark
from oncopacs.audit.sealing import AuditKey, chain_value, create_key_file, read_key_file
from oncopacs.audit.spool import HEADER_BYTES, AuditSpool, SpooledEvent, is_disk_full
from oncopacs.errors import AuditError, ConfigError
from oncopacs.index.db import IndexDatabase

log = logging.getLogger(__name__)

GENESIS_SHA256 = "0" * 64
_MULTI_VALUE_SEPARATOR = "\\"
_APPEND_ATTEMPTS = 3  # the first append on an empty PostgreSQL trail can race on creating the head row
VERIFY_BATCH = 5_000
MAX_LISTED_BREAKS = 100  # break ranges a verification lists; the rest are counted
_LIKE_ESCAPE = "/"


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

    ALTERED = "altered"  # the record's fields no longer give its stored chain value
    MISSING = "missing"  # a record id is absent: the record was deleted
    OUT_OF_ORDER = "out_of_order"  # the record does not follow the one before it (reordered or re-chained)
    HEAD_MISMATCH = "head_mismatch"  # the last record is not the one the chain head names (truncated or appended)
    BEHIND_CHECKPOINT = "behind_checkpoint"  # a checkpoint names a record the trail no longer has (rewound)
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # a checkpoint disagrees with the record it names (re-chained)
    CHECKPOINT_FORGED = "checkpoint_forged"  # a checkpoint line that does not parse or is not sealed by the key
    NO_CHECKPOINTS = "no_checkpoints"  # keyed records but no checkpoint: the file was removed
    KEY_MISMATCH = "key_mismatch"  # the trail is sealed with a key other than the one at hand


@dataclass(frozen=True, slots=True)
class BreakFound:
    """Records ``first_id`` to ``last_id`` (0 and 0: the trail as a whole) break the chain for one reason."""

    first_id: int
    last_id: int
    reason: ChainBreak
    explanation: str

    def describe(self) -> str:
        where = ("the trail" if not self.first_id else f"record {self.first_id}" if self.first_id == self.last_id
                 else f"records {self.first_id}-{self.last_id}")
        return f"{where}: {self.reason.value}: {self.explanation}"

    def to_dict(self) -> dict[str, Any]:
        return {"first_id": self.first_id, "last_id": self.last_id, "reason": self.reason.value,
                "explanation": self.explanation}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking the whole chain and its checkpoints: every break found, in record order."""

    checked: int  # records read
    last_id: int  # id of the last record read (0 when empty)
    breaks: tuple[BreakFound, ...] = ()
    more_breaks: int = 0  # breaks found beyond the MAX_LISTED_BREAKS listed
    keyed_from: int | None = None  # the first record sealed with the audit key (None: no keyed record)
    checkpoints: int = 0  # checkpoints read and found sealed by the key
    anchored_id: int = 0  # the newest record a checkpoint names

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def broken_id(self) -> int | None:
        return self.breaks[0].first_id if self.breaks else None

    @property
    def reason(self) -> ChainBreak | None:
        return self.breaks[0].reason if self.breaks else None

    @property
    def explanation(self) -> str:
        return self.breaks[0].explanation if self.breaks else ""

    def summary(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} record(s) checked, last id {self.last_id}" + self._sealing()
        lines = [f"audit trail broken: {len(self.breaks) + self.more_breaks} break(s) in {self.checked} record(s)"]
        lines += [f"  {found.describe()}" for found in self.breaks]
        if self.more_breaks:
            lines.append(f"  ... and {self.more_breaks} more")
        return "\n".join(lines)

    def _sealing(self) -> str:
        if self.keyed_from is None:
            return "; no record is sealed with an audit key"
        older = ", records before it predate the key (unkeyed SHA-256)" if self.keyed_from > 1 else ""
        return (f"; sealed with the audit key from record {self.keyed_from}{older}; {self.checkpoints} checkpoint(s) "
                f"agree, the newest anchoring record {self.anchored_id}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "last_id": self.last_id,
            "broken_id": self.broken_id,
            "reason": self.reason.value if self.reason else None,
            "explanation": self.explanation,
            "breaks": [found.to_dict() for found in self.breaks],
            "more_breaks": self.more_breaks,
            "keyed_from": self.keyed_from,
            "checkpoints": self.checkpoints,
            "anchored_id": self.anchored_id,
        }


@dataclass(slots=True)
class _Breaks:
    """Breaks as they are found: consecutive records broken for the same reason become one range."""

    listed: list[BreakFound] = field(default_factory=list)
    more: int = 0

    def add(self, first_id: int, last_id: int, reason: ChainBreak, explanation: str) -> None:
        previous = self.listed[-1] if self.listed else None
        if previous and first_id and previous.reason is reason and previous.last_id + 1 == first_id:
            self.listed[-1] = BreakFound(previous.first_id, last_id, reason, explanation)
        elif len(self.listed) < MAX_LISTED_BREAKS:
            self.listed.append(BreakFound(first_id, last_id, reason, explanation))
        else:
            self.more += 1


@dataclass(frozen=True, slots=True)
class _Head:
    """The chain head row: the last record, its chain value, the key sealing the trail and from which record."""

    last_id: int
    chain: str
    key_id: str | None = None
    keyed_from: int | None = None


@dataclass(frozen=True, slots=True)
class _Appended:
    entries: list[AuditEntry]
    head: _Head


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
    """The append-only audit trail kept in the index database (and, while the disk is full, in ``spool``).

    With ``key`` records are sealed with it (the platform's trail always has one: :func:`open_audit_trail`);
    without, they get the unkeyed chain of trails older than keys, and appending to a sealed trail fails.
    ``checkpoints`` writes the head outside the database after appends and is read back by :meth:`verify`.
    """

    def __init__(self, index: IndexDatabase, sink: AuditSink | None = None, spool: AuditSpool | None = None, *,
                 key: AuditKey | None = None, checkpoints: CheckpointWriter | None = None):
        self.index = index
        self.sink = sink
        self.spool = spool
        self.key = key
        self.checkpoints = checkpoints

    def close(self) -> None:
        """Write the last checkpoint, release the spool's file and stop the sink (a syslog sender), if any."""
        if self.checkpoints is not None:
            self.checkpoints.close()
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
                appended = self._append_with_spooled(events, recorded_at)
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
        self._appended(appended)
        entries = appended.entries
        return [entry.id for entry in entries[len(entries) - len(events):]]

    def replay_spool(self) -> int:
        """Append what waits in the spool now (at start-up); how many records. Errors as :meth:`record_many`."""
        if self.spool is None or not self.spool.has_entries():
            return 0
        try:
            appended = self._append_with_spooled((), _now())
        except (SQLAlchemyError, OSError) as exc:
            raise AuditError(f"the audit trail could not take the spooled records: {exc.__class__.__name__}") from exc
        self._appended(appended)
        return len(appended.entries)

    def adopt_key(self) -> None:
        """Have the chain head name this trail's key, creating the head if there is none: the records of a trail
        older than keys stay as they are and the next one is the first sealed. Then write a checkpoint.

        Raises AuditError when the trail is sealed with another key, or cannot be written.
        """
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                with self.index.write_connection() as connection:
                    head = _lock_head(connection, self.key)
                break
            except SqlIntegrityError:
                if attempt == _APPEND_ATTEMPTS:
                    raise AuditError("the audit trail's chain head could not be created") from None
            except SQLAlchemyError as exc:
                raise AuditError(f"the audit trail could not be written: {exc.__class__.__name__}") from exc
        if self.checkpoints is not None and head.last_id and head.keyed_from is not None:
            self.checkpoints.note(head.last_id, head.chain, head.keyed_from)
            self.checkpoints.flush()

    def _append_with_spooled(self, events: Sequence[AuditEvent], recorded_at: str) -> _Appended:
        """One transaction: the spooled events not yet replayed (when there are any), then ``events``."""
        if self.spool is None or not self.spool.has_entries():
            with self.index.write_connection() as connection:
                return _append(connection, events, [recorded_at] * len(events), self.key)
        with self.spool.replaying() as waiting, self.index.write_connection() as connection:
            fresh = _not_yet_replayed(connection, waiting)
            appended = _append(connection, [*(item.event for item in fresh), *events],
                               [*(item.recorded_at for item in fresh), *([recorded_at] * len(events))], self.key)
            if appended.entries:
                log.info("appended %d audit record(s) from the reserved spool", len(fresh))
            return appended

    def _appended(self, appended: _Appended) -> None:
        """After a commit: hand the records to the sink, then note the new head for a checkpoint."""
        self._hand_to_sink(appended.entries)
        head = appended.head
        if self.checkpoints is not None and appended.entries and head.keyed_from is not None:
            self.checkpoints.note(head.last_id, head.chain, head.keyed_from)

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
        """Walk the chain from the first record to the chain head and check it against the checkpoints; every
        break found (up to :data:`MAX_LISTED_BREAKS` ranges listed, the rest counted).

        Records appended while this runs are past the head read at the start and are not checked.
        """
        if self.checkpoints is not None:
            self.checkpoints.flush()  # this process's newest head is anchored before it is looked for
        head = self._head()
        found = _Breaks()
        anchors, keyed_from = self._read_anchors(head, found)
        can_seal = self.key is not None and head.key_id in (None, self.key.key_id)
        previous, expected, checked = GENESIS_SHA256, 1, 0
        for batch in self._batches([AuditRecord.id <= head.last_id], batch_size):
            for row in batch:
                checked += 1
                if row.id != expected:
                    found.add(expected, row.id - 1, ChainBreak.MISSING, "deleted from the trail")
                elif row.previous_sha256 != previous:
                    found.add(row.id, row.id, ChainBreak.OUT_OF_ORDER, "does not follow the record before it")
                keyed = keyed_from is not None and row.id >= keyed_from
                if (can_seal or not keyed) and chain_value(row, row.previous_sha256,
                                                           self.key if keyed else None) != row.record_sha256:
                    found.add(row.id, row.id, ChainBreak.ALTERED, "its contents do not give its chain value"
                              + (" under the audit key" if keyed else ""))
                anchor = anchors.get(row.id)
                if anchor is not None and anchor.chain != row.record_sha256:
                    found.add(row.id, row.id, ChainBreak.CHECKPOINT_MISMATCH,
                              f"the checkpoint of {anchor.written_at} sealed another chain value for it (re-chained)")
                previous, expected = row.record_sha256, row.id + 1
        last_id = expected - 1
        if last_id < head.last_id:
            found.add(last_id + 1, head.last_id, ChainBreak.MISSING, "deleted from the end of the trail")
        elif checked and previous != head.chain:
            found.add(last_id, last_id, ChainBreak.HEAD_MISMATCH, "the chain head holds another chain value")
        newest_id, now_head_id = self._newest_id(), self._head().last_id
        if newest_id > now_head_id:
            found.add(now_head_id + 1, newest_id, ChainBreak.HEAD_MISMATCH, "added outside the trail")
        anchored_id = max(anchors, default=0)
        if anchored_id > max(newest_id, head.last_id):
            anchor = anchors[anchored_id]
            found.add(max(newest_id, head.last_id) + 1, anchored_id, ChainBreak.BEHIND_CHECKPOINT,
                      f"the checkpoint of {anchor.written_at} names record {anchored_id}; the trail now ends at "
                      f"{newest_id} (records deleted and the head rewound)")
        breaks = tuple(sorted(found.listed, key=lambda item: (item.first_id, item.reason.value)))
        return VerifyResult(checked, last_id, breaks, found.more, keyed_from, len(anchors), anchored_id)

    def _read_anchors(self, head: _Head, found: _Breaks) -> tuple[dict[int, Checkpoint], int | None]:
        """The checkpoints sealed by the key, by record id, and where keyed records begin (what the checkpoints
        say, since the database may have been changed; else what the head says). Problems go to ``found``."""
        keyed_from = head.keyed_from if head.key_id is not None else None
        if head.key_id is not None and (self.key is None or self.key.key_id != head.key_id):
            found.add(0, 0, ChainBreak.KEY_MISMATCH,
                      f"the trail is sealed with audit key {head.key_id}, and the key at hand is "
                      f"{self.key.key_id if self.key else 'none'}: keyed records cannot be checked")
            return {}, keyed_from
        if self.key is None or self.checkpoints is None:
            return {}, keyed_from
        anchors: dict[int, Checkpoint] = {}
        boundaries: set[int] = set()
        for line in read_checkpoints(self.checkpoints.path):
            checkpoint = line.checkpoint
            if checkpoint is None or not checkpoint.is_sealed_by(self.key):
                found.add(0, 0, ChainBreak.CHECKPOINT_FORGED,
                          f"line {line.number} of the checkpoint file is not a checkpoint sealed by the audit key")
                continue
            anchors[checkpoint.record_id] = checkpoint
            boundaries.add(checkpoint.keyed_from)
        if boundaries and boundaries != {keyed_from}:
            sealed_from = min(boundaries)
            found.add(0, 0, ChainBreak.CHECKPOINT_MISMATCH,
                      f"the checkpoints say records are sealed from {sealed_from}, the trail says from {keyed_from}")
            keyed_from = sealed_from
        if not anchors and keyed_from is not None and head.last_id >= keyed_from:
            found.add(0, 0, ChainBreak.NO_CHECKPOINTS,
                      f"keyed records exist but {self.checkpoints.path} holds no checkpoint (removed?)")
        return anchors, keyed_from

    def _head(self) -> _Head:
        try:
            with self.index.reading() as session:
                head = session.get(AuditChainHead, 1)
                if head is None:
                    return _Head(0, GENESIS_SHA256)
                return _Head(head.last_record_id, head.last_sha256, head.key_id, head.keyed_from)
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
                     spool_bytes: int = 0, key_file: Path | None = None,
                     checkpoint_file: Path | None = None) -> AuditTrail:
    """The trail of ``index``, sealed with the key in ``key_file`` (created when missing, unless the trail is
    sealed already), checkpointed to ``checkpoint_file``, with a reserved spool of ``spool_bytes`` at
    ``spool_path`` (0: none). ConfigError for a missing or wrong key.

    A trail older than keys is sealed from its next record on, and a checkpoint of its head is written now.
    Records spooled before a restart are appended now if the disk has room again (else at the next record).
    """
    if 0 < spool_bytes < 2 * HEADER_BYTES:
        raise ConfigError(f"audit_spool_bytes must be 0 or at least {2 * HEADER_BYTES} (got {spool_bytes})")
    key = _open_key(index, key_file) if key_file is not None else None
    checkpoints = CheckpointWriter(checkpoint_file, key, sink) if key is not None and checkpoint_file else None
    spool = AuditSpool.reserve(spool_path, spool_bytes) if spool_path is not None and spool_bytes else None
    trail = AuditTrail(index, sink, spool, key=key, checkpoints=checkpoints)
    try:
        trail.adopt_key()
    except AuditError as exc:
        log.warning("the audit trail could not be marked with its key yet (done at the next record): %s", exc)
    try:
        trail.replay_spool()
    except AuditError as exc:
        log.warning("the reserved audit spool could not be appended to the trail yet: %s", exc)
    return trail


def _open_key(index: IndexDatabase, key_file: Path) -> AuditKey:
    """The key in ``key_file``; a new one when the file is missing and no record is sealed yet."""
    head = AuditTrail(index)._head()
    if key_file.exists() or head.key_id is None:
        key = read_key_file(key_file) if key_file.exists() else create_key_file(key_file)
    else:
        raise ConfigError(f"the audit key file {key_file} is missing, and the audit trail's records from "
                          f"{head.keyed_from} are sealed with key {head.key_id}: put the key file back (backups "
                          "hold it) or point audit_key_file at it")
    if head.key_id not in (None, key.key_id):
        raise ConfigError(f"the audit key in {key_file} ({key.key_id}) is not the key the audit trail is sealed "
                          f"with ({head.key_id}): point audit_key_file at that key")
    return key


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


def _lock_head(connection: Connection, key: AuditKey | None) -> _Head:
    """The chain head, locked for this transaction: created when missing, marked with ``key`` when it names none.

    AuditError when the head names another key, or a key and ``key`` is None (an unkeyed writer).
    """
    row = connection.execute(
        select(AuditChainHead.last_record_id, AuditChainHead.last_sha256, AuditChainHead.key_id,
               AuditChainHead.keyed_from)
        .where(AuditChainHead.id == 1)
        .with_for_update()
    ).first()
    key_id = key.key_id if key is not None else None
    if row is None:  # a racing first writer fails on the primary key, and the caller retries
        head = _Head(0, GENESIS_SHA256, key_id, 1 if key is not None else None)
        connection.execute(insert(AuditChainHead).values(id=1, last_record_id=0, last_sha256=GENESIS_SHA256,
                                                         key_id=head.key_id, keyed_from=head.keyed_from))
        return head
    head = _Head(*row)
    if head.key_id is None and key is not None:
        head = _Head(head.last_id, head.chain, key.key_id, head.last_id + 1)
        connection.execute(update(AuditChainHead).where(AuditChainHead.id == 1)
                           .values(key_id=head.key_id, keyed_from=head.keyed_from))
    elif head.key_id != key_id:
        raise AuditError(f"the audit trail is sealed with audit key {head.key_id}; this writer holds "
                         f"{'key ' + key_id if key_id else 'no key'}")
    return head


def _append(session: Connection, events: Sequence[AuditEvent], times: Sequence[str],
            key: AuditKey | None) -> _Appended:
    """Insert ``events`` (that happened at ``times``) after the chain head (locked) and move the head."""
    if not events:
        return _Appended([], _Head(0, GENESIS_SHA256))
    head = _lock_head(session, key)
    last_id, last_sha256 = head.last_id, head.chain
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
        record.record_sha256 = chain_value(record, last_sha256, key)
        rows.append({column: getattr(record, column) for column in _RECORD_COLUMNS})
        entries.append(_entry(record))
        last_id, last_sha256 = record.id, record.record_sha256
    session.execute(insert(AuditRecord), rows)
    session.execute(
        update(AuditChainHead).where(AuditChainHead.id == 1).values(last_record_id=last_id, last_sha256=last_sha256)
    )
    return _Appended(entries, _Head(last_id, last_sha256, head.key_id, head.keyed_from))


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
