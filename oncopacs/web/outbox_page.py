"""``/outbox``: how forwarding stands, as a page for administrators (and whoever may read ``/api/outbox``).

Per destination (name, DIMSE or STOW-RS): rows pending, being delivered, delivered and dead, the latest error and
when the next try falls due; below, the dead rows and the failing ones waiting for another try (newest first, at
most :data:`MAX_ROWS` each) by outbox row, SOP Instance UID, rule, attempts and error: no patient data, as the API.
Needs ARCHIVE_READ, as ``GET /api/outbox``. Each dead row has a Retry button for those with PEERS_MANAGE:
``POST /outbox/<id>/retry`` (session CSRF token required) queues it again through :meth:`Outbox.requeue` and is
audited as the API's retry (CONFIG_CHANGE); the page then says so (``?retried=<id>``). A refusal is a page in
words (the report pages' template), never JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import NotFoundError
from oncopacs.orchestration.outbox import DestinationStatus, Outbox, OutboxState, OutboxStateError
from oncopacs.web.access import current_principal, requires
from oncopacs.web.api.listing import ROW_ID
from oncopacs.web.auth import record_security_event
from oncopacs.web.refusals import explain_refusal

bp = Blueprint("outbox_page", __name__, template_folder="templates")

MAX_ROWS = 100  # dead rows, and failing rows, listed on the page
#: What a role lacking a permission is told it may not do (the page's 403).
_WHAT_IT_ALLOWS = {Permission.ARCHIVE_READ: "see the outbox", Permission.PEERS_MANAGE: "queue outbox items again"}


@dataclass(frozen=True, slots=True)
class DestinationRow:
    """One destination as the page shows it: its status and when its next try falls due (None: nothing waits)."""

    status: DestinationStatus
    next_attempt_at: datetime | None


def _outbox() -> Outbox:
    return current_app.extensions["oncopacs.platform"].outbox


@bp.app_context_processor
def _outbox_link() -> dict[str, bool]:
    """Whether the shell's header shows the Outbox link (to callers who may read it)."""
    principal = g.get("principal")
    return {"can_see_outbox": principal is not None and principal.can(Permission.ARCHIVE_READ)}


@bp.get("/outbox")
@requires(Permission.ARCHIVE_READ)
def outbox():
    """The outbox page: destinations with their counts, the dead rows and the failing ones."""
    box = _outbox()
    next_due = box.next_due_by_destination()
    destinations = [DestinationRow(status, next_due.get(status.destination)) for status in box.status()]
    dead = box.list_items(state=OutboxState.DEAD, limit=MAX_ROWS)
    pending = box.list_items(state=OutboxState.PENDING, limit=MAX_ROWS)  # oldest first; failed ones carry an error
    return render_template("outbox.html", destinations=destinations, dead=dead,
                           failing=[item for item in pending.items if item.last_error], max_rows=MAX_ROWS,
                           retried=request.args.get("retried", type=int),
                           can_retry=current_principal().can(Permission.PEERS_MANAGE))


@bp.post(f"/outbox/<{ROW_ID}:item_id>/retry")
@requires(Permission.PEERS_MANAGE)
def retry(item_id: int):
    """Queue dead row ``item_id`` again (audited as ``POST /api/outbox/<id>/retry``); back to the page."""
    try:
        item = _outbox().requeue(item_id)
    except NotFoundError as exc:
        abort(404, description=str(exc))
    except OutboxStateError as exc:
        abort(409, description=str(exc))
    record_security_event(AuditAction.CONFIG_CHANGE, actor=current_principal().name,
                          note=f"outbox item {item.id} to {item.destination[:80]} queued again")
    return redirect(url_for("outbox_page.outbox", retried=item.id), 303)


@bp.errorhandler(400)
@bp.errorhandler(403)
@bp.errorhandler(404)
@bp.errorhandler(409)
def _problem(exc: HTTPException):
    """A refusal by this page as a page in words (a 401 keeps the sign-in redirect, or JSON for scripts)."""
    return render_template("outbox.html", problem=_explain(exc), code=exc.code), exc.code


def _explain(exc: HTTPException) -> str:
    """The sentence a person reads for ``exc``."""
    return explain_refusal(exc, _WHAT_IT_ALLOWS)
