"""The Flask app factory: the composition root of the web side."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from oncopacs import __version__
from oncopacs.errors import AuditError
from oncopacs.platform import Platform, open_platform
from oncopacs.web import api, auth, browser, dicomweb, health
from oncopacs.web import viewer as viewer_routes
from oncopacs.web.auth import install_authentication
from oncopacs.web.dashboards import mount_dashboards


def create_app(platform: Platform | None = None) -> Flask:
    """Build the WSGI app over ``platform`` (opened from the configured settings when not given)."""
    platform = platform or open_platform()
    settings = platform.settings
    app = Flask("oncopacs")
    app.config["SECRET_KEY"] = settings.secret_key or None
    app.extensions["oncopacs.platform"] = platform
    app.extensions["oncopacs.settings"] = settings
    app.extensions["oncopacs.archive"] = platform.archive
    app.extensions["oncopacs.audit"] = platform.audit
    app.extensions["oncopacs.jobs"] = platform.jobs
    app.extensions["oncopacs.reports"] = platform.reports
    app.extensions["oncopacs.users"] = platform.users
    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(browser.bp)
    app.register_blueprint(viewer_routes.bp)
    _register_error_handlers(app)
    install_authentication(app)
    mount_dashboards(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        response = jsonify(error=exc.name, detail=exc.description, status=exc.code)
        for name, value in (exc.get_headers() if exc.response is None else []):
            if name.lower() == "www-authenticate":
                response.headers[name] = value
        return response, exc.code

    @app.errorhandler(AuditError)
    def _audit_unavailable(exc: AuditError):
        app.logger.error("audit trail unavailable: %s", exc)
        detail = "the audit trail is unavailable, so the request was refused"
        return jsonify(error="Service Unavailable", detail=detail, status=503), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        detail = "the server could not complete the request"
        return jsonify(error="Internal Server Error", detail=detail, status=500), 500


__all__ = ["__version__", "create_app"]
