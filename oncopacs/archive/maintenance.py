"""Integrity checks of the storage area against the index, and recovery after a crash.

``verify`` re-hashes every file and reports missing or altered ones, and files the index does
not know. ``recover_orphans`` sends those unknown files through the ingest path again, so that
the index can always be rebuilt from the files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from oncopacs.archive.ingest import Archive, IngestOutcome
from oncopacs.archive.storage import Damage
from oncopacs.errors import IntegrityError
from oncopacs.index.models import Instance

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of re-hashing the storage area. Paths are relative to the storage directory."""

    checked: int
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    # could not be read: an I/O error, or sealed with a storage key that is not configured
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered or self.unindexed or self.unreadable)

    def to_dict(self) -> dict:
        return {"checked": self.checked, "ok": self.ok, "missing": self.missing,
                "altered": self.altered, "unindexed": self.unindexed, "unreadable": self.unreadable}


def count_indexed(archive: Archive) -> int:
    """How many instances the index holds."""
    with archive.index.reading() as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def verify(archive: Archive, progress: Progress | None = None) -> VerifyReport:
    """Re-hash every indexed file (unsealed, when sealed); list missing, altered, unreadable and unindexed files."""
    missing, altered, unreadable = [], [], []
    with archive.index.reading() as session:
        rows = session.execute(select(Instance.file_path, Instance.sha256)).all()
    known = set()
    for relative_path, sha256 in rows:
        known.add(relative_path)
        damage = archive.storage.check(relative_path, sha256)
        if damage is Damage.MISSING:
            missing.append(relative_path)
        elif damage is Damage.UNREADABLE:
            unreadable.append(relative_path)
        elif damage is not None:
            altered.append(relative_path)
        if progress:
            progress(1)
    unindexed = sorted(p for p in archive.storage.iter_files() if p not in known)
    return VerifyReport(len(rows), sorted(missing), sorted(altered), unindexed, sorted(unreadable))


def find_unindexed(archive: Archive) -> list[str]:
    """Files in the storage area that no index row points at."""
    with archive.index.reading() as session:
        known = set(session.scalars(select(Instance.file_path)).all())
    return sorted(p for p in archive.storage.iter_files() if p not in known)


def recover_orphans(archive: Archive) -> int:
    """Clear staged leftovers and index every unindexed file through the ingest path; return how many."""
    cleared = archive.storage.clear_incoming()
    if cleared:
        log.info("removed %d partial files left by an interrupted write", cleared)
    recovered = 0
    for relative_path in find_unindexed(archive):
        try:
            data = archive.storage.read(relative_path)  # unsealed when sealed
        except IntegrityError as exc:
            log.warning("unindexed file %s could not be recovered: %s", relative_path, exc)
            continue
        result = archive.ingest(data, source="recovered")
        if result.outcome in (IngestOutcome.STORED, IngestOutcome.DUPLICATE):
            recovered += 1
        else:
            log.warning("unindexed file %s could not be recovered: %s", relative_path, result.reason)
    return recovered
