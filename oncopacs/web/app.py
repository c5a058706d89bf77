"""The Flask app factory: the composition root of the web side."""

from __future__ import annotations

from flask import Flask, jsonify
from flask_compress import Compress
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.middleware.proxy_fix import ProxyFix

from oncopacs import __version__
from oncopacs.archive.decoding import value_free_traceback
from oncopacs.errors import (
    EXPECTED_ERRORS,
    AuditError,
    AuthenticationError,
    ConfigError,
    FusionError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    RemoteNodeError,
    RTError,
    StorageError,
)
from oncopacs.platform import Platform, open_platform
from oncopacs.web import api, auth, browser, dicomweb, health, jobs_page, ohif_viewer, outbox_page, report_list, theme
from oncopacs.web import viewer as viewer_routes
from oncopacs.web.auth import install_authentication
from oncopacs.web.cors import install_cors
from oncopacs.web.dashboards import mount_dashboards
from oncopacs.web.dicomweb.qido import DICOM_JSON
from oncopacs.web.headers import install_security_headers
from oncopacs.web.refusal_audit import install_refusal_audit


def create_app(platform: Platform | None = None) -> Flask:
    """Build the WSGI app over ``platform`` (opened from the configured settings when not given)."""
    platform = platform or open_platform()
    settings = platform.settings
    app = Flask("oncopacs", static_folder="web/static")  # the pages' stylesheet (public, as /static/...)
    app.config["SECRET_KEY"] = settings.secret_key or None
    app.extensions["oncopacs.platform"] = platform
    app.extensions["oncopacs.settings"] = settings
    app.extensions["oncopacs.archive"] = platform.archive
    app.extensions["oncopacs.audit"] = platform.audit
    app.extensions["oncopacs.jobs"] = platform.jobs
    app.extensions["oncopacs.reports"] = platform.reports
    app.extensions["oncopacs.users"] = platform.users
    _install_compression(app)  # first, so it runs last, over the headers every other hook has set
    app.register_blueprint(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(browser.bp)
    app.register_blueprint(report_list.bp)
    app.register_blueprint(outbox_page.bp)
    app.register_blueprint(jobs_page.bp)
    app.register_blueprint(viewer_routes.bp)
    app.register_blueprint(ohif_viewer.bp)
    app.context_processor(theme.template_context)
    _register_error_handlers(app)
    install_authentication(app)
    install_refusal_audit(app)  # every 401, 403 and 404 on patient data, whichever hook or view refused
    install_cors(app, settings.cors_origins)  # after authentication, which lets a listed origin's preflight through
    mount_dashboards(app)
    install_security_headers(app, tls=settings.tls_enabled,
                             script_hashes=app.extensions["oncopacs.dashboard_script_hashes"])
    if settings.proxy_hops:  # behind HAProxy: the client's address from X-Forwarded-For (audit, sign-in throttle)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    return app


def _install_compression(app: Flask) -> None:
    """gzip for DICOM JSON (QIDO-RS, WADO-RS metadata) when the client accepts it: a CT series' metadata shrinks
    about 40-fold, the largest wait before a viewer's first image. Nothing else: frames and files are sent as
    stored, and pages with tokens are never compressed next to what a request reflects (BREACH)."""
    app.config.update(COMPRESS_MIMETYPES=[DICOM_JSON], COMPRESS_ALGORITHM=["gzip"], COMPRESS_LEVEL=6,
                      COMPRESS_MIN_SIZE=1024, COMPRESS_STREAMS=False)
    Compress(app)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        response = jsonify(error=exc.name, detail=exc.description, status=exc.code)
        for name, value in (exc.get_headers() if exc.response is None else []):
            if name.lower() in {"www-authenticate", "retry-after", "allow"}:
                response.headers[name] = value
        return response, exc.code

    def _expected(exc: Exception):
        """An error OncoPACS raises on purpose: the caller's gets its message, the server's a plain sentence."""
        code = expected_error_status(exc)
        if code < 500:
            app.logger.info("request refused (%d): %s", code, type(exc).__name__)
            return jsonify(error=HTTP_STATUS_CODES[code], detail=str(exc), status=code), code
        app.logger.error("request failed (%d): %s: %s", code, type(exc).__name__, exc)  # paths, never values
        detail = f"the server could not complete the request: {SERVER_SIDE.get(type(exc), 'see the server log')}"
        return jsonify(error=HTTP_STATUS_CODES[code], detail=detail, status=code), code

    for error_class in EXPECTED_ERRORS:
        app.register_error_handler(error_class, _expected)

    @app.errorhandler(AuditError)
    def _audit_unavailable(exc: AuditError):
        app.logger.error("audit trail unavailable: %s", exc)
        detail = f"the audit trail is unavailable, so the request was refused ({exc})"  # our own sentence, no paths
        return jsonify(error="Service Unavailable", detail=detail, status=503), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if app.extensions["oncopacs.settings"].log_phi:
            app.logger.exception("unhandled error")
        else:  # an exception's text may quote an element's value: frames only
            app.logger.error("unhandled error %s\n%s", type(exc).__name__, value_free_traceback(exc))
        detail = "the server could not complete the request"
        return jsonify(error="Internal Server Error", detail=detail, status=500), 500


def expected_error_status(exc: Exception) -> int:
    """The HTTP status of an error in :data:`~oncopacs.errors.EXPECTED_ERRORS` (most specific class first)."""
    for error_class, code in _STATUS_OF:
        if isinstance(exc, error_class):
            return code
    return 409  # the request is valid but conflicts with what the archive holds (e.g. approving a final report)


#: What a client is told of a server-side failure (the message, which may name paths, stays in the log).
SERVER_SIDE: dict[type[Exception], str] = {
    StorageError: "the storage area is unavailable",
    IntegrityError: "a stored file failed its integrity check",
    RemoteNodeError: "a remote node did not answer",
    ConfigError: "a setting is wrong",
}

_STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (AuditError, 503),
    (StorageError, 503),
    (RemoteNodeError, 502),
    (IntegrityError, 503),  # a stored file no longer matches its SHA-256: never served, reported
    (RTError, 422),  # DICOM input (DicomInputError is an RTError), geometry, metrics: well-formed but unusable
    (FusionError, 422),
    (ConfigError, 500),  # the server's configuration, not the request
    (ValueError, 400),  # a query or slice option the caller got wrong (QueryError, SliceError)
)

__all__ = ["__version__", "create_app", "expected_error_status"]
