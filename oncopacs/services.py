"""Opening the platform from settings: the one place that wires storage, index and archive."""

from __future__ import annotations

from oncopacs.archive.ingest import Archive
from oncopacs.archive.storage import Storage
from oncopacs.index.db import open_index
from oncopacs.settings import Settings


def open_archive(settings: Settings) -> Archive:
    """The archive of ``settings.data_dir`` (created on first use) with its index migrated."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    index = open_index(settings.effective_database_url)
    return Archive(Storage(settings.storage_dir), index, allow_overwrite=settings.allow_overwrite)
