"""``/health``: is the index reachable and the storage area writable (no authentication)."""

from __future__ import annotations

import os

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from oncopacs import __version__
from oncopacs.web.access import public

bp = Blueprint("health", __name__)


@bp.get("/health")
@public
def health():
    archive = current_app.extensions["oncopacs.archive"]
    checks = {"index": "ok", "storage": "ok"}
    try:
        with archive.index.reading() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        checks["index"] = "unreachable"
    if not os.access(archive.storage.root, os.W_OK):
        checks["storage"] = "not writable"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "degraded", version=__version__, checks=checks), 200 if healthy else 503
