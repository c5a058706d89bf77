"""``/api/audit``: read, verify and export the audit trail (administrators: Permission.AUDIT_READ).

Reading and verifying are audited as AUDIT_LOG_USED (ATNA 110101 Audit Log Used) with the query that was asked (not
the patient IDs the records name: a patient's own history would fill with every administrator's look at it); an
export is audited as EXPORT. The record is written after the trail is read, so a read never shows its own record.
"""

from __future__ import annotations

from flask import Response, abort, current_app, jsonify, request

from oncopacs.audit.atna import iter_audit_messages_xml
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, iter_json_export, normalize_time
from oncopacs.auth.roles import Permission
from oncopacs.web.access import audit_access, audit_trail, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import read_page

_FORMATS = {"atna": "application/xml", "json": "application/json"}


@bp.get("/audit")
@requires(Permission.AUDIT_READ)
def list_audit_records():
    """Audit records, oldest first; filters ?since= ?until= (ISO 8601) ?actor= ?patient_id= ?action=; ?limit= ?offset=."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    page = read_page()
    document = audit_trail().query(_read_filter(), limit=page.limit, offset=page.offset).to_dict()
    audit_access(AuditAction.AUDIT_LOG_USED)  # with the query; before anything is sent (fail closed)
    return jsonify(document)


@bp.get("/audit/verify")
@requires(Permission.AUDIT_READ)
def verify_audit_trail():
    """Check the hash chain: ``ok``, records checked, and the first broken record and why."""
    result = audit_trail().verify()
    audit_access(AuditAction.AUDIT_LOG_USED)
    return jsonify(result.to_dict())


@bp.get("/audit/export")
@requires(Permission.AUDIT_READ)
def export_audit_trail():
    """The matching records as DICOM Audit Messages (?format=atna, XML) or a JSON array (?format=json)."""
    format_ = request.args.get("format", "atna").strip().lower()
    if format_ not in _FORMATS:
        abort(400, description=f"format must be one of {', '.join(_FORMATS)}, not {format_[:20]!r}")
    where = _read_filter()
    audit_access(AuditAction.EXPORT)  # recorded before anything is sent (fail closed)
    entries = audit_trail().iter_entries(where)
    settings = current_app.extensions["oncopacs.settings"]
    chunks = iter_audit_messages_xml(entries, settings.ae_title) if format_ == "atna" else iter_json_export(entries)
    suffix = "xml" if format_ == "atna" else "json"
    return Response(chunks, mimetype=_FORMATS[format_],
                    headers={"Content-Disposition": f'attachment; filename="oncopacs-audit.{suffix}"'})


def _read_filter() -> AuditFilter:
    args = request.args
    for name in ("since", "until"):
        if args.get(name):
            try:
                normalize_time(args[name])
            except ValueError:
                abort(400, description=f"{name} must be an ISO 8601 date or date-time, not {args[name][:40]!r}")
    action = args.get("action") or None
    if action is not None:
        try:
            action = AuditAction(action.strip().lower())
        except ValueError:
            abort(400, description=f"unknown action {action[:40]!r} (one of {', '.join(a.value for a in AuditAction)})")
    return AuditFilter(
        since=args.get("since") or None,
        until=args.get("until") or None,
        actor=args.get("actor") or None,
        patient_id=args.get("patient_id") or None,
        action=action,
    )
