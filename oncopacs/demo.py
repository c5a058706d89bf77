"""``oncopacs demo``: load synthetic demo patients into the archive through the ingest path."""

from __future__ import annotations

from collections.abc import Callable

from oncopacs.archive.importer import ImportSummary
from oncopacs.archive.ingest import Archive
from oncopacs.phantom.patient import build_demo_patients


def load_demo(archive: Archive, n_patients: int = 2, on_object: Callable[[], None] | None = None) -> ImportSummary:
    """Generate ``n_patients`` phantom patients and ingest every object; re-running adds nothing."""
    summary = ImportSummary()
    for patient in build_demo_patients(n_patients):
        for dataset in patient.all_datasets():
            summary.count(f"{dataset.Modality} {dataset.SOPInstanceUID}", archive.ingest_dataset(dataset, source="demo"))
            if on_object:
                on_object()
    return summary
