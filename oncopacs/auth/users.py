"""Users and API tokens: creating and changing them, and checking credentials into a :class:`Principal`.

Passwords are hashed with Argon2id (memory-hard; argon2-cffi's defaults). Tokens are 256-bit random
strings shown once; only their SHA-256 is stored, so a stolen index reveals none.

Accounts never lock: failed sign-ins are throttled per source address (:mod:`oncopacs.auth.throttle`), so a
password guesser is slowed down without being able to shut a user, the administrator included, out from
everywhere. The user's row only counts failures since the last good sign-in, for the administrator to see. A
user with a TOTP secret must also give a one-time code, each accepted once. Tokens are not throttled (256
random bits are not guessed), only revoked or disabled. Browser sessions live in the index
(:mod:`oncopacs.auth.sessions`); a new password, a new role or a disabled account ends all of the user's at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import overload

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from oncopacs.auth import sessions, totp
from oncopacs.auth.models import ApiToken, User
from oncopacs.auth.roles import Principal, Role, parse_role
from oncopacs.auth.sessions import WebSessionStore, end_sessions_of
from oncopacs.auth.throttle import LockoutPolicy, SignInThrottleStore, ThrottleState, source_key
from oncopacs.errors import AuthenticationError, NotFoundError, StorageError
from oncopacs.index.db import IndexDatabase

log = logging.getLogger(__name__)

TOKEN_PREFIX = "opx_"
MIN_PASSWORD_LENGTH = 8
TOKEN_USE_RESOLUTION = timedelta(hours=1)  # last_used_at is refreshed at most this often (saves a write per request)
GENERIC_FAILURE = "unknown user, wrong password or wrong one-time code"

Clock = Callable[[], datetime]
_hasher = PasswordHasher()  # Argon2id, RFC 9106 "low memory" profile: 64 MiB, 3 passes, 4 lanes


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str
    role: Role
    has_totp: bool
    disabled: bool
    locked_until: datetime | None
    failed_logins: int
    created_at: datetime

    def to_dict(self) -> dict:
        return {
            "username": self.username,
            "role": self.role.value,
            "totp": self.has_totp,
            "disabled": self.disabled,
            "locked_until": self.locked_until.isoformat() if self.locked_until else None,
            "failed_logins": self.failed_logins,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An API token as listed (never the token itself)."""

    id: int
    username: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_dict(self) -> dict:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "username": self.username,
            "label": self.label,
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``token`` is shown this once and never stored."""

    id: int
    username: str
    label: str
    token: str


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of one password sign-in attempt.

    ``failure`` is empty on success, else the reason for the audit trail ("unknown user",
    "wrong password", "wrong one-time code", "one-time code already used", "disabled", "throttled…");
    ``message`` is what the person signing in is told (it names a throttled address, never which of name,
    password or code was wrong). ``throttle`` is the source's state when it is refused or was just throttled.
    """

    username: str
    principal: Principal | None
    failure: str = ""
    throttle: ThrottleState | None = None
    at: datetime | None = None  # when the attempt was judged (for Retry-After)

    @property
    def ok(self) -> bool:
        return self.principal is not None

    @property
    def throttled_until(self) -> datetime | None:
        """Until when the attempt's source is refused, when it is (this attempt may have been its last guess)."""
        return self.throttle.throttled_until if self.throttle is not None else None

    @property
    def retry_after_seconds(self) -> int:
        if self.throttle is None or self.at is None:
            return 0
        return self.throttle.retry_after_seconds(self.at)

    @property
    def message(self) -> str:
        until = self.throttled_until
        if until is not None:
            return (f"too many failed sign-ins from this address; try again after {until:%H:%M} UTC "
                    f"(in {max(1, -(-self.retry_after_seconds // 60))} min)")
        return GENERIC_FAILURE


@dataclass(frozen=True, slots=True)
class Standing:
    """What a session or a cached Basic credential needs to know about a user on each request."""

    principal: Principal
    credential_stamp: str  # changes when the password changes: sessions and cached credentials end


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _stamp(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


def _info(user: User) -> UserInfo:
    return UserInfo(user.username, Role(user.role), user.totp_secret is not None, user.disabled,
                    _aware(user.locked_until), user.failed_logins, _aware(user.created_at))


def _token_info(token: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(token.id, username, token.label, _aware(token.created_at), _aware(token.last_used_at),
                     _aware(token.revoked_at))


def _check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password must have at least {MIN_PASSWORD_LENGTH} characters")


def _find(session: Session, username: str, *, for_update: bool = False) -> User:
    query = select(User).where(User.username == username)
    user = session.scalars(query.with_for_update() if for_update else query).first()
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    return user


_STANDING = select(User.username, User.role, User.password_hash, User.disabled).where(
    User.username == bindparam("username")
)


class UserStore:
    """Users and tokens kept in the index database.

    ``clock`` (UTC) is injectable for tests, and so is ``hasher`` (Argon2 parameters for new hashes;
    a hash is always verified with the parameters it was made with). ``sessions`` keeps the browser sessions
    (on the same clock).
    """

    def __init__(self, index: IndexDatabase, policy: LockoutPolicy | None = None, clock: Clock = utc_now,
                 hasher: PasswordHasher = _hasher):
        self.index = index
        self.policy = policy or LockoutPolicy()
        self.throttle = SignInThrottleStore(index, self.policy)
        self.clock = clock
        self.hasher = hasher
        self.sessions = WebSessionStore(index, lambda: self.clock())  # follows a clock replaced later (tests)

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, username: str, role: Role | str, password: str) -> UserInfo:
        """Create a user; ValueError when the name is taken or the password too short."""
        role = role if isinstance(role, Role) else parse_role(role)
        username = username.strip()
        if not username or len(username) > 64 or ":" in username:
            raise ValueError("a user name must be 1-64 characters without ':'")
        _check_password_rules(password)
        with self.index.writing() as session:
            if session.scalars(select(User).where(User.username == username)).first() is not None:
                raise ValueError(f"user {username!r} already exists")
            user = User(username=username, role=role.value, password_hash=self.hasher.hash(password), failed_logins=0,
                        disabled=False, created_at=self.clock())
            session.add(user)
            session.flush()
            return _info(user)

    def exists(self, username: str) -> bool:
        with self.index.reading() as session:
            return session.scalars(select(User.id).where(User.username == username)).first() is not None

    def get(self, username: str) -> UserInfo:
        with self.index.reading() as session:
            return _info(_find(session, username))

    def list_users(self) -> list[UserInfo]:
        with self.index.reading() as session:
            return [_info(user) for user in session.scalars(select(User).order_by(User.username))]

    def set_role(self, username: str, role: Role | str) -> UserInfo:
        """Give ``username`` another role (ends their sessions); ValueError if that leaves no enabled administrator."""
        role = role if isinstance(role, Role) else parse_role(role)
        with self.index.writing() as session:
            user = _find(session, username, for_update=True)
            if role is not Role.ADMIN:
                self._keep_an_admin(session, user)
            if user.role != role.value:
                end_sessions_of(session, user.username, sessions.ROLE_CHANGED, self.clock())
            user.role = role.value
            return _info(user)

    def set_disabled(self, username: str, disabled: bool) -> UserInfo:
        """Disable (every credential refused, tokens included; sessions ended) or re-enable a user."""
        with self.index.writing() as session:
            user = _find(session, username, for_update=True)
            if disabled:
                self._keep_an_admin(session, user)
                end_sessions_of(session, user.username, sessions.DISABLED, self.clock())
            user.disabled = disabled
            return _info(user)

    def set_password(self, username: str, password: str) -> UserInfo:
        """Replace the password (ends the user's sessions) and forget the failed sign-ins."""
        _check_password_rules(password)
        password_hash = self.hasher.hash(password)
        with self.index.writing() as session:
            user = _find(session, username, for_update=True)
            user.password_hash, user.failed_logins, user.locked_until = password_hash, 0, None
            end_sessions_of(session, user.username, sessions.PASSWORD_CHANGED, self.clock())
            return _info(user)

    def unlock(self, username: str) -> UserInfo:
        """Forget the user's failed sign-ins, and end a lock-out left from a version that locked accounts."""
        with self.index.writing() as session:
            user = _find(session, username, for_update=True)
            user.failed_logins, user.locked_until = 0, None
            return _info(user)

    def enable_totp(self, username: str) -> totp.TotpEnrollment:
        """Give ``username`` a new TOTP secret (replacing any old one); sign-ins then need its codes."""
        enrollment = totp.new_enrollment(username)
        with self.index.writing() as session:
            user = _find(session, username, for_update=True)
            user.totp_secret, user.totp_last_step = enrollment.secret, None
        return enrollment

    def disable_totp(self, username: str) -> UserInfo:
        with self.index.writing() as session:
            user = _find(session, username, for_update=True)
            user.totp_secret, user.totp_last_step = None, None
            return _info(user)

    @cached_property
    def _dummy_hash(self) -> str:
        return self.hasher.hash(secrets.token_hex(8))

    def _dummy_verify(self, password: str) -> None:
        with contextlib.suppress(VerificationError):
            self.hasher.verify(self._dummy_hash, password)

    @staticmethod
    def _keep_an_admin(session: Session, user: User) -> None:
        if user.role != Role.ADMIN.value or user.disabled:
            return
        others = session.scalar(
            select(func.count(User.id)).where(
                User.role == Role.ADMIN.value, User.disabled.is_(False), User.id != user.id
            )
        )
        if not others:
            raise ValueError(f"{user.username!r} is the last enabled administrator")

    # -- sign-in -------------------------------------------------------------------------------

    def attempt_sign_in(self, username: str, password: str, one_time_code: str | None = None, *,
                        source: str | None = None) -> SignIn:
        """Check a password (and the TOTP code when the user has one) tried from address ``source``.

        With ``source``, a throttled source is refused before any check, and each failure counts against
        it (:class:`~oncopacs.auth.throttle.SignInThrottleStore`); without it (the console) nothing is throttled.
        """
        now = self.clock()
        if source:
            until = self.throttle.throttled_until(source, now)
            if until is not None:  # no password check: a flood of refusals costs no Argon2 time
                state = ThrottleState(source_key(source), 0, until)
                return SignIn(username, None, f"throttled: source refused until {until:%H:%M:%S} UTC", state, now)
        with self.index.reading() as session:
            user = session.scalars(select(User).where(User.username == username)).first()
        if user is None or user.disabled:
            self._dummy_verify(password)  # same cost whether or not the user exists
            return self._count_failure(username, "unknown user" if user is None else "disabled", source, now)
        try:
            self.hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return self._count_failure(username, "wrong password", source, now, user.id)
        if user.totp_secret is not None:
            if not one_time_code:  # not counted: nothing was guessed (Basic clients of such users must use tokens)
                return SignIn(username, None, "one-time code missing", at=now)
            step = totp.matching_step(user.totp_secret, one_time_code, now)
            if step is None:
                return self._count_failure(username, "wrong one-time code", source, now, user.id)
            if not self._claim_step(user.id, step):
                return self._count_failure(username, "one-time code already used", source, now, user.id)
        elif user.failed_logins or user.locked_until is not None:
            self._forget_failures(user.id)
        return SignIn(username, Principal(user.username, Role(user.role), "password"), at=now)

    def _claim_step(self, user_pk: int, step: int) -> bool:
        """Record ``step`` as the user's last accepted TOTP step unless it (or a later one) already was."""
        try:
            with self.index.writing() as session:
                claimed = session.execute(
                    update(User)
                    .where(User.id == user_pk, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
                    .values(totp_last_step=step, failed_logins=0, locked_until=None)
                )
        except (SQLAlchemyError, OSError) as exc:  # a code that cannot be marked used must not be accepted (replays)
            raise StorageError(f"the index cannot record a one-time code's use: {exc.__class__.__name__}") from exc
        return bool(claimed.rowcount)  # type: ignore[attr-defined]  # an UPDATE's CursorResult

    def _forget_failures(self, user_pk: int) -> None:
        try:
            with self.index.writing() as session:
                session.execute(update(User).where(User.id == user_pk).values(failed_logins=0, locked_until=None))
        except (SQLAlchemyError, OSError) as exc:  # bookkeeping only (e.g. the disk is full): the sign-in stands
            log.warning("could not reset the failed sign-in count of user %d: %s", user_pk, exc.__class__.__name__)

    def _count_failure(self, username: str, failure: str, source: str | None, now: datetime,
                       user_pk: int | None = None) -> SignIn:
        """Count a failure against the user's row (for display) and the source (throttling)."""
        state = None
        try:
            if user_pk is not None:
                with self.index.writing() as session:
                    session.execute(update(User).where(User.id == user_pk)
                                    .values(failed_logins=User.failed_logins + 1))
            if source:
                state = self.throttle.record_failure(source, now)
        except (SQLAlchemyError, OSError) as exc:  # e.g. the disk is full: the attempt is refused all the same
            log.warning("could not count a failed sign-in: %s", exc.__class__.__name__)
        if state is not None and state.newly_throttled:
            note = (f"{failure}; source {state.source} throttled for {self.policy.lockout_minutes} min "
                    f"after {self.policy.max_failures} failed sign-ins")
            return SignIn(username, None, note, state, now)
        return SignIn(username, None, failure, at=now)

    def authenticate(self, username: str, password: str, one_time_code: str | None = None, *,
                     source: str | None = None) -> Principal:
        """The principal for a good sign-in; AuthenticationError otherwise."""
        attempt = self.attempt_sign_in(username, password, one_time_code, source=source)
        if attempt.principal is not None:
            return attempt.principal
        raise AuthenticationError(attempt.message)

    def standing(self, username: str) -> Standing | None:
        """The current role and password stamp of an enabled user; None if unknown or disabled."""
        with self.index.read_connection() as connection:
            user = connection.execute(_STANDING.params(username=username)).first()
        if user is None or user.disabled:
            return None
        return Standing(Principal(user.username, Role(user.role), "session"), _stamp(user.password_hash))

    # -- tokens --------------------------------------------------------------------------------

    def issue_token(self, username: str, label: str = "") -> IssuedToken:
        """A new API token for ``username`` (its text returned once, stored only as its hash)."""
        if len(label) > 64:
            raise ValueError("a token label must be at most 64 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.index.writing() as session:
            user = _find(session, username)
            row = ApiToken(user_pk=user.id, label=label, token_sha256=token_sha256(token), created_at=self.clock())
            session.add(row)
            session.flush()
            return IssuedToken(row.id, username, label, token)

    def create_token(self, username: str, label: str = "") -> str:
        """The text of a new API token for ``username``."""
        return self.issue_token(username, label).token

    def list_tokens(self, username: str) -> list[TokenInfo]:
        with self.index.reading() as session:
            user = _find(session, username)
            rows = session.scalars(select(ApiToken).where(ApiToken.user_pk == user.id).order_by(ApiToken.id))
            return [_token_info(row, username) for row in rows]

    def revoke_token(self, token_id: int, username: str | None = None) -> TokenInfo:
        """Revoke token ``token_id`` (of ``username`` when given); NotFoundError if there is no such token."""
        with self.index.writing() as session:
            query = (
                select(ApiToken, User.username).join(User, ApiToken.user_pk == User.id).where(ApiToken.id == token_id)
            )
            if username is not None:
                query = query.where(User.username == username)
            row = session.execute(query).first()
            if row is None:
                raise NotFoundError(f"no token {token_id}" + (f" of user {username!r}" if username else ""))
            token, owner = row
            if token.revoked_at is None:
                token.revoked_at = self.clock()
            return _token_info(token, owner)

    def check_token(self, token: str) -> Principal:
        """The principal of a valid, unrevoked token of an enabled user; AuthenticationError otherwise."""
        with self.index.reading() as session:
            row = session.execute(
                select(User.username, User.role, User.disabled, ApiToken.id, ApiToken.revoked_at, ApiToken.last_used_at)
                .join(ApiToken, ApiToken.user_pk == User.id)
                .where(ApiToken.token_sha256 == token_sha256(token))
            ).first()
        if row is None or row.revoked_at is not None or row.disabled:
            raise AuthenticationError("unknown or revoked token")
        now = self.clock()
        last_used = _aware(row.last_used_at)
        if last_used is None or now - last_used >= TOKEN_USE_RESOLUTION:
            try:
                with self.index.writing() as session:  # an UPDATE: a token deleted meanwhile changes no row
                    session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
            except (SQLAlchemyError, OSError) as exc:  # bookkeeping only: a full disk must not stop machine clients
                log.warning("could not note the use of token %d: %s", row.id, exc.__class__.__name__)
        return Principal(row.username, Role(row.role), "token")

