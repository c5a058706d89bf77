"""RT analyses in the archive: which planning sets a study holds, and their cached results in the index.

A planning set is an RT Dose with the RT Structure Set it is computed on (directly, or through the
RT Plan that references it) and that plan when the archive holds it; the sets come from the
oncology summary (:func:`oncopacs.index.oncology.summarize_study`), read from the index alone.
Every RT Dose is analysed on its own (a per-beam dose too); summing doses is a separate step.

Results are stored as ``AnalysisResult`` rows of kinds ``dvh``, ``goals`` and ``plan``, keyed by
``input_key`` = SHA-256 over the sorted input SOP Instance UIDs with the SHA-256 of their stored
files, the kind and the parameters (:data:`~rt.analysis.RESULT_VERSION`, bin width, goal
template). The same inputs find the cached rows again; a new or replaced input gives a new key and
the older rows of that dose are dropped. Every DVH metric is also a ``MetricValue`` row (structure
= TG-263 name where known), so metrics are searchable across patients.

The prescription is the planning set's plan's (the RT Dose's ReferencedRTPlanSequence, as the
oncology summary links them), with its source; the ``dvh`` and ``goals`` documents carry it
(``prescription``: dose_gy, source, description, note, text), the dose's unit label
(``dose_unit``: ``Gy`` or ``Gy(RBE)``) and what its DoseSummationType means for goals
(``summation_note``, ``dose_problem``); each goal names its template ROI, the matched ROI and the
matching rule (:func:`rt.analysis.compute_rt_analysis`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.analysis.results import Metric, NewResult, store_results
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.models import Instance, Patient, Series, Study
from oncopacs.index.oncology import summarize_study
from rt.analysis import (
    BIN_WIDTH_GY,
    RESULT_VERSION,
    RTAnalysis,
    compute_rt_analysis,
)

DVH, GOALS, PLAN = "dvh", "goals", "plan"
KINDS = (DVH, GOALS, PLAN)
AUTO_TEMPLATE = "auto"


@dataclass(frozen=True, slots=True)
class PlanningSet:
    """The instances one RT analysis reads (SOP Instance UIDs); ``plan_uid`` None when the archive has no plan."""

    patient_id: str
    study_instance_uid: str
    study_date: str
    dose_uid: str
    structure_set_uid: str
    plan_uid: str | None

    @property
    def uids(self) -> tuple[str, ...]:
        return tuple(u for u in (self.dose_uid, self.structure_set_uid, self.plan_uid) if u)

    def to_dict(self) -> dict[str, Any]:
        return {"dose_uid": self.dose_uid, "structure_set_uid": self.structure_set_uid, "plan_uid": self.plan_uid}


@dataclass(frozen=True, slots=True)
class CachedResults:
    """The stored results of one planning set (None: not computed for its current inputs)."""

    planning_set: PlanningSet
    template: str
    dvh: dict[str, Any] | None
    goals: dict[str, Any] | None
    plan: dict[str, Any] | None

    @property
    def complete(self) -> bool:
        return (
            self.dvh is not None
            and self.goals is not None
            and (self.plan is not None or not self.planning_set.plan_uid)
        )


# -- inputs ---------------------------------------------------------------------------------------


def find_planning_sets(session: Session, study_instance_uid: str) -> tuple[PlanningSet, ...]:
    """Every RT Dose of the study whose structure set the archive holds; NotFoundError for an unknown study."""
    summary = summarize_study(session, study_instance_uid)
    patient_id, study_date = session.execute(
        select(Patient.patient_id, Study.study_date)
        .join(Study.patient)
        .where(Study.study_instance_uid == study_instance_uid)
    ).one()
    doses = {d.sop_instance_uid: d for d in summary.doses}
    sets = []
    for chain in summary.treatment_planning_sets:
        if not chain.structure_set_uid:
            continue
        for dose_uid in chain.dose_uids:
            own_plan = doses[dose_uid].plan_uid
            plan_uid = (
                own_plan if own_plan in chain.plan_uids else (chain.plan_uids[0] if len(chain.plan_uids) == 1 else None)
            )
            sets.append(
                PlanningSet(patient_id, study_instance_uid, study_date, dose_uid, chain.structure_set_uid, plan_uid)
            )
    return tuple(sets)


def find_planning_sets_with(
    session: Session, study_instance_uid: str, sop_instance_uid: str
) -> tuple[PlanningSet, ...]:
    """The study's planning sets that include the instance (empty when the study is unknown)."""
    try:
        sets = find_planning_sets(session, study_instance_uid)
    except NotFoundError:
        return ()
    return tuple(s for s in sets if sop_instance_uid in s.uids)


def find_studies_with_doses(session: Session) -> list[str]:
    """Study Instance UIDs of every study holding an RT Dose (candidates for an RT analysis)."""
    return list(
        session.scalars(
            select(Study.study_instance_uid).join(Study.series).where(Series.modality == "RTDOSE").distinct()
        )
    )


def _hashes(session: Session, uids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{SOP Instance UID: (file path, SHA-256)} of stored instances."""
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.file_path, Instance.sha256).where(
            Instance.sop_instance_uid.in_(list(uids))
        )
    ).all()
    return {uid: (path, sha) for uid, path, sha in rows}


def compute_input_key(kind: str, files: dict[str, str], params: dict[str, Any]) -> str:
    """SHA-256 (hex) over the kind, the sorted ``{SOP Instance UID: file SHA-256}`` and the parameters."""
    text = json.dumps({"kind": kind, "inputs": sorted(files.items()), "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _keys(planning_set: PlanningSet, hashes: dict[str, tuple[str, str]], template: str) -> dict[str, str]:
    files = {uid: hashes[uid][1] for uid in planning_set.uids}
    dvh_params = {"version": RESULT_VERSION, "bin_width_gy": BIN_WIDTH_GY}
    keys = {
        DVH: compute_input_key(DVH, files, dvh_params),
        GOALS: compute_input_key(GOALS, files, {**dvh_params, "template": template}),
    }
    if planning_set.plan_uid:
        keys[PLAN] = compute_input_key(
            PLAN, {planning_set.plan_uid: files[planning_set.plan_uid]}, {"version": RESULT_VERSION}
        )
    return keys


# -- reading cached results -----------------------------------------------------------------------


def load_results(session: Session, planning_set: PlanningSet, template: str | None = None) -> CachedResults:
    """The cached results for the set's current inputs (``template`` None: the automatic choice)."""
    template = template or AUTO_TEMPLATE
    keys = _keys(planning_set, _hashes(session, planning_set.uids), template)
    rows = session.execute(
        select(AnalysisResult.kind, AnalysisResult.result_json).where(
            or_(*(and_(AnalysisResult.kind == kind, AnalysisResult.input_key == key) for kind, key in keys.items()))
        )
    ).all()
    found = {kind: json.loads(text) for kind, text in rows}
    return CachedResults(planning_set, template, found.get(DVH), found.get(GOALS), found.get(PLAN))


# -- computing and storing ------------------------------------------------------------------------


def analyse_planning_set(
    archive: Archive,
    planning_set: PlanningSet,
    *,
    template: str | None = None,
    force: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> bool:
    """Compute and store the set's results unless cached (``force``: recompute anyway); True when computed."""
    template_key = template or AUTO_TEMPLATE
    with archive.index.reading() as session:
        hashes = _hashes(session, planning_set.uids)
        missing = [uid for uid in planning_set.uids if uid not in hashes]
        if missing:
            raise NotFoundError(f"instance {missing[0]} is no longer in the archive")
        if not force and load_results(session, planning_set, template_key).complete:
            return False
    keys = _keys(planning_set, hashes, template_key)
    dose, structures = (
        archive.read_dataset(*hashes[uid]) for uid in (planning_set.dose_uid, planning_set.structure_set_uid)
    )
    plan = archive.read_dataset(*hashes[planning_set.plan_uid]) if planning_set.plan_uid else None
    analysis = compute_rt_analysis(dose, structures, plan, template=template, progress=progress)
    _store(archive, planning_set, keys, analysis)
    return True


def _store(archive: Archive, planning_set: PlanningSet, keys: dict[str, str], analysis: RTAnalysis) -> None:
    """Replace the set's rows (and older rows of the same dose) with the new results, in one transaction."""
    inputs = sorted(planning_set.uids)
    documents = {DVH: analysis.dvh, GOALS: analysis.goals, PLAN: analysis.plan}
    dvh_metrics = [
        Metric(roi.structure, metric, value) for roi in analysis.rois for metric, value in roi.metrics.items()
    ]
    results = [
        NewResult(
            kind,
            key,
            planning_set.patient_id,
            planning_set.study_instance_uid,
            planning_set.study_date,
            [planning_set.plan_uid] if kind == PLAN and planning_set.plan_uid else inputs,
            documents[kind],
            dvh_metrics if kind == DVH else (),
        )
        for kind, key in keys.items()
    ]
    with archive.index.writing() as session:
        store_results(session, results, superseded=_superseded(session, planning_set, keys))


def _superseded(session: Session, planning_set: PlanningSet, keys: dict[str, str]) -> list[int]:
    """Rows to drop: this set's own keys (recomputed) and the dose's DVH/goals rows for other inputs.

    Goals for another template on the same inputs stay (each template is its own cached result).
    """
    rows = session.execute(
        select(AnalysisResult.id, AnalysisResult.kind, AnalysisResult.input_key, AnalysisResult.inputs).where(
            AnalysisResult.study_instance_uid == planning_set.study_instance_uid
        )
    ).all()
    inputs = "\\".join(sorted(planning_set.uids))
    stale = []
    for pk, kind, key, row_inputs in rows:
        if keys.get(kind) == key or (
            kind in (DVH, GOALS)
            and planning_set.dose_uid in row_inputs.split("\\")
            and (kind == DVH or row_inputs != inputs)
        ):
            stale.append(pk)
    return stale


# -- searching metrics ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricMatch:
    """One stored metric value that matched a search, with the dose it was computed on."""

    patient_id: str
    study_instance_uid: str
    structure: str
    metric: str
    value: float
    inputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "study_instance_uid": self.study_instance_uid,
            "structure": self.structure,
            "metric": self.metric,
            "value": self.value,
            "inputs": list(self.inputs),
        }


@dataclass(frozen=True, slots=True)
class MetricBounds:
    """Bounds on a metric value (in the metric's unit); None: unbounded on that side."""

    greater_than: float | None = None
    less_than: float | None = None
    at_least: float | None = None
    at_most: float | None = None


def search_metrics(
    session: Session, structure: str, metric: str, bounds: MetricBounds, *, limit: int = 100, offset: int = 0
) -> tuple[int, list[MetricMatch]]:
    """(total, page highest first) of stored ``metric`` values of ``structure`` (case-insensitive) within ``bounds``."""
    conditions = [MetricValue.metric == metric, func.lower(MetricValue.structure) == structure.lower()]
    for bound, test in (
        (bounds.greater_than, MetricValue.value.__gt__),
        (bounds.less_than, MetricValue.value.__lt__),
        (bounds.at_least, MetricValue.value.__ge__),
        (bounds.at_most, MetricValue.value.__le__),
    ):
        if bound is not None:
            conditions.append(test(bound))
    total = session.scalar(select(func.count()).select_from(MetricValue).where(*conditions)) or 0
    rows = session.execute(
        select(
            MetricValue.patient_id,
            MetricValue.study_instance_uid,
            MetricValue.structure,
            MetricValue.metric,
            MetricValue.value,
            AnalysisResult.inputs,
        )
        .join(AnalysisResult, AnalysisResult.id == MetricValue.result_pk)
        .where(*conditions)
        .order_by(MetricValue.value.desc(), MetricValue.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return total, [MetricMatch(p, s, st, m, v, tuple(i.split("\\")) if i else ()) for p, s, st, m, v, i in rows]
