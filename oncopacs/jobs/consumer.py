"""The queue engine's receiving side: an ``oncopacs worker`` process runs the jobs whose ids arrive from the broker.

A message names a job row. The worker claims the row with a lease (only a queued job, or a running one whose
lease expired), renews the lease while the handler runs, and writes progress and outcome only while it still
holds the lease: a job retried after its worker was killed is written once, by its last claimant. A message for
a finished job is acknowledged and dropped; one for a job another worker holds comes back when that lease ends.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from oncopacs.jobs.dispatch import ACTOR_NAME, QUEUE_NAME, job_message
from oncopacs.jobs.queue import ClaimOutcome, DatabaseJobQueue
from oncopacs.jobs.worker import JobRegistry, run_job

log = logging.getLogger(__name__)

LEASE_S = 60.0  # a claimed job's lease; renewed every third of it while its handler runs
RETRY_MARGIN_S = 1.0  # a job busy elsewhere is looked at again this long after its lease would end
STOP_TIMEOUT_S = 60.0  # on SIGTERM, running jobs get this long to finish; the rest are retried by another worker
RESEND_INTERVAL_S = 5.0  # how often a worker sends again the queued jobs whose message was never sent

#: retry_later(job_id, delay_ms): send the job's message again after that delay.
RetryLater = Callable[[int, int], None]


def new_owner() -> str:
    """A lease holder's name: host, process and a random part (one per claim), at most 64 characters."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


class LeaseKeeper:
    """Renews ``owner``'s lease on a running job every third of ``lease_s`` until the ``with`` block ends."""

    def __init__(self, queue: DatabaseJobQueue, job_id: int, owner: str, lease_s: float):
        self.queue, self.job_id, self.owner, self.lease_s = queue, job_id, owner, lease_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"oncopacs-lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                if not self.queue.renew_lease(self.job_id, self.owner, self.lease_s):
                    log.warning("job %d: the lease was lost (another worker took the job over)", self.job_id)
                    return
            except Exception:  # the index briefly unreachable: the next renewal may succeed
                log.exception("job %d: the lease could not be renewed", self.job_id)


class JobConsumer:
    """Runs the job a message names, once, under a lease."""

    def __init__(self, queue: DatabaseJobQueue, registry: JobRegistry, retry_later: RetryLater, *,
                 lease_s: float = LEASE_S):
        self.queue = queue
        self.registry = registry
        self.retry_later = retry_later
        self.lease_s = lease_s

    def perform(self, job_id: int) -> ClaimOutcome:
        """Handle the message for ``job_id``: run it if it is ours to run; what the claim found."""
        owner = new_owner()
        claim = self.queue.claim(job_id, owner, self.lease_s)
        if claim.outcome is ClaimOutcome.CLAIMED and claim.job is not None:
            if claim.job.attempts > 1:
                log.warning("job %d (%s): attempt %d, its earlier worker stopped", job_id, claim.job.kind,
                            claim.job.attempts)
            with LeaseKeeper(self.queue, job_id, owner, self.lease_s):
                run_job(self.queue, self.registry, claim.job, owner=owner)
        elif claim.outcome is ClaimOutcome.BUSY:
            self.retry_later(job_id, int((claim.retry_after_s + RETRY_MARGIN_S) * 1000))
        elif claim.outcome is ClaimOutcome.EXHAUSTED:
            log.error("job %d: its workers stopped too often; failed", job_id)
        else:
            log.info("job %d: %s, message dropped", job_id, claim.outcome.value)
        return claim.outcome


def heartbeat_timeout_ms(lease_s: float) -> int:
    """Redis: how long (ms) a worker may stay silent before its messages go to another (twice the lease, >= 3 s)."""
    return int(max(2 * lease_s, 3.0) * 1000)


def consume(queue: DatabaseJobQueue, registry: JobRegistry, broker: dramatiq.Broker, stop: threading.Event, *,
            queue_name: str = QUEUE_NAME, threads: int = 1, lease_s: float = LEASE_S,
            resend: Callable[[], int] | None = None) -> None:
    """Run the jobs whose messages arrive on ``broker``'s ``queue_name``, ``threads`` at a time, until ``stop``.

    ``resend`` (when given) sends again the jobs queued while the broker was down; it runs at the start and
    every :data:`RESEND_INTERVAL_S` seconds.
    """
    def retry_later(job_id: int, delay_ms: int) -> None:
        broker.enqueue(job_message(job_id, queue_name), delay=delay_ms)

    consumer = JobConsumer(queue, registry, retry_later, lease_s=lease_s)

    def run_job_message(job_id: int) -> None:
        consumer.perform(job_id)

    dramatiq.Actor(run_job_message, broker=broker, actor_name=ACTOR_NAME, queue_name=queue_name, priority=0,
                   options={})
    worker = dramatiq.Worker(broker, queues={queue_name}, worker_threads=threads)
    worker.queue_prefetch = threads  # hold no more messages than can run: the others stay for other workers
    if isinstance(broker, RedisBroker):
        _warn_unless_persistent(broker)
    worker.start()
    wake_s = min(lease_s / 3, RESEND_INTERVAL_S)
    next_resend = time.monotonic()
    try:
        while True:
            if resend is not None and time.monotonic() >= next_resend:
                _resend(resend)
                next_resend = time.monotonic() + RESEND_INTERVAL_S
            if stop.wait(wake_s):
                break
            if isinstance(broker, RedisBroker):  # a busy worker fetches nothing: tell Redis it is alive
                _redis_heartbeat(broker, queue_name)
    finally:
        log.info("stopping: waiting up to %.0f s for running jobs", STOP_TIMEOUT_S)
        worker.stop(timeout=int(STOP_TIMEOUT_S * 1000))
        broker.close()


def _warn_unless_persistent(broker: RedisBroker) -> None:
    """Redis without an append-only file loses the messages of queued jobs when it restarts: say so."""
    try:
        info = broker.client.info("persistence")
    except redis.RedisError:  # INFO refused or Redis down: nothing to say yet
        return
    if not info.get("aof_enabled"):
        log.warning("Redis writes no append-only file: jobs queued when it restarts are never run. Set appendonly "
                    "yes (with appendfsync always to survive a crash of its host)")


def _redis_heartbeat(broker: RedisBroker, queue_name: str) -> None:
    """Any command refreshes this broker's heartbeat in Redis; ``qsize`` is the cheapest."""
    try:
        broker.do_qsize(queue_name)
    except redis.RedisError:  # Redis briefly unreachable: the consumers reconnect on their own
        log.warning("Redis did not answer the worker's heartbeat")


def _resend(resend: Callable[[], int]) -> None:
    """Send again the jobs whose message was never sent; a failure is logged and tried again later."""
    try:
        sent = resend()
    except Exception:  # the index briefly unreachable: the next sweep may succeed
        log.exception("the jobs waiting to be sent could not be looked up")
        return
    if sent:
        log.warning("%d job(s) queued while the job queue was unreachable were sent again", sent)
