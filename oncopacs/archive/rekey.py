"""Key rotation: re-seal every stored file that is not sealed with the current storage key.

Plaintext files (stored before a key was configured) and files sealed with an older key are read, checked
against the index's SHA-256 (of the plaintext), sealed with the current key in the staging area and renamed over
the old file, so a crash leaves each file either old or new, never half. Safe while the server runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.errors import ConfigError, IntegrityError, StorageError
from oncopacs.index.models import Instance

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RekeyReport:
    """What one rekey run did; paths are relative to the storage directory."""

    checked: int
    resealed: int  # plaintext or an older key before, the current key now
    current: int  # already sealed with the current key
    damaged: list[str] = field(default_factory=list)  # missing, altered or unreadable: left as they are

    @property
    def ok(self) -> bool:
        return not self.damaged

    def to_dict(self) -> dict:
        return {"checked": self.checked, "resealed": self.resealed, "current": self.current,
                "damaged": self.damaged, "ok": self.ok}


def rekey(archive: Archive, on_total: Progress | None = None, progress: Progress | None = None) -> RekeyReport:
    """Re-seal every indexed file not under the current key; :class:`ConfigError` when no key is configured."""
    storage = archive.storage
    if storage.keys is None:
        raise ConfigError("no storage key is configured: set storage_key_file (ONCOPACS_STORAGE_KEY_FILE)")
    current_id = storage.keys.current.key_id
    with archive.index.reading() as session:
        rows = session.execute(select(Instance.file_path, Instance.sha256)).all()
    if on_total:
        on_total(len(rows))
    resealed = current = 0
    damaged: list[str] = []
    for relative_path, sha256 in rows:
        try:
            if storage.key_id(relative_path) == current_id:
                current += 1
            else:
                data = storage.read(relative_path, sha256)  # the plaintext, checked
                storage.place(storage.stage(data), relative_path, replace=True)
                resealed += 1
        except (OSError, IntegrityError, StorageError) as exc:  # StorageError: the new copy could not be placed
            log.warning("not re-sealed: %s", exc if isinstance(exc, IntegrityError | StorageError) else relative_path)
            damaged.append(relative_path)
        if progress:
            progress(1)
    return RekeyReport(len(rows), resealed, current, sorted(damaged))
