"""The job worker: a thread that claims queued jobs, runs their handlers and records the outcome.

Handlers are registered by kind in a :class:`JobRegistry`. A handler takes the job's parameters
and a progress callback (fraction 0..1, message) and returns a JSON-serialisable result. A handler
that raises fails its job with the error's message; the worker goes on with the next job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from oncopacs.errors import OncopacsError
from oncopacs.jobs.background import BackgroundLoop
from oncopacs.jobs.queue import JobQueue, JobRecord

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
Handler = Callable[[Mapping[str, Any], ProgressCallback], Any]

POLL_INTERVAL_S = 1.0  # how often an idle worker looks for new jobs (`serve` wakes it when a rule fires)
PROGRESS_MIN_STEP = 0.01  # progress writes are skipped for smaller steps ...
PROGRESS_MIN_INTERVAL_S = 0.5  # ... unless this long has passed since the last write
INTERRUPTED_MESSAGE = "interrupted: the server stopped while the job ran; submit it again"


class JobRegistry:
    """The kinds of job this process can run, each with its handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"job kind {kind!r} is already registered")
        self._handlers[kind] = handler

    def handler(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))


class Worker(BackgroundLoop):
    """Runs queued jobs one at a time on a background thread until :meth:`stop`."""

    thread_name = "oncopacs-jobs"

    def __init__(self, queue: JobQueue, registry: JobRegistry, *, poll_interval_s: float = POLL_INTERVAL_S):
        super().__init__()
        self.queue = queue
        self.registry = registry
        self.poll_interval_s = poll_interval_s

    def start(self) -> None:
        """Start the worker thread (jobs left running by an earlier process are marked failed first)."""
        interrupted = self.queue.fail_interrupted(INTERRUPTED_MESSAGE)
        if interrupted:
            log.warning("%d job(s) were interrupted by an unclean stop and are marked failed", interrupted)
        super().start()

    def run_pending(self, on_job: Callable[[JobRecord], None] | None = None) -> int:
        """Run queued jobs until none is left or the worker is stopped; how many ran.

        ``on_job(job)`` is called after each, with the job as recorded then (status, result or error).
        """
        done = 0
        while not self._stop.is_set():
            job = self.queue.claim_next(self.registry.kinds)
            if job is None:
                break
            self.run(job)
            done += 1
            if on_job is not None:
                on_job(self.queue.get(job.id) or job)
        return done

    def run(self, job: JobRecord) -> None:
        """Run one claimed job and record its result or error (never raises for the handler's faults)."""
        run_job(self.queue, self.registry, job)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:
                log.exception("the job worker could not reach the queue; retrying")
            self._sleep(self.poll_interval_s)


def run_job(queue: JobQueue, registry: JobRegistry, job: JobRecord, *, owner: str = "") -> bool:
    """Run one claimed job and record its result or error; whether the outcome was written.

    With ``owner`` (a queue worker's lease), every write is conditional on still holding the lease, so a job
    another worker took over is not written twice. Never raises for the handler's faults.
    """
    claimant: dict[str, str] = {"owner": owner} if owner else {}
    handler = registry.handler(job.kind)
    if handler is None:
        return queue.fail(job.id, f"no handler for job kind {job.kind!r}", **claimant) is not False
    log.info("job %d (%s) started", job.id, job.kind)
    try:
        result = handler(job.params, _progress_reporter(queue, job.id, claimant))
    except Exception as exc:
        log.exception("job %d (%s) failed", job.id, job.kind)
        return queue.fail(job.id, describe_error(exc), **claimant) is not False
    written = queue.succeed(job.id, result, "done", **claimant) is not False
    if written:
        log.info("job %d (%s) succeeded", job.id, job.kind)
    else:
        log.warning("job %d (%s) finished after another worker took it over; its result is discarded",
                    job.id, job.kind)
    return written


def _progress_reporter(queue: JobQueue, job_id: int, claimant: dict[str, str]) -> ProgressCallback:
    """A callback that writes progress at most every PROGRESS_MIN_STEP or PROGRESS_MIN_INTERVAL_S."""
    last = {"progress": -1.0, "at": 0.0}

    def report(progress: float, message: str = "") -> None:
        now = time.monotonic()
        if (progress < 1.0 and progress - last["progress"] < PROGRESS_MIN_STEP
                and now - last["at"] < PROGRESS_MIN_INTERVAL_S):
            return
        last.update(progress=progress, at=now)
        queue.report_progress(job_id, progress, message, **claimant)

    return report


def describe_error(exc: Exception) -> str:
    """The message stored for a failed job: ours verbatim, others with their type."""
    text = str(exc).strip()
    if isinstance(exc, OncopacsError | ValueError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
