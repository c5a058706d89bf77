"""CORS for ``/dicom-web`` and ``/api``: pages of the origins in ``settings.cors_origins`` (a separately served OHIF
viewer, say) may call them with credentials; nothing else changes.

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from a listed origin is answered
  204 before any credential is asked for (browsers send none with a preflight; :mod:`oncopacs.web.auth` lets it
  through), with the methods, request headers and a max-age (s) the browser may cache it for.
- Every other response to a listed origin (401 and other errors included) names that origin (echoed, never ``*``),
  allows credentials and exposes the headers a DICOMweb client reads. The request is authenticated as ever.
- An unlisted origin gets no ``Access-Control-*`` header (its preflight meets the usual 401); paths outside the
  two prefixes never do. With origins configured, their responses carry ``Vary: Origin`` for caches.

Listing an origin trusts its scripts with a signed-in user's session (same-site pages send the cookie): a JSON
request needs no CSRF token, form-encoded ones still do (:mod:`oncopacs.web.auth`).

Hand-written rather than flask-cors: flask-cors adds its headers after the view, so the preflight would still
meet authentication (which needs to know what is allowed anyway), it answers with Flask's automatic 200 rather
than 204, and its path and origin patterns are regular expressions; here an exact origin match is a few lines.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, current_app, request

from oncopacs.errors import ConfigError

PREFIXES = ("/dicom-web", "/api")
ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"  # PATCH: /api/users
ALLOW_HEADERS = "Authorization, Accept, Content-Type, Range, If-None-Match, If-Modified-Since"
EXPOSE_HEADERS = "Content-Type, Content-Length, Content-Location, Location, WWW-Authenticate, Warning, ETag"
MAX_AGE_SECONDS = 600
_EXTENSION = "oncopacs.cors_origins"


def install_cors(app: Flask, origins: Iterable[str]) -> None:
    """Allow ``origins`` (normalised by :mod:`oncopacs.settings`) on ``app``; nothing is installed for none.

    Call after ``install_authentication`` (its hook lets a listed preflight through to the one here).
    """
    allowed = frozenset(origins)
    if "*" in allowed:
        raise ConfigError("setting cors_origins (ONCOPACS_CORS_ORIGINS): '*' is refused: name each origin")
    app.extensions[_EXTENSION] = allowed
    if allowed:
        app.before_request(_answer_preflight)
        app.after_request(_add_headers)


def is_allowed_preflight() -> bool:
    """Whether the current request is a CORS preflight from a listed origin to ``/dicom-web`` or ``/api``."""
    return (request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
            and _allowed_origin() is not None)


def _allowed_origin() -> str | None:
    """The request's ``Origin`` when it is listed and the path is under a prefix, else None."""
    origin = request.headers.get("Origin")
    if origin is None or not _under_prefixes(request.path):
        return None
    return origin if origin in current_app.extensions.get(_EXTENSION, ()) else None


def _under_prefixes(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)


def _answer_preflight() -> Response | None:
    if not is_allowed_preflight():
        return None
    response = current_app.response_class(status=204)
    response.headers.update({
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
    })
    return response  # _add_headers names the origin


def _add_headers(response: Response) -> Response:
    if _under_prefixes(request.path):
        response.vary.add("Origin")
    origin = _allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response
