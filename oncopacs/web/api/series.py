"""``/api/series/<uid>``: one series with its instances."""

from __future__ import annotations

from flask import abort, jsonify

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.auth.roles import Permission
from oncopacs.index.query import QueryLevel, find
from oncopacs.uids import is_valid_uid
from oncopacs.web.access import audit_access, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import SERIES_COUNTS, archive, pick, series_json


@bp.get("/series/<series_uid>")
@requires(Permission.ARCHIVE_READ)
def get_series(series_uid: str):
    """One series: its attributes, its study and patient, and its instances in the order they arrived."""
    if not is_valid_uid(series_uid):
        abort(400, description=f"{series_uid[:70]!r} is not a DICOM UID")
    keys = {"SeriesInstanceUID": series_uid}
    with archive().index.reading() as session:
        found = find(session, QueryLevel.SERIES, keys, return_keys=SERIES_COUNTS)
        instances = find(session, QueryLevel.IMAGE, keys) if found else []
    if not found:
        audit_access(AuditAction.READ, outcome=Outcome.MINOR_FAILURE)
        abort(404, description=f"series {series_uid} is not in the archive")
    values = found[0].values
    audit_access(AuditAction.READ, patient_ids=[values["PatientID"]], study_uids=[values["StudyInstanceUID"]])
    return jsonify({
        **series_json(values),
        "PatientID": values["PatientID"],
        "PatientName": values["PatientName"],
        "instances": [pick(i.values, [QueryLevel.IMAGE]) for i in instances],
    })
