"""Orchestration: what the hospital decides happens to its data — here, de-identified export (PS3.15)."""

from oncopacs.orchestration.deid_export import DeidSink, DirectorySink, ExportSummary, export_deidentified
from oncopacs.orchestration.deid_profile import DeidentificationError, DeidOptions, PatientKeys, deidentify

__all__ = [
    "DeidOptions", "DeidSink", "DeidentificationError", "DirectorySink", "ExportSummary", "PatientKeys",
    "deidentify", "export_deidentified",
]
