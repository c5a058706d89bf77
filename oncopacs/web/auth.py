"""Authentication of every request: browser sessions for the UI, HTTP Basic or bearer tokens for machines.

Runs before every view. Public views (marked with :func:`oncopacs.web.access.public`) pass;
everything else needs a principal. ``/dicom-web`` and ``/api`` answer 401 with a
``WWW-Authenticate`` challenge; UI pages redirect to ``/login``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time

from flask import Flask, abort, current_app, g, redirect, request, session, url_for

from oncopacs.auth.roles import Principal, Role
from oncopacs.auth.users import UserStore
from oncopacs.errors import AuthenticationError
from oncopacs.web.access import PUBLIC_ATTRIBUTE, is_public

MACHINE_PREFIXES = ("/dicom-web", "/api")
_BASIC_CACHE_SECONDS = 60.0


class _BasicCache:
    """Recently verified Basic credentials, so a client's every request does not pay Argon2's cost."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(username: str, password: str) -> str:
        return hashlib.sha256(f"{username}\0{password}".encode("utf-8")).hexdigest()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < time.monotonic():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + _BASIC_CACHE_SECONDS, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def users() -> UserStore:
    return current_app.extensions["oncopacs.users"]


def install_authentication(app: Flask) -> None:
    """Make every non-public route require a principal."""
    app.extensions["oncopacs.basic_cache"] = _BasicCache()
    setattr(app.view_functions["static"], PUBLIC_ATTRIBUTE, True)
    app.before_request(_authenticate)


def _authenticate():
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if is_public(view):
        return None
    principal = _from_authorization_header() or _from_session()
    if principal is not None:
        g.principal = principal
        return None
    if request.path.startswith(MACHINE_PREFIXES) or request.accept_mimetypes.best != "text/html":
        abort(401, description="authentication required: HTTP Basic, a bearer token, or a signed-in session")
    return redirect(url_for("auth.login", next=request.full_path))


def _from_authorization_header() -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if not header:
        return None
    try:
        if scheme == "bearer":
            return users().check_token(credentials.strip())
        if scheme == "basic":
            return _check_basic(credentials.strip())
    except AuthenticationError as exc:
        abort(401, description=str(exc))
    abort(401, description=f"unsupported authorization scheme {scheme!r} (use Basic or Bearer)")


def _check_basic(credentials: str) -> Principal:
    try:
        username, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    cache: _BasicCache = current_app.extensions["oncopacs.basic_cache"]
    key = cache.key(username, password)
    cached = cache.get(key)
    if cached is not None:
        return cached
    principal = users().check_password(username, password)
    principal = Principal(principal.name, principal.role, "basic")
    cache.put(key, principal)
    return principal


def _from_session() -> Principal | None:
    username, role = session.get("user"), session.get("role")
    if not username or not role:
        return None
    return Principal(username, Role(role), "session")
