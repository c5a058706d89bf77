"""The reserved audit spool: where audit records wait while the disk is too full for the index to take them.

Reads are audited and fail closed, so without it a full disk would stop every read. The spool is a file of
:data:`SPOOL_BYTES` written out in full when the platform opens (``audit-spool`` in the data directory), so
appending to it later needs no new disk blocks on the usual file systems (ext4, XFS, tmpfs; not on
copy-on-write ones such as btrfs or ZFS, where a full disk stops the spool too and records fail closed as before).

Layout: one header page (``ONCOPACS-AUDIT-SPOOL 1 <generation>``, NUL-padded), then one JSON line per
event, then NUL bytes to the end. Each line carries its generation and a sequence number. Replaying appends
the current generation's lines to the trail in the same transaction that notes the last sequence replayed
(:class:`~oncopacs.audit.models.AuditSpoolMark`), then starts a new generation and zeroes the lines: a crash
at any point neither loses a record nor appends one twice. Several processes share the file under ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.errors import AuditError

log = logging.getLogger(__name__)

SPOOL_FILE = "audit-spool"
SPOOL_BYTES = 64 * 1024**2  # about 150,000 records of a busy viewer session
HEADER_BYTES = 4096
_MAGIC = b"ONCOPACS-AUDIT-SPOOL 1 "
_CHUNK = 1024**2
_POSTGRES_DISK_FULL = "53100"


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a file system out of space: ENOSPC or EDQUOT, SQLite's
    SQLITE_FULL, or PostgreSQL's disk_full (SQLSTATE 53100)."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return True
        for cause in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(cause, BaseException):
                pending.append(cause)
    return False


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    """An event held in the spool, with the time it happened (ISO 8601 UTC, as the trail stores it)."""

    generation: str
    sequence: int
    recorded_at: str
    event: AuditEvent


def _encode(generation: str, sequence: int, recorded_at: str, event: AuditEvent) -> bytes:
    fields = {
        "g": generation, "n": sequence, "t": recorded_at, "action": event.action.value,
        "outcome": int(event.outcome), "actor": event.actor, "actor_kind": event.actor_kind.value,
        "source": event.source, "patient_ids": list(event.patient_ids), "study_uids": list(event.study_uids),
        "detail": event.detail,
    }
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _decode(line: bytes) -> SpooledEvent | None:
    try:
        fields = json.loads(line)
        event = AuditEvent(
            action=AuditAction(fields["action"]), outcome=Outcome(fields["outcome"]), actor=str(fields["actor"]),
            actor_kind=ActorKind(fields["actor_kind"]), source=str(fields["source"]),
            patient_ids=tuple(map(str, fields["patient_ids"])), study_uids=tuple(map(str, fields["study_uids"])),
            detail=str(fields["detail"]),
        )
        return SpooledEvent(str(fields["g"]), int(fields["n"]), str(fields["t"]), event)
    except (ValueError, KeyError, TypeError):  # a line cut by a crash: it was never acknowledged
        return None


@dataclass(slots=True)
class _Tail:
    """Where the next line goes, for one generation (a cache; checked against the file under the lock)."""

    generation: str
    end: int
    last_sequence: int


class AuditSpool:
    """The pre-allocated spool file of one data directory. Thread- and process-safe."""

    def __init__(self, path: Path, descriptor: int, size_bytes: int):
        self.path = path
        self.size_bytes = size_bytes
        self._fd = descriptor
        self._lock = threading.Lock()
        self._tail: _Tail | None = None
        # the lines read by the last replay that failed (the disk still full): the next one reads only newer lines
        self._waiting: tuple[str, int, list[SpooledEvent]] | None = None

    @classmethod
    def reserve(cls, path: Path, size_bytes: int = SPOOL_BYTES) -> AuditSpool | None:
        """Open the spool at ``path``, writing it out in full first if it is missing or short.

        None (and a warning) when there is no room for it: records then fail closed when the disk is full.
        """
        try:
            if not path.exists():
                _write_reserve(path, size_bytes)
            descriptor = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            log.warning("no reserved audit spool at %s (%s): while the disk is full, audited requests will fail",
                        path, exc.strerror or exc)
            return None
        spool = cls(path, descriptor, os.fstat(descriptor).st_size)
        with spool._locked():
            spool._generation()  # a file with a damaged header gets a new generation now
        return spool

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- appending -----------------------------------------------------------------------------

    def has_entries(self) -> bool:
        """Whether anything waits in the spool (one byte read, no lock: cheap enough for every record)."""
        descriptor = self._fd
        try:
            return descriptor >= 0 and os.pread(descriptor, 1, HEADER_BYTES) not in (b"", b"\0")
        except OSError:  # closed meanwhile
            return False

    def append(self, events: Sequence[AuditEvent], recorded_at: str) -> None:
        """Hold ``events`` (that happened at ``recorded_at``) durably; AuditError when the spool has no room."""
        with self._locked():
            tail = self._find_tail()
            lines = b"".join(_encode(tail.generation, tail.last_sequence + number, recorded_at, event)
                             for number, event in enumerate(events, start=1))
            separator = b"" if tail.end == HEADER_BYTES or os.pread(self._fd, 1, tail.end - 1) == b"\n" else b"\n"
            data = separator + lines
            if tail.end + len(data) > self.size_bytes:
                raise AuditError("the disk is full and the reserved audit spool is used up")
            try:
                os.pwrite(self._fd, data, tail.end)
                os.fdatasync(self._fd)
            except OSError as exc:
                self._tail = None  # the file may hold part of the lines: look again next time
                raise AuditError(f"the disk is full and the reserved audit spool could not be written ({exc.strerror})"
                                 ) from exc
            self._tail = _Tail(tail.generation, tail.end + len(data), tail.last_sequence + len(events))

    # -- replaying -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def replaying(self) -> Iterator[list[SpooledEvent]]:
        """The events waiting, oldest first, under the spool's lock; cleared when the block ends without error.

        The caller appends them (and notes their generation's last sequence) in one committed transaction.
        """
        with self._locked():
            generation = self._generation()
            known = self._waiting if self._waiting is not None and self._waiting[0] == generation else None
            end, newer = self._scan(known[1] if known else HEADER_BYTES)
            waiting = [*(known[2] if known else ()), *(entry for entry in newer if entry.generation == generation)]
            self._waiting = (generation, end, waiting)
            yield waiting
            self._clear(end)

    # -- the file ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._fd < 0:
                raise AuditError("the reserved audit spool is closed")
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _generation(self) -> str:
        header = os.pread(self._fd, len(_MAGIC) + 32, 0)
        generation = header[len(_MAGIC):].decode("ascii", "replace")
        if header.startswith(_MAGIC) and len(generation) == 32 and all(c in "0123456789abcdef" for c in generation):
            return generation
        return self._new_generation()

    def _new_generation(self) -> str:
        generation = secrets.token_hex(16)
        os.pwrite(self._fd, (_MAGIC + generation.encode("ascii") + b"\n").ljust(HEADER_BYTES, b"\0"), 0)
        os.fdatasync(self._fd)
        self._tail = self._waiting = None
        return generation

    def _find_tail(self) -> _Tail:
        generation = self._generation()
        tail = self._tail
        if tail is None or tail.generation != generation:
            tail = _Tail(generation, HEADER_BYTES, 0)
        elif os.pread(self._fd, 1, tail.end) in (b"", b"\0"):
            return tail  # nobody else appended since
        end, found = self._scan(tail.end)  # read only what other processes appended
        sequences = [entry.sequence for entry in found if entry.generation == generation]
        return _Tail(generation, end, max([tail.last_sequence, *sequences]))

    def _scan(self, start: int) -> tuple[int, list[SpooledEvent]]:
        """The lines from ``start`` to the first NUL byte, and where that NUL is."""
        end, chunks = start, []
        while end < self.size_bytes:
            chunk = os.pread(self._fd, min(_CHUNK, self.size_bytes - end), end)
            if not chunk:
                break
            cut = chunk.find(b"\0")
            chunks.append(chunk if cut < 0 else chunk[:cut])
            end += len(chunk) if cut < 0 else cut
            if cut >= 0:
                break
        entries = [entry for line in b"".join(chunks).split(b"\n") if line.strip()
                   if (entry := _decode(line)) is not None]
        return end, entries

    def _clear(self, end: int) -> None:
        """Start a new generation (replayed lines are then dead), then zero them so the space is reused."""
        self._new_generation()
        position = HEADER_BYTES
        while position < end:
            size = min(_CHUNK, end - position)
            os.pwrite(self._fd, bytes(size), position)
            position += size
        os.fdatasync(self._fd)
        self._tail = self._waiting = None


def _write_reserve(path: Path, size_bytes: int) -> None:
    """Write the spool out in full (real blocks, not a sparse file) under a temporary name, then link it in
    place (the first of concurrent starters wins; an existing spool is never replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            header = (_MAGIC + secrets.token_hex(16).encode("ascii") + b"\n").ljust(HEADER_BYTES, b"\0")
            os.write(descriptor, header)
            zeros = bytes(_CHUNK)
            written = HEADER_BYTES
            while written < size_bytes:
                written += os.write(descriptor, zeros[: min(_CHUNK, size_bytes - written)])
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
