"""The job queue: what the API enqueues and the worker claims, behind a small interface.

:class:`JobQueue` is the interface; :class:`DatabaseJobQueue` keeps jobs in the index's ``jobs``
table (SQLite or PostgreSQL), which is all the embedded worker of ``oncopacs serve`` needs; with a
queue engine, :class:`oncopacs.jobs.dispatch.DispatchingJobQueue` also sends each job to worker processes.
A job is claimed with ``UPDATE ... WHERE id = ? AND status = 'queued'``: of several workers
racing for it, exactly one sees a row count of 1.

Queue workers (:mod:`oncopacs.jobs.consumer`) claim one job by id with a lease (:meth:`DatabaseJobQueue.claim`):
a running job whose lease expired (its worker was killed) can be claimed again, and every write a claimant makes
names it (``owner``), so only the current claimant's progress and result are written.

With a queue engine a *queued* job's lease is its send lease: the process that queued it holds it until the
broker has taken the job's message (:meth:`DatabaseJobQueue.mark_sent` clears it). A queued job whose send lease
lapsed (the broker was down, or the sender died between the commit and the send) is sent again by a worker
(:meth:`DatabaseJobQueue.unsent_job_ids`, :meth:`DatabaseJobQueue.take_send_lease`): never lost, at worst sent
twice, and a second message for a job already claimed or finished is dropped by the consumer.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update

from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.models import Job

CLAIM_CANDIDATES = 10  # queued jobs looked at per claim attempt
#: Claims by queue workers before a job whose worker keeps dying (killed, out of memory) is failed instead.
MAX_ATTEMPTS = 3
EXHAUSTED_MESSAGE = "interrupted {attempts} times (the worker running it stopped); submit it again"


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
    attempts: int = 0  # claims by queue workers (0: run by the embedded worker, or not yet)

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


class ClaimOutcome(str, enum.Enum):
    CLAIMED = "claimed"  # the caller holds the lease and runs the job
    BUSY = "busy"  # another worker holds a live lease: look again after ``retry_after_s``
    FINISHED = "finished"  # succeeded or failed already: nothing to do
    GONE = "gone"  # no such job
    EXHAUSTED = "exhausted"  # its workers died MAX_ATTEMPTS times: failed now


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`DatabaseJobQueue.claim` found: the job, and for BUSY how long (seconds) until its lease ends."""

    outcome: ClaimOutcome
    job: JobRecord | None = None
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs (newest first) and how many match in all."""

    total: int
    jobs: tuple[JobRecord, ...]


class JobQueue(Protocol):
    """What the API and the worker need from a queue."""

    def enqueue(self, kind: str, params: Mapping[str, Any], created_by: str) -> int: ...

    def claim_next(self, kinds: frozenset[str]) -> JobRecord | None: ...

    def report_progress(self, job_id: int, progress: float, message: str = "", *, owner: str = "") -> bool: ...

    def succeed(self, job_id: int, result: Any, message: str = "", *, owner: str = "") -> bool: ...

    def fail(self, job_id: int, message: str, *, owner: str = "") -> bool: ...

    def get(self, job_id: int) -> JobRecord | None: ...

    def list(self, *, status: JobStatus | None = None, kind: str | None = None,
             limit: int = 100, offset: int = 0) -> JobPage: ...

    def fail_interrupted(self, message: str, *, leased: bool = True) -> int: ...


class DatabaseJobQueue:
    """Jobs in the index's ``jobs`` table; safe for several workers on SQLite and PostgreSQL."""

    def __init__(self, index: IndexDatabase):
        self.index = index

    def enqueue(self, kind: str, params: Mapping[str, Any], created_by: str) -> int:
        """Add a queued job; its id. ``params`` must be JSON-serialisable."""
        return self._insert(kind, params, created_by)

    def _insert(self, kind: str, params: Mapping[str, Any], created_by: str, *, sender: str | None = None,
                send_lease_s: float = 0.0) -> int:
        """Insert a queued job (committed), held by ``sender`` for ``send_lease_s`` seconds when given; its id."""
        now = datetime.now(UTC)
        with self.index.write_connection() as connection:
            return connection.execute(
                insert(Job).values(
                    kind=kind, status=JobStatus.QUEUED.value, progress=0.0, message="",
                    params_json=json.dumps(dict(params)), result_json="", created_by=created_by[:64],
                    created_at=now, lease_owner=sender[:64] if sender else None,
                    lease_expires_at=now + timedelta(seconds=send_lease_s) if sender else None,
                ).returning(Job.id)
            ).scalar_one()

    def mark_sent(self, job_id: int, sender: str) -> bool:
        """The broker took job ``job_id``'s message: end ``sender``'s send lease; False: not queued or not theirs."""
        return self._update_queued(job_id, sender, {"lease_owner": None, "lease_expires_at": None, "message": ""})

    def mark_unsent(self, job_id: int, sender: str, message: str) -> bool:
        """The message could not be sent: let the send lease lapse now (a worker sends it), with ``message``."""
        return self._update_queued(job_id, sender, {"lease_expires_at": datetime.now(UTC), "message": message})

    def unsent_job_ids(self, limit: int) -> tuple[int, ...]:
        """Up to ``limit`` queued jobs, oldest first, whose send lease lapsed (their message perhaps never sent)."""
        with self.index.reading() as session:
            return tuple(session.scalars(
                select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.lease_expires_at.is_not(None),
                                     Job.lease_expires_at < datetime.now(UTC))
                .order_by(Job.id).limit(limit)
            ).all())

    def take_send_lease(self, job_id: int, sender: str, lease_s: float) -> bool:
        """Take over a lapsed send lease for ``lease_s`` seconds (of racing workers, one gets True)."""
        now = datetime.now(UTC)
        with self.index.write_connection() as connection:
            return connection.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value,
                                  Job.lease_expires_at.is_not(None), Job.lease_expires_at < now)
                .values(lease_owner=sender[:64], lease_expires_at=now + timedelta(seconds=lease_s))
            ).rowcount == 1

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

    def claim(self, job_id: int, owner: str, lease_s: float) -> Claim:
        """Claim job ``job_id`` for ``owner`` with a lease of ``lease_s`` seconds, if it is queued or its lease expired.

        One conditional UPDATE decides: of several workers racing, exactly one gets CLAIMED. A job whose
        workers died :data:`MAX_ATTEMPTS` times is failed (EXHAUSTED) rather than claimed again.
        """
        now = datetime.now(UTC)
        expired = and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at.is_not(None),
                       Job.lease_expires_at < now)
        with self.index.write_connection() as connection:
            exhausted = connection.execute(
                update(Job).where(Job.id == job_id, expired, Job.attempts >= MAX_ATTEMPTS).values(
                    status=JobStatus.FAILED.value, message=EXHAUSTED_MESSAGE.format(attempts=MAX_ATTEMPTS),
                    finished_at=now, lease_owner=None, lease_expires_at=None)
            ).rowcount
            claimed = 0 if exhausted else connection.execute(
                update(Job).where(Job.id == job_id, or_(Job.status == JobStatus.QUEUED.value, expired)).values(
                    status=JobStatus.RUNNING.value, started_at=now, progress=0.0, lease_owner=owner[:64],
                    lease_expires_at=now + timedelta(seconds=lease_s), attempts=Job.attempts + 1)
            ).rowcount
        job = self.get(job_id)
        if exhausted:
            return Claim(ClaimOutcome.EXHAUSTED, job)
        if claimed == 1:
            return Claim(ClaimOutcome.CLAIMED, job)
        if job is None:
            return Claim(ClaimOutcome.GONE)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return Claim(ClaimOutcome.FINISHED, job)
        with self.index.reading() as session:  # running under a live lease, or by an embedded worker (no lease)
            expires = session.scalar(select(Job.lease_expires_at).where(Job.id == job_id))
        remaining_s = lease_s if expires is None else (_aware(expires) - datetime.now(UTC)).total_seconds()
        return Claim(ClaimOutcome.BUSY, job, max(remaining_s, 0.0))

    def renew_lease(self, job_id: int, owner: str, lease_s: float) -> bool:
        """Extend ``owner``'s lease on a running job by ``lease_s`` seconds from now; False: it is no longer theirs."""
        return self._update_running(job_id, {"lease_expires_at": datetime.now(UTC) + timedelta(seconds=lease_s)},
                                    owner)

    def report_progress(self, job_id: int, progress: float, message: str = "", *, owner: str = "") -> bool:
        """Record how far a running job is (``progress`` clipped to 0..1); False: not running (or not ``owner``'s)."""
        values: dict[str, Any] = {"progress": min(max(float(progress), 0.0), 1.0)}
        if message:
            values["message"] = message
        return self._update_running(job_id, values, owner)

    def succeed(self, job_id: int, result: Any, message: str = "", *, owner: str = "") -> bool:
        """Finish a running job with its JSON-serialisable ``result``; False: not running (or not ``owner``'s)."""
        return self._update_running(job_id, {
            "status": JobStatus.SUCCEEDED.value, "progress": 1.0, "result_json": json.dumps(result),
            "message": message, "finished_at": datetime.now(UTC), "lease_expires_at": None,
        }, owner)

    def fail(self, job_id: int, message: str, *, owner: str = "") -> bool:
        """Finish a running job as failed, with the reason; False: not running (or not ``owner``'s)."""
        return self._update_running(job_id, {
            "status": JobStatus.FAILED.value, "message": message, "finished_at": datetime.now(UTC),
            "lease_expires_at": None,
        }, owner)

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

    def fail_interrupted(self, message: str, *, leased: bool = True) -> int:
        """Mark jobs left running by an embedded worker that died failed; how many.

        For start-up of ``serve``: a job without a lease was run by the embedded worker of a process that
        is gone. A job under a live lease is a queue worker's and is never touched; one whose lease expired
        is failed too when ``leased`` (no queue engine: nothing will retry it), and left for a queue worker
        to take over when not. Jobs are not re-run here, so one that crashed the process cannot crash it
        again at every start.
        """
        now = datetime.now(UTC)
        orphaned: ColumnElement[bool] = Job.lease_expires_at.is_(None)
        if leased:
            orphaned = or_(orphaned, Job.lease_expires_at < now)
        with self.index.write_connection() as connection:
            return connection.execute(
                update(Job).where(Job.status == JobStatus.RUNNING.value, orphaned).values(
                    status=JobStatus.FAILED.value, message=message, finished_at=now, lease_expires_at=None)
            ).rowcount

    def _update_queued(self, job_id: int, sender: str, values: dict[str, Any]) -> bool:
        """Update a queued job while ``sender`` holds its send lease; whether a row changed."""
        with self.index.write_connection() as connection:
            return connection.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value,
                                  Job.lease_owner == sender[:64]).values(**values)
            ).rowcount == 1

    def _update_running(self, job_id: int, values: dict[str, Any], owner: str = "") -> bool:
        """Update a running job (only while ``owner`` holds its lease, when given); whether a row changed."""
        condition = [Job.id == job_id, Job.status == JobStatus.RUNNING.value]
        if owner:
            condition.append(Job.lease_owner == owner[:64])
        with self.index.write_connection() as connection:
            return connection.execute(update(Job).where(*condition).values(**values)).rowcount == 1


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
        attempts=job.attempts or 0,
    )


def _aware(moment: datetime) -> datetime:
    """``moment`` in UTC (SQLite returns naive datetimes; they were stored in UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite returns naive datetimes; they were stored in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
