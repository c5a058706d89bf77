"""Server-side browser sessions: a sign-out, a new password, a new role or a disabled account ends a session on every
node, and a cookie copied before that is refused after it; the index keeps only the session id's SHA-256."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from argon2 import PasswordHasher
from click.testing import CliRunner
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import inspect, select

from oncopacs.audit.events import AuditAction
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.models import WebSession
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.cli import main
from oncopacs.index.db import _alembic_config, open_index
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from oncopacs.web.auth import MAX_SESSION_SECONDS, SESSION_ID_KEY
from tests.web.test_auth import FrozenClock

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PAGE = {"Accept": "text/html"}




@contextmanager
def node(settings: Settings, clock: FrozenClock) -> Iterator[Flask]:
    """One node's app over ``settings``' index, on the shared fake clock."""
    app = create_app(open_platform(settings.with_overrides(session_timeout_minutes=15)))
    app.config["TESTING"] = True
    store: UserStore = app.extensions["oncopacs.users"]
    store.clock, store.hasher = clock, FAST_HASHER
    try:
        yield app
    finally:
        app.extensions["oncopacs.archive"].close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> Iterator[Flask]:
    """On SQLite and PostgreSQL, with an administrator and an oncologist."""
    with node(settings, clock) as app:
        store: UserStore = app.extensions["oncopacs.users"]
        store.add_user("root", Role.ADMIN, PASSWORD)
        store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
        yield app


@pytest.fixture
def store(app: Flask) -> UserStore:
    return app.extensions["oncopacs.users"]


def csrf_token(browser: FlaskClient) -> str:
    page = browser.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def cookie(browser: FlaskClient) -> str:
    """The value of the browser's session cookie."""
    held = browser.get_cookie("session")
    assert held is not None
    return held.value


def cookie_serializer(app: Flask) -> URLSafeTimedSerializer:
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    return serializer


def signed_in(app: Flask, username: str = "alice") -> FlaskClient:
    browser = app.test_client()
    form = {"csrf_token": csrf_token(browser), "username": username, "password": PASSWORD}
    assert browser.post("/login", data=form).status_code == 303
    return browser


def copy_of(browser: FlaskClient, app: Flask) -> FlaskClient:
    """Another client (on ``app``) holding ``browser``'s session cookie as it is now."""
    thief = app.test_client()
    thief.set_cookie("session", cookie(browser))
    return thief


def session_id(app: Flask, browser: FlaskClient) -> str:
    """The session id inside the browser's signed cookie."""
    return cookie_serializer(app).loads(cookie(browser))[SESSION_ID_KEY]


def rows(app: Flask) -> list[WebSession]:
    with app.extensions["oncopacs.archive"].index.reading() as session:
        return list(session.scalars(select(WebSession).order_by(WebSession.id)))


def log_out(browser: FlaskClient) -> None:
    reply = browser.post("/logout", headers={"X-CSRFToken": csrf_token(browser)})
    assert reply.status_code == 303 and reply.headers["Location"] == "/login"


def refused_everywhere(client: FlaskClient) -> None:
    """401 on /api and /dicom-web, the login form for a page."""
    assert client.get("/api/me").status_code == 401
    assert client.get("/dicom-web/studies").status_code == 401
    page = client.get("/dashboards/board", headers=PAGE)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")


def test_a_cookie_copied_before_logout_is_refused_after_it(app: Flask):
    browser = signed_in(app)
    thief = copy_of(browser, app)
    assert thief.get("/api/me").get_json()["username"] == "alice"
    log_out(browser)
    ended = thief.get("/api/me")
    assert ended.status_code == 401 and "signed out" in ended.get_json()["detail"]
    refused_everywhere(thief)
    [row] = rows(app)
    assert row.ended_reason == "signed out" and row.ended_at is not None


def test_the_index_keeps_only_the_session_ids_hash(app: Flask):
    browser = signed_in(app)
    raw = session_id(app, browser)
    assert len(raw) >= 43  # 256 random bits, URL-safe base64
    [row] = rows(app)
    assert row.session_sha256 == hashlib.sha256(raw.encode()).hexdigest()
    stored = [str(getattr(row, column.key)) for column in WebSession.__table__.columns]
    assert not any(raw in value for value in stored)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda store: store.set_password("alice", "another long password"), "password changed"),
        (lambda store: store.set_role("alice", Role.REFERRER), "role changed"),
        (lambda store: store.set_disabled("alice", True), "user disabled"),
    ],
    ids=["password", "role", "disable"],
)
def test_a_user_change_ends_all_their_open_sessions(app: Flask, store: UserStore, change, reason: str):
    first, second, other = signed_in(app), signed_in(app), signed_in(app, "root")
    change(store)
    refused_everywhere(first)
    refused_everywhere(second)
    assert other.get("/api/me").status_code == 200  # another user's session stays
    assert [row.ended_reason for row in rows(app) if row.username == "alice"] == [reason, reason]


def test_role_change_and_disable_through_the_api_end_sessions(app: Flask, store: UserStore):
    admin = {"Authorization": f"Bearer {store.create_token('root')}"}
    browser = signed_in(app)
    assert browser.get("/api/me").status_code == 200
    assert app.test_client().patch("/api/users/alice", json={"role": "referrer"}, headers=admin).status_code == 200
    assert browser.get("/api/me").status_code == 401
    browser = signed_in(app)
    assert browser.get("/api/me").get_json()["role"] == "referrer"
    assert app.test_client().patch("/api/users/alice", json={"disabled": True}, headers=admin).status_code == 200
    assert browser.get("/api/me").status_code == 401


def test_the_cli_ends_the_sessions_it_changes(sqlite_settings: Settings, clock: FrozenClock,
                                              monkeypatch: pytest.MonkeyPatch):
    """``oncopacs user set-role`` (another process over the same index) ends the user's browser sessions."""
    for name in ("ONCOPACS_DATABASE_URL", "ONCOPACS_CONFIG", "ONCOPACS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    with node(sqlite_settings, clock) as app:
        app.extensions["oncopacs.users"].add_user("alice", Role.ONCOLOGIST, PASSWORD)
        browser = signed_in(app)
        result = CliRunner().invoke(main, ["--data-dir", str(sqlite_settings.data_dir), "user", "set-role", "alice",
                                           "physicist"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        refused_everywhere(browser)


def test_an_idle_session_ends_in_its_row_and_is_audited_once(app: Flask, clock: FrozenClock):
    browser = signed_in(app)
    thief = copy_of(browser, app)
    clock.advance(minutes=14)
    assert browser.get("/api/me").status_code == 200  # touches the row: the copy shares its activity
    clock.advance(minutes=14)
    assert thief.get("/api/me").status_code == 200
    clock.advance(minutes=15, seconds=1)
    expired = browser.get("/api/me")
    assert expired.status_code == 401 and "expired" in expired.get_json()["detail"]
    refused_everywhere(thief)
    [row] = rows(app)
    assert row.ended_reason == "idle timeout"
    with app.extensions["oncopacs.archive"].index.reading() as session:
        logouts = list(session.scalars(select(AuditRecord).where(AuditRecord.action == AuditAction.LOGOUT.value)))
    assert len(logouts) == 1 and "idle" in logouts[0].detail


def test_a_busy_session_still_ends_after_the_maximum_length(app: Flask, clock: FrozenClock):
    browser = signed_in(app)
    for _ in range(MAX_SESSION_SECONDS // 600):
        clock.advance(minutes=10)
        assert browser.get("/api/me").status_code == 200
    clock.advance(seconds=1)
    assert browser.get("/api/me").status_code == 401
    assert [row.ended_reason for row in rows(app)] == ["maximum session length"]


def test_two_nodes_over_one_index_see_the_same_logout(app: Flask, settings: Settings, clock: FrozenClock,
                                                       tmp_path: Path):
    # nodes over one index share its audit key (and keep their own checkpoint files)
    node_b = settings.with_overrides(data_dir=tmp_path / "node-b", audit_key_file=settings.effective_audit_key_file)
    with node(node_b, clock) as other:
        other.config["SECRET_KEY"] = app.config["SECRET_KEY"]  # nodes behind one balancer share the key
        browser = signed_in(app)
        on_b = copy_of(browser, other)
        assert on_b.get("/api/me").get_json()["username"] == "alice"
        on_a = copy_of(browser, app)
        log_out(on_b)  # signed out on node B
        refused_everywhere(browser)  # node A refuses it too
        refused_everywhere(on_a)


def test_an_old_style_cookie_without_a_session_id_opens_nothing(app: Flask):
    """A signed cookie from before server-side sessions (user name and times inside) is no credential now."""
    client = app.test_client()
    old_style = {"user": "alice", "stamp": "", "signed_in": 0, "last_seen": 0}
    client.set_cookie("session", cookie_serializer(app).dumps(old_style))
    refused_everywhere(client)


def test_migration_0010_upgrades_and_downgrades(database_url: str) -> None:
    index = open_index(database_url)
    try:
        with index.write_engine.begin() as connection:
            config = _alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0009")
        with index.read_connection() as connection:
            assert "web_sessions" not in inspect(connection).get_table_names()
        index.migrate()
        with index.read_connection() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("web_sessions")}
        assert columns == {"id", "session_sha256", "username", "credential_stamp", "signed_in", "last_seen",
                           "ended_at", "ended_reason"}
    finally:
        index.dispose()
