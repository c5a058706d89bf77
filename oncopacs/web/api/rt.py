"""``/api/studies/<uid>/rt`` (RT results of a study) and ``/api/metrics/search`` (DVH metrics across patients).

Results are computed by ``rt_analysis`` jobs (queued by the ingest rule, or by POST) and read from
the index. A GET whose results are not there yet answers 202 with the job computing them: the
pending one, or one it queues when the study's analysis never ran (a read-through cache; a study
whose last job failed answers 200 with that job's message instead of retrying forever).
"""

from __future__ import annotations

import math
from typing import Any

from flask import abort, current_app, jsonify, request, url_for

from oncopacs.analysis.rt import (
    CachedResults,
    MetricBounds,
    PlanningSet,
    find_planning_sets,
    load_results,
    search_metrics,
)
from oncopacs.analysis.rt_job import enqueue_rt_analysis, find_study_job
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.auth.roles import Permission
from oncopacs.errors import NotFoundError
from oncopacs.index.query import QueryLevel, find
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.queue import JobRecord, JobStatus
from oncopacs.uids import is_valid_uid
from oncopacs.web.access import audit_access, current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import archive, read_page
from rt.dvh import METRIC_PATTERN
from rt.goals import list_templates


def _jobs() -> JobSystem:
    return current_app.extensions["oncopacs.jobs"]


@bp.get("/studies/<study_uid>/rt")
@requires(Permission.ARCHIVE_READ)
def get_study_rt(study_uid: str):
    """RT results per RT Dose: plan summary, DVH metrics per ROI (TG-263), clinical goals; 202 with the job while computing. ?template= picks the goal template."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    template = _template_argument(request.args.get("template"))
    results = _load(study_uid, template)
    if not all(r.complete for r in results):
        job = _computing_job(study_uid, template)
        if job is not None:
            _audit(study_uid, results)
            return _accepted(job, study_uid)
    _audit(study_uid, results)
    last = find_study_job(_jobs().queue, study_uid) if not all(r.complete for r in results) else None
    return jsonify(study_instance_uid=study_uid, planning_sets=[_summary(r) for r in results],
                   last_job=last.to_dict() if last is not None else None)


@bp.get("/studies/<study_uid>/rt/dvh")
@requires(Permission.ARCHIVE_READ)
def get_study_dvh(study_uid: str):
    """DVH curves (dose_gy, volume_cc, volume_percent) of the study's ROIs; ?roi= (repeatable, name or TG-263 name), ?dose_uid=."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    dose_uid = request.args.get("dose_uid")
    results = [r for r in _load(study_uid, None) if dose_uid in (None, r.planning_set.dose_uid)]
    if not results:
        _audit(study_uid, results, Outcome.MINOR_FAILURE)
        what = f"RT Dose {dose_uid[:70]}" if dose_uid else "an RT Dose"
        abort(404, description=f"study {study_uid} has no {what} with its RT Structure Set")
    if any(r.dvh is None for r in results):
        pending = find_study_job(_jobs().queue, study_uid, pending_only=True)
        if pending is not None:
            _audit(study_uid, results)
            return _accepted(pending, study_uid)
        _audit(study_uid, results, Outcome.MINOR_FAILURE)
        abort(404, description=(
            f"no DVH of study {study_uid} is computed for its current inputs; POST /api/studies/{study_uid}/rt"
        ))
    wanted = [name.strip().casefold() for name in request.args.getlist("roi") if name.strip()]
    sets = [_curves(r, wanted) for r in results]
    if wanted and not any(s["rois"] for s in sets):
        _audit(study_uid, results, Outcome.MINOR_FAILURE)
        abort(404, description=f"no ROI named {', '.join(request.args.getlist('roi'))[:100]!r} in the study's DVHs")
    _audit(study_uid, results)
    return jsonify(study_instance_uid=study_uid, planning_sets=sets)


@bp.post("/studies/<study_uid>/rt")
@requires(Permission.ANALYSIS_RUN)
def recompute_study_rt(study_uid: str):
    """Queue a recompute of the study's RT results; JSON body (optional) {"template": ..., "dose_uid": ...}; 202 with the job."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        abort(400, description='the body must be a JSON object such as {"template": "prostate"}')
    template = _template_argument(body.get("template"))
    dose_uid = body.get("dose_uid")
    if dose_uid is not None and (not isinstance(dose_uid, str) or not is_valid_uid(dose_uid)):
        abort(400, description="dose_uid must be the SOP Instance UID of an RT Dose")
    results = _load(study_uid, template)
    if not any(dose_uid in (None, r.planning_set.dose_uid) for r in results):
        _audit(study_uid, results, Outcome.MINOR_FAILURE)
        what = f"RT Dose {str(dose_uid)[:70]}" if dose_uid else "an RT Dose"
        abort(409, description=f"study {study_uid} has no {what} with its RT Structure Set to analyse")
    _audit(study_uid, results)
    job, _ = enqueue_rt_analysis(_jobs().queue, study_uid, current_principal().name, dose_uid=dose_uid,
                                 template=template, force=True)
    return _accepted(job, study_uid)


@bp.get("/metrics/search")
@requires(Permission.ARCHIVE_READ)
def search_dvh_metrics():
    """Patients and studies whose DVH metric matches: ?structure=Rectum&metric=V70Gy[%] with ?gt=, ?lt= and/or ?between=a,b; paged."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    structure, metric = request.args.get("structure", "").strip(), request.args.get("metric", "").strip()
    if not structure or not metric:
        abort(400, description="structure and metric are required, e.g. ?structure=Rectum&metric=V70Gy[%]&gt=15")
    if METRIC_PATTERN.match(metric) is None:
        abort(400, description=f"{metric[:40]!r} is not a TG-263 DVH metric such as D95%[Gy], V70Gy[%] or Mean[Gy]")
    bounds = _bounds()
    page = read_page()
    with archive().index.reading() as session:
        total, matches = search_metrics(session, structure, metric, bounds, limit=page.limit, offset=page.offset)
    audit_access(AuditAction.QUERY, patient_ids=[m.patient_id for m in matches],
                 study_uids=[m.study_instance_uid for m in matches])
    return jsonify(structure=structure, metric=metric, total=total, limit=page.limit, offset=page.offset,
                   results=[m.to_dict() for m in matches])


# -- helpers --------------------------------------------------------------------------------------


def _template_argument(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or value not in list_templates():
        abort(400, description=f"unknown goal template {str(value)[:40]!r} (shipped: {', '.join(list_templates())})")
    return value


def _load(study_uid: str, template: str | None) -> list[CachedResults]:
    """The cached results of every planning set of the study; 404 (audited) when the study is unknown."""
    if not is_valid_uid(study_uid):
        abort(400, description=f"{study_uid[:70]!r} is not a DICOM UID")
    try:
        with archive().index.reading() as session:
            return [load_results(session, s, template) for s in find_planning_sets(session, study_uid)]
    except NotFoundError:
        audit_access(AuditAction.READ, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
        abort(404, description=f"study {study_uid} is not in the archive")


def _audit(study_uid: str, results: list[CachedResults], outcome: Outcome = Outcome.SUCCESS) -> None:
    patient_ids = [r.planning_set.patient_id for r in results]
    if not patient_ids:  # a study without planning sets: its patient all the same
        with archive().index.reading() as session:
            found = find(session, QueryLevel.STUDY, {"StudyInstanceUID": study_uid})
        patient_ids = [m.values.get("PatientID", "") for m in found]
    audit_access(AuditAction.READ, patient_ids=patient_ids, study_uids=[study_uid], outcome=outcome)


def _computing_job(study_uid: str, template: str | None) -> JobRecord | None:
    """The pending job of the study, else one queued now unless its last job failed."""
    queue = _jobs().queue
    pending = find_study_job(queue, study_uid, pending_only=True)
    if pending is not None:
        return pending
    last = find_study_job(queue, study_uid)
    if last is not None and last.status == JobStatus.FAILED:
        return None
    job, _ = enqueue_rt_analysis(queue, study_uid, current_principal().name, template=template)
    return job


def _accepted(job: JobRecord, study_uid: str):
    body = {"study_instance_uid": study_uid, "status": "computing", "job": job.to_dict()}
    return jsonify(body), 202, {"Location": url_for("api.get_job", job_id=job.id)}


def _summary(result: CachedResults) -> dict[str, Any]:
    dvh = result.dvh
    if dvh is not None:
        dvh = {**dvh, "rois": [{k: v for k, v in roi.items() if k != "curve"} for roi in dvh["rois"]]}
    return {"inputs": result.planning_set.to_dict(), "computed": result.complete, "plan": result.plan,
            "dvh": dvh, "goals": result.goals}


def _curves(result: CachedResults, wanted: list[str]) -> dict[str, Any]:
    planning_set: PlanningSet = result.planning_set
    rois = [
        {"name": roi["name"], "tg263_name": roi["tg263_name"], "volume_cc": roi["volume_cc"],
         "uncovered_volume_cc": roi["uncovered_volume_cc"], "curve": roi["curve"], "note": roi["note"]}
        for roi in result.dvh["rois"]  # type: ignore[index]
        if not wanted or roi["name"].casefold() in wanted or (roi["tg263_name"] or "").casefold() in wanted
    ]
    return {"inputs": planning_set.to_dict(), "prescription_gy": result.dvh.get("prescription_gy"),  # type: ignore[union-attr]
            "rois": rois}


def _bounds() -> MetricBounds:
    values = {name: _number(name) for name in ("gt", "lt")}
    between = request.args.get("between", "").strip()
    low = high = None
    if between:
        parts = between.split(",")
        if len(parts) != 2:
            abort(400, description="between must be two numbers separated by a comma, e.g. between=10,20")
        low, high = (_parse_number("between", p) for p in parts)
        if low > high:
            abort(400, description="between: the first number must not exceed the second")
    return MetricBounds(greater_than=values["gt"], less_than=values["lt"], at_least=low, at_most=high)


def _number(name: str) -> float | None:
    raw = request.args.get(name, "").strip()
    return _parse_number(name, raw) if raw else None


def _parse_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        abort(400, description=f"{name} must be a number, not {raw[:40]!r}")
    if not math.isfinite(value):
        abort(400, description=f"{name} must be a finite number")
    return value
