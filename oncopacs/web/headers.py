"""Security headers on every response: pages, Dash routes, the JSON API, DICOMweb, errors and static files.

One ``after_request`` hook, installed last, sets them where a view has not set its own:

- ``Content-Security-Policy``: everything from this origin only; scripts only from files here plus the
  inline scripts the Dash apps declare (their SHA-256 hashes, so no ``'unsafe-inline'`` or
  ``'unsafe-eval'`` for scripts); inline styles allowed (the page templates and Plotly use them);
  images also as ``data:``/``blob:`` URIs (rendered slices); no plug-ins; forms post only here;
  ``frame-ancestors 'none'`` (no page of OncoPACS may be framed: clickjacking).
- ``X-Frame-Options: DENY`` for browsers that predate ``frame-ancestors`` (the app frames nothing itself).
- ``X-Content-Type-Options: nosniff``: a DICOM or JSON body is never sniffed into HTML or script.
- ``Referrer-Policy: same-origin``: page addresses carry patient IDs and study UIDs and must not leak to other
  sites; same-origin requests keep their Referer, which Flask-WTF's CSRF check needs over HTTPS.
- ``Strict-Transport-Security`` only when TLS is configured (then HTTP is HTTPS only).

A hook rather than flask-talisman: talisman would need its defaults undone (it redirects to HTTPS and marks
the session cookie Secure even without TLS), and the Dash hashes are known only once the apps are mounted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from flask import Flask, Response

HSTS_SECONDS = 365 * 24 * 3600


def content_security_policy(script_hashes: Iterable[str] = (),
                            extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """The policy, with the CSP source expressions (``'sha256-…'``) of the inline scripts allowed, and ``extra``
    sources added to (or directives added beside) the defaults."""
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *sorted(set(script_hashes))],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    for name, sources in (extra or {}).items():
        directives[name] = [*directives.get(name, []), *sources]
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def security_headers(*, tls: bool, script_hashes: Iterable[str] = ()) -> dict[str, str]:
    """The headers every response carries (HSTS only with ``tls``)."""
    headers = {
        "Content-Security-Policy": content_security_policy(script_hashes),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    if tls:
        headers["Strict-Transport-Security"] = f"max-age={HSTS_SECONDS}"
    return headers


def install_security_headers(app: Flask, *, tls: bool, script_hashes: Iterable[str] = ()) -> None:
    """Add :func:`security_headers` to every response of ``app`` (a view's own value wins)."""
    headers = security_headers(tls=tls, script_hashes=script_hashes)
    app.extensions["oncopacs.security_headers"] = headers

    def add_headers(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    app.after_request(add_headers)
