"""Browser sessions kept in the index, so that one can be ended: a sign-out holds on every node.

A session's id is 256 random bits (``secrets.token_urlsafe(32)``) that only the browser's cookie carries; its row
keeps the id's SHA-256, so a copy of the index opens no session. A row is never revived: it ends once (a sign-out,
a timeout, a password or role change, a disabled account) with the time and the reason. The idle and absolute
limits are the web layer's policy; this store only keeps the times (UTC) they are judged by.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from oncopacs.auth.models import WebSession
from oncopacs.index.db import IndexDatabase

log = logging.getLogger(__name__)

#: Rows of a user's sessions that began longer ago than this are deleted when the user next signs in.
RETENTION = timedelta(days=30)

# Why a session ended (``web_sessions.ended_reason``).
SIGNED_OUT = "signed out"
IDLE = "idle timeout"
EXPIRED = "maximum session length"
PASSWORD_CHANGED = "password changed"
ROLE_CHANGED = "role changed"
DISABLED = "user disabled"
CREDENTIALS_CHANGED = "credentials changed"

_SELECT = select(WebSession.username, WebSession.credential_stamp, WebSession.signed_in, WebSession.last_seen,
                 WebSession.ended_at, WebSession.ended_reason)


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session: ``session_id`` goes into the cookie this once and is never stored."""

    session_id: str
    username: str
    signed_in: datetime


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored (UTC times); ``ended_at`` is None while it is open."""

    username: str
    credential_stamp: str
    signed_in: datetime
    last_seen: datetime
    ended_at: datetime | None
    ended_reason: str | None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


def session_sha256(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def end_sessions_of(session: Session, username: str, reason: str, now: datetime) -> int:
    """End every open session of ``username`` inside the caller's transaction; how many were open."""
    ended = session.execute(
        update(WebSession)
        .where(WebSession.username == username, WebSession.ended_at.is_(None))
        .values(ended_at=now, ended_reason=reason)
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]  # an UPDATE's CursorResult


class WebSessionStore:
    """Browser sessions in the index database, shared by every node that opens it."""

    def __init__(self, index: IndexDatabase, clock: Callable[[], datetime]):
        self.index = index
        self.clock = clock

    def start(self, username: str, credential_stamp: str) -> OpenedSession:
        """Open a session for ``username`` (whose password has ``credential_stamp``); old rows of theirs go."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with self.index.writing() as session:
            session.execute(delete(WebSession).where(WebSession.username == username,
                                                     WebSession.signed_in < now - RETENTION))
            session.add(WebSession(session_sha256=session_sha256(session_id), username=username,
                                   credential_stamp=credential_stamp, signed_in=now, last_seen=now))
        return OpenedSession(session_id, username, now)

    def find(self, session_id: str) -> SessionRecord | None:
        """The session with this id, open or ended; None if there is none."""
        with self.index.read_connection() as connection:
            row = connection.execute(_SELECT.where(WebSession.session_sha256 == session_sha256(session_id))).first()
        if row is None:
            return None
        return SessionRecord(row.username, row.credential_stamp, _aware(row.signed_in), _aware(row.last_seen),
                             _aware(row.ended_at) if row.ended_at is not None else None, row.ended_reason)

    def touch(self, session_id: str) -> None:
        """Note activity on an open session now (bookkeeping: a failed write is logged, the request goes on)."""
        try:
            with self.index.writing() as session:
                session.execute(
                    update(WebSession)
                    .where(WebSession.session_sha256 == session_sha256(session_id), WebSession.ended_at.is_(None))
                    .values(last_seen=self.clock())
                )
        except (SQLAlchemyError, OSError) as exc:  # e.g. a full disk: the session may time out early, never late
            log.warning("could not note a session's activity: %s", exc.__class__.__name__)

    def end(self, session_id: str, reason: str) -> bool:
        """End the session with this id; False if it was already ended (or never existed)."""
        with self.index.writing() as session:
            ended = session.execute(
                update(WebSession)
                .where(WebSession.session_sha256 == session_sha256(session_id), WebSession.ended_at.is_(None))
                .values(ended_at=self.clock(), ended_reason=reason)
            )
        return bool(ended.rowcount)  # type: ignore[attr-defined]  # an UPDATE's CursorResult

    def end_all(self, username: str, reason: str) -> int:
        """End every open session of ``username``; how many were open."""
        with self.index.writing() as session:
            return end_sessions_of(session, username, reason, self.clock())
