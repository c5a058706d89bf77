"""The audit key and the chain values it seals: HMAC-SHA256 over each record and over each checkpoint.

The key lives outside the database (``audit_key_file``, by default ``audit-key`` in the data directory; a
hospital puts it elsewhere), so whoever can write the index can delete or edit records but cannot compute the
chain values that would hide it. A key file holds one 64-hex-digit key (32 bytes). The first trail opened
without one creates it (mode 0600); a trail whose records are already sealed refuses to start without its key.
Records written before the key existed keep their unkeyed SHA-256 chain (:func:`chain_value` with no key).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncopacs.errors import ConfigError

KEY_FILE = "audit-key"
KEY_BYTES = 32
_RECORD_LABEL = b"oncopacs-audit-record\0"
_CHECKPOINT_LABEL = b"oncopacs-audit-checkpoint\0"
_KEY_ID_LABEL = b"oncopacs-audit-key-id\0"


@dataclass(frozen=True, slots=True)
class AuditKey:
    """The secret that seals the trail, and a fingerprint that names it without revealing it."""

    secret: bytes = field(repr=False)
    key_id: str  # 16 hex digits

    @classmethod
    def from_secret(cls, secret: bytes) -> AuditKey:
        if len(secret) != KEY_BYTES:
            raise ConfigError(f"an audit key is {KEY_BYTES} bytes (64 hex digits), not {len(secret)}")
        return cls(secret, hashlib.sha256(_KEY_ID_LABEL + secret).hexdigest()[:16])

    def seal_record(self, canonical: bytes) -> str:
        return hmac.new(self.secret, _RECORD_LABEL + canonical, hashlib.sha256).hexdigest()

    def seal_checkpoint(self, canonical: bytes) -> str:
        return hmac.new(self.secret, _CHECKPOINT_LABEL + canonical, hashlib.sha256).hexdigest()


def canonical_record(record: Any, previous: str) -> bytes:
    """What a record's chain value covers: its fields and the chain value before it, as compact JSON."""
    fields = [
        record.id, record.recorded_at, record.action, record.outcome, record.actor, record.actor_kind,
        record.source, record.patient_ids, record.study_uids, record.detail, previous,
    ]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def chain_value(record: Any, previous: str, key: AuditKey | None) -> str:
    """HMAC-SHA256 of the record under ``key``; without one, the unkeyed SHA-256 of trails older than keys."""
    canonical = canonical_record(record, previous)
    return key.seal_record(canonical) if key is not None else hashlib.sha256(canonical).hexdigest()


def read_key_file(path: Path) -> AuditKey:
    """The key in ``path``; ConfigError when it is missing, unreadable, malformed or readable by others."""
    try:
        mode = path.stat().st_mode
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"the audit key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the audit key file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the audit key file {path} is open to other users (chmod 600 {path})")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"the audit key file {path} does not hold 64 hex digits") from None
    return AuditKey.from_secret(secret)


def create_key_file(path: Path) -> AuditKey:
    """A new random key written to ``path`` (0600) unless another process wrote one first; the key in the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, secrets.token_bytes(KEY_BYTES).hex().encode("ascii") + b"\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # never replaces a key that exists
    except OSError as exc:
        raise ConfigError(f"cannot create the audit key file {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return read_key_file(path)
