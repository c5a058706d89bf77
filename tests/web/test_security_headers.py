"""Security headers on every kind of response: pages, Dash, the API, DICOMweb, redirects, errors, static files."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from oncopacs.auth.roles import Role
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from oncopacs.web.headers import HSTS_SECONDS

PASSWORD = "correct horse battery"
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


def assert_secured(reply, *, tls: bool = False) -> None:
    for name, value in ALWAYS.items():
        assert reply.headers.get(name) == value, (reply.request.path, name)
    policy = directives(reply.headers["Content-Security-Policy"])
    assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["form-action"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert ("Strict-Transport-Security" in reply.headers) is tls


def test_every_kind_of_response_carries_the_headers(sqlite_web_app: Flask,
                                                    sqlite_headers_for: Callable[[Role | str], dict[str, str]]):
    client = sqlite_web_app.test_client()
    token = sqlite_headers_for(Role.ADMIN)
    replies = {
        "login page": client.get("/login"),
        "login HEAD": client.head("/login"),
        "health": client.get("/health"),
        "401 JSON": client.get("/api/me"),
        "login redirect": client.get("/dashboards/board/", headers={"Accept": "text/html"}),
        "API": client.get("/api/me", headers=token),
        "DICOMweb": client.get("/dicom-web/studies", headers=token),
        "404": client.get("/api/no-such-route", headers=token),
        "405": client.delete("/api/me", headers=token),
        "static": client.get("/static/nothing.css", headers=token),
        "Dash page": client.get("/dashboards/board/", headers=token),
        "Dash layout": client.get("/dashboards/board/_dash-layout", headers=token),
        "Dash bundle": client.get("/dashboards/board/_dash-component-suites/dash/dcc/dash_core_components.js",
                                  headers=token),
    }
    expected = {"login page": 200, "login HEAD": 200, "health": 200, "401 JSON": 401, "login redirect": 302, "API": 200,
                "DICOMweb": 200, "404": 404, "405": 405, "static": 404, "Dash page": 200, "Dash layout": 200,
                "Dash bundle": 200}
    assert {kind: reply.status_code for kind, reply in replies.items()} == expected
    for reply in replies.values():
        assert_secured(reply)
    assert replies["405"].headers["Allow"]  # the error handler keeps the Allow header of a 405


def test_an_unexpected_error_carries_the_headers(sqlite_web_app: Flask,
                                                 sqlite_headers_for: Callable[[Role | str], dict[str, str]]):
    def broken():
        raise RuntimeError("a bug")

    sqlite_web_app.add_url_rule("/api/broken", "broken", broken)
    reply = sqlite_web_app.test_client().get("/api/broken", headers=sqlite_headers_for(Role.ADMIN))
    assert reply.status_code == 500 and "a bug" not in reply.get_data(as_text=True)
    assert_secured(reply)


def test_the_dash_renderer_script_is_allowed_by_its_hash(sqlite_web_app: Flask,
                                                         sqlite_headers_for: Callable[[Role | str], dict[str, str]]):
    reply = sqlite_web_app.test_client().get("/dashboards/board/", headers=sqlite_headers_for(Role.ADMIN))
    page = re.sub(r"<!--.*?-->", "", reply.get_data(as_text=True), flags=re.S)  # Dash's IE-only note is a comment
    inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>(.*?)</script>", page, re.S)
    assert inline, "the Dash page has no inline script to check"
    allowed = directives(reply.headers["Content-Security-Policy"])["script-src"]
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in allowed


def test_a_view_may_set_its_own_policy(sqlite_web_app: Flask):
    def framed():
        return "ok", 200, {"X-Frame-Options": "SAMEORIGIN"}

    from oncopacs.web.access import public

    sqlite_web_app.add_url_rule("/framed-probe", "framed_probe", public(framed))
    reply = sqlite_web_app.test_client().get("/framed-probe")
    assert reply.headers["X-Frame-Options"] == "SAMEORIGIN" and reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
def tls_app(sqlite_settings: Settings) -> Iterator[Flask]:
    # the files are read by the HTTPS listener, not by the app: names are enough here
    settings = sqlite_settings.with_overrides(tls_cert="/etc/oncopacs/server.pem", tls_key="/etc/oncopacs/server.key")
    with open_platform(settings) as platform:
        app = create_app(platform)
        platform.users.add_user("alice", Role.ONCOLOGIST, PASSWORD)
        yield app


def test_with_tls_hsts_is_sent_and_the_session_cookie_is_secure(tls_app: Flask):
    client = tls_app.test_client()
    page = client.get("/login", base_url="https://localhost")
    assert_secured(page, tls=True)
    assert page.headers["Strict-Transport-Security"] == f"max-age={HSTS_SECONDS}"
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    signed_in = client.post("/login", base_url="https://localhost", headers={"Referer": "https://localhost/login"},
                            data={"csrf_token": token, "username": "alice", "password": PASSWORD})
    assert signed_in.status_code == 303
    cookie = signed_in.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_without_tls_the_session_cookie_is_not_secure(sqlite_web_app: Flask):
    client = sqlite_web_app.test_client()
    page = client.get("/login")
    assert "Strict-Transport-Security" not in page.headers
    assert "Secure" not in page.headers.get("Set-Cookie", "")
