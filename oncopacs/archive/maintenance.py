"""Integrity checks of the storage area against the index, and recovery after a crash.

``verify`` re-hashes every file and reports missing or altered ones, and files the index does
not know. ``recover_orphans`` sends those unknown files through the ingest path again, so that
the index can always be rebuilt from the files.

Nodes sharing one storage area (``deploy/local-cluster``) store while another recovers: a file one of them has just
placed has no index row until that node commits it. Recovery gives such a file :data:`IN_FLIGHT_GRACE_S` to be
indexed by its writer before sending it through the ingest path itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from oncopacs.archive.ingest import Archive, IngestOutcome
from oncopacs.archive.storage import Damage
from oncopacs.errors import IntegrityError
from oncopacs.index.models import Instance

log = logging.getLogger(__name__)

Progress = Callable[[int], None]

#: Seconds an unindexed file placed (linked, renamed or uploaded) less than this long ago is left to the node placing
#: it, which commits its index row right after (milliseconds, seconds under load); recovery looks at it again then.
IN_FLIGHT_GRACE_S = 5.0


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


def recover_orphans(archive: Archive, *, grace_s: float | None = None) -> int:
    """Clear this node's staged leftovers and index every unindexed file through the ingest path; return how many.

    A file placed less than ``grace_s`` seconds ago (default :data:`IN_FLIGHT_GRACE_S`) may be another node's store in
    flight: recovery waits until it is that old and takes it only if it is still unindexed then. Recovering it at once
    races its writer: the recovering ingest waits ``ORPHAN_WAIT_S`` for the writer's row, then puts its own copy over
    the file and commits it as ``recovered``, and the writer, meeting that row, takes its placed file back (removing
    the file the committed row points at) before storing it again. Only files this recovery stored count.
    """
    cleared = archive.storage.clear_incoming()  # this node's staging folder only (Settings.staging_dir)
    if cleared:
        log.info("removed %d partial files left by an interrupted write", cleared)
    recovered = 0
    for relative_path in _settled_unindexed(archive, IN_FLIGHT_GRACE_S if grace_s is None else grace_s):
        try:
            data = archive.storage.read(relative_path)  # unsealed when sealed
        except IntegrityError as exc:
            log.warning("unindexed file %s could not be recovered: %s", relative_path, exc)
            continue
        result = archive.ingest(data, source="recovered", wait_for_writer=False)  # its grace is over
        if result.outcome is IngestOutcome.STORED:
            recovered += 1
        elif result.outcome is IngestOutcome.DUPLICATE:  # not recovered here: its writer indexed it meanwhile
            log.info("unindexed file %s was indexed meanwhile, as it is", relative_path)
        else:
            log.warning("unindexed file %s could not be recovered: %s", relative_path, result.reason)
    return recovered


def _settled_unindexed(archive: Archive, grace_s: float) -> list[str]:
    """The unindexed files, each still unindexed once it was placed at least ``grace_s`` seconds ago."""
    unindexed = find_unindexed(archive)
    ages = [age for age in map(archive.storage.age_of, unindexed) if age is not None]
    if not ages:
        return unindexed
    wait_s = min(grace_s - min(ages), grace_s)  # ages by the storage's own clock (an object store's, for objects)
    if wait_s <= 0:
        return unindexed
    log.info("waiting %.1f s: some of the %d unindexed file(s) were placed moments ago and may be another node's "
             "stores in flight", wait_s, len(unindexed))
    time.sleep(wait_s)
    still = set(find_unindexed(archive))
    return [path for path in unindexed if path in still]
