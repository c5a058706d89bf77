"""The Flask app factory: the composition root of the web side."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from oncopacs import __version__
from oncopacs.archive.ingest import Archive
from oncopacs.services import open_archive
from oncopacs.settings import Settings
from oncopacs.web import health


def create_app(settings: Settings | None = None, archive: Archive | None = None) -> Flask:
    """Build the WSGI app over ``archive`` (opened from ``settings`` when not given)."""
    settings = settings or Settings.load()
    archive = archive or open_archive(settings)
    app = Flask("oncopacs")
    app.config["SECRET_KEY"] = settings.secret_key or None
    app.extensions["oncopacs.settings"] = settings
    app.extensions["oncopacs.archive"] = archive
    app.register_blueprint(health.bp)
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(error=exc.name, detail=exc.description, status=exc.code), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return jsonify(error="Internal Server Error", detail="the server could not complete the request", status=500), 500


__all__ = ["create_app", "__version__"]
