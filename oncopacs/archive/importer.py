"""``oncopacs import``: walk files and folders and send every file through the ingest path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from oncopacs.archive.ingest import Archive, IngestOutcome, IngestResult

#: Files that are never instances (DICOMDIR is a media index, not a stored object).
SKIPPED_NAMES = {"DICOMDIR"}


@dataclass(slots=True)
class ImportSummary:
    """Counts of what happened to each file, and why files were refused."""

    stored: int = 0
    duplicate: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), incl. conflicts and failures

    def count(self, label: str, result: IngestResult) -> None:
        """Add one ingest result; ``label`` names the object in the list of refusals."""
        if result.outcome is IngestOutcome.STORED:
            self.stored += 1
        elif result.outcome is IngestOutcome.DUPLICATE:
            self.duplicate += 1
        else:
            self.rejected.append((label, result.reason))

    @property
    def total(self) -> int:
        return self.stored + self.duplicate + len(self.rejected)

    def to_dict(self) -> dict:
        return {
            "stored": self.stored,
            "duplicate": self.duplicate,
            "rejected": [{"path": path, "reason": reason} for path, reason in self.rejected],
        }


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    if name not in SKIPPED_NAMES and not name.startswith("."):
                        yield Path(dirpath) / name
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path} does not exist")


def import_files(
    archive: Archive, files: Iterable[Path], on_file: Callable[[Path], None] | None = None
) -> ImportSummary:
    """Ingest each file; a file that cannot be read or is refused is listed with its reason."""
    summary = ImportSummary()
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            summary.rejected.append((str(path), f"cannot read: {exc.strerror}"))
        else:
            summary.count(str(path), archive.ingest(data, source="import"))
        if on_file:
            on_file(path)
    return summary
