"""Index tables of the audit trail: the records, the head of their hash chain, and what reserved spools replayed."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from oncopacs.index.models import Base


class AuditRecord(Base):
    """One audit event. Rows are only ever inserted; ``record_sha256`` chains each to the one before.

    ``record_sha256`` is the chain value: HMAC-SHA256 under the audit key from the head's ``keyed_from`` on,
    the unkeyed SHA-256 of trails older than keys before it (:func:`oncopacs.audit.sealing.chain_value`).
    """

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    recorded_at: Mapped[str] = mapped_column(String(32), index=True)  # ISO 8601 UTC, as hashed
    action: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(128))
    patient_ids: Mapped[str] = mapped_column(Text, default="")  # backslash-separated, as DICOM multi-values
    study_uids: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    previous_sha256: Mapped[str] = mapped_column(String(64))
    record_sha256: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """One row: the last record's id and chain value, and which key seals the records from which id on (none:
    a trail older than keys, or one kept without a key). Locking it serializes appends on every database."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_record_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sha256: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    keyed_from: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditSpoolMark(Base):
    """The last entry of one reserved audit spool generation appended to the trail (replays happen once)."""

    __tablename__ = "audit_spool_marks"

    generation: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
