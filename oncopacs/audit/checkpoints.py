"""Checkpoints: the audit chain's head, sealed with the audit key and kept outside the database.

A checkpoint says "record N has chain value V, and records from K on are sealed with key I", with an HMAC of
the audit key over it. Each is appended as one JSON line to the checkpoint file (``audit_checkpoint_file``,
by default ``audit-checkpoints`` in the data directory; opened for appending only, never rewritten: make it
append-only with ``chattr +a`` or keep it on another host) and handed to the syslog collector, if there is one.
Deleting the newest records and rewinding the head, or re-sealing the records unkeyed, leaves the trail
disagreeing with a checkpoint, which ``oncopacs audit verify`` reports.

Writes are throttled to one per :data:`CHECKPOINT_INTERVAL_S` in each process: the head after an append is
written at once when the last write is older than that, else by a timer at the end of the interval, and
:meth:`CheckpointWriter.close` writes the last one. Records appended within the last interval before a crash
are anchored by the next checkpoint only.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oncopacs.audit.sealing import AuditKey

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "audit-checkpoints"
CHECKPOINT_INTERVAL_S = 1.0
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One sealed statement of the chain head."""

    record_id: int
    chain: str  # the record's chain value (hex HMAC-SHA256)
    keyed_from: int  # the first record sealed with the key; earlier ones predate it
    key_id: str
    written_at: str  # ISO 8601 UTC
    mac: str = ""

    @classmethod
    def seal(cls, key: AuditKey, record_id: int, chain: str, keyed_from: int) -> Checkpoint:
        unsealed = cls(record_id, chain, keyed_from, key.key_id, datetime.now(UTC).isoformat(timespec="seconds"))
        return cls(record_id, chain, keyed_from, key.key_id, unsealed.written_at,
                   key.seal_checkpoint(unsealed.canonical()))

    def canonical(self) -> bytes:
        fields = [_VERSION, self.written_at, self.record_id, self.chain, self.keyed_from, self.key_id]
        return json.dumps(fields, separators=(",", ":")).encode("ascii")

    def is_sealed_by(self, key: AuditKey) -> bool:
        return self.key_id == key.key_id and hmac.compare_digest(self.mac, key.seal_checkpoint(self.canonical()))

    def to_line(self) -> bytes:
        fields = {"v": _VERSION, "at": self.written_at, "id": self.record_id, "chain": self.chain,
                  "keyed_from": self.keyed_from, "key_id": self.key_id, "mac": self.mac}
        return json.dumps(fields, separators=(",", ":")).encode("ascii") + b"\n"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_line())


@dataclass(frozen=True, slots=True)
class CheckpointLine:
    """One line of the checkpoint file: its checkpoint, or None when the line cannot be parsed."""

    number: int  # 1-based line number
    checkpoint: Checkpoint | None


def read_checkpoints(path: Path) -> Iterator[CheckpointLine]:
    """The lines of the checkpoint file, in order; none when the file does not exist.

    A last line without its newline is a write cut short by a crash and is left out.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    with file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield CheckpointLine(number, _parse(line))


def _parse(line: bytes) -> Checkpoint | None:
    try:
        fields = json.loads(line)
        if fields.get("v") != _VERSION:
            return None
        return Checkpoint(int(fields["id"]), str(fields["chain"]), int(fields["keyed_from"]), str(fields["key_id"]),
                          str(fields["at"]), str(fields["mac"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class CheckpointWriter:
    """Appends this process's checkpoints to the checkpoint file (and the sink), at most one per interval."""

    def __init__(self, path: Path, key: AuditKey, sink: Any = None, *,
                 interval_s: float = CHECKPOINT_INTERVAL_S):
        self.path = path
        self.key = key
        self.sink = sink  # an object with submit_checkpoint(Checkpoint) (the syslog sender), or None
        self.interval_s = interval_s
        self.written = 0
        self._lock = threading.Lock()
        self._pending: tuple[int, str, int] | None = None
        self._written_id = 0
        self._last_write = float("-inf")
        self._timer: threading.Timer | None = None
        self._failing = False
        self._closed = False

    def note(self, record_id: int, chain: str, keyed_from: int) -> None:
        """The head is now ``record_id`` with ``chain``: written now or at the end of the interval."""
        with self._lock:
            if self._closed or record_id <= max(self._written_id, self._pending[0] if self._pending else 0):
                return
            self._pending = (record_id, chain, keyed_from)
            wait_s = self._last_write + self.interval_s - time.monotonic()
            if wait_s <= 0:
                self._write_pending()
            elif self._timer is None:
                self._timer = threading.Timer(wait_s, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the pending checkpoint now, if there is one."""
        with self._lock:
            self._timer = None
            self._write_pending()

    def close(self) -> None:
        """Write the pending checkpoint; later notes are ignored."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._write_pending()
            self._closed = True

    def _write_pending(self) -> None:
        if self._pending is None:
            return
        checkpoint = Checkpoint.seal(self.key, *self._pending)
        try:
            append_checkpoint(self.path, checkpoint)
        except OSError as exc:  # the record is in the index; only its anchor waits for the next write
            if not self._failing:
                log.warning("audit checkpoint not written to %s (%s); the next one will be tried",
                            self.path, exc.strerror or exc)
            self._failing = True
            return
        self._failing = False
        self._pending, self._written_id, self._last_write = None, checkpoint.record_id, time.monotonic()
        self.written += 1
        submit = getattr(self.sink, "submit_checkpoint", None)
        if callable(submit):
            try:
                submit(checkpoint)
            except Exception:  # forwarding never fails the recorded operation
                log.exception("could not hand an audit checkpoint to the audit sink")


def append_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Append one line to the checkpoint file (created 0600), durably. Raises OSError."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(descriptor, checkpoint.to_line())  # one write of a short line: appended whole
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)
