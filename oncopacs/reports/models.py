"""Index tables of reports and of their deliveries to the EHR.

A report row is one version. Its status moves draft -> final -> superseded and never back; a final
row is never edited except to mark it superseded when an amendment (a new row whose
``supersedes_id`` points at it) is approved. Each delivery row is one message to one destination,
its state kept here so that a restart resumes it instead of losing or repeating it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from oncopacs.index.models import UID_LENGTH, Base


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32), index=True)  # "plan", "pet-response", "tumour-board"
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    study_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), index=True)  # draft, final, superseded
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"), nullable=True)
    title: Mapped[str] = mapped_column(String(128), default="")
    conclusion: Mapped[str] = mapped_column(Text, default="")
    data_json: Mapped[str] = mapped_column(Text, default="{}")  # what the PDF shows, kept for the final render
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    approved_by: Mapped[str] = mapped_column(String(64), default="")
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pdf_path: Mapped[str] = mapped_column(Text, default="")  # relative to the reports directory
    pdf_sha256: Mapped[str] = mapped_column(String(64), default="")
    pdf_size: Mapped[int] = mapped_column(BigInteger, default=0)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), default="")  # the archived Encapsulated PDF


class ReportDelivery(Base):
    __tablename__ = "report_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    destination: Mapped[str] = mapped_column(String(8))  # "hl7" or "fhir"
    endpoint: Mapped[str] = mapped_column(Text, default="")  # host:port or base URL it goes to
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, sent, acknowledged, rejected, failed
    # MSH-10 / FHIR identifier, reused on retry
    message_control_id: Mapped[str] = mapped_column(String(32), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    ack_code: Mapped[str] = mapped_column(String(8), default="")  # AA/AE/AR, or the HTTP status
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
