"""Report versions in the index and their PDFs on disk: draft -> final -> superseded, never back.

PDFs live in the reports directory, named by their SHA-256 (written to a temporary file, fsynced,
renamed), and are verified against the hash on every read. A final version is never changed: an
amendment is a new draft whose ``supersedes_id`` names the final it replaces; approving it marks
the old one superseded in the same transaction.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from oncopacs.archive.storage import compute_sha256
from oncopacs.errors import IntegrityError, NotFoundError, OncopacsError, StorageError
from oncopacs.index.db import IndexDatabase
from oncopacs.reports.deliveries import create_deliveries
from oncopacs.reports.models import Report


class ReportStatus(str, enum.Enum):
    DRAFT = "draft"
    FINAL = "final"
    SUPERSEDED = "superseded"


class ReportStateError(OncopacsError):
    """The report is not in a state that allows this step (e.g. approving a final report)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@overload
def _aware(moment: datetime) -> datetime: ...
@overload
def _aware(moment: None) -> None: ...
@overload
def _aware(moment: datetime | None) -> datetime | None: ...
def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """One report version as stored (times UTC)."""

    id: int
    type: str
    patient_id: str
    study_uid: str
    version: int
    status: ReportStatus
    supersedes_id: int | None
    title: str
    conclusion: str
    data: dict[str, Any]
    created_by: str
    created_at: datetime
    approved_by: str
    approved_at: datetime | None
    superseded_at: datetime | None
    pdf_sha256: str
    pdf_size: int
    sop_instance_uid: str

    @property
    def is_amendment(self) -> bool:
        return self.supersedes_id is not None

    def to_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {
            "report_id": self.id, "type": self.type, "patient_id": self.patient_id, "study_uid": self.study_uid,
            "version": self.version, "status": self.status.value, "supersedes_id": self.supersedes_id,
            "title": self.title, "conclusion": self.conclusion, "created_by": self.created_by,
            "created_at": iso(self.created_at), "approved_by": self.approved_by or None,
            "approved_at": iso(self.approved_at), "superseded_at": iso(self.superseded_at),
            "pdf_sha256": self.pdf_sha256, "pdf_size": self.pdf_size,
            "sop_instance_uid": self.sop_instance_uid or None,
        }


def _record(row: Report) -> ReportRecord:
    return ReportRecord(
        row.id, row.type, row.patient_id, row.study_uid, row.version, ReportStatus(row.status), row.supersedes_id,
        row.title, row.conclusion, json.loads(row.data_json or "{}"), row.created_by, _aware(row.created_at),
        row.approved_by, _aware(row.approved_at), _aware(row.superseded_at), row.pdf_sha256, row.pdf_size,
        row.sop_instance_uid,
    )


@dataclass(frozen=True, slots=True)
class NewReport:
    """What a new draft holds: its type, subject, and the data it shows (its PDF is attached after)."""

    type: str
    patient_id: str
    study_uid: str
    title: str
    conclusion: str
    data: dict[str, Any]


class ReportStore:
    """Report versions of one index, with their PDFs under ``pdf_dir``."""

    def __init__(self, index: IndexDatabase, pdf_dir: Path, clock=utc_now):
        self.index = index
        self.pdf_dir = pdf_dir
        self.clock = clock

    # -- reading ------------------------------------------------------------------------------
    def get(self, report_id: int) -> ReportRecord:
        with self.index.reading() as session:
            row = session.get(Report, report_id)
            if row is None:
                raise NotFoundError(f"report {report_id} does not exist")
            return _record(row)

    def list(self, *, patient_id: str = "", study_uid: str = "", status: ReportStatus | None = None,
             limit: int = 100, offset: int = 0) -> list[ReportRecord]:
        statement = select(Report).order_by(Report.id.desc()).limit(limit).offset(offset)
        if patient_id:
            statement = statement.where(Report.patient_id == patient_id)
        if study_uid:
            statement = statement.where(Report.study_uid == study_uid)
        if status is not None:
            statement = statement.where(Report.status == status.value)
        with self.index.reading() as session:
            return [_record(row) for row in session.scalars(statement)]

    def read_pdf(self, report: ReportRecord) -> bytes:
        """The report's PDF, checked against its recorded SHA-256 (IntegrityError if it differs)."""
        if not report.pdf_sha256:
            raise NotFoundError(f"report {report.id} has no PDF yet")
        path = self.pdf_dir / f"{report.pdf_sha256}.pdf"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"the PDF of report {report.id} is missing") from None
        if compute_sha256(data) != report.pdf_sha256:
            raise IntegrityError(f"the PDF of report {report.id} does not match its SHA-256")
        return data

    # -- writing ------------------------------------------------------------------------------
    def create_draft(self, new: NewReport, created_by: str, *, supersedes: int | None = None) -> ReportRecord:
        """Store a draft (version 1, or the next version of the final report it amends), without its PDF yet."""
        with self.index.writing() as session:
            version = 1
            if supersedes is not None:
                old = session.get(Report, supersedes)
                if old is None:
                    raise NotFoundError(f"report {supersedes} does not exist")
                if old.status != ReportStatus.FINAL.value:
                    raise ReportStateError(f"report {supersedes} is {old.status}; only a final report can be amended")
                pending = session.scalars(select(Report.id).where(Report.supersedes_id == supersedes,
                                                                  Report.status == ReportStatus.DRAFT.value)).first()
                if pending is not None:
                    raise ReportStateError(f"report {supersedes} already has a draft amendment (report {pending})")
                version = old.version + 1
            row = Report(
                type=new.type, patient_id=new.patient_id, study_uid=new.study_uid, version=version,
                status=ReportStatus.DRAFT.value, supersedes_id=supersedes, title=new.title[:128],
                conclusion=new.conclusion, data_json=json.dumps(new.data), created_by=created_by,
                created_at=self.clock(), approved_by="", pdf_path="", pdf_sha256="", pdf_size=0,
                sop_instance_uid="",
            )
            session.add(row)
            session.flush()
            return _record(row)

    def attach_draft_pdf(self, report_id: int, pdf: bytes) -> ReportRecord:
        """Store the rendered PDF of a draft (a draft's PDF may be replaced; a final one never)."""
        sha256 = self._write_pdf(pdf)
        with self.index.writing() as session:
            row = session.get(Report, report_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"report {report_id} does not exist")
            if row.status != ReportStatus.DRAFT.value:
                raise ReportStateError(f"report {report_id} is {row.status}; its PDF cannot change")
            row.pdf_path, row.pdf_sha256, row.pdf_size = f"{sha256}.pdf", sha256, len(pdf)
            session.flush()
            return _record(row)

    def finalize(self, report_id: int, *, approved_by: str, approved_at: datetime, pdf: bytes,
                 sop_instance_uid: str, destinations: Iterable[tuple[str, str]]) -> ReportRecord:
        """Make a draft final with its approved PDF and archived SOP Instance UID, in one transaction.

        The report it amends (if any) becomes superseded, and one pending delivery is created per
        ``(destination kind, endpoint)``.
        """
        sha256 = self._write_pdf(pdf)
        with self.index.writing() as session:
            row = session.get(Report, report_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"report {report_id} does not exist")
            if row.status != ReportStatus.DRAFT.value:
                raise ReportStateError(f"report {report_id} is {row.status}; only a draft can be approved")
            if row.supersedes_id is not None:
                old = session.get(Report, row.supersedes_id, with_for_update=True)
                if old is None or old.status != ReportStatus.FINAL.value:
                    raise ReportStateError(f"report {row.supersedes_id} is no longer final; amend the current version")
                old.status = ReportStatus.SUPERSEDED.value
                old.superseded_at = approved_at
            row.status = ReportStatus.FINAL.value
            row.approved_by = approved_by
            row.approved_at = approved_at
            row.pdf_path, row.pdf_sha256, row.pdf_size = f"{sha256}.pdf", sha256, len(pdf)
            row.sop_instance_uid = sop_instance_uid
            session.flush()
            create_deliveries(session, report_id, destinations, created_by=approved_by, now=approved_at)
            return _record(row)

    def _write_pdf(self, pdf: bytes) -> str:
        """Write ``pdf`` durably under its SHA-256 (once); the hash."""
        sha256 = compute_sha256(pdf)
        target = self.pdf_dir / f"{sha256}.pdf"
        if target.exists():
            return sha256
        try:
            self.pdf_dir.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.pdf_dir, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(pdf)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
            directory = os.open(self.pdf_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise StorageError(f"cannot write a report PDF in {self.pdf_dir}: {exc.strerror}") from None
        return sha256


@dataclass(frozen=True, slots=True)
class FinalReport:
    """One final report version: id, version, approver and approval time, conclusion.

    ``approved_at`` is the index's value unchanged (naive UTC on SQLite, aware on PostgreSQL), unlike
    :class:`ReportRecord`, whose times are always made aware.
    """

    id: int
    version: int
    approved_by: str
    approved_at: datetime | None
    conclusion: str


def find_final_reports(session: Session, patient_id: str, report_type: str) -> list[FinalReport]:
    """The final versions of ``patient_id``'s reports of ``report_type`` (e.g. ``plan``), oldest first."""
    rows = session.scalars(select(Report).where(Report.patient_id == patient_id, Report.type == report_type,
                                                Report.status == ReportStatus.FINAL.value).order_by(Report.id))
    return [FinalReport(row.id, row.version, row.approved_by, row.approved_at, row.conclusion) for row in rows]
