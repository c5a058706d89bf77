"""``/api/rules`` and ``/api/models``: the hospital's rules as configured, and the installed analysis plug-ins."""

from __future__ import annotations

from flask import current_app, jsonify

from oncopacs.auth.roles import Permission
from oncopacs.orchestration.plugins import discover_plugins
from oncopacs.web.access import requires
from oncopacs.web.api import bp


@bp.get("/rules")
@requires(Permission.ARCHIVE_READ)
def list_rules():
    """The configured rules in order (name, on, match, actions, enabled) and the stable time in seconds."""
    engine = current_app.extensions["oncopacs.platform"].rules
    return jsonify(stable_seconds=engine.stable_seconds, pending=engine.pending(),
                   rules=[rule.to_dict() for rule in engine.rules])


@bp.get("/models")
@requires(Permission.ARCHIVE_READ)
def list_models():
    """The analysis and AI plug-ins installed under the entry-point group ``oncopacs.analyses``: name, version,
    what each accepts and produces, and why one that cannot be loaded cannot."""
    return jsonify(models=[entry.to_dict() for entry in sorted(discover_plugins().values(), key=lambda e: e.name)])
