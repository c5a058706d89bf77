"""``/api/studies``: search studies, and one study with its series and its oncology summary."""

from __future__ import annotations

import re

from flask import abort, jsonify, request

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.auth.roles import Permission
from oncopacs.index.oncology import summarize_study
from oncopacs.index.query import QueryError, QueryLevel, count, find
from oncopacs.uids import is_valid_uid
from oncopacs.web.access import audit_access, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import (
    SERIES_COUNTS,
    STUDY_COUNTS,
    archive,
    read_page,
    series_json,
    study_json,
)

_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


@bp.get("/studies")
@requires(Permission.ARCHIVE_READ)
def list_studies():
    """Search studies by ?patient_id=, ?date_from= / ?date_to= (YYYYMMDD or YYYY-MM-DD) and ?modality=; paged."""
    page = read_page()
    keys = {
        "PatientID": request.args.get("patient_id", ""),
        "StudyDate": _date_range(request.args.get("date_from", ""), request.args.get("date_to", "")),
        "ModalitiesInStudy": request.args.get("modality", "").upper(),
    }
    try:
        with archive().index.reading() as session:
            total = count(session, QueryLevel.STUDY, keys)
            matches = find(
                session, QueryLevel.STUDY, keys, return_keys=STUDY_COUNTS, limit=page.limit, offset=page.offset
            )
    except QueryError as exc:
        abort(400, description=str(exc))
    studies = [study_json(m.values) for m in matches]
    audit_access(AuditAction.QUERY, patient_ids=[s["PatientID"] for s in studies],
                 study_uids=[s["StudyInstanceUID"] for s in studies])
    return jsonify(total=total, limit=page.limit, offset=page.offset, studies=studies)


@bp.get("/studies/<study_uid>")
@requires(Permission.ARCHIVE_READ)
def get_study(study_uid: str):
    """One study: its attributes, its series and its oncology summary (planning chains, PET-CT pairs)."""
    if not is_valid_uid(study_uid):
        abort(400, description=f"{study_uid[:70]!r} is not a DICOM UID")
    with archive().index.reading() as session:
        found = find(session, QueryLevel.STUDY, {"StudyInstanceUID": study_uid}, return_keys=STUDY_COUNTS)
        if not found:
            audit_access(AuditAction.READ, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
            abort(404, description=f"study {study_uid} is not in the archive")
        series = find(session, QueryLevel.SERIES, {"StudyInstanceUID": study_uid}, return_keys=SERIES_COUNTS)
        oncology = summarize_study(session, study_uid)
    study = study_json(found[0].values)
    audit_access(AuditAction.READ, patient_ids=[study["PatientID"]], study_uids=[study_uid])
    return jsonify({**study, "series": [series_json(s.values) for s in series], "oncology": oncology.to_dict()})


def _date_range(date_from: str, date_to: str) -> str:
    """The DICOM range ``FROM-TO`` (either side may be open); empty when neither is given."""
    low, high = _dicom_date("date_from", date_from), _dicom_date("date_to", date_to)
    if low and high and low > high:
        abort(400, description="date_from is after date_to")
    return f"{low}-{high}" if low or high else ""


def _dicom_date(name: str, text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    match = _DATE.match(text)
    if match is None:
        abort(400, description=f"{name} must be a date as YYYYMMDD or YYYY-MM-DD, not {text[:40]!r}")
    return "".join(match.groups())
