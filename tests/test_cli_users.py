"""``oncopacs user …`` and ``oncopacs token …`` as an administrator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from oncopacs.audit.models import AuditRecord
from oncopacs.auth.users import UserStore
from oncopacs.cli import main
from oncopacs.errors import AuthenticationError
from oncopacs.index.db import open_index
from oncopacs.settings import Settings

PASSWORD = "correct horse battery"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ONCOPACS_DATABASE_URL", "ONCOPACS_CONFIG", "ONCOPACS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


def run(data_dir: Path, *args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], input=stdin, catch_exceptions=False)


def open_store(data_dir: Path) -> tuple[UserStore, object]:
    index = open_index(Settings(data_dir=data_dir).effective_database_url)
    return UserStore(index), index


def user_changes(data_dir: Path) -> list[AuditRecord]:
    index = open_index(Settings(data_dir=data_dir).effective_database_url)
    try:
        with index.reading() as session:
            return list(session.scalars(select(AuditRecord).where(AuditRecord.action == "user_change")
                                        .order_by(AuditRecord.id)))
    finally:
        index.dispose()


def test_user_add_reads_one_line_of_stdin_and_is_audited(data_dir: Path):
    result = run(data_dir, "user", "add", "alice", "--role", "physicist", "--password-stdin",
                 stdin=f"{PASSWORD}\nignored second line\n")
    assert result.exit_code == 0, result.stderr
    store, index = open_store(data_dir)
    try:
        assert store.authenticate("alice", PASSWORD).role.value == "physicist"
    finally:
        index.dispose()
    [change] = user_changes(data_dir)
    assert change.actor_kind == "system" and change.actor and "added user 'alice'" in change.detail

    listed = json.loads(run(data_dir, "user", "list", "--json").stdout)
    assert [(u["username"], u["role"], u["disabled"]) for u in listed["users"]] == [("alice", "physicist", False)]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("user", "add", "bob", "--role", "surgeon", "--password-stdin"), f"{PASSWORD}\n", "unknown role 'surgeon'"),
        (("user", "add", "bob", "--role", "referrer", "--password-stdin"), "short\n", "at least 8 characters"),
        (("user", "add", "bob", "--role", "referrer", "--password-stdin"), "", "no password"),
        (("user", "set-role", "nobody", "admin"), None, "no user 'nobody'"),
        (("token", "create", "nobody"), None, "no user 'nobody'"),
        (("token", "revoke", "42"), None, "no token 42"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_2(data_dir: Path, args, stdin, message):
    result = run(data_dir, *args, stdin=stdin)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("oncopacs: ") and message in result.stderr


def test_duplicate_user_is_refused(data_dir: Path):
    assert run(data_dir, "user", "add", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD).exit_code == 0
    again = run(data_dir, "user", "add", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_roles_disable_enable_unlock_and_totp(data_dir: Path):
    run(data_dir, "user", "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    run(data_dir, "user", "add", "alice", "--role", "referrer", "--password-stdin", stdin=PASSWORD)
    assert run(data_dir, "user", "set-role", "alice", "oncologist").exit_code == 0
    last_admin = run(data_dir, "user", "set-role", "root", "referrer")
    assert last_admin.exit_code == 2 and "last enabled administrator" in last_admin.stderr
    store, index = open_store(data_dir)
    try:
        assert store.get("alice").role.value == "oncologist"
        assert run(data_dir, "user", "disable", "alice").exit_code == 0
        with pytest.raises(AuthenticationError):
            store.authenticate("alice", PASSWORD)
        assert run(data_dir, "user", "enable", "alice").exit_code == 0
        for _ in range(5):
            store.attempt_sign_in("alice", "not the password")
        assert "5 failed sign-in(s)" in run(data_dir, "user", "list").stdout
        assert run(data_dir, "user", "unlock", "alice").exit_code == 0
        assert store.get("alice").failed_logins == 0
        assert store.authenticate("alice", PASSWORD).name == "alice"

        uri = run(data_dir, "user", "totp", "alice").stdout.strip()
        assert uri.startswith("otpauth://totp/OncoPACS:alice?")
        totp = pyotp.parse_uri(uri)
        assert store.authenticate("alice", PASSWORD, totp.now()).name == "alice"
        with pytest.raises(AuthenticationError):
            store.authenticate("alice", PASSWORD)
        assert run(data_dir, "user", "totp", "alice", "--disable").exit_code == 0
        assert store.authenticate("alice", PASSWORD).name == "alice"
    finally:
        index.dispose()
    details = [row.detail for row in user_changes(data_dir)]
    for expected in (
        "role oncologist", "disabled", "enabled", "unlocked", "new second factor", "second factor removed"
    ):
        assert any(expected in detail for detail in details), expected


def test_token_create_list_revoke(data_dir: Path):
    run(data_dir, "user", "add", "bridge", "--role", "physicist", "--password-stdin", stdin=PASSWORD)
    created = run(data_dir, "token", "create", "bridge", "--label", "pacs bridge")
    assert created.exit_code == 0
    token = created.stdout.strip()
    assert token.startswith("opx_") and "\n" not in token and "not shown again" in created.stderr
    store, index = open_store(data_dir)
    try:
        assert store.check_token(token).name == "bridge"
        [listed] = json.loads(run(data_dir, "token", "list", "bridge", "--json").stdout)["tokens"]
        assert listed["label"] == "pacs bridge" and listed["revoked_at"] is None and token not in json.dumps(listed)
        assert run(data_dir, "token", "revoke", str(listed["id"])).exit_code == 0
        with pytest.raises(AuthenticationError):
            store.check_token(token)
        assert "revoked" in run(data_dir, "token", "list", "bridge").stdout
    finally:
        index.dispose()
    details = [row.detail for row in user_changes(data_dir)]
    assert any("token 1 created for 'bridge'" in d for d in details) and any(
        "token 1 of 'bridge' revoked" in d for d in details
    )
