"""Signing in and out: the CSRF-protected login form, throttling, TOTP, idle sessions, tokens, Basic, audit."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.web.conftest import basic_auth

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real Argon2id, cheap parameters
JSON = {"Accept": "application/json"}


class FrozenClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(sqlite_settings: Settings, clock: FrozenClock) -> Iterator[Flask]:
    settings = sqlite_settings.with_overrides(secret_key="test-secret", login_max_failures=3, login_lockout_minutes=10,
                                              session_timeout_minutes=15)
    app = create_app(open_platform(settings))
    store: UserStore = app.extensions["oncopacs.users"]
    store.clock, store.hasher = clock, FAST_HASHER
    store.add_user("root", Role.ADMIN, PASSWORD)
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    yield app
    app.extensions["oncopacs.archive"].close()


@pytest.fixture
def store(app: Flask) -> UserStore:
    return app.extensions["oncopacs.users"]


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(store: UserStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {store.create_token('root')}"}


def csrf_token(browser: FlaskClient) -> str:
    page = browser.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def sign_in(browser: FlaskClient, username: str, password: str = PASSWORD, totp: str = "", next_url: str = ""):
    form = {"csrf_token": csrf_token(browser), "username": username, "password": password, "totp": totp}
    return browser.post("/login" + (f"?next={next_url}" if next_url else ""), data=form)


def audit_rows(app: Flask, action: AuditAction) -> list[AuditRecord]:
    with app.extensions["oncopacs.archive"].index.reading() as session:
        return list(
            session.scalars(select(AuditRecord).where(AuditRecord.action == action.value).order_by(AuditRecord.id))
        )


def test_login_page_is_public_and_carries_the_form(browser: FlaskClient):
    reply = browser.get("/login")
    page = reply.get_data(as_text=True)
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    for field in ("username", "password", "totp", "csrf_token"):
        assert f'name="{field}"' in page


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_login_post_without_a_valid_csrf_token_is_refused(app: Flask, browser: FlaskClient, token: str | None):
    browser.get("/login")
    form = {"username": "alice", "password": PASSWORD} | ({"csrf_token": token} if token else {})
    reply = browser.post("/login", data=form)
    assert reply.status_code == 400
    assert "did not come from this site" in reply.get_data(as_text=True)
    assert browser.get("/api/me").status_code == 401
    assert audit_rows(app, AuditAction.LOGIN) == []


def test_sign_in_starts_a_session_with_safe_cookie_flags_and_is_audited(app: Flask, browser: FlaskClient):
    reply = sign_in(browser, "alice", next_url="/api/me%3Fx%3D1")
    assert reply.status_code == 303 and reply.headers["Location"] == "/api/me?x=1"
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = browser.get("/api/me").get_json()
    assert me["username"] == "alice" and me["role"] == "oncologist" and me["via"] == "session"
    assert "archive.read" in me["permissions"] and "users.manage" not in me["permissions"]
    [login] = audit_rows(app, AuditAction.LOGIN)
    assert login.actor == "alice" and login.outcome == Outcome.SUCCESS and login.actor_kind == "user"
    assert login.detail.startswith("POST /login")


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_sign_in_never_redirects_off_site(browser: FlaskClient, target: str):
    reply = sign_in(browser, "alice", next_url=target)
    # the home once dashboards are mounted
    assert reply.status_code == 303 and reply.headers["Location"] == "/dashboards/"


@pytest.mark.parametrize("role, home", [("tumour_board", "/dashboards/"), ("referrer", "/reports")])
def test_sign_in_without_next_lands_where_the_role_may_go(store: UserStore, browser: FlaskClient, role: str, home: str):
    store.add_user(f"user-{role}", role, PASSWORD)
    reply = sign_in(browser, f"user-{role}")
    assert reply.status_code == 303 and reply.headers["Location"] == home
    assert browser.get(home, follow_redirects=True).status_code == 200


def test_wrong_password_and_unknown_user_are_refused_and_audited(app: Flask, browser: FlaskClient):
    for username, password in (("alice", "not the password"), ("mallory", PASSWORD)):
        reply = sign_in(browser, username, password)
        assert reply.status_code == 401
        assert "unknown user, wrong password or wrong one-time code" in reply.get_data(as_text=True)
        assert browser.get("/api/me").status_code == 401
    failed = audit_rows(app, AuditAction.LOGIN_FAILED)
    assert [(r.actor, r.outcome) for r in failed] == [("alice", 8), ("mallory", 8)]
    assert "wrong password" in failed[0].detail and "unknown user" in failed[1].detail
    assert audit_rows(app, AuditAction.LOGIN) == []


def test_repeated_failures_throttle_the_address_then_it_may_try_again(app: Flask, browser: FlaskClient,
                                                                      clock: FrozenClock):
    for _ in range(2):
        assert sign_in(browser, "alice", "not the password").status_code == 401
    throttled = sign_in(browser, "alice", "not the password")  # the third failure within 10 min
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "600"
    assert "too many failed sign-ins from this address" in throttled.get_data(as_text=True)
    refused = sign_in(browser, "alice")  # the right password, from the throttled address
    assert refused.status_code == 429 and browser.get("/api/me").status_code == 401
    basic = browser.get("/api/me", headers=basic_auth("alice"))
    assert basic.status_code == 429 and basic.get_json()["status"] == 429 and basic.headers["Retry-After"] == "600"
    assert "too many failed sign-ins" in basic.get_json()["detail"]
    details = [row.detail for row in audit_rows(app, AuditAction.LOGIN_FAILED)]
    assert any("throttled for 10 min" in detail for detail in details)
    assert sum("throttled: source refused" in detail for detail in details) == 2  # both refusals audited

    clock.advance(minutes=9)
    assert sign_in(browser, "alice").headers["Retry-After"] == "60"
    clock.advance(minutes=2)
    assert sign_in(browser, "alice").status_code == 303
    assert browser.get("/api/me").status_code == 200


def test_basic_credentials_cached_before_a_throttle_keep_working(app: Flask, store: UserStore):
    client = app.test_client()
    assert client.get("/api/me", headers=basic_auth("alice")).status_code == 200  # now cached
    for _ in range(3):
        store.attempt_sign_in("alice", "not the password", source="127.0.0.1")
    assert client.get("/api/me", headers=basic_auth("alice")).status_code == 200  # verified already: no guess
    assert client.get("/api/me", headers=basic_auth("root")).status_code == 429  # a new password check: refused


def test_totp_is_required_when_enabled(app: Flask, browser: FlaskClient, store: UserStore, clock: FrozenClock):
    secret = store.enable_totp("alice").secret
    code = pyotp.TOTP(secret).at(clock.now)
    wrong = f"{(int(code) + 500_000) % 1_000_000:06d}"
    assert sign_in(browser, "alice").status_code == 401
    assert sign_in(browser, "alice", totp=wrong).status_code == 401
    assert browser.get("/api/me").status_code == 401
    assert sign_in(browser, "alice", totp=code).status_code == 303
    assert browser.get("/api/me").get_json()["username"] == "alice"
    # Basic cannot carry a second factor: such users use tokens
    assert app.test_client().get("/api/me", headers=basic_auth("alice")).status_code == 401


def test_an_idle_session_expires(app: Flask, browser: FlaskClient, clock: FrozenClock):
    assert sign_in(browser, "alice").status_code == 303
    clock.advance(minutes=14)
    assert browser.get("/api/me").status_code == 200
    clock.advance(minutes=14)  # activity 14 min ago, not 28
    assert browser.get("/api/me").status_code == 200
    clock.advance(minutes=15, seconds=1)
    expired = browser.get("/api/me")
    assert expired.status_code == 401 and "expired" in expired.get_json()["detail"]
    assert browser.get("/api/me").status_code == 401  # the session is gone, not just stale
    assert any("idle" in row.detail for row in audit_rows(app, AuditAction.LOGOUT))


def test_the_session_cookie_stays_the_same_between_touches(app: Flask, browser: FlaskClient, clock: FrozenClock):
    """The cookie never changes while a session lasts (a new cookie on every reply defeated the browser's cache of
    the Dash bundles, whose replies vary by Cookie); the row's last activity is written at most every
    SESSION_TOUCH_SECONDS."""
    from oncopacs.auth.models import WebSession
    from oncopacs.web.auth import SESSION_TOUCH_SECONDS

    def last_seen() -> datetime:
        with app.extensions["oncopacs.archive"].index.reading() as session:
            return session.scalars(select(WebSession.last_seen)).one().replace(tzinfo=UTC)

    assert sign_in(browser, "alice").status_code == 303
    signed_in = clock.now
    clock.advance(seconds=SESSION_TOUCH_SECONDS - 1)
    assert "Set-Cookie" not in browser.get("/api/me").headers
    assert last_seen() == signed_in
    clock.advance(seconds=1)
    touched = browser.get("/api/me")
    assert touched.status_code == 200 and "Set-Cookie" not in touched.headers
    assert last_seen() == clock.now


def test_an_expired_or_missing_session_sends_pages_to_the_login_form(browser: FlaskClient, clock: FrozenClock):
    page = {"Accept": "text/html"}
    reply = browser.get("/dashboards/board?x=1", headers=page)
    assert reply.status_code == 302 and reply.headers["Location"].startswith("/login?next=")
    assert sign_in(browser, "alice").status_code == 303
    clock.advance(minutes=16)
    assert browser.get("/dashboards/board", headers=page).status_code == 302
    assert browser.get("/api/me", headers=page).status_code == 401  # /api answers 401, never a redirect


def test_logout_needs_csrf_then_ends_the_session(app: Flask, browser: FlaskClient):
    assert sign_in(browser, "alice").status_code == 303
    assert browser.post("/logout").status_code == 400  # a form post without a CSRF token
    assert browser.get("/api/me").status_code == 200
    reply = browser.post("/logout", headers={"X-CSRFToken": csrf_token(browser)})
    assert reply.status_code == 303 and reply.headers["Location"] == "/login"
    assert browser.get("/api/me").status_code == 401
    [logout] = audit_rows(app, AuditAction.LOGOUT)
    assert logout.actor == "alice"


def test_a_changed_password_or_a_disabled_user_ends_sessions(browser: FlaskClient, store: UserStore):
    assert sign_in(browser, "alice").status_code == 303
    store.set_password("alice", "another long password")
    assert browser.get("/api/me").status_code == 401
    assert sign_in(browser, "alice", "another long password").status_code == 303
    store.set_disabled("alice", True)
    assert browser.get("/api/me").status_code == 401


def test_a_role_change_ends_a_running_session(browser: FlaskClient, store: UserStore):
    assert sign_in(browser, "alice").status_code == 303
    store.set_role("alice", Role.ONCOLOGIST)  # the same role: nothing changes
    assert browser.get("/api/me").status_code == 200
    store.set_role("alice", Role.REFERRER)
    assert browser.get("/api/me").status_code == 401
    assert sign_in(browser, "alice").status_code == 303
    assert browser.get("/api/me").get_json()["role"] == "referrer"


def test_basic_auth_works_and_wrong_basic_is_challenged(app: Flask, store: UserStore):
    client = app.test_client()
    me = client.get("/api/me", headers=basic_auth("alice"))
    assert me.status_code == 200 and me.get_json()["via"] == "basic"
    for headers in (basic_auth("alice", "not the password"), basic_auth("nobody"), {"Authorization": "Basic %%%"},
                    {"Authorization": "Digest abc"}, {}):
        reply = client.get("/api/me", headers=headers)
        assert reply.status_code == 401, headers
        challenge = reply.headers["WWW-Authenticate"]
        assert 'Basic realm="OncoPACS"' in challenge and "Bearer" in challenge
        assert reply.get_json()["status"] == 401
    store.set_password("alice", "another long password")  # the cached old password stops working at once
    elsewhere = {"REMOTE_ADDR": "10.0.0.8"}  # 127.0.0.1 has used up its 3 failures: it is throttled now
    assert client.get("/api/me", headers=basic_auth("alice"), environ_base=elsewhere).status_code == 401
    assert client.get("/api/me", headers=basic_auth("alice", "another long password"),
                      environ_base=elsewhere).status_code == 200
    failed = audit_rows(app, AuditAction.LOGIN_FAILED)
    assert {row.actor for row in failed} >= {"alice", "nobody"}


def test_revoked_bearer_token_gets_401(app: Flask, admin: dict[str, str]):
    client = app.test_client()
    created = client.post("/api/users/alice/tokens", json={"label": "pacs-bridge"}, headers=admin)
    assert created.status_code == 201
    token = created.get_json()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    assert client.get("/api/me", headers=bearer).get_json()["via"] == "token"
    listed = client.get("/api/users/alice/tokens", headers=admin).get_json()["tokens"]
    assert [(t["id"], t["label"], t["revoked_at"]) for t in listed] == [(token["id"], "pacs-bridge", None)]
    assert "token" not in listed[0]
    assert client.delete(f"/api/users/alice/tokens/{token['id']}", headers=admin).status_code == 204
    refused = client.get("/api/me", headers=bearer)
    assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
    assert client.delete(f"/api/users/root/tokens/{token['id']}", headers=admin).status_code == 404
    changes = [row.detail for row in audit_rows(app, AuditAction.USER_CHANGE)]
    assert any("token" in c and "created" in c for c in changes) and any("revoked" in c for c in changes)


def test_csrf_guards_session_form_posts_but_not_header_credentials(app: Flask, browser: FlaskClient,
                                                                   admin: dict[str, str]):
    assert sign_in(browser, "root").status_code == 303
    form = {"username": "bob", "role": "referrer", "password": PASSWORD}
    assert browser.post("/api/users", data=form).status_code == 400  # form-encoded, session, no token
    assert browser.post("/api/users", json=form).status_code == 201  # JSON cannot be sent cross-site without CORS
    machine = app.test_client()
    reply = machine.post("/api/users", json=form | {"username": "carol"}, headers=admin)
    assert reply.status_code == 201  # Bearer: no CSRF token needed


def test_user_changes_through_the_api_are_audited(app: Flask, admin: dict[str, str]):
    client = app.test_client()
    created = client.post("/api/users", json={"username": "bob", "role": "physicist", "password": PASSWORD},
                          headers=admin)
    assert created.status_code == 201 and created.get_json()["role"] == "physicist"
    assert client.post("/api/users", json={"username": "bob", "role": "physicist", "password": PASSWORD},
                       headers=admin).status_code == 409
    assert client.post("/api/users", json={"username": "eve", "role": "surgeon", "password": PASSWORD},
                       headers=admin).status_code == 400
    changed = client.patch("/api/users/bob", json={"role": "referrer", "disabled": True}, headers=admin)
    assert changed.status_code == 200 and changed.get_json()["role"] == "referrer" and changed.get_json()["disabled"]
    assert client.patch("/api/users/bob", json={"colour": "red"}, headers=admin).status_code == 400
    assert client.patch("/api/users/nobody", json={"role": "admin"}, headers=admin).status_code == 404
    assert client.patch("/api/users/root", json={"role": "referrer"}, headers=admin).status_code == 409
    names = {user["username"] for user in client.get("/api/users", headers=admin).get_json()["users"]}
    assert names == {"root", "alice", "bob"}
    changes = audit_rows(app, AuditAction.USER_CHANGE)
    assert [row.actor for row in changes] == ["root", "root"]
    assert "added user 'bob'" in changes[0].detail and "role referrer, disabled" in changes[1].detail


def test_secret_key_is_generated_once_kept_private_and_sessions_survive_a_restart(sqlite_settings: Settings):
    settings = sqlite_settings.with_overrides(secret_key="")
    first = create_app(open_platform(settings))
    key_file = settings.data_dir / "secret_key"
    assert first.config["SECRET_KEY"] and oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    first.extensions["oncopacs.users"].add_user("alice", Role.PHYSICIST, PASSWORD)
    before = first.test_client()
    assert sign_in(before, "alice").status_code == 303
    first.extensions["oncopacs.archive"].close()

    second = create_app(open_platform(settings))  # a restart
    assert second.config["SECRET_KEY"] == first.config["SECRET_KEY"]
    after = second.test_client()
    after.set_cookie("session", before.get_cookie("session").value)
    assert after.get("/api/me").get_json()["username"] == "alice"
    second.extensions["oncopacs.archive"].close()


# -- /reports: the report list page, a referrer's landing page (it landed on raw JSON from /api/reports) --


def test_a_referrer_sees_a_page_not_json_and_a_bad_status_is_named(store: UserStore, browser: FlaskClient):
    store.add_user("ref", Role.REFERRER.value, PASSWORD)
    sign_in(browser, "ref")
    page = browser.get("/reports")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "<h" in text or "<main" in text
    assert "Reports appear here once" in text  # no report yet: said in words
    assert browser.get("/reports?status=all").status_code == 200
    bad = browser.get("/reports?status=bogus")
    assert bad.status_code == 400 and "bogus" in bad.get_data(as_text=True)


def test_without_a_session_a_browser_signs_in_first_and_an_api_client_gets_401(browser: FlaskClient):
    navigation = browser.get("/reports", headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"})
    assert navigation.status_code in (302, 303) and "/login?next=/reports" in navigation.headers["Location"]
    assert browser.get("/reports", headers={"Accept": "application/json"}).status_code == 401
