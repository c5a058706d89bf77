"""Encryption at rest: a streaming AEAD container for stored files and backup snapshots.

A sealed file is a 40-byte header, then the plaintext in 64 KiB segments, each sealed with AES-256-GCM:

* header: :data:`MAGIC` (16 bytes), the key id (8 bytes: the first 8 bytes of SHA-256 over a fixed label and
  the master key) and a random salt (16 bytes);
* each file has its own key, HKDF-SHA256 of the master key with that salt, so nonces never repeat across files;
* segment ``i``'s nonce is ``i`` (11 bytes, big-endian) and a last-segment flag (1 byte); its associated data is
  the header. A zero-length plaintext still has one (last) segment, so a file cut at a segment boundary, segments
  swapped, a missing last segment or a wrong key all fail authentication (:class:`SealedDataError`).

The master keys come from a key file outside the data directory (``ONCOPACS_STORAGE_KEY_FILE``): one key of
64 hex digits a line, the first the current one (new files are sealed with it), the others still read; ``#``
starts a comment. Rotation: put a new key on the first line, restart, ``oncopacs storage rekey``, drop the old line.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oncopacs.errors import ConfigError, SealedDataError
from oncopacs.settings import Settings

MAGIC = b"ONCOPACS-AEAD-1\n"
KEY_ID_BYTES = 8
SALT_BYTES = 16
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + SALT_BYTES  # 40
SEGMENT_BYTES = 64 * 1024  # plaintext per segment
TAG_BYTES = 16  # AES-GCM's authentication tag, after each segment
KEY_BYTES = 32  # AES-256
_KEY_ID_LABEL = b"oncopacs storage key id v1\0"
_FILE_KEY_INFO = b"oncopacs storage file key v1"
_MAX_SEGMENTS = 1 << 88  # the 11-byte counter


@dataclass(frozen=True, slots=True)
class StorageKey:
    """One master key and its public id (8 bytes, stored in every header it sealed)."""

    key_id: bytes
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> StorageKey:
        if len(secret) != KEY_BYTES:
            raise ConfigError(f"a storage key is {KEY_BYTES} bytes (64 hex digits), not {len(secret)}")
        return cls(hashlib.sha256(_KEY_ID_LABEL + secret).digest()[:KEY_ID_BYTES], secret)


@dataclass(frozen=True, slots=True)
class StorageKeys:
    """The current key (new files are sealed with it) and every key files may be sealed with, by key id."""

    current: StorageKey
    by_id: Mapping[bytes, StorageKey] = field(hash=False)

    @classmethod
    def of(cls, *keys: StorageKey) -> StorageKeys:
        """The first key current, all readable."""
        return cls(keys[0], {key.key_id: key for key in keys})

    def find(self, key_id: bytes) -> StorageKey:
        key = self.by_id.get(key_id)
        if key is None:
            raise SealedDataError(f"sealed with storage key {key_id.hex()}, which is not in the key file")
        return key


def load_storage_keys(path: Path, data_dir: Path | None = None) -> StorageKeys:
    """The keys of a key file; :class:`ConfigError` if it is missing, malformed, readable by group or others,
    or inside ``data_dir`` (a backup or a stolen disk would carry the key with the data)."""
    path = Path(path)
    if data_dir is not None:
        resolved, data = path.resolve(), Path(data_dir).resolve()
        if resolved == data or data in resolved.parents:
            raise ConfigError(f"the storage key file {path} must be outside the data directory {data_dir}")
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"the storage key file {path} does not exist (create one: oncopacs storage keygen "
                          f"{path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the storage key file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the storage key file {path} is accessible to group or others "
                          f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            secret = bytes.fromhex(line)
        except ValueError:
            secret = b""
        if len(secret) != KEY_BYTES:
            raise ConfigError(f"the storage key file {path}, line {number}: not a key of 64 hex digits")
        keys.append(StorageKey.from_secret(secret))
    if not keys:
        raise ConfigError(f"the storage key file {path} holds no key")
    return StorageKeys.of(*keys)


def storage_keys_of(settings: Settings) -> StorageKeys | None:
    """The keys ``settings.storage_key_file`` names, None when it is not set (no encryption)."""
    if settings.storage_key_file is None:
        return None
    return load_storage_keys(Path(settings.storage_key_file), settings.data_dir)


def generate_key_file(path: Path) -> StorageKey:
    """Write a new key file (mode 0600, never over an existing file) with one random key; return that key."""
    key = StorageKey.from_secret(secrets.token_bytes(KEY_BYTES))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists: a key file is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(f"# OncoPACS storage key (first line: current; older keys below, still read)\n"
                   f"{key.secret.hex()}\n")
        file.flush()
        os.fsync(file.fileno())
    return key


def is_sealed(head: bytes) -> bool:
    """Whether bytes (at least the first 16 of a file) start a sealed file."""
    return head[: len(MAGIC)] == MAGIC


def key_id_of(head: bytes) -> bytes | None:
    """The key id in a sealed file's header; None for a plaintext file."""
    if not is_sealed(head) or len(head) < len(MAGIC) + KEY_ID_BYTES:
        return None
    return head[len(MAGIC): len(MAGIC) + KEY_ID_BYTES]


def sealed_size(plaintext_bytes: int) -> int:
    """Bytes on disk of a sealed plaintext of this many bytes."""
    segments = max(1, -(-plaintext_bytes // SEGMENT_BYTES))
    return HEADER_BYTES + plaintext_bytes + segments * TAG_BYTES


def _nonce(counter: int, last: bool) -> bytes:
    if counter >= _MAX_SEGMENTS:
        raise SealedDataError("too many segments")  # pragma: no cover - 2**88 segments
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _file_cipher(key: StorageKey, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_FILE_KEY_INFO).derive(key.secret)
    return AESGCM(derived)


class Sealer:
    """Seals a plaintext handed over piece by piece: :meth:`update` returns the sealed bytes of every full segment
    so far (the header first), :meth:`finish` the last segment. Holds at most one segment of plaintext."""

    def __init__(self, keys: StorageKeys):
        salt = secrets.token_bytes(SALT_BYTES)
        self.header = MAGIC + keys.current.key_id + salt
        self._cipher = _file_cipher(keys.current, salt)
        self._pending = bytearray()
        self._counter = 0
        self._started = False
        self._finished = False

    def update(self, data: bytes | memoryview) -> bytes:
        if self._finished:
            raise SealedDataError("the sealed file is already finished")
        out = [] if self._started else [self.header]
        self._started = True
        view = memoryview(data).cast("B")
        if self._pending:  # fill the held segment first; seal it only once more data follows it
            fill = SEGMENT_BYTES - len(self._pending)
            if len(view) <= fill:
                self._pending += view
                return b"".join(out)
            self._pending += view[:fill]
            out.append(self._seal(self._pending, last=False))
            self._pending.clear()
            view = view[fill:]
        while len(view) > SEGMENT_BYTES:  # the last (possibly full) segment is held until finish
            out.append(self._seal(view[:SEGMENT_BYTES], last=False))
            view = view[SEGMENT_BYTES:]
        self._pending += view
        return b"".join(out)

    def finish(self) -> bytes:
        head = self.update(b"")
        self._finished = True
        last = self._seal(bytes(self._pending), last=True)
        self._pending.clear()
        return head + last

    def _seal(self, segment: bytes | bytearray | memoryview, *, last: bool) -> bytes:
        sealed = self._cipher.encrypt(_nonce(self._counter, last), segment, self.header)
        self._counter += 1
        return sealed


def seal(data: bytes | memoryview, keys: StorageKeys) -> bytes:
    """``data`` sealed with the current key."""
    sealer = Sealer(keys)
    return sealer.update(data) + sealer.finish()


def unseal(sealed: bytes | memoryview, keys: StorageKeys) -> bytes:
    """The plaintext of a whole sealed file; :class:`SealedDataError` if altered, truncated or keyed otherwise."""
    view = memoryview(sealed)
    cipher, header = _open_header(bytes(view[:HEADER_BYTES]), keys)
    body = view[HEADER_BYTES:]
    step = SEGMENT_BYTES + TAG_BYTES
    pieces = []
    for counter, start in enumerate(range(0, max(len(body), 1), step)):
        segment = body[start: start + step]
        pieces.append(_open_segment(cipher, header, counter, segment, last=start + step >= len(body)))
    return b"".join(pieces)


class Readable(Protocol):
    """Anything read like a binary file: a file, an object store's response body."""

    def read(self, size: int = -1, /) -> bytes: ...


def iter_unsealed(file: Readable, keys: StorageKeys) -> Iterator[bytes]:
    """The plaintext of a sealed file, segment by segment (memory: two segments), read from its start."""
    cipher, header = _open_header(file.read(HEADER_BYTES), keys)
    step = SEGMENT_BYTES + TAG_BYTES
    segment = file.read(step)
    counter = 0
    while True:
        following = file.read(step) if len(segment) == step else b""
        yield _open_segment(cipher, header, counter, segment, last=not following)
        if not following:
            return
        segment, counter = following, counter + 1


def unseal_file(source: Path, target: Path, keys: StorageKeys, *, mode: int = 0o600) -> None:
    """Unseal ``source`` into ``target`` (created with ``mode``; renamed into place once whole and authentic)."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            if not is_sealed(src.read(len(MAGIC))):
                raise SealedDataError(f"{source.name} is not a sealed OncoPACS file")
            src.seek(0)
            for piece in iter_unsealed(src, keys):
                dst.write(piece)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)


def _open_header(header: bytes, keys: StorageKeys) -> tuple[AESGCM, bytes]:
    if len(header) < HEADER_BYTES or not is_sealed(header):
        raise SealedDataError("not a sealed file, or its header is cut short")
    key = keys.find(header[len(MAGIC): len(MAGIC) + KEY_ID_BYTES])
    return _file_cipher(key, header[len(MAGIC) + KEY_ID_BYTES:]), header


def _open_segment(cipher: AESGCM, header: bytes, counter: int, segment: bytes | memoryview, *, last: bool) -> bytes:
    if len(segment) < TAG_BYTES:
        raise SealedDataError(f"segment {counter} is cut short (truncated file)")
    try:
        return cipher.decrypt(_nonce(counter, last), segment, header)
    except InvalidTag:
        pass
    if last:
        try:
            cipher.decrypt(_nonce(counter, False), segment, header)
        except InvalidTag:
            pass
        else:
            raise SealedDataError(f"the last segment is missing after segment {counter} (truncated file)") from None
    raise SealedDataError(f"segment {counter} fails authentication (altered, reordered or truncated)") from None
