"""``/reports``: the PDF reports a user may read, as a page (a referrer's landing page).

Newest first, final reports by default (``?status=draft|superseded|all``), each with its title,
conclusion, patient ID, version, who approved it and when, and a link to its PDF
(``/api/reports/<id>/pdf``). Needs REPORTS_READ; the listing is audited (REPORT_VIEW) like ``/api/reports``.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.reports.store import ReportStatus
from oncopacs.web.access import audit_access, requires

bp = Blueprint("report_list", __name__, template_folder="templates")

MAX_REPORTS = 200
_STATUSES = {"final": ReportStatus.FINAL, "draft": ReportStatus.DRAFT, "superseded": ReportStatus.SUPERSEDED,
             "all": None}


@bp.get("/reports")
@requires(Permission.REPORTS_READ)
def reports():
    """The report list page: final reports unless ``?status=`` asks for others."""
    status_text = request.args.get("status", "final").strip().lower() or "final"
    if status_text not in _STATUSES:
        abort(400, description=f"unknown report status {status_text[:20]!r} (valid: {', '.join(_STATUSES)})")
    store = current_app.extensions["oncopacs.reports"].service.store
    found = store.list(status=_STATUSES[status_text], limit=MAX_REPORTS)
    audit_access(AuditAction.REPORT_VIEW, patient_ids=[r.patient_id for r in found],
                 study_uids=[r.study_uid for r in found])
    return render_template("reports.html", reports=found, status=status_text, statuses=list(_STATUSES))
