"""The delivery log: one row per message to one destination, with its attempts, ACK and next retry.

A delivery is *claimed* before its message goes out (status ``sent``, attempt counted, a lease in
``next_attempt_at``) and its outcome recorded after: acknowledged, rejected (not retried: the
receiver refused the content), or back to ``pending`` with an exponential back-off; ``failed``
once the attempts are used up. A process that dies while a message is in flight leaves the row
``sent`` with an expired lease, so the next run sends it again with the same message control ID,
which lets the receiver drop the duplicate. Nothing is ever deleted; a re-send by hand is a new row.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from oncopacs.errors import NotFoundError
from oncopacs.index.db import IndexDatabase
from oncopacs.reports.models import Report, ReportDelivery


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"  # in flight: waiting for the ACK (or for the lease to expire after a crash)
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    FAILED = "failed"


class Destination(str, enum.Enum):
    HL7 = "hl7"
    FHIR = "fhir"


FINISHED = (DeliveryStatus.ACKNOWLEDGED, DeliveryStatus.REJECTED, DeliveryStatus.FAILED)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how fast to retry: delay base * 2^(attempt-1) s, capped; lease while in flight, s."""

    max_attempts: int = 8
    base_delay_s: float = 30.0
    max_delay_s: float = 3600.0
    lease_s: float = 120.0

    def delay_after(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.base_delay_s * 2 ** max(attempts - 1, 0), self.max_delay_s))


class OutcomeKind(str, enum.Enum):
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"  # permanent: do not resend without a fix (HL7 AR, HTTP 4xx)
    RETRY = "retry"  # transient: HL7 AE, timeout, dropped connection, HTTP 5xx


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one attempt came to: its kind, the ACK code (or HTTP status) and the error text."""

    kind: OutcomeKind
    ack_code: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    report_id: int
    destination: Destination
    endpoint: str
    status: DeliveryStatus
    message_control_id: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str
    ack_code: str
    created_by: str
    created_at: datetime
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {
            "delivery_id": self.id, "report_id": self.report_id, "destination": self.destination.value,
            "endpoint": self.endpoint, "status": self.status.value, "message_control_id": self.message_control_id,
            "attempts": self.attempts, "next_attempt_at": iso(self.next_attempt_at),
            "last_attempt_at": iso(self.last_attempt_at), "last_error": self.last_error or None,
            "ack_code": self.ack_code or None, "created_by": self.created_by, "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
        }


@overload
def _aware(moment: datetime) -> datetime: ...
@overload
def _aware(moment: None) -> None: ...
@overload
def _aware(moment: datetime | None) -> datetime | None: ...
def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _record(row: ReportDelivery) -> DeliveryRecord:
    return DeliveryRecord(
        row.id, row.report_id, Destination(row.destination), row.endpoint, DeliveryStatus(row.status),
        row.message_control_id, row.attempts, _aware(row.next_attempt_at), _aware(row.last_attempt_at),
        row.last_error, row.ack_code, row.created_by, _aware(row.created_at), _aware(row.finished_at),
    )


def new_message_control_id() -> str:
    """A unique MSH-10 / FHIR identifier of 20 characters, fixed for the life of one delivery."""
    return "OP" + secrets.token_hex(9).upper()


def create_deliveries(session: Session, report_id: int, destinations: Iterable[tuple[str, str]], *,
                      created_by: str, now: datetime) -> list[ReportDelivery]:
    """Add one pending delivery per ``(destination kind, endpoint)`` in the caller's transaction."""
    rows = [
        ReportDelivery(report_id=report_id, destination=Destination(kind).value, endpoint=endpoint,
                       status=DeliveryStatus.PENDING.value, message_control_id=new_message_control_id(),
                       attempts=0, next_attempt_at=now, last_error="", ack_code="", created_by=created_by,
                       created_at=now)
        for kind, endpoint in destinations
    ]
    session.add_all(rows)
    session.flush()
    return rows


class DeliveryLog:
    """The deliveries of one index."""

    def __init__(self, index: IndexDatabase, policy: RetryPolicy | None = None):
        self.index = index
        self.policy = policy or RetryPolicy()

    def get(self, delivery_id: int) -> DeliveryRecord:
        with self.index.reading() as session:
            row = session.get(ReportDelivery, delivery_id)
            if row is None:
                raise NotFoundError(f"delivery {delivery_id} does not exist")
            return _record(row)

    def for_report(self, report_id: int) -> list[DeliveryRecord]:
        with self.index.reading() as session:
            rows = session.scalars(select(ReportDelivery).where(ReportDelivery.report_id == report_id)
                                   .order_by(ReportDelivery.id))
            return [_record(row) for row in rows]

    def resend(self, report_id: int, destinations: Iterable[tuple[str, str]], *, created_by: str,
               now: datetime) -> list[DeliveryRecord]:
        """New pending deliveries of a final report (a re-send by hand), each with a new control ID."""
        with self.index.writing() as session:
            report = session.get(Report, report_id)
            if report is None:
                raise NotFoundError(f"report {report_id} does not exist")
            if report.status == "draft":
                raise ValueError(f"report {report_id} is a draft; approve it before sending")
            return [_record(row) for row in create_deliveries(session, report_id, destinations,
                                                                created_by=created_by, now=now)]

    def make_due(self, report_id: int, now: datetime) -> int:
        """Bring the report's pending deliveries forward to ``now`` (a send by hand); how many."""
        with self.index.writing() as session:
            rows = list(session.scalars(select(ReportDelivery).where(
                ReportDelivery.report_id == report_id, ReportDelivery.status == DeliveryStatus.PENDING.value)))
            for row in rows:
                row.next_attempt_at = now
            return len(rows)

    def claim_due(self, now: datetime, *, report_id: int | None = None, limit: int = 20) -> list[DeliveryRecord]:
        """Take deliveries whose time has come (pending, or in flight with an expired lease) and count an attempt."""
        statement = (
            select(ReportDelivery)
            .where(ReportDelivery.status.in_((DeliveryStatus.PENDING.value, DeliveryStatus.SENT.value)),
                   or_(ReportDelivery.next_attempt_at.is_(None), ReportDelivery.next_attempt_at <= now))
            .order_by(ReportDelivery.next_attempt_at, ReportDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if report_id is not None:
            statement = statement.where(ReportDelivery.report_id == report_id)
        lease = timedelta(seconds=self.policy.lease_s)
        with self.index.writing() as session:
            rows = list(session.scalars(statement))
            for row in rows:
                row.status = DeliveryStatus.SENT.value
                row.attempts += 1
                row.last_attempt_at = now
                row.next_attempt_at = now + lease
            session.flush()
            return [_record(row) for row in rows]

    def record(self, delivery_id: int, outcome: DeliveryOutcome, now: datetime) -> DeliveryRecord:
        """Record the outcome of the attempt in flight: finished, or pending again after the back-off."""
        with self.index.writing() as session:
            row = session.get(ReportDelivery, delivery_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"delivery {delivery_id} does not exist")
            row.ack_code = outcome.ack_code[:8]
            row.last_error = outcome.error
            if outcome.kind is OutcomeKind.ACKNOWLEDGED:
                row.status, row.next_attempt_at, row.finished_at = DeliveryStatus.ACKNOWLEDGED.value, None, now
            elif outcome.kind is OutcomeKind.REJECTED:
                row.status, row.next_attempt_at, row.finished_at = DeliveryStatus.REJECTED.value, None, now
            elif row.attempts >= self.policy.max_attempts:
                row.status, row.next_attempt_at, row.finished_at = DeliveryStatus.FAILED.value, None, now
                row.last_error = f"gave up after {row.attempts} attempt(s): {outcome.error}"
            else:
                row.status = DeliveryStatus.PENDING.value
                row.next_attempt_at = now + self.policy.delay_after(row.attempts)
            session.flush()
            return _record(row)

    def next_due_at(self) -> datetime | None:
        """When the earliest unfinished delivery is due (None: nothing left to send)."""
        with self.index.reading() as session:
            moment = session.scalar(
                select(ReportDelivery.next_attempt_at)
                .where(ReportDelivery.status.in_((DeliveryStatus.PENDING.value, DeliveryStatus.SENT.value)))
                .order_by(ReportDelivery.next_attempt_at).limit(1))
            return _aware(moment)
