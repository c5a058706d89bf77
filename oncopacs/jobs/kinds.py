"""The job kinds OncoPACS runs, and the job system (queue + registry) the app and the worker share.

The app factory builds one :class:`JobSystem` per archive; analyses from higher layers register
their own kinds on its registry (the composition root does that, the platform never imports up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import count_indexed, verify
from oncopacs.jobs.dispatch import QUEUE_NAME, DispatchingJobQueue, open_broker
from oncopacs.jobs.queue import DatabaseJobQueue, JobQueue, JobRecord, JobStatus
from oncopacs.jobs.worker import Handler, JobRegistry, ProgressCallback, Worker

VERIFY = "verify"


@dataclass(frozen=True)
class JobSystem:
    """The queue jobs go into and the kinds this process can run."""

    queue: JobQueue
    registry: JobRegistry

    def new_worker(self, **options: Any) -> Worker:
        return Worker(self.queue, self.registry, **options)

    def close(self) -> None:
        """Stop the sender threads and close the queue engine's connections (nothing to do without one)."""
        if isinstance(self.queue, DispatchingJobQueue):
            self.queue.close()


#: How many of the newest queued jobs :func:`enqueue_once` looks through for the same job.
QUEUED_LOOKBACK = 500


def enqueue_once(queue: JobQueue, kind: str, params: Mapping[str, Any], created_by: str) -> tuple[JobRecord, bool]:
    """(job, queued now): a queued, not yet started job of the same kind and parameters is reused."""
    job: JobRecord | None
    for job in queue.list(status=JobStatus.QUEUED, kind=kind, limit=QUEUED_LOOKBACK).jobs:
        if job.params == dict(params):
            return job, False
    job = queue.get(queue.enqueue(kind, params, created_by))
    if job is None:  # deleted between the insert and the read: nothing else removes queued jobs
        raise RuntimeError(f"the {kind} job just queued is gone")
    return job, True


def build_verify_handler(archive: Archive) -> Handler:
    """A handler that re-hashes every stored file (:func:`oncopacs.archive.maintenance.verify`)."""

    def run_verify(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        total = count_indexed(archive)
        checked = 0
        progress(0.0, f"verifying {total} file(s)")

        def step(n: int) -> None:
            nonlocal checked
            checked += n
            progress(checked / total if total else 1.0, f"{checked} of {total} file(s) checked")

        report = verify(archive, step)
        progress(1.0, f"{report.checked} file(s) checked")
        return report.to_dict()

    return run_verify


def open_job_system(archive: Archive, queue_url: str = "", queue_name: str = QUEUE_NAME) -> JobSystem:
    """The job system of ``archive``: jobs in its index, with the platform's own kinds registered.

    With ``queue_url`` (RabbitMQ or Redis), each job is also sent to ``oncopacs worker`` processes.
    """
    registry = JobRegistry()
    registry.register(VERIFY, build_verify_handler(archive))
    queue = (DispatchingJobQueue(archive.index, open_broker(queue_url), queue_url, queue_name) if queue_url
             else DatabaseJobQueue(archive.index))
    return JobSystem(queue, registry)
