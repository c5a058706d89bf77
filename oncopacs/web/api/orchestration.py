"""``/api/rules``: the rules of the rule engine; administrators add, change and delete their own (audited).

Built-in rules and those of the configuration file are listed, never changed here: a configured rule is changed in
the configuration file. A rule sent here is a JSON object with the keys of a ``[[rules]]`` TOML table.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, jsonify, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import ConfigError, NotFoundError
from oncopacs.orchestration.rulebook import RuleBook, RuleConflictError
from oncopacs.web.access import current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.auth import record_security_event


def _book() -> RuleBook:
    book: RuleBook = current_app.extensions["oncopacs.platform"].rules
    return book


def _rule_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="expected a JSON object: a rule's name, on, match and actions")
    return body


def _rule(name: str) -> dict[str, Any]:
    found = next((rule for rule in _book().documents() if rule["name"] == name), None)
    if found is None:
        abort(404, description=f"no rule named {name!r}")
    return found


@bp.get("/rules")
@requires(Permission.ARCHIVE_READ)
def list_rules():
    """Every rule in order (built-in, configured, added here), with where it comes from, the stable time in seconds
    and how many series and studies wait to become stable."""
    book = _book()
    return jsonify(stable_seconds=book.engine.stable_seconds, pending=book.engine.pending(), rules=book.documents())


@bp.get("/rules/<name>")
@requires(Permission.ARCHIVE_READ)
def get_rule(name: str):
    """One rule by name."""
    return jsonify(_rule(name))


@bp.post("/rules")
@requires(Permission.PEERS_MANAGE)
def add_rule():
    """Add a rule (201); 400 naming what is wrong with it, 409 when its name is taken."""
    try:
        rule = _book().add(_rule_body(), current_principal().name)
    except ConfigError as exc:
        abort(400, description=str(exc))
    except RuleConflictError as exc:
        abort(409, description=str(exc))
    record_security_event(AuditAction.CONFIG_CHANGE, actor=current_principal().name, note=f"added rule {rule.name}")
    return jsonify(_rule(rule.name)), 201


@bp.put("/rules/<name>")
@requires(Permission.PEERS_MANAGE)
def replace_rule(name: str):
    """Replace a rule added here; 404 unknown, 409 built-in or configured, 400 invalid."""
    try:
        rule = _book().replace(name, _rule_body(), current_principal().name)
    except ConfigError as exc:
        abort(400, description=str(exc))
    except RuleConflictError as exc:
        abort(409, description=str(exc))
    except NotFoundError as exc:
        abort(404, description=str(exc))
    record_security_event(AuditAction.CONFIG_CHANGE, actor=current_principal().name, note=f"changed rule {rule.name}")
    return jsonify(_rule(rule.name))


@bp.delete("/rules/<name>")
@requires(Permission.PEERS_MANAGE)
def delete_rule(name: str):
    """Delete a rule added here (204); 404 unknown, 409 built-in or configured."""
    try:
        _book().remove(name)
    except RuleConflictError as exc:
        abort(409, description=str(exc))
    except NotFoundError as exc:
        abort(404, description=str(exc))
    record_security_event(AuditAction.CONFIG_CHANGE, actor=current_principal().name, note=f"deleted rule {name}")
    return "", 204
