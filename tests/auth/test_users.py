"""UserStore on both index back-ends: accounts, lock-out, second factor and tokens (no Flask)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher

from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Role
from oncopacs.auth.users import GENERIC_FAILURE, LockoutPolicy, UserStore
from oncopacs.errors import AccountLockedError, AuthenticationError, NotFoundError

PASSWORD = "correct horse battery"
# Real Argon2id with small parameters, so that tests of the bookkeeping do not wait ~0.5 s per check.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class FrozenClock:
    """A UTC clock that moves only when told to."""

    def __init__(self, start: datetime = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(archive: Archive, clock: FrozenClock) -> UserStore:
    return UserStore(archive.index, LockoutPolicy(max_failures=3, lockout_minutes=10), clock=clock, hasher=FAST_HASHER)


def test_password_is_stored_as_memory_hard_argon2id_and_checked(archive: Archive):
    store = UserStore(archive.index)  # the production parameters
    store.add_user("alice", "physicist", PASSWORD)
    from sqlalchemy import select

    from oncopacs.auth.models import User

    with archive.index.reading() as session:
        stored = session.scalars(select(User.password_hash).where(User.username == "alice")).one()
    assert stored.startswith("$argon2id$v=19$m=65536,") and PASSWORD not in stored  # 64 MiB per check
    principal = store.authenticate("alice", PASSWORD)
    assert (principal.name, principal.role) == ("alice", Role.PHYSICIST)
    with pytest.raises(AuthenticationError, match="wrong password"):
        store.authenticate("alice", "not the password")
    with pytest.raises(AuthenticationError):
        store.authenticate("nobody", PASSWORD)


def test_add_user_refuses_bad_input(store: UserStore):
    store.add_user("alice", Role.ADMIN, PASSWORD)
    with pytest.raises(ValueError, match="already exists"):
        store.add_user("alice", Role.ADMIN, PASSWORD)
    with pytest.raises(ValueError, match="at least 8"):
        store.add_user("bob", Role.REFERRER, "short")
    with pytest.raises(ValueError, match="valid roles"):
        store.add_user("bob", "surgeon", PASSWORD)
    with pytest.raises(ValueError, match="1-64"):
        store.add_user("a:b", Role.REFERRER, PASSWORD)
    assert [user.username for user in store.list_users()] == ["alice"]


def test_lock_out_after_max_failures_refuses_right_password_until_time_passes(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    for attempt in range(2):
        result = store.attempt_sign_in("alice", "wrong password!")
        assert not result.ok and result.failure == "wrong password" and result.message == GENERIC_FAILURE
        assert store.get("alice").failed_logins == attempt + 1
    third = store.attempt_sign_in("alice", "wrong password!")
    assert third.newly_locked and third.locked_until == clock.now + timedelta(minutes=10)
    assert "locked" in third.message

    with pytest.raises(AccountLockedError, match="locked"):
        store.authenticate("alice", PASSWORD)  # the right password, refused while locked
    assert store.standing("alice").locked

    clock.advance(minutes=9, seconds=59)
    with pytest.raises(AccountLockedError):
        store.authenticate("alice", PASSWORD)
    clock.advance(seconds=2)
    assert store.authenticate("alice", PASSWORD).name == "alice"
    assert store.get("alice").failed_logins == 0 and store.get("alice").locked_until is None


def test_success_resets_the_failure_count_and_unlock_ends_a_lock(store: UserStore):
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    for _ in range(2):
        store.attempt_sign_in("alice", "wrong password!")
    store.authenticate("alice", PASSWORD)
    for _ in range(2):
        store.attempt_sign_in("alice", "wrong password!")
    assert store.get("alice").locked_until is None  # 2 + 2 failures, not 3 in a row
    store.attempt_sign_in("alice", "wrong password!")
    assert store.get("alice").locked_until is not None
    store.unlock("alice")
    assert store.authenticate("alice", PASSWORD).name == "alice"


def test_zero_max_failures_never_locks(archive: Archive, clock: FrozenClock):
    store = UserStore(archive.index, LockoutPolicy(max_failures=0), clock=clock, hasher=FAST_HASHER)
    store.add_user("alice", Role.REFERRER, PASSWORD)
    for _ in range(6):
        assert store.attempt_sign_in("alice", "wrong password!").locked_until is None
    assert store.authenticate("alice", PASSWORD).name == "alice"


def test_totp_is_required_once_enabled(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    enrollment = store.enable_totp("alice")
    assert enrollment.provisioning_uri.startswith("otpauth://totp/OncoPACS:alice?")
    assert f"secret={enrollment.secret}" in enrollment.provisioning_uri
    code = pyotp.TOTP(enrollment.secret).at(clock.now)

    missing = store.attempt_sign_in("alice", PASSWORD)
    assert not missing.ok and missing.failure == "one-time code missing"
    assert store.get("alice").failed_logins == 0  # nothing was guessed
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert store.attempt_sign_in("alice", PASSWORD, wrong).failure == "wrong one-time code"
    assert store.get("alice").failed_logins == 1
    assert store.authenticate("alice", PASSWORD, code).name == "alice"
    assert store.attempt_sign_in("alice", "wrong password!", code).failure == "wrong password"

    clock.advance(minutes=5)  # an old code no longer works
    assert store.attempt_sign_in("alice", PASSWORD, code).failure == "wrong one-time code"
    store.disable_totp("alice")
    assert store.authenticate("alice", PASSWORD).name == "alice"


def test_disabled_user_is_refused_everywhere(store: UserStore):
    store.add_user("root", Role.ADMIN, PASSWORD)
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    token = store.create_token("alice")
    store.set_disabled("alice", True)
    assert store.attempt_sign_in("alice", PASSWORD).failure == "disabled"
    with pytest.raises(AuthenticationError):
        store.check_token(token)
    assert store.standing("alice") is None
    store.set_disabled("alice", False)
    assert store.check_token(token).name == "alice"


def test_roles_and_passwords_change(store: UserStore):
    store.add_user("root", Role.ADMIN, PASSWORD)
    store.add_user("alice", Role.REFERRER, PASSWORD)
    stamp = store.standing("alice").credential_stamp
    assert store.set_role("alice", "oncologist").role is Role.ONCOLOGIST
    assert store.authenticate("alice", PASSWORD).role is Role.ONCOLOGIST
    store.set_password("alice", "a brand new password")
    assert store.standing("alice").credential_stamp != stamp
    with pytest.raises(AuthenticationError):
        store.authenticate("alice", PASSWORD)
    assert store.authenticate("alice", "a brand new password").name == "alice"
    with pytest.raises(NotFoundError):
        store.set_role("nobody", Role.ADMIN)


def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(store: UserStore):
    store.add_user("root", Role.ADMIN, PASSWORD)
    with pytest.raises(ValueError, match="last enabled administrator"):
        store.set_role("root", Role.PHYSICIST)
    with pytest.raises(ValueError, match="last enabled administrator"):
        store.set_disabled("root", True)
    store.add_user("second", Role.ADMIN, PASSWORD)
    store.set_disabled("root", True)
    with pytest.raises(ValueError):
        store.set_role("second", Role.REFERRER)


def test_tokens_are_hashed_listed_and_revocable(store: UserStore, archive: Archive, clock: FrozenClock):
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    store.add_user("bob", Role.REFERRER, PASSWORD)
    issued = store.issue_token("alice", "ci")
    other = store.issue_token("bob")
    assert issued.token.startswith("opx_") and len(issued.token) > 40
    principal = store.check_token(issued.token)
    assert (principal.name, principal.role, principal.via) == ("alice", Role.PHYSICIST, "token")

    listed = store.list_tokens("alice")
    assert [(t.id, t.label, t.revoked_at) for t in listed] == [(issued.id, "ci", None)]
    assert listed[0].last_used_at == clock.now

    with pytest.raises(NotFoundError):
        store.revoke_token(other.id, "alice")  # not alice's token
    revoked = store.revoke_token(issued.id, "alice")
    assert revoked.revoked_at == clock.now
    with pytest.raises(AuthenticationError, match="revoked"):
        store.check_token(issued.token)
    assert store.check_token(other.token).name == "bob"
    with pytest.raises(AuthenticationError):
        store.check_token("opx_" + "x" * 43)

    from sqlalchemy import select

    from oncopacs.auth.models import ApiToken

    with archive.index.reading() as session:
        assert issued.token not in set(session.scalars(select(ApiToken.token_sha256)))


def test_tokens_survive_a_lock_out(store: UserStore):
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    token = store.create_token("alice")
    for _ in range(3):
        store.attempt_sign_in("alice", "wrong password!")
    assert store.standing("alice").locked
    assert store.check_token(token).name == "alice"
