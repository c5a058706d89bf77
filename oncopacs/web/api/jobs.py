"""``/api/jobs``: list and read jobs, and start one (e.g. ``{"kind": "verify"}``)."""

from __future__ import annotations

from flask import abort, current_app, jsonify, request, url_for

from oncopacs.auth.roles import Permission
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.queue import JobStatus
from oncopacs.web.access import current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import ROW_ID, read_page


def _jobs() -> JobSystem:
    return current_app.extensions["oncopacs.jobs"]


@bp.get("/jobs")
@requires(Permission.ARCHIVE_READ)
def list_jobs():
    """List jobs, newest first; filter by ?status= (queued, running, succeeded, failed) and ?kind=; paged."""
    page = read_page()
    status_text = request.args.get("status", "").strip().lower()
    try:
        status = JobStatus(status_text) if status_text else None
    except ValueError:
        valid = ", ".join(s.value for s in JobStatus)
        abort(400, description=f"unknown job status {status_text[:40]!r} (valid: {valid})")
    found = _jobs().queue.list(status=status, kind=request.args.get("kind", "").strip() or None,
                               limit=page.limit, offset=page.offset)
    return jsonify(total=found.total, limit=page.limit, offset=page.offset, jobs=[j.to_dict() for j in found.jobs])


@bp.get(f"/jobs/<{ROW_ID}:job_id>")
@requires(Permission.ARCHIVE_READ)
def get_job(job_id: int):
    """One job: status, progress (0..1), message, and its result once finished."""
    job = _jobs().queue.get(job_id)
    if job is None:
        abort(404, description=f"job {job_id} does not exist")
    return jsonify(job.to_dict())


@bp.post("/jobs")
@requires(Permission.ANALYSIS_RUN)
def create_job():
    """Start a job: JSON body {"kind": ..., "params": {...}}; answers 202 with the queued job."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description='the body must be a JSON object such as {"kind": "verify"}')
    kind, params = body.get("kind"), body.get("params", {})
    system = _jobs()
    if not isinstance(kind, str) or kind not in system.registry:
        valid = sorted(system.registry)
        response = jsonify(error="Bad Request", status=400, valid_kinds=valid,
                           detail=f"unknown job kind {str(kind)[:40]!r} (valid kinds: {', '.join(valid)})")
        return response, 400
    if not isinstance(params, dict):
        abort(400, description="params must be a JSON object")
    job = system.queue.get(system.queue.enqueue(kind, params, current_principal().name))
    return jsonify(job.to_dict()), 202, {"Location": url_for("api.get_job", job_id=job.id)}
