"""The one way an analysis result is stored: keyed by its inputs, replacing what it supersedes.

Every analysis family (RT, PET, registration) keeps its results as ``AnalysisResult`` rows keyed by
``(kind, input_key)`` — a SHA-256 over the inputs and parameters — with one ``MetricValue`` row per
searchable number. :func:`store_results` writes a family's new rows in one transaction: rows with
the same key and the rows the family names as superseded (older inputs of the same subject) go,
the new rows and their metrics come in. Reading a cached result is :func:`find_result`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.index.db import IndexDatabase

STRUCTURE_LENGTH = 64  # MetricValue.structure


@dataclass(frozen=True, slots=True)
class Metric:
    """One searchable number of a result: ``structure`` ('' for whole-result figures), TG-263-style ``name``."""

    structure: str
    name: str
    value: float | None


@dataclass(frozen=True, slots=True)
class NewResult:
    """A result to store: its kind and input key, whom it is about, its inputs and JSON document."""

    kind: str
    input_key: str
    patient_id: str
    study_instance_uid: str
    time_point: str  # YYYYMMDD ('' when not longitudinal)
    inputs: Sequence[str]  # SOP Instance UIDs
    document: dict[str, Any] | None  # None is kept as JSON null (a part that could not be computed)
    metrics: Sequence[Metric] = field(default=())


def store_results(session: Session, results: Sequence[NewResult], *, superseded: Iterable[int] = ()) -> list[int]:
    """Replace same-keyed rows and the ``superseded`` row ids with ``results``; the new rows' ids, in order.

    Metrics whose value is None are left out (a figure that could not be computed).
    """
    stale = set(superseded)
    if results:
        stale.update(session.scalars(select(AnalysisResult.id).where(or_(*(
            and_(AnalysisResult.kind == r.kind, AnalysisResult.input_key == r.input_key) for r in results)))))
    if stale:
        session.execute(delete(MetricValue).where(MetricValue.result_pk.in_(stale)))
        session.execute(delete(AnalysisResult).where(AnalysisResult.id.in_(stale)))
    now = datetime.now(UTC)
    rows = [AnalysisResult(kind=r.kind, input_key=r.input_key, patient_id=r.patient_id,
                           study_instance_uid=r.study_instance_uid, time_point=r.time_point,
                           inputs="\\".join(r.inputs), result_json=json.dumps(r.document), created_at=now)
            for r in results]
    session.add_all(rows)
    session.flush()
    session.add_all(
        MetricValue(result_pk=row.id, patient_id=r.patient_id, study_instance_uid=r.study_instance_uid,
                    structure=m.structure[:STRUCTURE_LENGTH], metric=m.name, value=float(m.value))
        for row, r in zip(rows, results, strict=True) for m in r.metrics if m.value is not None
    )
    return [row.id for row in rows]


def upsert_result(index: IndexDatabase, result: NewResult, *, superseded: Iterable[int] = ()) -> int:
    """:func:`store_results` for one result in its own transaction; the new row's id."""
    with index.writing() as session:
        (result_id,) = store_results(session, [result], superseded=superseded)
        return result_id


def find_result(session: Session, kind: str, input_key: str) -> dict[str, Any] | None:
    """The stored document of ``(kind, input_key)``; None when not computed for these inputs."""
    text = session.scalars(select(AnalysisResult.result_json).where(
        AnalysisResult.kind == kind, AnalysisResult.input_key == input_key)).first()
    return json.loads(text) if text is not None else None


def count_results(session: Session, kind: str) -> int:
    """How many results of ``kind`` the index holds (e.g. analysed RT Doses for ``dvh``)."""
    return session.scalar(select(func.count()).select_from(AnalysisResult).where(AnalysisResult.kind == kind)) or 0


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One stored result: its row id, kind, subject, time point (YYYYMMDD or ''), document and metrics.

    ``document`` is the parsed JSON (None when the stored text is not JSON); ``metrics`` are in
    stored order, each value in the unit its TG-263-style name carries (e.g. ``D95%[Gy]``).
    """

    id: int
    kind: str
    patient_id: str
    study_instance_uid: str
    time_point: str
    document: Any
    metrics: tuple[Metric, ...]


def find_results(session: Session, kind: str, *, study_instance_uid: str = "",
                 patient_id: str = "") -> list[StoredResult]:
    """Stored results of ``kind`` for a study and/or a patient ('' = any), oldest time point (then oldest row) first."""
    statement = select(AnalysisResult).where(AnalysisResult.kind == kind)
    if study_instance_uid:
        statement = statement.where(AnalysisResult.study_instance_uid == study_instance_uid)
    if patient_id:
        statement = statement.where(AnalysisResult.patient_id == patient_id)
    rows = list(session.scalars(statement.order_by(AnalysisResult.time_point, AnalysisResult.id)))
    metrics: dict[int, list[Metric]] = {row.id: [] for row in rows}
    if rows:
        for value in session.scalars(select(MetricValue).where(MetricValue.result_pk.in_(list(metrics)))
                                     .order_by(MetricValue.id)):
            metrics[value.result_pk].append(Metric(value.structure, value.metric, value.value))
    results = []
    for row in rows:
        try:
            document = json.loads(row.result_json)
        except ValueError:
            document = None
        results.append(StoredResult(row.id, row.kind, row.patient_id, row.study_instance_uid, row.time_point,
                                    document, tuple(metrics[row.id])))
    return results
