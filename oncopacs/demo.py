"""``oncopacs demo``: load synthetic demo patients into the archive through the ingest path."""

from __future__ import annotations

from oncopacs.archive.importer import ImportSummary
from oncopacs.archive.ingest import Archive, IngestOutcome
from oncopacs.phantom.patient import build_demo_patients


def load_demo(archive: Archive, n_patients: int = 2) -> ImportSummary:
    """Generate ``n_patients`` phantom patients and ingest every object; re-running adds nothing."""
    summary = ImportSummary()
    for patient in build_demo_patients(n_patients):
        for dataset in patient.all_datasets():
            result = archive.ingest_dataset(dataset, source="demo")
            if result.outcome is IngestOutcome.STORED:
                summary.stored += 1
            elif result.outcome is IngestOutcome.DUPLICATE:
                summary.duplicate += 1
            else:
                summary.rejected.append((f"{dataset.Modality} {dataset.SOPInstanceUID}", result.reason))
    return summary
