"""UserStore on both index back-ends: accounts, sign-in throttling, second factor and tokens (no Flask)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher

from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Role
from oncopacs.auth.users import GENERIC_FAILURE, LockoutPolicy, UserStore
from oncopacs.errors import AuthenticationError, NotFoundError

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


def test_failures_throttle_the_source_never_the_account(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    for attempt in range(2):
        result = store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66")
        assert not result.ok and result.failure == "wrong password" and result.message == GENERIC_FAILURE
        assert store.get("alice").failed_logins == attempt + 1
    third = store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66")
    assert third.throttle is not None and third.throttle.newly_throttled
    assert third.throttled_until == clock.now + timedelta(minutes=10) and third.retry_after_seconds == 600
    assert "throttled for 10 min" in third.failure and "from this address" in third.message

    refused = store.attempt_sign_in("alice", PASSWORD, source="10.0.0.66")  # the right password, same source
    assert not refused.ok and refused.failure.startswith("throttled") and refused.retry_after_seconds == 600
    with pytest.raises(AuthenticationError, match="too many failed sign-ins"):
        store.authenticate("alice", PASSWORD, source="10.0.0.66")
    assert store.authenticate("alice", PASSWORD, source="10.0.0.7").name == "alice"  # anywhere else: fine
    assert store.authenticate("alice", PASSWORD).name == "alice"  # no source (the console): never throttled
    assert store.get("alice").locked_until is None

    clock.advance(minutes=9, seconds=59)
    assert store.attempt_sign_in("alice", PASSWORD, source="10.0.0.66").retry_after_seconds == 1
    clock.advance(seconds=2)
    assert store.authenticate("alice", PASSWORD, source="10.0.0.66").name == "alice"


def test_failures_spread_over_more_than_the_window_do_not_throttle(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    for _ in range(2):
        store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66")
    clock.advance(minutes=10)  # the window has passed: counting starts again
    for _ in range(2):
        assert store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66").throttle is None
    assert store.throttle.throttled_until("10.0.0.66", clock.now) is None


def test_a_good_sign_in_resets_the_users_count_but_not_the_sources(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    store.add_user("mallory", Role.REFERRER, PASSWORD)
    for _ in range(2):
        store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66")
    assert store.authenticate("mallory", PASSWORD, source="10.0.0.66").name == "mallory"  # a valid account...
    assert store.get("alice").failed_logins == 2
    third = store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66")
    assert third.throttled_until is not None  # ...does not buy its holder more guesses
    assert store.authenticate("alice", PASSWORD, source="10.0.0.7").name == "alice"
    assert store.get("alice").failed_logins == 0


def test_unknown_users_count_against_the_source(store: UserStore):
    for name in ("admin", "root", "administrator"):
        store.attempt_sign_in(name, PASSWORD, source="2001:db8:1:2::10")
    # an IPv6 host holds its whole /64: another address in it is the same source
    assert store.attempt_sign_in("root", PASSWORD, source="2001:db8:1:2:ffff::1").failure.startswith("throttled")
    assert store.attempt_sign_in("root", PASSWORD, source="2001:db8:1:3::10").failure == "unknown user"


def test_unlock_clears_one_source_or_all(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.ONCOLOGIST, PASSWORD)
    for source in ("10.0.0.66", "10.0.0.67"):
        for _ in range(3):
            store.attempt_sign_in("alice", "wrong password!", source=source)
    assert [state.source for state in store.throttle.active(clock.now)] == ["10.0.0.66", "10.0.0.67"]
    assert store.throttle.clear("10.0.0.66") == 1
    assert store.authenticate("alice", PASSWORD, source="10.0.0.66").name == "alice"
    assert store.attempt_sign_in("alice", PASSWORD, source="10.0.0.67").throttled_until is not None
    assert store.throttle.clear() == 1
    assert store.authenticate("alice", PASSWORD, source="10.0.0.67").name == "alice"
    assert store.throttle.active(clock.now) == []


def test_zero_max_failures_never_throttles(archive: Archive, clock: FrozenClock):
    store = UserStore(archive.index, LockoutPolicy(max_failures=0), clock=clock, hasher=FAST_HASHER)
    store.add_user("alice", Role.REFERRER, PASSWORD)
    for _ in range(6):
        assert store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66").throttled_until is None
    assert store.authenticate("alice", PASSWORD, source="10.0.0.66").name == "alice"


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


def test_a_one_time_code_is_accepted_once(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    generator = pyotp.TOTP(store.enable_totp("alice").secret)
    code = generator.at(clock.now)
    assert store.authenticate("alice", PASSWORD, code).name == "alice"
    replay = store.attempt_sign_in("alice", PASSWORD, code, source="10.0.0.7")
    assert not replay.ok and replay.failure == "one-time code already used" and replay.message == GENERIC_FAILURE
    clock.advance(seconds=20)  # the same 30-second step: the code is still valid, and still refused
    assert store.attempt_sign_in("alice", PASSWORD, code).failure == "one-time code already used"
    older = generator.at(clock.now, counter_offset=-1)  # within the accepted drift, never used, but older
    assert store.attempt_sign_in("alice", PASSWORD, older).failure == "one-time code already used"
    clock.advance(seconds=10)  # the next step
    assert store.authenticate("alice", PASSWORD, generator.at(clock.now)).name == "alice"
    assert store.get("alice").failed_logins == 0


def test_a_new_second_factor_starts_its_steps_afresh(store: UserStore, clock: FrozenClock):
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    first = pyotp.TOTP(store.enable_totp("alice").secret)
    assert store.authenticate("alice", PASSWORD, first.at(clock.now)).name == "alice"
    second = pyotp.TOTP(store.enable_totp("alice").secret)
    assert store.authenticate("alice", PASSWORD, second.at(clock.now)).name == "alice"


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


def test_tokens_are_not_throttled(store: UserStore):
    store.add_user("alice", Role.PHYSICIST, PASSWORD)
    token = store.create_token("alice")
    for _ in range(3):
        store.attempt_sign_in("alice", "wrong password!", source="10.0.0.66")
    assert store.check_token(token).name == "alice"
