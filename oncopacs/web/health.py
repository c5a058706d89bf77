"""``/health``: is the index reachable, and has the storage area room (no authentication).

``checks.storage`` is ``ok``, ``low`` (fewer free bytes than ``settings.storage_low_bytes``: still 200, an
administrator should act), ``full`` (fewer than :data:`FULL_BYTES` free, or no free inode: the next stores
will fail with 0xA700, while reads keep working), ``not writable`` or, with an object store (``storage_url =
"s3://..."``), ``unreachable`` when its bucket does not answer; ``storage_free_bytes`` says how full the disk
that stages received files is.

The status is 503 when the index is unreachable or the storage is full or not writable, so that a load
balancer or orchestrator stops sending this node stores and someone is alerted; a ``low`` disk stays 200.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from oncopacs import __version__
from oncopacs.errors import StorageError
from oncopacs.web.access import public

bp = Blueprint("health", __name__)

#: Below this many free bytes the storage counts as full: less than one large RT Dose or a short burst of
#: CT slices, with the index's own growth (SQLite WAL pages) still to come.
FULL_BYTES = 64 * 1024**2


@dataclass(frozen=True, slots=True)
class StorageSpace:
    """What the file system under the storage area has left (bytes, for an unprivileged process)."""

    state: str  # "ok", "low", "full", "not writable"
    free_bytes: int
    total_bytes: int


def measure_storage(root: Path, low_bytes: int) -> StorageSpace:
    """The free space under ``root`` judged against ``low_bytes`` and :data:`FULL_BYTES`."""
    probe = root if root.exists() else root.parent  # the storage folder is created by the first store
    try:
        usage = shutil.disk_usage(probe)
        inodes = os.statvfs(probe)
    except OSError:
        return StorageSpace("not writable", 0, 0)
    if not os.access(probe, os.W_OK):
        state = "not writable"
    elif usage.free < FULL_BYTES or (inodes.f_files > 0 and inodes.f_favail == 0):
        state = "full"
    elif usage.free < low_bytes:
        state = "low"
    else:
        state = "ok"
    return StorageSpace(state, usage.free, usage.total)


@bp.get("/health")
@public
def health():
    archive = current_app.extensions["oncopacs.archive"]
    settings = current_app.extensions["oncopacs.settings"]
    checks = {"index": "ok", "storage": "ok"}
    try:
        with archive.index.reading() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        checks["index"] = "unreachable"
    space = measure_storage(Path(archive.storage.incoming), settings.storage_low_bytes)  # staging: same disk
    checks["storage"] = space.state
    try:
        archive.storage.check_reachable()  # an object store answers (files: nothing to ask)
    except StorageError:
        checks["storage"] = "unreachable"
    healthy = checks["index"] == "ok" and checks["storage"] in {"ok", "low"}
    status = "ok" if all(value == "ok" for value in checks.values()) else "degraded"
    return jsonify(status=status, version=__version__, checks=checks, storage_free_bytes=space.free_bytes,
                   storage_total_bytes=space.total_bytes), 200 if healthy else 503
