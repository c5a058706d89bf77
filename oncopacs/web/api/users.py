"""/api routes for users and their tokens (administrators only), and ``/api/me`` (anyone signed in).

Every change is audited as USER_CHANGE with the administrator as actor; a token's text is in the
response that creates it and nowhere else.
"""

from __future__ import annotations

from typing import Literal, overload

from flask import abort, jsonify, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import PERMISSIONS, Permission, parse_role
from oncopacs.auth.users import UserInfo
from oncopacs.errors import NotFoundError
from oncopacs.web.access import current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.api.listing import ROW_ID
from oncopacs.web.auth import record_security_event, users


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="expected a JSON object body")
    return body


@overload
def _text(body: dict, name: str, *, required: Literal[True] = ...) -> str: ...
@overload
def _text(body: dict, name: str, *, required: bool) -> str | None: ...
def _text(body: dict, name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        abort(400, description=f"{name!r} must be a non-empty string")
    return value


def _changed(note: str) -> None:
    record_security_event(AuditAction.USER_CHANGE, actor=current_principal().name, note=note)


def _existing(username: str) -> UserInfo:
    try:
        return users().get(username)
    except NotFoundError as exc:
        abort(404, description=str(exc))


@bp.get("/me")
def me():
    """Who is calling: name, role, how they authenticated and what their role permits."""
    principal = current_principal()
    permissions = sorted(p.value for p in PERMISSIONS[principal.role])
    return jsonify(username=principal.name, role=principal.role.value, via=principal.via, permissions=permissions)


@bp.get("/users")
@requires(Permission.USERS_MANAGE)
def list_users():
    return jsonify(users=[user.to_dict() for user in users().list_users()])


@bp.post("/users")
@requires(Permission.USERS_MANAGE)
def add_user():
    body = _body()
    username, role, password = _text(body, "username"), _text(body, "role"), _text(body, "password")
    if users().exists(username):
        abort(409, description=f"user {username!r} already exists")
    try:
        user = users().add_user(username, role, password)
    except ValueError as exc:
        abort(400, description=str(exc))
    _changed(f"added user {user.username!r} with role {user.role.value}")
    return jsonify(user.to_dict()), 201


@bp.patch("/users/<username>")
@requires(Permission.USERS_MANAGE)
def change_user(username: str):
    """Change ``role`` and/or ``disabled``; ``unlock: true`` ends a lock-out."""
    body = _body()
    _existing(username)
    unknown = sorted(set(body) - {"role", "disabled", "unlock"})
    if unknown or not body:
        abort(400, description=f"expected some of 'role', 'disabled', 'unlock' (got {', '.join(unknown) or 'nothing'})")
    if "disabled" in body and not isinstance(body["disabled"], bool):
        abort(400, description="'disabled' must be true or false")
    try:
        role = parse_role(_text(body, "role")) if "role" in body else None
    except ValueError as exc:
        abort(400, description=str(exc))
    store, changes, refusal = users(), [], ""
    try:
        if role is not None:
            changes.append(f"role {store.set_role(username, role).role.value}")
        if "disabled" in body:
            changes.append("disabled" if store.set_disabled(username, body["disabled"]).disabled else "enabled")
        if body.get("unlock") is True:
            store.unlock(username)
            changes.append("unlocked")
    except ValueError as exc:  # the last enabled administrator stays one
        refusal = str(exc)
    if changes:
        _changed(f"user {username!r}: {', '.join(changes)}")
    if refusal:
        abort(409, description=refusal)
    return jsonify(store.get(username).to_dict())


@bp.get("/users/<username>/tokens")
@requires(Permission.USERS_MANAGE)
def list_tokens(username: str):
    _existing(username)
    return jsonify(tokens=[token.to_dict() for token in users().list_tokens(username)])


@bp.post("/users/<username>/tokens")
@requires(Permission.USERS_MANAGE)
def create_token(username: str):
    body = request.get_json(silent=True) or {}
    label = body.get("label", "") if isinstance(body, dict) else ""
    if not isinstance(label, str) or len(label) > 64:
        abort(400, description="'label' must be a string of at most 64 characters")
    _existing(username)
    issued = users().issue_token(username, label)
    _changed(f"token {issued.id} created for {username!r}" + (f" ({label})" if label else ""))
    return jsonify(id=issued.id, username=issued.username, label=issued.label, token=issued.token), 201


@bp.delete(f"/users/<username>/tokens/<{ROW_ID}:token_id>")
@requires(Permission.USERS_MANAGE)
def revoke_token(username: str, token_id: int):
    try:
        users().revoke_token(token_id, username)
    except NotFoundError as exc:
        abort(404, description=str(exc))
    _changed(f"token {token_id} of {username!r} revoked")
    return "", 204
