"""``oncopacs import``: walk files and folders and send every DICOM file through the ingest path.

Real folders hold more than instances (README, LICENSE, CSV, DICOMDIR), so each file is first sorted:

- a file whose name starts with "." (``.DS_Store``, ``._IM0001``) is *skipped* unread;
- a DICOMDIR — by name, or by its Media Storage SOP Class UID 1.2.840.10008.1.3.10 (Media Storage Directory
  Storage) whatever its name — is *skipped*: it indexes the files beside it, it is not an instance;
- a file is **DICOM** when it carries the Part 10 prefix ("DICM" at byte 128), or when pydicom, reading it as
  a bare dataset, finds a valid SOP Class UID (0008,0016) or SOP Instance UID (0008,0018) in it. Anything
  else (text, CSV, JSON, images, archives, empty files) is *not DICOM* and is skipped — or, with ``strict``,
  rejected;
- every DICOM file goes through :meth:`Archive.ingest`: stored, duplicate, or rejected with its reason
  (refused input, conflicts and failures alike).
"""

from __future__ import annotations

import enum
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import MediaStorageDirectoryStorage

from oncopacs.archive.decoding import decoding
from oncopacs.archive.ingest import Archive, IngestOutcome, IngestResult
from oncopacs.archive.part10 import dataset_offset
from oncopacs.uids import is_valid_uid

#: Files that are never instances, known by name (DICOMDIR is a media index, not a stored object).
SKIPPED_NAMES = {"DICOMDIR"}


class SkipKind(str, enum.Enum):
    """Why a file was not sent to the archive."""

    HIDDEN = "hidden"
    DICOMDIR = "dicomdir"
    NOT_DICOM = "not_dicom"  # rejected instead with ``strict``


@dataclass(frozen=True, slots=True)
class Skip:
    """A file that is not an instance, and why."""

    kind: SkipKind
    reason: str


HIDDEN = Skip(SkipKind.HIDDEN, "hidden file (its name starts with '.')")
DICOMDIR = Skip(SkipKind.DICOMDIR,
                "DICOMDIR (Media Storage Directory, 1.2.840.10008.1.3.10): an index of files, not an instance")
NOT_DICOM = Skip(SkipKind.NOT_DICOM, "not DICOM (no DICM prefix at byte 128, and no SOP Class or Instance UID "
                                     "when read as a bare dataset)")
EMPTY = Skip(SkipKind.NOT_DICOM, "not DICOM (empty file)")


@dataclass(slots=True)
class ImportSummary:
    """Counts of what happened to each file, and why files were refused or skipped."""

    stored: int = 0
    duplicate: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), incl. conflicts and failures
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not DICOM, DICOMDIR, hidden

    def count(self, label: str, result: IngestResult) -> None:
        """Add one ingest result; ``label`` names the object in the list of refusals."""
        if result.outcome is IngestOutcome.STORED:
            self.stored += 1
        elif result.outcome is IngestOutcome.DUPLICATE:
            self.duplicate += 1
        else:
            self.rejected.append((label, result.reason_for_sender))

    @property
    def total(self) -> int:
        return self.stored + self.duplicate + len(self.rejected) + len(self.skipped)

    def to_dict(self) -> dict:
        return {
            "stored": self.stored,
            "duplicate": self.duplicate,
            "rejected": [{"path": path, "reason": reason} for path, reason in self.rejected],
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
        }


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    yield Path(dirpath) / name
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path} does not exist")


def classify(data: bytes) -> Skip | None:
    """Why these bytes are not an instance to ingest (DICOMDIR, not DICOM), or None when they are DICOM.

    pydicom's reports on what it reads are counted in a :func:`decoding` block, never logged (they quote values).
    """
    if not data:
        return EMPTY
    with decoding():
        if data[128:132] == b"DICM":
            return DICOMDIR if _media_storage_sop_class(data) == MediaStorageDirectoryStorage else None
        return None if _has_sop_uid(data) else NOT_DICOM


def _media_storage_sop_class(data: bytes) -> str:
    """The File Meta's Media Storage SOP Class UID; "" when it cannot be read (ingest then says why)."""
    try:
        meta = dcmread(io.BytesIO(data[: dataset_offset(data)]), force=True).file_meta
        return str(meta.get("MediaStorageSOPClassUID", "") or "").strip()
    except Exception:  # noqa: BLE001 - a damaged meta group: the file is DICOM, and ingest names the problem
        return ""


def _has_sop_uid(data: bytes) -> bool:
    """Whether a file without the DICM prefix reads as a bare dataset with a valid SOP Class or Instance UID."""
    try:
        dataset = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True,
                          specific_tags=["SOPClassUID", "SOPInstanceUID"])
        values = (dataset.get("SOPClassUID"), dataset.get("SOPInstanceUID"))
    except Exception:  # noqa: BLE001 - pydicom raises many kinds on bytes that are not DICOM at all
        return False
    return any(isinstance(value, str) and is_valid_uid(value.strip()) for value in values)


def import_files(
    archive: Archive, files: Iterable[Path], on_file: Callable[[Path], None] | None = None, *, strict: bool = False,
    on_result: Callable[[IngestResult], None] | None = None,
) -> ImportSummary:
    """Ingest each DICOM file; a file that is not DICOM, a DICOMDIR or a hidden file is listed as skipped, one
    that cannot be read or is refused is listed as rejected, each with its reason. ``strict``: a file that is
    not DICOM is rejected, not skipped. ``on_result`` hears each ingest result (the import's audit record)."""
    summary = ImportSummary()
    for path in files:
        _import_one(archive, path, summary, strict, on_result)
        if on_file:
            on_file(path)
    return summary


def _import_one(archive: Archive, path: Path, summary: ImportSummary, strict: bool,
                on_result: Callable[[IngestResult], None] | None = None) -> None:
    label = str(path)
    if path.name.startswith("."):
        summary.skipped.append((label, HIDDEN.reason))
        return
    if path.name in SKIPPED_NAMES:
        summary.skipped.append((label, DICOMDIR.reason))
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        summary.rejected.append((label, f"cannot read: {exc.strerror}"))
        return
    skip = classify(data)
    if skip is None:
        result = archive.ingest(data, source="import")
        summary.count(label, result)
        if on_result:
            on_result(result)
    elif strict and skip.kind is SkipKind.NOT_DICOM:
        summary.rejected.append((label, f"{skip.reason} (--strict)"))
    else:
        summary.skipped.append((label, skip.reason))
