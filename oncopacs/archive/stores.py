"""The storage of instance files a platform's settings name: a directory (``file://``, the default) or an
S3-compatible object store (``s3://``, :mod:`oncopacs.archive.object_store`, imported only then)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oncopacs.archive.encryption import StorageKeys
from oncopacs.archive.storage import Storage
from oncopacs.settings import Settings

if TYPE_CHECKING:
    from oncopacs.archive.object_store import ObjectStorage

    InstanceStore = Storage | ObjectStorage


def open_storage(settings: Settings, keys: StorageKeys | None) -> InstanceStore:
    """The instance storage of ``settings``, staging in this node's ``staging_dir``."""
    if settings.storage_url.startswith("s3://"):
        from oncopacs.archive.object_store import ObjectStorage, S3Location

        return ObjectStorage(S3Location.parse(settings.storage_url), settings.staging_dir, keys)
    return Storage(settings.storage_dir, keys, settings.staging_dir)
