"""The Flask app factory: the composition root of the web side."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from oncopacs import __version__
from oncopacs.archive.ingest import Archive
from oncopacs.audit.syslog import open_syslog_sender
from oncopacs.audit.trail import AuditTrail
from oncopacs.auth.users import LockoutPolicy, UserStore
from oncopacs.errors import AuditError
from oncopacs.ingest_rules import install_rt_analysis
from oncopacs.jobs.kinds import open_job_system
from oncopacs.jobs.registration_kind import install_registration
from oncopacs.services import open_archive
from oncopacs.settings import Settings
from oncopacs.web import api, auth, browser, dicomweb, health
from oncopacs.web import viewer as viewer_routes
from oncopacs.web.auth import install_authentication
from oncopacs.web.dashboards import mount_dashboards
from reporting.jobs import open_reports


def create_app(settings: Settings | None = None, archive: Archive | None = None) -> Flask:
    """Build the WSGI app over ``archive`` (opened from ``settings`` when not given)."""
    settings = settings or Settings.load()
    archive = archive or open_archive(settings)
    app = Flask("oncopacs")
    app.config["SECRET_KEY"] = settings.secret_key or None
    app.extensions["oncopacs.settings"] = settings
    app.extensions["oncopacs.archive"] = archive
    app.extensions["oncopacs.audit"] = AuditTrail(archive.index, open_syslog_sender(settings.audit_syslog, settings.ae_title))
    app.extensions["oncopacs.jobs"] = open_job_system(archive)
    app.extensions["oncopacs.reports"] = open_reports(settings, archive, app.extensions["oncopacs.jobs"])
    install_rt_analysis(archive, app.extensions["oncopacs.jobs"])
    install_registration(archive, app.extensions["oncopacs.jobs"])
    app.extensions["oncopacs.users"] = UserStore(archive.index, LockoutPolicy(settings.login_max_failures, settings.login_lockout_minutes))
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
        return jsonify(error="Service Unavailable", detail="the audit trail is unavailable, so the request was refused", status=503), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return jsonify(error="Internal Server Error", detail="the server could not complete the request", status=500), 500


__all__ = ["create_app", "__version__"]
