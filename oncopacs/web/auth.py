"""Authentication of every request: browser sessions for the UI, HTTP Basic or bearer tokens for machines.

Runs before every view. Public views (marked with :func:`oncopacs.web.access.public`) pass;
everything else needs a principal. ``/dicom-web`` and ``/api`` answer 401 with a
``WWW-Authenticate`` challenge (Basic and Bearer); UI pages redirect to ``/login``.

Sessions live in the index (:mod:`oncopacs.auth.sessions`), shared by every node: the signed cookie (HttpOnly,
SameSite=Lax) carries only the session's random id (and Flask-WTF's CSRF token), so a sign-out ends the session
everywhere and a copied cookie is refused after it. A new password, a new role or a disabled account ends all of
the user's sessions; the row also keeps the password's stamp at sign-in, checked on every request. A session idle
for longer than ``settings.session_timeout_minutes`` ends (HIPAA automatic logoff), and every session ends
``MAX_SESSION_SECONDS`` after sign-in.
CSRF tokens (Flask-WTF) guard the login form and every form-encoded request a session makes;
requests authenticated by an ``Authorization`` header carry no ambient credentials and need none.

Password checks (the form and Basic) are throttled per source address (:mod:`oncopacs.auth.throttle`): a
throttled address gets 429 with ``Retry-After`` (the login page says so; ``/api`` and ``/dicom-web`` answer
JSON) and every refusal is audited; accounts never lock. Behind a reverse proxy the proxy's address is the
source (there is no trusted-proxy setting).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import quote

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import TooManyRequests, Unauthorized
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired, Length, Optional

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.auth import sessions as web_sessions
from oncopacs.auth.roles import Permission, Principal
from oncopacs.auth.users import SignIn, UserStore
from oncopacs.errors import AuthenticationError
from oncopacs.settings import Settings
from oncopacs.web.access import (
    FAILURE_AUDITED,
    PUBLIC_ATTRIBUTE,
    audit_trail,
    current_principal,
    is_public,
    public,
)
from oncopacs.web.cors import is_allowed_preflight

bp = Blueprint("auth", __name__, template_folder="templates")

MACHINE_PREFIXES = ("/dicom-web", "/api")
CHALLENGE = 'Basic realm="OncoPACS", Bearer realm="OncoPACS"'
SECRET_KEY_FILE = "secret_key"
MAX_SESSION_SECONDS = 12 * 3600  # a session ends this long after sign-in, however busy
#: A session's last activity is written to its row at most this often (a write per request would cost the index a
#: write per Dash callback). The cookie never changes while the session lasts: a new cookie on every response once
#: made the browser's cache (the responses vary by Cookie) fetch every Dash bundle again on every page (3.5 MB).
#: The idle timeout is exact to within this.
SESSION_TOUCH_SECONDS = 30
SESSION_ID_KEY = "sid"  # the key of the session's id in Flask's signed cookie
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Content types a cross-site page can send without a CORS preflight: these need a CSRF token.
_FORM_MIMETYPES = frozenset({"", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
_BASIC_CACHE_SECONDS = 60.0
_BASIC_CACHE_MAX_ENTRIES = 1024
_PATH_SAFE = "/:@!$&'()*+,;=~"  # RFC 3986 path characters left as they are


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[InputRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=1024)])
    totp = StringField("One-time code", validators=[Optional(), Length(max=16)])


class _Challenge(Unauthorized):
    """401 with the Basic and Bearer challenges (one header, RFC 7235 §4.1)."""

    def get_headers(self, environ=None, scope=None):
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", CHALLENGE)]


class _BasicCache:
    """Recently verified Basic credentials (by hash) with the password stamp they were verified against,
    so a client's every request does not pay Argon2's cost."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(username: str, password: str) -> str:
        return hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < time.monotonic():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: str, stamp: str) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._entries) >= _BASIC_CACHE_MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            self._entries[key] = (now + _BASIC_CACHE_SECONDS, stamp)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def users() -> UserStore:
    return current_app.extensions["oncopacs.users"]


def _settings() -> Settings:
    return current_app.extensions["oncopacs.settings"]


def load_or_create_secret_key(path: Path) -> str:
    """The key in ``path``; a new random one written there (mode 0600) on first use."""
    try:
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # atomic; the first of concurrent starters wins
    finally:
        temporary.unlink()
    return path.read_text(encoding="ascii").strip()


def install_authentication(app: Flask) -> None:
    """Make every non-public route require a principal; sessions, cookie flags and CSRF."""
    settings: Settings = app.extensions["oncopacs.settings"]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_or_create_secret_key(settings.data_dir / SECRET_KEY_FILE)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.tls_enabled,  # with TLS the session (and its CSRF token) never goes over HTTP
        PREFERRED_URL_SCHEME="https" if settings.tls_enabled else "http",
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in _authenticate, only where a session is the credential
    )
    CSRFProtect(app)
    app.extensions["oncopacs.basic_cache"] = _BasicCache()
    setattr(app.view_functions["static"], PUBLIC_ATTRIBUTE, True)
    app.before_request(_authenticate)


def record_security_event(
    action: AuditAction, *, actor: str, outcome: Outcome = Outcome.SUCCESS, note: str = ""
) -> None:
    """Audit a sign-in, sign-out or user change by ``actor`` (raises AuditError: fail closed)."""
    detail = f"{request.method} {request.path}" + (f": {note}" if note else "")
    audit_trail().record(AuditEvent(action=action, outcome=outcome, actor=actor[:128], actor_kind=ActorKind.USER,
                                    source=request.remote_addr or "", detail=detail[:2000]))
    if outcome is not Outcome.SUCCESS:
        setattr(g, FAILURE_AUDITED, True)  # oncopacs.web.refusal_audit adds no second record


def _source_address() -> str:
    """Where the request came from, as sign-ins are throttled by it ("unknown" addresses share one throttle)."""
    return request.remote_addr or "unknown"


def _audit_failed_sign_in(attempt: SignIn, via: str) -> None:
    record_security_event(AuditAction.LOGIN_FAILED, actor=attempt.username, outcome=Outcome.SERIOUS_FAILURE,
                          note=f"{via}: {attempt.failure}")


# -- the hook before every request ------------------------------------------------------------


def _authenticate():
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if is_public(view) or is_allowed_preflight():  # a preflight carries no credentials; oncopacs.web.cors answers it
        return None
    principal = _from_authorization_header()
    if principal is None:
        principal = _from_session()
        if principal is not None and request.method not in _SAFE_METHODS and request.mimetype in _FORM_MIMETYPES:
            current_app.extensions["csrf"].protect()  # CSRFError: 400
    if principal is not None:
        g.principal = principal
        return None
    reason = (
        g.pop("session_ended", None) or "authentication required: HTTP Basic, a bearer token, or a signed-in session"
    )
    if request.path.startswith(MACHINE_PREFIXES):
        raise _Challenge(description=reason)
    if _is_browser_navigation():
        query = request.query_string.decode("latin-1")
        # the path as the browser wrote it (re-encoded): a patient ID holding "?", "#" or "%" comes back intact
        path = quote(request.path, safe=_PATH_SAFE)
        return redirect(url_for("auth.login", next=path + (f"?{query}" if query else "")))
    raise Unauthorized(description=reason)


def _is_browser_navigation() -> bool:
    """A person opening a page (a bookmark, a typed address, a link), not a script or a page's own fetch.

    Browsers say so (``Sec-Fetch-Mode: navigate``); otherwise an Accept header that prefers HTML to JSON
    counts (Chromium's navigation Accept lists several types at q=1, so "the best type" is not enough).
    """
    if request.headers.get("Sec-Fetch-Mode") == "navigate":
        return True
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _from_authorization_header() -> Principal | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    try:
        if scheme == "bearer":
            return _check_bearer(credentials.strip())
        if scheme == "basic":
            return _check_basic(credentials.strip())
    except AuthenticationError as exc:
        raise _Challenge(description=str(exc)) from None
    raise _Challenge(description=f"unsupported authorization scheme {scheme!r} (use Basic or Bearer)")


def _check_bearer(token: str) -> Principal:
    try:
        return users().check_token(token)
    except AuthenticationError:
        record_security_event(AuditAction.LOGIN_FAILED, actor="(token)", outcome=Outcome.SERIOUS_FAILURE,
                              note="bearer: unknown or revoked token")
        raise


def _check_basic(credentials: str) -> Principal:
    try:
        username, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    cache: _BasicCache = current_app.extensions["oncopacs.basic_cache"]
    key = cache.key(username, password)
    stamp = cache.get(key)
    if stamp is not None:
        standing = users().standing(username)
        if standing is not None and standing.credential_stamp == stamp:
            return Principal(username, standing.principal.role, "basic")
        cache.drop(key)
    # no second factor over Basic: such users use tokens
    attempt = users().attempt_sign_in(username, password, source=_source_address())
    if attempt.principal is None:
        _audit_failed_sign_in(attempt, "basic")
        if attempt.throttled_until is not None:
            raise TooManyRequests(description=attempt.message, retry_after=attempt.retry_after_seconds)
        raise AuthenticationError(attempt.message)
    standing = users().standing(username)
    if standing is None:
        raise AuthenticationError(attempt.message)
    cache.put(key, standing.credential_stamp)
    return Principal(username, attempt.principal.role, "basic")


def _from_session() -> Principal | None:
    session_id = session.get(SESSION_ID_KEY)
    if not session_id or not isinstance(session_id, str):
        return None
    store = users().sessions
    record = store.find(session_id)
    if record is None or not record.is_open:
        session.clear()
        reason = record.ended_reason if record is not None else "unknown session"
        g.session_ended = f"the session ended ({reason}); sign in again"
        return None
    now = users().clock()
    idle = (now - record.last_seen).total_seconds()
    idle_limit = _settings().session_timeout_minutes * 60
    too_old = (now - record.signed_in).total_seconds() > MAX_SESSION_SECONDS
    if (idle_limit and idle > idle_limit) or too_old:
        session.clear()
        g.session_ended = "the session expired; sign in again"
        if store.end(session_id, web_sessions.EXPIRED if too_old else web_sessions.IDLE):  # once, whichever node
            note = (f"session ended {MAX_SESSION_SECONDS / 3600:g} h after sign-in" if too_old
                    else f"session expired after {idle / 60:.0f} min idle")
            record_security_event(AuditAction.LOGOUT, actor=record.username, note=note)
        return None
    standing = users().standing(record.username)
    if standing is None or standing.credential_stamp != record.credential_stamp:
        session.clear()
        store.end(session_id, web_sessions.DISABLED if standing is None else web_sessions.CREDENTIALS_CHANGED)
        g.session_ended = "the session ended (user disabled or password changed); sign in again"
        return None
    if idle >= SESSION_TOUCH_SECONDS:
        store.touch(session_id)
    return Principal(record.username, standing.principal.role, "session")


def _start_session(principal: Principal) -> None:
    standing = users().standing(principal.name)
    opened = users().sessions.start(principal.name, standing.credential_stamp if standing else "")
    session.clear()
    session[SESSION_ID_KEY] = opened.session_id


# -- views ------------------------------------------------------------------------------------


def _home(principal: Principal | None) -> str:
    """Where a sign-in without ``next`` lands: the page the user's role opens (dashboards, studies, reports)."""
    if principal is None or principal.can(Permission.DASHBOARDS_VIEW):
        return "/dashboards/"
    if principal.can(Permission.ARCHIVE_READ):
        return "/"
    return "/reports"


def _safe_next(target: str | None, principal: Principal | None = None) -> str:
    """Only a path on this site (no scheme, no host, no ``//`` or ``/\\`` trick) may follow sign-in."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target:
        return target
    return _home(principal)


def _login_page(form: LoginForm, error: str = "", status: int = 200, headers: dict[str, str] | None = None):
    page = render_template("login.html", form=form, error=error, next=request.args.get("next", ""))
    return page, status, headers or {}


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    form = LoginForm()
    if request.method != "POST":  # GET, and HEAD (which Flask routes to the GET view)
        return _login_page(form)
    if not form.validate():
        if "csrf_token" in form.errors:
            return _login_page(form, "the sign-in form expired or did not come from this site; please try again", 400)
        return _login_page(form, "enter a user name and a password", 400)
    attempt = users().attempt_sign_in(form.username.data.strip(), form.password.data, form.totp.data or None,
                                      source=_source_address())
    if attempt.principal is None:
        _audit_failed_sign_in(attempt, "form")
        if attempt.throttled_until is not None:
            return _login_page(form, attempt.message, 429, {"Retry-After": str(attempt.retry_after_seconds)})
        return _login_page(form, attempt.message, 401)
    try:
        _start_session(attempt.principal)
    except (OSError, SQLAlchemyError):  # a full disk: a session that cannot be recorded could not be ended either
        record_security_event(AuditAction.LOGIN_FAILED, actor=attempt.username, outcome=Outcome.SERIOUS_FAILURE,
                              note="form: the session could not be recorded (the index is not writable)")
        return _login_page(form, "Your password was accepted, but the server cannot open a new session now (its disk "
                                 "is full or its database is unavailable); try again later. API tokens and sessions "
                                 "already open keep working.", 503)
    record_security_event(AuditAction.LOGIN, actor=attempt.username, note=f"form, role {attempt.principal.role.value}")
    return redirect(_safe_next(request.args.get("next"), attempt.principal), 303)


@bp.post("/logout")
def logout():
    """End the browser session, on every node (a token or Basic client has none to end)."""
    principal = current_principal()
    if principal.via != "session":
        return "", 204
    session_id = session.get(SESSION_ID_KEY)
    if isinstance(session_id, str):
        users().sessions.end(session_id, web_sessions.SIGNED_OUT)
    session.clear()
    record_security_event(AuditAction.LOGOUT, actor=principal.name, note="signed out")
    return redirect(url_for("auth.login"), 303)
