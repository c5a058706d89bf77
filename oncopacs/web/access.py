"""What every view uses to ask who is calling, to require a permission, and to write the audit record.

The authentication itself (sessions, Basic, bearer tokens) runs before every request in
:mod:`oncopacs.web.auth` and leaves the caller in ``g.principal``; views declare what they need
with :func:`requires` and record patient-data access with :func:`audit_access`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import TypeVar

from flask import abort, current_app, g, request

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.auth.roles import Permission, Principal

View = TypeVar("View", bound=Callable)

PUBLIC_ATTRIBUTE = "_oncopacs_public"
FAILURE_AUDITED = "oncopacs_failure_audited"  # set on ``g`` once a request's failure or refusal is on record


def public(view: View) -> View:
    """Mark ``view`` as reachable without authentication (login page, /health, static assets)."""
    setattr(view, PUBLIC_ATTRIBUTE, True)
    return view


def is_public(view: Callable | None) -> bool:
    return bool(view is not None and getattr(view, PUBLIC_ATTRIBUTE, False))


def current_principal() -> Principal:
    """The authenticated caller of this request (set by the authentication hook)."""
    principal = g.get("principal")
    if principal is None:
        abort(401)
    return principal


def requires(permission: Permission) -> Callable[[View], View]:
    """Decorate a view so that callers whose role lacks ``permission`` get 403."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(*args, **kwargs):
            if not current_principal().can(permission):
                abort(403, description=f"your role may not {permission.value}")
            return view(*args, **kwargs)

        # read by the route-matrix tests and the OpenAPI document; typeshed's wraps() type has no attributes
        guarded.required_permission = permission  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def audit_trail() -> AuditTrail:
    return current_app.extensions["oncopacs.audit"]


def audit_access(
    action: AuditAction,
    *,
    patient_ids: Iterable[str] = (),
    study_uids: Iterable[str] = (),
    outcome: Outcome = Outcome.SUCCESS,
    actor: str | None = None,
    note: str = "",
) -> None:
    """Record that the current caller did ``action`` on these patients/studies (raises AuditError: fail closed).

    ``note`` (UIDs and counts, never paths or patient data) follows the request line in the record's detail.
    """
    principal = g.get("principal")
    name = actor or (principal.name if principal is not None else "anonymous")
    query = request.query_string.decode("latin-1")
    detail = f"{request.method} {request.path}" + (f"?{query}" if query else "")
    if note:
        note = f"; {note[:1000]}"
        detail = detail[: 2000 - len(note)] + note
    audit_trail().record(
        AuditEvent(
            action=action,
            outcome=outcome,
            actor=name,
            actor_kind=ActorKind.USER,
            source=request.remote_addr or "",
            patient_ids=tuple(dict.fromkeys(p for p in patient_ids if p)),
            study_uids=tuple(dict.fromkeys(s for s in study_uids if s)),
            detail=detail[:2000],
        )
    )
    if outcome is not Outcome.SUCCESS:
        setattr(g, FAILURE_AUDITED, True)  # oncopacs.web.refusal_audit adds no second record
