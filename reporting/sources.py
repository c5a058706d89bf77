"""Where report data comes from: stored instances (read and hash-checked) and cached analysis results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oncopacs.analysis.results import find_results


@dataclass(frozen=True, slots=True)
class CachedResult:
    """One analysis result row: its kind, study, time point, JSON and its metric values."""

    pk: int
    kind: str
    study_uid: str
    time_point: str
    data: Any
    metrics: tuple[tuple[str, str, float], ...]  # (structure, metric, value)


def read_results(session, kind: str, *, study_uid: str = "", patient_id: str = "") -> list[CachedResult]:
    """Cached results of ``kind`` for a study or a patient, oldest time point (then oldest row) first.

    Read through :func:`oncopacs.analysis.results.find_results` (stored metric values are never None).
    """
    return [
        CachedResult(found.id, found.kind, found.study_instance_uid, found.time_point, found.document,
                     tuple((m.structure, m.name, m.value) for m in found.metrics if m.value is not None))
        for found in find_results(session, kind, study_instance_uid=study_uid, patient_id=patient_id)
    ]
