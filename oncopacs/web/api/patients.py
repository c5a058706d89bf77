"""``/api/patients``: search patients, and one patient with its studies."""

from __future__ import annotations

from flask import abort, jsonify, request

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.auth.roles import Permission
from oncopacs.index.query import QueryError, QueryLevel, count, find
from oncopacs.web.access import audit_access, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import (
    PATIENT_COUNTS,
    STUDY_COUNTS,
    archive,
    pick,
    read_page,
    study_json,
)

_WILDCARDS = ("*", "?", "\\")


@bp.get("/patients")
@requires(Permission.ARCHIVE_READ)
def list_patients():
    """Search patients by name (?name=, wildcards * and ?, case-insensitive) or ID (?id=); paged by ?limit= and ?offset=."""  # noqa: E501 - the first docstring line is the OpenAPI summary
    page = read_page()
    keys = {"PatientName": request.args.get("name", ""), "PatientID": request.args.get("id", "")}
    try:
        with archive().index.reading() as session:
            total = count(session, QueryLevel.PATIENT, keys)
            matches = find(session, QueryLevel.PATIENT, keys, return_keys=PATIENT_COUNTS,
                           limit=page.limit, offset=page.offset)
    except QueryError as exc:
        abort(400, description=str(exc))
    patients = [pick(m.values, [QueryLevel.PATIENT], PATIENT_COUNTS) for m in matches]
    audit_access(AuditAction.QUERY, patient_ids=[p["PatientID"] for p in patients])
    return jsonify(total=total, limit=page.limit, offset=page.offset, patients=patients)


@bp.get("/patients/<path:patient_id>")
@requires(Permission.ARCHIVE_READ)
def get_patient(patient_id: str):
    """One patient (by exact Patient ID; ?issuer= when the ID is held under several issuers) and its studies."""
    if any(w in patient_id for w in _WILDCARDS):
        abort(400, description="a patient ID in the path is matched exactly; search with /api/patients?id= instead")
    with archive().index.reading() as session:
        identities = find(session, QueryLevel.PATIENT, {"PatientID": patient_id}, return_keys=PATIENT_COUNTS)
        studies = find(session, QueryLevel.STUDY, {"PatientID": patient_id}, return_keys=STUDY_COUNTS)
    identities = [m for m in identities if m.values["PatientID"] == patient_id]
    issuer = request.args.get("issuer")
    if issuer is not None:
        identities = [m for m in identities if m.values["IssuerOfPatientID"] == issuer]
    if not identities:
        audit_access(AuditAction.READ, patient_ids=[patient_id], outcome=Outcome.MINOR_FAILURE)
        abort(404, description=f"patient {patient_id} is not in the archive")
    if len(identities) > 1:
        issuers = ", ".join(repr(m.values["IssuerOfPatientID"]) for m in identities)
        abort(409, description=f"patient ID {patient_id} is held under several issuers ({issuers}); add ?issuer=")
    patient = identities[0].values
    own = [study_json(s.values) for s in studies
           if s.values["PatientID"] == patient_id and s.values["IssuerOfPatientID"] == patient["IssuerOfPatientID"]]
    audit_access(AuditAction.READ, patient_ids=[patient_id], study_uids=[s["StudyInstanceUID"] for s in own])
    return jsonify({**pick(patient, [QueryLevel.PATIENT], PATIENT_COUNTS), "studies": own})
