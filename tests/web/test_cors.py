"""CORS on /dicom-web and /api (oncopacs.web.cors): listed origins only, preflights without credentials,
authenticated requests as ever, never ``*``; and the cors_origins setting's validation."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from oncopacs.auth.roles import Role
from oncopacs.errors import ConfigError
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app

VIEWER = "http://127.0.0.1:8111"
OTHER = "http://127.0.0.1:8112"
PASSWORD = "correct horse battery"
PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization, accept"}


def _app(settings: Settings) -> Iterator[Flask]:
    app = create_app(open_platform(settings))
    app.config["TESTING"] = True
    app.extensions["oncopacs.users"].hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    app.extensions["oncopacs.users"].add_user("root", Role.ADMIN, PASSWORD)
    yield app
    app.extensions["oncopacs.archive"].close()


@pytest.fixture
def app(sqlite_settings: Settings) -> Iterator[Flask]:
    yield from _app(sqlite_settings.with_overrides(secret_key="test-secret", cors_origins=(VIEWER,)))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def bearer(app: Flask) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.extensions['oncopacs.users'].create_token('root')}"}


def cors_headers(reply) -> dict[str, str]:
    return {name: value for name, value in reply.headers.items() if name.lower().startswith("access-control-")}


@pytest.mark.parametrize("path", ["/dicom-web/studies", "/api/patients", "/api/users/bob", "/dicom-web/no/such/route"])
def test_preflight_from_a_listed_origin_is_answered_without_credentials(client: FlaskClient, path: str):
    reply = client.options(path, headers={"Origin": VIEWER, **PREFLIGHT})
    assert reply.status_code == 204 and reply.get_data() == b""
    assert reply.headers["Access-Control-Allow-Origin"] == VIEWER
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"
    methods = {m.strip() for m in reply.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "accept", "content-type"} <= allowed
    assert int(reply.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in reply.headers.get_all("Vary") or "Origin" in reply.headers["Vary"]
    assert "WWW-Authenticate" not in reply.headers


def test_preflight_from_an_unlisted_origin_gets_no_allow_headers(client: FlaskClient):
    reply = client.options("/dicom-web/studies", headers={"Origin": OTHER, **PREFLIGHT})
    assert reply.status_code == 401  # the usual challenge: nothing lets it through
    assert cors_headers(reply) == {}


def test_the_get_after_a_preflight_still_needs_credentials(client: FlaskClient, bearer: dict[str, str]):
    refused = client.get("/dicom-web/studies", headers={"Origin": VIEWER, "Accept": "application/dicom+json"})
    assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
    assert refused.headers["Access-Control-Allow-Origin"] == VIEWER  # the page can read why
    assert refused.headers["Access-Control-Allow-Credentials"] == "true"
    exposed = {h.strip() for h in refused.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"WWW-Authenticate", "Content-Location", "Location", "Warning", "ETag", "Content-Type"} <= exposed
    served = client.get("/dicom-web/studies", headers={"Origin": VIEWER, "Accept": "application/dicom+json", **bearer})
    assert served.status_code in {200, 204}
    assert served.headers["Access-Control-Allow-Origin"] == VIEWER


def test_an_options_request_that_is_no_preflight_is_authenticated(client: FlaskClient):
    """Without Access-Control-Request-Method it is an ordinary OPTIONS: credentials needed."""
    assert client.options("/api/patients", headers={"Origin": VIEWER}).status_code == 401


def test_api_errors_name_the_listed_origin(client: FlaskClient, bearer: dict[str, str]):
    reply = client.get("/api/jobs/999999", headers={"Origin": VIEWER, **bearer})
    assert reply.status_code == 404 and reply.headers["Access-Control-Allow-Origin"] == VIEWER


def test_unlisted_origins_and_other_pages_get_no_cors_headers(client: FlaskClient, bearer: dict[str, str]):
    assert cors_headers(client.get("/dicom-web/studies", headers={"Origin": OTHER, **bearer})) == {}
    assert cors_headers(client.get("/api/patients", headers={"Origin": VIEWER.upper(), **bearer})) == {}
    assert cors_headers(client.get("/dicom-web/studies", headers=bearer)) == {}  # no Origin: same-origin or a script
    for path in ("/login", "/health", "/", "/apix", "/dicom-webx/studies"):
        assert cors_headers(client.get(path, headers={"Origin": VIEWER, **bearer})) == {}, path
        reply = client.options(path, headers={"Origin": VIEWER, **PREFLIGHT})
        assert reply.status_code != 204 and cors_headers(reply) == {}, path


def test_the_allowed_origin_is_never_a_wildcard(client: FlaskClient, bearer: dict[str, str]):
    for method, path in (("OPTIONS", "/api/patients"), ("GET", "/api/patients"), ("GET", "/dicom-web/studies")):
        headers = {"Origin": VIEWER, **(PREFLIGHT if method == "OPTIONS" else bearer)}
        assert client.open(path, method=method, headers=headers).headers["Access-Control-Allow-Origin"] == VIEWER
    assert cors_headers(client.get("/api/patients", headers={"Origin": "*", **bearer})) == {}
    assert cors_headers(client.get("/api/patients", headers={"Origin": "null", **bearer})) == {}


def test_session_form_posts_from_a_listed_origin_still_need_a_csrf_token(client: FlaskClient):
    page = client.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found is not None
    token = found.group(1)
    signed_in = client.post("/login", data={"csrf_token": token, "username": "root", "password": PASSWORD})
    assert signed_in.status_code == 303
    form = {"username": "bob", "role": "referrer", "password": PASSWORD}
    reply = client.post("/api/users", data=form, headers={"Origin": VIEWER})
    assert reply.status_code == 400 and reply.headers["Access-Control-Allow-Origin"] == VIEWER


def test_no_origins_by_default_means_no_cors_headers(sqlite_settings: Settings):
    assert Settings.load({}).cors_origins == ()
    for app in _app(sqlite_settings.with_overrides(secret_key="test-secret")):
        client = app.test_client()
        preflight = client.options("/dicom-web/studies", headers={"Origin": VIEWER, **PREFLIGHT})
        assert preflight.status_code == 401 and cors_headers(preflight) == {}
        token = app.extensions["oncopacs.users"].create_token("root")
        reply = client.get("/api/patients", headers={"Origin": VIEWER, "Authorization": f"Bearer {token}"})
        assert reply.status_code == 200 and cors_headers(reply) == {}
        assert "Origin" not in reply.headers.get("Vary", "")


def test_origins_are_read_normalised_from_the_environment_and_toml(tmp_path):
    env = {"ONCOPACS_CORS_ORIGINS": " HTTP://127.0.0.1:8111/ , https://Viewer.Example.org:443,http://[::1]:3000"}
    assert Settings.load(env).cors_origins == ("http://127.0.0.1:8111", "https://viewer.example.org",
                                               "http://[::1]:3000")
    config = tmp_path / "oncopacs.toml"
    config.write_text('cors_origins = ["https://viewer.example.org/", "http://localhost:8080"]\n', encoding="utf-8")
    assert Settings.load({}, config).cors_origins == ("https://viewer.example.org", "http://localhost:8080")


@pytest.mark.parametrize("bad", ["*", "http://127.0.0.1:8111,*", "null", "viewer.example.org", "ftp://viewer.example.org",
                                 "https://viewer.example.org/ohif", "https://viewer.example.org?x=1",
                                 "https://viewer.example.org#top", "https://user@viewer.example.org",
                                 "http://127.0.0.1:0", "http://127.0.0.1:70000", "http://127.0.0.1:", "http://",
                                 "https://*.example.org"])
def test_bad_origins_are_refused_when_settings_load(bad: str):
    with pytest.raises(ConfigError, match=r"cors_origins \(ONCOPACS_CORS_ORIGINS\)") as refused:
        Settings.load({"ONCOPACS_CORS_ORIGINS": bad})
    if "*" in bad and "example" not in bad:
        assert "'*' is refused" in str(refused.value)
