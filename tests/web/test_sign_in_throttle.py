"""Sign-in throttling per source address: nobody can lock an account, the administrator least of all.

Five failures from one address (the default ``login_max_failures``) throttle that address for
``login_lockout_minutes``; the same user signs in from any other address; the console lifts throttles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from oncopacs.audit.events import AuditAction
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.cli import main
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES
from tests.web.conftest import basic_auth

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real Argon2id, cheap parameters
ATTACKER = {"REMOTE_ADDR": "203.0.113.9"}
WARD = {"REMOTE_ADDR": "10.20.0.14"}
LOCALHOST = {"REMOTE_ADDR": "127.0.0.1"}


def client_from(app: Flask, environ: dict[str, str]) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update(environ)
    return client


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"csrf_token": token, "username": username, "password": password})


def failed_sign_ins(app: Flask) -> list[AuditRecord]:
    with app.extensions["oncopacs.archive"].index.reading() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.action == AuditAction.LOGIN_FAILED.value)
                                    .order_by(AuditRecord.id)))


@pytest.fixture
def app(web_app: Flask) -> Flask:
    """The app on both back-ends with the default policy (5 failures, 15 minutes)."""
    store: UserStore = web_app.extensions["oncopacs.users"]
    store.hasher = FAST_HASHER
    store.add_user("root", Role.ADMIN, PASSWORD)
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    return web_app


def test_five_failures_throttle_that_address_and_the_user_signs_in_from_another(app: Flask):
    here = client_from(app, LOCALHOST)
    replies = [sign_in(here, "alice", "not the password") for _ in range(5)]
    assert [reply.status_code for reply in replies] == [401, 401, 401, 401, 429]
    page = replies[-1].get_data(as_text=True)
    assert "too many failed sign-ins from this address" in page and 'role="alert"' in page
    assert 15 * 60 - 5 <= int(replies[-1].headers["Retry-After"]) <= 15 * 60  # seconds left: a slow test may lose one
    assert sign_in(here, "alice").status_code == 429  # the right password: this address waits

    elsewhere = client_from(app, WARD)
    assert sign_in(elsewhere, "alice").status_code == 303
    assert elsewhere.get("/api/me").get_json()["username"] == "alice"
    assert here.get("/api/me").status_code == 401

    records = failed_sign_ins(app)
    assert len(records) == 6 and {record.source for record in records} == {"127.0.0.1"}
    assert "source 127.0.0.1 throttled for 15 min after 5 failed sign-ins" in records[4].detail
    assert "throttled: source refused until" in records[5].detail


def test_nobody_can_lock_the_administrator_out(app: Flask):
    attacker = client_from(app, ATTACKER)
    for _ in range(20):
        assert sign_in(attacker, "root", "guess, guess").status_code in {401, 429}
    assert sign_in(attacker, "root").status_code == 429  # even the right password: not from there
    basic = attacker.get("/api/me", headers=basic_auth("root"))
    assert basic.status_code == 429 and basic.mimetype == "application/json"
    assert basic.get_json()["status"] == 429 and 15 * 60 - 5 <= int(basic.headers["Retry-After"]) <= 15 * 60

    admin = client_from(app, WARD)
    assert sign_in(admin, "root").status_code == 303
    assert admin.get("/api/me").get_json()["role"] == "admin"
    machine = client_from(app, WARD).get("/api/me", headers=basic_auth("root"))
    assert machine.status_code == 200
    assert app.extensions["oncopacs.users"].get("root").locked_until is None
    refused = [record for record in failed_sign_ins(app) if "throttled: source refused" in record.detail]
    assert len(refused) == 17  # 20 + 1 + 1 attempts, of which the first 5 were checked


def test_a_bearer_token_works_from_a_throttled_address(app: Flask):
    token = app.extensions["oncopacs.users"].create_token("alice")
    client = client_from(app, ATTACKER)
    for _ in range(5):
        sign_in(client, "alice", "not the password")
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_throttle_is_shared_by_processes_and_survives_a_restart(sqlite_settings: Settings):
    settings = sqlite_settings.with_overrides(login_max_failures=4)
    with open_platform(settings) as first_platform, open_platform(settings) as second_platform:
        first, second = create_app(first_platform), create_app(second_platform)  # two workers on one index
        first_platform.users.add_user("alice", Role.ONCOLOGIST, PASSWORD)
        for app in (first, second, first):
            assert sign_in(client_from(app, ATTACKER), "alice", "not the password").status_code == 401
        assert sign_in(client_from(second, ATTACKER), "alice", "not the password").status_code == 429
    with open_platform(settings) as restarted:
        assert sign_in(client_from(create_app(restarted), ATTACKER), "alice").status_code == 429


@pytest.fixture
def served_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("ONCOPACS_DATABASE_URL", "ONCOPACS_CONFIG", "ONCOPACS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONCOPACS_AUDIT_SPOOL_BYTES", str(TEST_AUDIT_SPOOL_BYTES))
    yield tmp_path / "data"


def cli(data_dir: Path, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def test_the_console_lifts_throttles(served_data_dir: Path):
    settings = Settings(data_dir=served_data_dir, secret_key="test-secret", audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        app = create_app(platform)
        platform.users.hasher = FAST_HASHER
        platform.users.add_user("root", Role.ADMIN, PASSWORD)
        for environ in (ATTACKER, LOCALHOST):
            for _ in range(5):
                sign_in(client_from(app, environ), "root", "guess, guess")

        listed = cli(served_data_dir, "user", "throttled", "--json")
        assert listed.exit_code == 0
        sources = {item["source"]: item for item in json.loads(listed.stdout)["sources"]}
        assert set(sources) == {"127.0.0.1", "203.0.113.9"} and sources["127.0.0.1"]["throttled_until"]

        lifted = cli(served_data_dir, "user", "unlock", "--address", "127.0.0.1")
        assert lifted.exit_code == 0 and "lifted for 127.0.0.1" in lifted.stderr
        assert sign_in(client_from(app, LOCALHOST), "root").status_code == 303
        assert sign_in(client_from(app, ATTACKER), "root").status_code == 429

        everything = cli(served_data_dir, "user", "unlock", "--all")
        assert everything.exit_code == 0 and "every address (1 cleared)" in everything.stderr
        assert sign_in(client_from(app, ATTACKER), "root").status_code == 303

        nothing = cli(served_data_dir, "user", "unlock")
        assert nothing.exit_code == 2 and "--address ADDR or --all" in nothing.stderr
        assert cli(served_data_dir, "user", "unlock", "root").exit_code == 0  # the legacy account unlock still works

        changes = [row.detail for row in platform.audit.query().entries if row.action == "user_change"]
        assert any("throttle lifted for 127.0.0.1" in detail for detail in changes)
        assert any("throttle lifted for every address" in detail for detail in changes)
