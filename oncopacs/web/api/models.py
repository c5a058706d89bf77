"""``/api/models``: the model registry (analysis plug-ins and inference endpoints), and an administrator's
enabling or disabling of one, audited as CONFIG_CHANGE."""

from __future__ import annotations

from flask import current_app, jsonify

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.orchestration.registry import ModelRegistry
from oncopacs.web.access import current_principal, requires
from oncopacs.web.api import bp
from oncopacs.web.auth import record_security_event


def _registry() -> ModelRegistry:
    """The platform's model registry (the installed plug-ins and the configured inference endpoints)."""
    registry: ModelRegistry = current_app.extensions["oncopacs.platform"].models
    return registry


@bp.get("/models")
@requires(Permission.ARCHIVE_READ)
def list_models():
    """The models by name: version, what each accepts and produces, why one cannot be loaded, whether it is
    enabled, how many objects it has stored, and who last enabled or disabled it."""
    return jsonify(models=[status.to_dict() for status in _registry().list()])


@bp.post("/models/<name>/enable")
@requires(Permission.PEERS_MANAGE)
def enable_model(name: str):
    """Let the model run again (administrators); its new status. 404 for a model that is not installed."""
    return _set_enabled(name, True)


@bp.post("/models/<name>/disable")
@requires(Permission.PEERS_MANAGE)
def disable_model(name: str):
    """Stop the model from running: its rule jobs finish as skipped (administrators); its new status."""
    return _set_enabled(name, False)


def _set_enabled(name: str, enabled: bool):
    actor = current_principal().name
    status = _registry().set_enabled(name, enabled, actor)  # NotFoundError: 404 with the installed names
    record_security_event(AuditAction.CONFIG_CHANGE, actor=actor,
                          note=f"model {status.name} {'enabled' if enabled else 'disabled'}")
    return jsonify(status.to_dict())
