"""``/reports``: the PDF reports a user may read, as a page (a referrer's landing page), and its two forms.

Newest first, final reports by default (``?status=draft|superseded|all``), each with its title,
conclusion, patient ID, version, who approved it and when, and a link to its PDF
(``/api/reports/<id>/pdf``). Needs REPORTS_READ; the listing is audited (REPORT_VIEW) like ``/api/reports``.

Two browser forms (session CSRF token required) need REPORTS_WRITE and call the report service as
``/api/reports`` does, audited the same way: ``POST /reports/make`` (fields ``type``, ``study_uid``; the plan page's
"Make plan report" button) makes a draft and shows it highlighted (``?status=draft&made=<id>``), and
``POST /reports/<id>/approve`` (each draft's Approve button) makes it final and says so (``?approved=<id>``).
A refusal (unknown report or study, a report already final, a role that may not, a missing CSRF token) is a
4xx page that says what went wrong in words, never JSON.
"""

from __future__ import annotations

from typing import NoReturn

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import EXPECTED_ERRORS, NotFoundError, PermissionDeniedError, RTError
from oncopacs.reports.store import ReportRecord, ReportStatus
from oncopacs.uids import is_valid_uid
from oncopacs.web.access import audit_access, current_principal, requires
from oncopacs.web.api.listing import ROW_ID
from oncopacs.web.refusals import explain_refusal
from reporting.jobs import Reports
from reporting.types import REPORT_TYPE_NAMES

bp = Blueprint("report_list", __name__, template_folder="templates")

MAX_REPORTS = 200
_STATUSES = {"final": ReportStatus.FINAL, "draft": ReportStatus.DRAFT, "superseded": ReportStatus.SUPERSEDED,
             "all": None}
#: What a role lacking a permission is told it may not do (the page's 403).
_WHAT_IT_ALLOWS = {Permission.REPORTS_READ: "read reports", Permission.REPORTS_WRITE: "make or approve reports"}


def _reports() -> Reports:
    return current_app.extensions["oncopacs.reports"]


@bp.get("/reports")
@requires(Permission.REPORTS_READ)
def reports():
    """The report list page: final reports unless ``?status=`` asks for others."""
    status_text = request.args.get("status", "final").strip().lower() or "final"
    if status_text not in _STATUSES:
        abort(400, description=f"unknown report status {status_text[:20]!r} (valid: {', '.join(_STATUSES)})")
    found = _reports().service.store.list(status=_STATUSES[status_text], limit=MAX_REPORTS)
    audit_access(AuditAction.REPORT_VIEW, patient_ids=[r.patient_id for r in found],
                 study_uids=[r.study_uid for r in found])
    highlight, message = _notice(found)
    return render_template("reports.html", reports=found, status=status_text, statuses=list(_STATUSES),
                           highlight=highlight, message=message,
                           can_approve=current_principal().can(Permission.REPORTS_WRITE))


@bp.post("/reports/make")
@requires(Permission.REPORTS_WRITE)
def make():
    """Make a draft report from the form fields ``type`` and ``study_uid``; show it in the draft list."""
    type_name = request.form.get("type", "").strip()
    study_uid = request.form.get("study_uid", "").strip()
    if type_name not in REPORT_TYPE_NAMES:
        abort(400, description=f"unknown report type {type_name[:30]!r} (valid: {', '.join(REPORT_TYPE_NAMES)})")
    if not is_valid_uid(study_uid):
        abort(400, description=f"{study_uid[:70]!r} is not a StudyInstanceUID: make it from the study's plan page")
    try:
        draft = _reports().service.make(type_name, study_uid, current_principal().name)
    except (*EXPECTED_ERRORS, ValueError) as exc:
        _refuse(exc)
    audit_access(AuditAction.READ, patient_ids=[draft.patient_id], study_uids=[draft.study_uid])
    return redirect(url_for("report_list.reports", status="draft", made=draft.id), 303)


@bp.post(f"/reports/<{ROW_ID}:report_id>/approve")
@requires(Permission.REPORTS_WRITE)
def approve(report_id: int):
    """Approve draft ``report_id`` (final, archived, queued for the EHR); back to the list, which says so."""
    try:
        final = _reports().service.approve(report_id, current_principal())
    except EXPECTED_ERRORS as exc:
        _refuse(exc)
    audit_access(AuditAction.STORE, patient_ids=[final.patient_id], study_uids=[final.study_uid])
    _reports().loop.wake()
    return redirect(url_for("report_list.reports", approved=final.id), 303)


@bp.errorhandler(400)
@bp.errorhandler(403)
@bp.errorhandler(404)
@bp.errorhandler(409)
def _problem(exc: HTTPException):
    """A refusal by these pages as a page in words (a 401 keeps the sign-in redirect, or JSON for scripts)."""
    return render_template("report_problem.html", message=_explain(exc), code=exc.code), exc.code


def _notice(found: list[ReportRecord]) -> tuple[int | None, str]:
    """The report to highlight and what to say of it: a draft just made (``?made=``) or approved (``?approved=``)."""
    for key, status, text in (("made", ReportStatus.DRAFT, "Draft report {id} made: check its PDF, then approve it."),
                              ("approved", None, "Report {id} approved: {status}.")):
        report_id = request.args.get(key, type=int)
        report = next((r for r in found if r.id == report_id), None)
        if report is not None and (status is None or report.status is status):
            return report.id, text.format(id=report.id, status=report.status.value)
    return None, ""


def _refuse(exc: Exception) -> NoReturn:
    """Abort with the status of a service error (as ``/api/reports`` answers it) and its message."""
    if isinstance(exc, NotFoundError):
        abort(404, description=str(exc))
    if isinstance(exc, PermissionDeniedError):
        abort(403, description=str(exc))
    abort(400 if isinstance(exc, ValueError | RTError) else 409, description=str(exc))


def _explain(exc: HTTPException) -> str:
    """The sentence a person reads for ``exc``."""
    return explain_refusal(exc, _WHAT_IT_ALLOWS)
