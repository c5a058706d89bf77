"""The HL7 message log (``hl7_messages``): every message the listener read, and the ACK it answered.

A message is recorded before its handler runs (so the handler can refer to it, e.g. a demographics update names the
message that caused it) with an empty outcome, then :meth:`MessageLog.finish` sets AA, AE or AR and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update

from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import Hl7MessageLog

REASON_CHARS = 500  # the column's width


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One row of the log; ``raw`` is only filled when asked for (it holds patient data)."""

    id: int
    received_at: datetime
    peer: str
    sending_application: str
    sending_facility: str
    message_type: str
    control_id: str
    outcome: str  # AA, AE, AR, or empty while its handler runs
    reason: str
    size: int  # bytes as received
    raw: str | None = None

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = {
            "id": self.id, "received_at": self.received_at.isoformat(), "peer": self.peer,
            "sending_application": self.sending_application, "sending_facility": self.sending_facility,
            "message_type": self.message_type, "control_id": self.control_id, "outcome": self.outcome,
            "reason": self.reason, "size": self.size,
        }
        if self.raw is not None:
            values["raw"] = self.raw
        return values


@dataclass(frozen=True, slots=True)
class MessagePage:
    """A page of the log, newest first, and how many rows match in all."""

    total: int
    limit: int
    offset: int
    messages: tuple[LoggedMessage, ...]

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total, "limit": self.limit, "offset": self.offset,
                "messages": [m.to_dict() for m in self.messages]}


class MessageLog:
    """Reads and writes ``hl7_messages`` of one index database."""

    def __init__(self, index: IndexDatabase):
        self.index = index

    def record(self, *, peer: str, sending_application: str = "", sending_facility: str = "",
               message_type: str = "", control_id: str = "", raw: str = "", size: int = 0,
               outcome: str = "", reason: str = "") -> int:
        """Insert one message, committed at once; its id. NULs (PostgreSQL text refuses them) become U+FFFD."""
        row = Hl7MessageLog(
            received_at=datetime.now(UTC), peer=_text(peer, 128), sending_application=_text(sending_application, 180),
            sending_facility=_text(sending_facility, 180), message_type=_text(message_type, 32),
            control_id=_text(control_id, 64), outcome=outcome, reason=_text(reason, REASON_CHARS), size=size,
            raw=_text(raw),
        )
        with self.index.writing() as session:
            session.add(row)
            session.flush()
            return row.id

    def finish(self, message_pk: int, outcome: str, reason: str = "") -> None:
        """Set the ACK code a logged message was answered with, and why (no patient data)."""
        with self.index.writing() as session:
            session.execute(update(Hl7MessageLog).where(Hl7MessageLog.id == message_pk)
                            .values(outcome=outcome, reason=reason[:REASON_CHARS]))

    def query(self, *, outcome: str | None = None, message_type: str | None = None, limit: int = 100,
              offset: int = 0) -> MessagePage:
        """Messages newest first, optionally only one outcome (AA, AE, AR) or type (``ADT`` or ``ADT^A08``)."""
        conditions = []
        if outcome:
            conditions.append(Hl7MessageLog.outcome == outcome)
        if message_type:
            conditions.append(Hl7MessageLog.message_type == message_type if "^" in message_type
                              else Hl7MessageLog.message_type.like(f"{message_type}^%"))
        columns = [c for c in Hl7MessageLog.__table__.columns if c.name != "raw"]
        with self.index.reading() as session:
            total = session.scalar(select(func.count()).select_from(Hl7MessageLog).where(*conditions)) or 0
            rows = session.execute(select(*columns).where(*conditions)
                                   .order_by(Hl7MessageLog.id.desc()).limit(limit).offset(offset)).all()
        return MessagePage(total, limit, offset, tuple(LoggedMessage(**row._asdict()) for row in rows))

    def get(self, message_pk: int) -> LoggedMessage | None:
        """One message with its raw text, or None."""
        with self.index.reading() as session:
            row = session.get(Hl7MessageLog, message_pk)
            if row is None:
                return None
            return LoggedMessage(row.id, row.received_at, row.peer, row.sending_application, row.sending_facility,
                                 row.message_type, row.control_id, row.outcome, row.reason, row.size, row.raw)


def _text(value: str, limit: int | None = None) -> str:
    return value[:limit].replace("\x00", "\ufffd")


__all__ = ["LoggedMessage", "MessageLog", "MessagePage"]
