"""``/api/hl7/messages``: the log of HL7 v2 messages the listener read and how each was answered (administrators:
Permission.AUDIT_READ). The list carries no message text; one message's raw text is a patient-record read (audited)."""

from __future__ import annotations

import re

from flask import abort, jsonify, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.ehr.message_log import MessageLog
from oncopacs.ehr.messages import AckCode, Hl7FormatError, parse_message
from oncopacs.web.access import audit_access, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import ROW_ID, archive, read_page

_TYPE = re.compile(r"^[A-Z0-9]{3}(\^[A-Z0-9]{3})?$")


def _log() -> MessageLog:
    return MessageLog(archive().index)


@bp.get("/hl7/messages")
@requires(Permission.AUDIT_READ)
def list_hl7_messages():
    """HL7 messages received, newest first, without their text; ?outcome= (AA, AE, AR) ?type= (ADT or ADT^A08)."""
    page = read_page()
    outcome = request.args.get("outcome", "").strip().upper() or None
    if outcome is not None and outcome not in {code.value for code in AckCode}:
        abort(400, description=f"outcome must be one of AA, AE, AR, not {outcome[:20]!r}")
    message_type = request.args.get("type", "").strip().upper() or None
    if message_type is not None and not _TYPE.match(message_type):
        abort(400, description=f"type must be a message type (ADT) or type and trigger (ADT^A08), "
                               f"not {message_type[:20]!r}")
    found = _log().query(outcome=outcome, message_type=message_type, limit=page.limit, offset=page.offset)
    return jsonify(found.to_dict())


@bp.get(f"/hl7/messages/<{ROW_ID}:message_id>")
@requires(Permission.AUDIT_READ)
def get_hl7_message(message_id: int):
    """One logged HL7 message with its raw text (segments separated by CR); reading it is audited."""
    message = _log().get(message_id)
    if message is None:
        abort(404, description=f"no HL7 message {message_id}")
    patient_ids: tuple[str, ...] = ()
    try:
        parsed = parse_message(message.raw or "")
        if parsed.has("PID"):
            patient_ids = (parsed.patient().patient_id,)
    except Hl7FormatError:
        pass
    audit_access(AuditAction.READ, patient_ids=patient_ids)
    return jsonify(message.to_dict())
