"""Appending to the audit trail and checking its hash chain.

Each record's SHA-256 covers its own fields and the previous record's hash, so altering or
deleting any record breaks the chain from that point on (``oncopacs audit verify``).
Appends lock the one-row chain head, so concurrent writers on SQLite or PostgreSQL stay in order.
Recording fails loudly (:class:`~oncopacs.errors.AuditError`): callers fail closed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.audit.events import AuditEvent
from oncopacs.audit.models import AuditChainHead, AuditRecord
from oncopacs.errors import AuditError
from oncopacs.index.db import IndexDatabase

GENESIS_SHA256 = "0" * 64
_MULTI_VALUE_SEPARATOR = "\\"


def compute_record_sha256(record: AuditRecord, previous_sha256: str) -> str:
    """The chain hash of ``record`` given the hash of the record before it."""
    fields = [
        record.id,
        record.recorded_at,
        record.action,
        record.outcome,
        record.actor,
        record.actor_kind,
        record.source,
        record.patient_ids,
        record.study_uids,
        record.detail,
        previous_sha256,
    ]
    canonical = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AuditTrail:
    """The append-only audit trail kept in the index database."""

    def __init__(self, index: IndexDatabase):
        self.index = index

    def record(self, event: AuditEvent) -> int:
        """Append ``event``; its record id. Raises AuditError when it cannot be stored."""
        try:
            with self.index.writing() as session:
                head = session.scalars(select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()).first()
                if head is None:
                    head = AuditChainHead(id=1, last_record_id=0, last_sha256=GENESIS_SHA256)
                    session.add(head)
                record = AuditRecord(
                    id=head.last_record_id + 1,
                    recorded_at=datetime.now(UTC).isoformat(timespec="microseconds"),
                    action=event.action.value,
                    outcome=int(event.outcome),
                    actor=event.actor,
                    actor_kind=event.actor_kind.value,
                    source=event.source,
                    patient_ids=_MULTI_VALUE_SEPARATOR.join(event.patient_ids),
                    study_uids=_MULTI_VALUE_SEPARATOR.join(event.study_uids),
                    detail=event.detail,
                    previous_sha256=head.last_sha256,
                )
                record.record_sha256 = compute_record_sha256(record, head.last_sha256)
                session.add(record)
                head.last_record_id = record.id
                head.last_sha256 = record.record_sha256
                return record.id
        except SQLAlchemyError as exc:
            raise AuditError(f"the audit trail could not record a {event.action.value} event: {exc.__class__.__name__}") from exc
