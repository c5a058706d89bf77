"""Users and API tokens: creating them, and checking passwords and tokens into a :class:`Principal`.

Passwords are hashed with Argon2id (memory-hard; argon2-cffi's defaults). Tokens are 256-bit random
strings shown once; only their SHA-256 is stored, so a stolen index reveals none.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from oncopacs.auth.models import ApiToken, User
from oncopacs.auth.roles import Principal, Role, parse_role
from oncopacs.errors import AuthenticationError, NotFoundError
from oncopacs.index.db import IndexDatabase

TOKEN_PREFIX = "opx_"
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str
    role: Role
    has_totp: bool
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _info(user: User) -> UserInfo:
    return UserInfo(user.username, Role(user.role), user.totp_secret is not None, user.disabled, user.locked_until, user.created_at)


class UserStore:
    """Users and tokens kept in the index database."""

    def __init__(self, index: IndexDatabase):
        self.index = index

    def add_user(self, username: str, role: Role | str, password: str) -> UserInfo:
        """Create a user; ValueError when the name is taken or the password too short."""
        role = role if isinstance(role, Role) else parse_role(role)
        username = username.strip()
        if not username or len(username) > 64:
            raise ValueError("a user name must be 1-64 characters")
        if len(password) < 8:
            raise ValueError("a password must have at least 8 characters")
        with self.index.writing() as session:
            if session.scalars(select(User).where(User.username == username)).first() is not None:
                raise ValueError(f"user {username!r} already exists")
            user = User(username=username, role=role.value, password_hash=hash_password(password), failed_logins=0, disabled=False, created_at=_now())
            session.add(user)
            session.flush()
            return _info(user)

    def get(self, username: str) -> UserInfo:
        with self.index.reading() as session:
            user = session.scalars(select(User).where(User.username == username)).first()
            if user is None:
                raise NotFoundError(f"no user {username!r}")
            return _info(user)

    def list_users(self) -> list[UserInfo]:
        with self.index.reading() as session:
            return [_info(user) for user in session.scalars(select(User).order_by(User.username))]

    def check_password(self, username: str, password: str) -> Principal:
        """The principal for a correct password; AuthenticationError otherwise (no lock-out bookkeeping)."""
        with self.index.reading() as session:
            user = session.scalars(select(User).where(User.username == username)).first()
        if user is None or user.disabled:
            _hasher_dummy_verify(password)  # same cost whether or not the user exists
            raise AuthenticationError("unknown user or wrong password")
        try:
            _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise AuthenticationError("unknown user or wrong password") from None
        return Principal(user.username, Role(user.role), "password")

    def create_token(self, username: str, label: str = "") -> str:
        """A new API token for ``username`` (returned once, stored only as its hash)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.index.writing() as session:
            user = session.scalars(select(User).where(User.username == username)).first()
            if user is None:
                raise NotFoundError(f"no user {username!r}")
            session.add(ApiToken(user_pk=user.id, label=label, token_sha256=token_sha256(token), created_at=_now()))
        return token

    def check_token(self, token: str) -> Principal:
        """The principal of a valid, unrevoked token; AuthenticationError otherwise."""
        with self.index.reading() as session:
            row = session.execute(
                select(User.username, User.role, User.disabled, ApiToken.revoked_at)
                .join(ApiToken, ApiToken.user_pk == User.id)
                .where(ApiToken.token_sha256 == token_sha256(token))
            ).first()
        if row is None or row.revoked_at is not None or row.disabled:
            raise AuthenticationError("unknown or revoked token")
        return Principal(row.username, Role(row.role), "token")


_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))


def _hasher_dummy_verify(password: str) -> None:
    try:
        _hasher.verify(_DUMMY_HASH, password)
    except VerificationError:
        pass
