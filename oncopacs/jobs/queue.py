"""The job queue: what the API enqueues and the worker claims, behind a small interface.

:class:`JobQueue` is the interface; :class:`DatabaseJobQueue` keeps jobs in the index's ``jobs``
table (SQLite or PostgreSQL), which is all the embedded worker of ``oncopacs serve`` needs. A
Redis-backed queue with separate worker processes can implement the same interface later.
A job is claimed with ``UPDATE ... WHERE id = ? AND status = 'queued'``: of several workers
racing for it, exactly one sees a row count of 1.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update

from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.models import Job

CLAIM_CANDIDATES = 10  # queued jobs looked at per claim attempt


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored: its parameters, progress (0..1) and, once finished, its result or error."""

    id: int
    kind: str
    status: JobStatus
    progress: float
    message: str
    params: dict[str, Any]
    result: Any
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "params": self.params,
            "result": self.result,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs (newest first) and how many match in all."""

    total: int
    jobs: tuple[JobRecord, ...]


class JobQueue(Protocol):
    """What the API and the worker need from a queue."""

    def enqueue(self, kind: str, params: Mapping[str, Any], created_by: str) -> int: ...

    def claim_next(self, kinds: frozenset[str]) -> JobRecord | None: ...

    def report_progress(self, job_id: int, progress: float, message: str = "") -> None: ...

    def succeed(self, job_id: int, result: Any, message: str = "") -> None: ...

    def fail(self, job_id: int, message: str) -> None: ...

    def get(self, job_id: int) -> JobRecord | None: ...

    def list(self, *, status: JobStatus | None = None, kind: str | None = None,
             limit: int = 100, offset: int = 0) -> JobPage: ...

    def fail_interrupted(self, message: str) -> int: ...


class DatabaseJobQueue:
    """Jobs in the index's ``jobs`` table; safe for several workers on SQLite and PostgreSQL."""

    def __init__(self, index: IndexDatabase):
        self.index = index

    def enqueue(self, kind: str, params: Mapping[str, Any], created_by: str) -> int:
        """Add a queued job; its id. ``params`` must be JSON-serialisable."""
        with self.index.write_connection() as connection:
            return connection.execute(
                insert(Job).values(
                    kind=kind, status=JobStatus.QUEUED.value, progress=0.0, message="",
                    params_json=json.dumps(dict(params)), result_json="", created_by=created_by[:64],
                    created_at=datetime.now(UTC),
                ).returning(Job.id)
            ).scalar_one()

    def claim_next(self, kinds: frozenset[str]) -> JobRecord | None:
        """Mark the oldest queued job of one of ``kinds`` running and return it (None: nothing to do)."""
        if not kinds:
            return None
        with self.index.reading() as session:
            candidates = session.scalars(
                select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.kind.in_(sorted(kinds)))
                .order_by(Job.id).limit(CLAIM_CANDIDATES)
            ).all()
        for job_id in candidates:
            with self.index.write_connection() as connection:
                claimed = connection.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                    .values(status=JobStatus.RUNNING.value, started_at=datetime.now(UTC), progress=0.0)
                ).rowcount
            if claimed == 1:
                return self.get(job_id)
        return None

    def report_progress(self, job_id: int, progress: float, message: str = "") -> None:
        """Record how far a running job is (``progress`` clipped to 0..1)."""
        values: dict[str, Any] = {"progress": min(max(float(progress), 0.0), 1.0)}
        if message:
            values["message"] = message
        self._update_running(job_id, values)

    def succeed(self, job_id: int, result: Any, message: str = "") -> None:
        """Finish a running job with its JSON-serialisable ``result``."""
        self._update_running(job_id, {
            "status": JobStatus.SUCCEEDED.value, "progress": 1.0, "result_json": json.dumps(result),
            "message": message, "finished_at": datetime.now(UTC),
        })

    def fail(self, job_id: int, message: str) -> None:
        """Finish a running job as failed, with the reason."""
        self._update_running(job_id, {
            "status": JobStatus.FAILED.value, "message": message, "finished_at": datetime.now(UTC),
        })

    def get(self, job_id: int) -> JobRecord | None:
        with self.index.reading() as session:
            job = session.get(Job, job_id)
            return None if job is None else _record(job)

    def list(self, *, status: JobStatus | None = None, kind: str | None = None,
             limit: int = 100, offset: int = 0) -> JobPage:
        """Jobs matching ``status`` and ``kind`` (None: any), newest first."""
        statement = select(Job)
        if status is not None:
            statement = statement.where(Job.status == JobStatus(status).value)
        if kind:
            statement = statement.where(Job.kind == kind)
        with self.index.reading() as session:
            total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
            jobs = session.scalars(statement.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
            return JobPage(total, tuple(_record(job) for job in jobs))

    def fail_interrupted(self, message: str) -> int:
        """Mark every job left running (by a process that died) failed; how many.

        Only for start-up of the one embedded worker: with separate workers, a job running
        elsewhere is not interrupted. Jobs are not re-run, so one that crashed the process
        cannot crash it again at every start.
        """
        with self.index.write_connection() as connection:
            return connection.execute(
                update(Job).where(Job.status == JobStatus.RUNNING.value).values(
                    status=JobStatus.FAILED.value, message=message, finished_at=datetime.now(UTC))
            ).rowcount

    def _update_running(self, job_id: int, values: dict[str, Any]) -> None:
        with self.index.write_connection() as connection:
            connection.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value).values(**values)
            )


def _record(job: Job) -> JobRecord:
    return JobRecord(
        id=job.id,
        kind=job.kind,
        status=JobStatus(job.status),
        progress=job.progress,
        message=job.message,
        params=json.loads(job.params_json or "{}"),
        result=json.loads(job.result_json) if job.result_json else None,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite returns naive datetimes; they were stored in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
