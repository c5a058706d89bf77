"""``/api/patients/merges``: the patient merges ADT^A40 made, and an administrator's undo of one."""

from __future__ import annotations

from flask import abort, jsonify

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.index.demographics import DemographicsError, MergeNotFound, MergeRecord, list_merges, revert_merge
from oncopacs.web.access import audit_access, current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import ROW_ID, archive, read_page


@bp.get("/patients/merges")
@requires(Permission.PEERS_MANAGE)
def list_patient_merges():
    """The patient merges, newest first (?limit=, ?offset=): which prior ID went into which patient, and when."""
    page = read_page()
    merges = list_merges(archive().index, limit=page.limit, offset=page.offset)
    audit_access(AuditAction.QUERY,
                 patient_ids=[i for m in merges for i in (m.surviving_patient_id, m.prior_patient_id)])
    return jsonify(limit=page.limit, offset=page.offset, merges=[merge_json(m) for m in merges])


@bp.post(f"/patients/merges/<{ROW_ID}:merge_id>/revert")
@requires(Permission.PEERS_MANAGE)
def revert_patient_merge(merge_id: int):
    """Undo a merge: its studies go back to the prior patient; 409 when reverted already or its studies moved."""
    try:
        merge = revert_merge(archive().index, merge_id, current_principal().name)
    except MergeNotFound as exc:
        abort(404, description=str(exc))
    except DemographicsError as exc:
        abort(409, description=str(exc))
    audit_access(AuditAction.PATIENT_RECORD, patient_ids=[merge.surviving_patient_id, merge.prior_patient_id],
                 study_uids=merge.moved_study_uids)
    return jsonify(merge_json(merge))


def merge_json(merge: MergeRecord) -> dict:
    return {
        "id": merge.id,
        "surviving": {"patient_id": merge.surviving_patient_id, "issuer": merge.surviving_issuer},
        "prior": {"patient_id": merge.prior_patient_id, "issuer": merge.prior_issuer},
        "moved_study_uids": list(merge.moved_study_uids),
        "merged_at": merge.merged_at.isoformat(),
        "reverted_at": merge.reverted_at.isoformat() if merge.reverted_at else None,
        "reverted_by": merge.reverted_by,
    }
