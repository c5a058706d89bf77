"""``/api/outbox``: how forwarding stands per destination, the rows of one state, and re-queueing a dead row."""

from __future__ import annotations

from flask import abort, current_app, jsonify, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.orchestration.outbox import Outbox, OutboxState, OutboxStateError
from oncopacs.web.access import current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import ROW_ID, read_page
from oncopacs.web.auth import record_security_event


def _outbox() -> Outbox:
    return current_app.extensions["oncopacs.platform"].outbox


@bp.get("/outbox")
@requires(Permission.ARCHIVE_READ)
def outbox_status():
    """Forwarding status per destination (rows per state, oldest pending, latest error); with ?state= (pending,
    delivering, delivered, dead) and optionally ?destination=, also those rows, oldest first, paged."""
    state_text = request.args.get("state", "").strip().lower()
    destinations = [status.to_dict() for status in _outbox().status()]
    if not state_text:
        return jsonify(destinations=destinations)
    try:
        state = OutboxState(state_text)
    except ValueError:
        valid = ", ".join(s.value for s in OutboxState)
        abort(400, description=f"unknown outbox state {state_text[:40]!r} (valid: {valid})")
    page = read_page()
    found = _outbox().list_items(state=state, destination=request.args.get("destination", "").strip() or None,
                           limit=page.limit, offset=page.offset)
    return jsonify(destinations=destinations, total=found.total, limit=page.limit, offset=page.offset,
                   items=[item.to_dict() for item in found.items])


@bp.post(f"/outbox/<{ROW_ID}:item_id>/retry")
@requires(Permission.PEERS_MANAGE)
def retry_outbox_item(item_id: int):
    """Queue a dead (or delivered) outbox row again with fresh attempts; 409 while it is pending or delivering."""
    try:
        item = _outbox().requeue(item_id)
    except OutboxStateError as exc:
        abort(409, description=str(exc))
    record_security_event(AuditAction.CONFIG_CHANGE, actor=current_principal().name,
                          note=f"outbox item {item.id} to {item.destination[:80]} queued again")
    return jsonify(item.to_dict())
