"""Throttling password sign-ins per source address, so that nobody can lock anybody else out.

After ``LockoutPolicy.max_failures`` failed sign-ins from one source within ``lockout_minutes``, that source
is refused without a password check for ``lockout_minutes`` (HTTP 429 with Retry-After); the accounts it
tried stay open from everywhere else. A source is an IPv4 address, or the /64 of an IPv6 address (one host
usually holds a whole /64). A good sign-in does not clear a source's count (an attacker with one valid
account could otherwise reset it between guesses); ``oncopacs user unlock --address/--all`` does.

The counts live in the index, so they survive a restart and are shared by every process on the index;
each failure is one small write transaction (serialized per source by a row lock, or SQLite's write lock).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import overload

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.orm import Session

from oncopacs.auth.models import SignInThrottle
from oncopacs.index.db import IndexDatabase

IPV6_PREFIX = 64
_INSERT_ATTEMPTS = 2  # two first failures of one source at once on PostgreSQL: one insert wins, the other retries


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """How many failed sign-ins from one source within ``lockout_minutes`` throttle it (0: never), and for how long."""

    max_failures: int = 5
    lockout_minutes: int = 15

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.lockout_minutes)


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """One source's failed sign-ins in its current window, and until when it is refused (None: it is not)."""

    source: str
    failures: int
    throttled_until: datetime | None
    newly_throttled: bool = False

    def retry_after_seconds(self, now: datetime) -> int:
        """Whole seconds until the source may try again (0 when it may now)."""
        if self.throttled_until is None:
            return 0
        return max(0, math.ceil((self.throttled_until - now).total_seconds()))

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "failures": self.failures,
            "throttled_until": self.throttled_until.isoformat() if self.throttled_until else None,
        }


def source_key(address: str) -> str:
    """The throttled unit of ``address``: an IPv4 address, an IPv6 /64 (``2001:db8::/64``), else the text itself.

    ValueError for an empty address.
    """
    text = address.strip()
    if not text:
        raise ValueError("an empty source address")
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names no other host
    except ValueError:
        return text[:64]  # a proxy's or socket's own name: throttled as given
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _state(row: SignInThrottle, newly_throttled: bool = False) -> ThrottleState:
    return ThrottleState(row.source, row.failures, _aware(row.throttled_until), newly_throttled)


class SignInThrottleStore:
    """The per-source counts in the index. Times are UTC and passed in (the caller's clock)."""

    def __init__(self, index: IndexDatabase, policy: LockoutPolicy):
        self.index = index
        self.policy = policy

    def throttled_until(self, address: str, now: datetime) -> datetime | None:
        """Until when ``address``'s source is refused; None when it may sign in now."""
        with self.index.reading() as session:
            until = session.scalar(select(SignInThrottle.throttled_until)
                                   .where(SignInThrottle.source == source_key(address)))
        until = _aware(until)
        return until if until is not None and until > now else None

    def record_failure(self, address: str, now: datetime) -> ThrottleState:
        """Count one failed sign-in from ``address``; the source's state after it (``newly_throttled`` once)."""
        key = source_key(address)
        for attempt in range(1, _INSERT_ATTEMPTS + 1):
            try:
                with self.index.writing() as session:
                    return self._count(session, key, now)
            except SqlIntegrityError:
                if attempt == _INSERT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, session: Session, key: str, now: datetime) -> ThrottleState:
        row = session.get(SignInThrottle, key, with_for_update=True)
        if row is None:
            self._forget_expired(session, now)
            row = SignInThrottle(source=key, failures=0, window_started_at=now, throttled_until=None)
            session.add(row)
        until = _aware(row.throttled_until)
        if until is not None and until > now:
            return _state(row)  # refused before any password check: nothing more to count
        if until is not None or now - _aware(row.window_started_at) >= self.policy.window:
            row.failures, row.window_started_at, row.throttled_until = 0, now, None
        row.failures += 1
        if not self.policy.max_failures or row.failures < self.policy.max_failures:
            return _state(row)
        row.throttled_until = now + self.policy.window
        return _state(row, newly_throttled=True)

    def _forget_expired(self, session: Session, now: datetime) -> None:
        """Drop sources whose window and throttle are both over (keeps the table as small as the attack)."""
        cutoff = now - self.policy.window
        session.execute(delete(SignInThrottle).where(
            SignInThrottle.window_started_at < cutoff,
            or_(SignInThrottle.throttled_until.is_(None), SignInThrottle.throttled_until < now),
        ))

    def active(self, now: datetime) -> list[ThrottleState]:
        """The sources refused now, and those with failures in their current window, by source."""
        cutoff = now - self.policy.window
        with self.index.reading() as session:
            rows = session.scalars(select(SignInThrottle).where(or_(
                SignInThrottle.throttled_until > now, SignInThrottle.window_started_at >= cutoff,
            )).order_by(SignInThrottle.source))
            return [_state(row) for row in rows]

    def clear(self, address: str | None = None) -> int:
        """Forget the failures of ``address``'s source (None: of every source); how many sources were cleared."""
        with self.index.writing() as session:
            query = delete(SignInThrottle)
            if address is not None:
                query = query.where(SignInThrottle.source == source_key(address))
            return session.execute(query).rowcount or 0  # type: ignore[attr-defined]  # a DELETE's CursorResult
