"""Where report data comes from: stored instances (read and hash-checked) and cached analysis results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.query import find_instances


def read_instance(archive: Archive, session: Session, sop_instance_uid: str) -> Dataset:
    """The stored dataset of one instance (its bytes checked against the recorded SHA-256)."""
    found = find_instances(session, {"SOPInstanceUID": sop_instance_uid})
    if not found:
        raise NotFoundError(f"instance {sop_instance_uid} is not in the archive")
    return archive.read_dataset(found[0].file_path, found[0].sha256)


@dataclass(frozen=True, slots=True)
class CachedResult:
    """One analysis result row: its kind, study, time point, JSON and its metric values."""

    pk: int
    kind: str
    study_uid: str
    time_point: str
    data: Any
    metrics: tuple[tuple[str, str, float], ...]  # (structure, metric, value)


def read_results(session: Session, kind: str, *, study_uid: str = "", patient_id: str = "") -> list[CachedResult]:
    """Cached results of ``kind`` for a study or a patient, oldest time point (then oldest row) first."""
    statement = select(AnalysisResult).where(AnalysisResult.kind == kind)
    if study_uid:
        statement = statement.where(AnalysisResult.study_instance_uid == study_uid)
    if patient_id:
        statement = statement.where(AnalysisResult.patient_id == patient_id)
    rows = list(session.scalars(statement.order_by(AnalysisResult.time_point, AnalysisResult.id)))
    metrics: dict[int, list[tuple[str, str, float]]] = {row.id: [] for row in rows}
    if rows:
        for value in session.scalars(select(MetricValue).where(MetricValue.result_pk.in_(list(metrics)))
                                     .order_by(MetricValue.id)):
            metrics[value.result_pk].append((value.structure, value.metric, value.value))
    results = []
    for row in rows:
        try:
            data = json.loads(row.result_json)
        except ValueError:
            data = None
        results.append(CachedResult(row.id, row.kind, row.study_instance_uid, row.time_point, data,
                                    tuple(metrics[row.id])))
    return results
