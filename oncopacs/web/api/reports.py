"""``/api/reports``: list, read, make, approve, amend, send and download PDF reports.

Reading needs ``reports.read`` (audited REPORT_VIEW; the PDF download EXPORT); making, approving,
amending and sending need ``reports.write``. Sending queues the deliveries and wakes the delivery
loop (202); their outcome is read back from the report.
"""

from __future__ import annotations

from flask import Response, abort, current_app, jsonify, request, url_for

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import (
    EXPECTED_ERRORS,
    NotFoundError,
    PermissionDeniedError,
    RemoteNodeError,
)
from oncopacs.reports.store import ReportRecord, ReportStatus
from oncopacs.web.access import audit_access, current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import ROW_ID, read_page
from reporting.jobs import Reports
from reporting.types import REPORT_TYPE_NAMES
from rt.errors import RTError


def _reports() -> Reports:
    return current_app.extensions["oncopacs.reports"]


def _report(report_id: int) -> ReportRecord:
    try:
        return _reports().service.store.get(report_id)
    except NotFoundError:
        abort(404, description=f"report {report_id} does not exist")


#: What making or amending a report may raise on purpose: the platform's errors, and a bad option value.
EXPECTED_OR_BAD_OPTIONS: tuple[type[Exception], ...] = (*EXPECTED_ERRORS, ValueError)


def _fail(exc: Exception):
    if isinstance(exc, NotFoundError):
        abort(404, description=str(exc))
    if isinstance(exc, PermissionDeniedError):
        abort(403, description=str(exc))
    if isinstance(exc, RemoteNodeError):
        abort(409, description=str(exc))
    if isinstance(exc, ValueError | RTError):
        abort(400, description=str(exc))
    abort(409, description=str(exc))


def _document(report: ReportRecord) -> dict:
    deliveries = _reports().service.deliveries.for_report(report.id)
    return {**report.to_dict(), "deliveries": [d.to_dict() for d in deliveries],
            "pdf_url": url_for("api.report_pdf", report_id=report.id)}


@bp.get("/reports")
@requires(Permission.REPORTS_READ)
def list_reports():
    """Reports, newest first; filter by ?patient_id=, ?study_uid=, ?status= (draft, final, superseded); paged."""
    page = read_page()
    status_text = request.args.get("status", "").strip().lower()
    try:
        status = ReportStatus(status_text) if status_text else None
    except ValueError:
        abort(400, description=f"unknown report status {status_text[:20]!r} (valid: draft, final, superseded)")
    found = _reports().service.store.list(patient_id=request.args.get("patient_id", "").strip(),
                                          study_uid=request.args.get("study_uid", "").strip(), status=status,
                                          limit=page.limit, offset=page.offset)
    audit_access(
        AuditAction.REPORT_VIEW, patient_ids=[r.patient_id for r in found], study_uids=[r.study_uid for r in found]
    )
    return jsonify(limit=page.limit, offset=page.offset, reports=[r.to_dict() for r in found])


@bp.get(f"/reports/<{ROW_ID}:report_id>")
@requires(Permission.REPORTS_READ)
def get_report(report_id: int):
    """One report version with its delivery log."""
    report = _report(report_id)
    audit_access(AuditAction.REPORT_VIEW, patient_ids=[report.patient_id], study_uids=[report.study_uid])
    return jsonify(_document(report))


@bp.get(f"/reports/<{ROW_ID}:report_id>/pdf")
@requires(Permission.REPORTS_READ)
def report_pdf(report_id: int):
    """The report's PDF (a draft's carries DRAFT on every page)."""
    report = _report(report_id)
    try:
        pdf = _reports().service.read_pdf(report)
    except EXPECTED_ERRORS as exc:
        _fail(exc)
    audit_access(AuditAction.EXPORT, patient_ids=[report.patient_id], study_uids=[report.study_uid])
    name = f"report-{report.id}-v{report.version}-{report.status.value}.pdf"
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


@bp.post("/reports")
@requires(Permission.REPORTS_WRITE)
def make_report():
    """Make a draft: JSON body {"type": "plan" | "pet-response" | "tumour-board", "study_uid": ..., "options": {...}}."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    body = request.get_json(silent=True)
    if (
        not isinstance(body, dict)
        or body.get("type") not in REPORT_TYPE_NAMES
        or not isinstance(body.get("study_uid"), str)
    ):
        abort(400, description=f'the body must be {{"type": one of {", ".join(REPORT_TYPE_NAMES)}, "study_uid": ...}}')
    options = body.get("options", {})
    if not isinstance(options, dict):
        abort(400, description="options must be a JSON object")
    try:
        report = _reports().service.make(body["type"], body["study_uid"], current_principal().name, options)
    except EXPECTED_OR_BAD_OPTIONS as exc:
        _fail(exc)
    audit_access(AuditAction.READ, patient_ids=[report.patient_id], study_uids=[report.study_uid])
    return jsonify(_document(report)), 201, {"Location": url_for("api.get_report", report_id=report.id)}


@bp.post(f"/reports/<{ROW_ID}:report_id>/approve")
@requires(Permission.REPORTS_WRITE)
def approve_report(report_id: int):
    """Approve a draft: final, archived as Encapsulated PDF, queued for the EHR."""
    report = _report(report_id)
    try:
        final = _reports().service.approve(report.id, current_principal())
    except EXPECTED_ERRORS as exc:
        _fail(exc)
    audit_access(AuditAction.STORE, patient_ids=[final.patient_id], study_uids=[final.study_uid])
    _reports().loop.wake()
    return jsonify(_document(final))


@bp.post(f"/reports/<{ROW_ID}:report_id>/amend")
@requires(Permission.REPORTS_WRITE)
def amend_report(report_id: int):
    """A new draft version of a final report (approve it to supersede the current one)."""
    report = _report(report_id)
    try:
        draft = _reports().service.amend(report.id, current_principal().name)
    except EXPECTED_OR_BAD_OPTIONS as exc:
        _fail(exc)
    audit_access(AuditAction.READ, patient_ids=[draft.patient_id], study_uids=[draft.study_uid])
    return jsonify(_document(draft)), 201, {"Location": url_for("api.get_report", report_id=draft.id)}


@bp.post(f"/reports/<{ROW_ID}:report_id>/send")
@requires(Permission.REPORTS_WRITE)
def send_report(report_id: int):
    """Queue the report for every configured destination (a re-send where the last delivery finished); 202."""
    report = _report(report_id)
    try:
        _reports().service.queue_send(report.id, current_principal().name)
    except EXPECTED_ERRORS as exc:
        _fail(exc)
    audit_access(AuditAction.EXPORT, patient_ids=[report.patient_id], study_uids=[report.study_uid])
    _reports().loop.wake()
    return jsonify(_document(report)), 202
