"""The queue engine's sending side: jobs stay rows of the index; a broker message carries each job's id to a worker.

With ``queue_url`` set (RabbitMQ ``amqp://`` or Redis ``redis://``), :class:`DispatchingJobQueue` writes the
job row as :class:`~oncopacs.jobs.queue.DatabaseJobQueue` does and, once that is committed, sends a Dramatiq
message holding only the job's id. ``oncopacs worker`` processes (:mod:`oncopacs.jobs.consumer`) receive it.
Dramatiq acknowledges a message only after the job ran, so a message whose worker was killed is delivered
again; the row's lease decides who runs it, and its status whether it still needs running.

Sending is bounded: a few retries within :data:`SEND_TIMEOUT_S`, in a sender thread, so a broker that is down
or stalled never holds up an HTTP request or a DICOM association. A job not sent stays queued under a lapsed
send lease (see :mod:`oncopacs.jobs.queue`) and ``oncopacs worker`` sends it again (:meth:`resend_unsent`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import dramatiq
import pika.exceptions
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from oncopacs.errors import ConfigError
from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.queue import DatabaseJobQueue

log = logging.getLogger(__name__)

QUEUE_NAME = "oncopacs-jobs"  # the default of the queue_name setting
ACTOR_NAME = "oncopacs_run_job"
#: Retries of a message whose handling raised (the index unreachable, never a job's own failure), with backoff.
MAX_DELIVERY_RETRIES = 30
RETRY_MIN_BACKOFF_MS = 1_000
RETRY_MAX_BACKOFF_MS = 300_000
#: Redis: a worker silent this long (ms) is dead and its unacknowledged messages go back to the queue ...
REDIS_HEARTBEAT_TIMEOUT_MS = 120_000
#: ... which one command in this many (of a million) checks (each check is two cheap sorted-set reads).
REDIS_MAINTENANCE_CHANCE = 250_000
#: Sending one job's message: retries, pausing SEND_RETRY_PAUSE_S (doubling), for at most this long (s) in all.
SEND_TIMEOUT_S = 3.0
SEND_RETRY_PAUSE_S = 0.25
SEND_THREADS = 4  # sender threads per process (each keeps its own broker connection)
#: A queued job's send lease (s): not confirmed sent by then, a worker sends it again.
SEND_LEASE_S = 30.0
RESEND_BATCH = 100  # unsent jobs sent again per sweep
#: Client timeouts (s): connecting, and (RabbitMQ) the whole connection set-up and a publisher the broker blocks.
CONNECT_TIMEOUT_S = 2.0
AMQP_STACK_TIMEOUT_S = 3.0
AMQP_BLOCKED_TIMEOUT_S = 30.0
REDIS_SOCKET_TIMEOUT_S = 10.0
UNSENT_MESSAGE = "waiting for the job queue, which could not be reached; the job is sent again automatically"
#: What a broker that is down, refusing or stalled raises on send (pika's set-up time-out is none of its AMQPErrors).
SEND_ERRORS: tuple[type[BaseException], ...] = (dramatiq.errors.DramatiqError, pika.exceptions.AMQPError,
                                                AMQPConnectorException, redis.RedisError, OSError)


def broker_kind(url: str) -> str:
    """``"rabbitmq"`` or ``"redis"`` for a queue URL; ConfigError for anything else."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("amqp", "amqps"):
        return "rabbitmq"
    if scheme in ("redis", "rediss"):
        return "redis"
    raise ConfigError("setting queue_url (ONCOPACS_QUEUE_URL) must be an amqp:// (RabbitMQ) or redis:// URL")


def describe_url(url: str) -> str:
    """The URL without user or password, for logs and messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def open_broker(url: str, *, heartbeat_timeout_ms: int = REDIS_HEARTBEAT_TIMEOUT_MS) -> dramatiq.Broker:
    """A Dramatiq broker for ``url`` (nothing connects until it is used), with only the Retries middleware.

    Jobs have no time limit and no age limit: Dramatiq's default middleware is not used.
    """
    middleware: list[Middleware] = [Retries(max_retries=MAX_DELIVERY_RETRIES, min_backoff=RETRY_MIN_BACKOFF_MS,
                          max_backoff=RETRY_MAX_BACKOFF_MS)]
    if broker_kind(url) == "rabbitmq":
        return RabbitmqBroker(url=pika_url(url, timeouts=True), middleware=middleware, confirm_delivery=True)
    # options in the URL's query win over these timeouts
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=REDIS_SOCKET_TIMEOUT_S)
    return RedisBroker(client=client, middleware=middleware, heartbeat_timeout=heartbeat_timeout_ms,
                       maintenance_chance=REDIS_MAINTENANCE_CHANCE)


def pika_url(url: str, *, timeouts: bool = False) -> str:
    """An AMQP URL as pika reads it: the virtual host "/" written ``//`` (as Celery and kombu write it) is ``/%2F``.

    With ``timeouts``, pika's connect, set-up and blocked-publisher timeouts are added unless the URL sets them.
    """
    parts = urlsplit(url)
    if parts.path == "//":
        parts = parts._replace(path="/%2F")
    if timeouts:
        query = dict(parse_qsl(parts.query))
        for name, value in (("socket_timeout", CONNECT_TIMEOUT_S), ("stack_timeout", AMQP_STACK_TIMEOUT_S),
                            ("blocked_connection_timeout", AMQP_BLOCKED_TIMEOUT_S)):
            query.setdefault(name, str(value))
        parts = parts._replace(query=urlencode(query))
    return parts.geturl()


def sender_name() -> str:
    """A send lease holder's name: host, process and a random part, at most 64 characters."""
    return f"send:{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def job_message(job_id: int, queue_name: str = QUEUE_NAME) -> dramatiq.Message[Any]:
    """The message that asks a worker to run job ``job_id``."""
    return dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={})


class DispatchingJobQueue(DatabaseJobQueue):
    """Jobs in the index, each also announced on the broker for ``oncopacs worker`` processes."""

    def __init__(self, index: IndexDatabase, broker: dramatiq.Broker, url: str, queue_name: str = QUEUE_NAME, *,
                 send_timeout_s: float = SEND_TIMEOUT_S):
        super().__init__(index)
        self.broker = broker
        self.queue_name = queue_name
        self.where = f"{describe_url(url)} (queue {queue_name})"
        self.send_timeout_s = send_timeout_s
        self._senders = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="oncopacs-send")

    def enqueue(self, kind: str, params: Mapping[str, Any], created_by: str) -> int:
        """Add a queued job (committed), then send its id to the workers, for at most ``send_timeout_s``; its id.

        A job whose message could not be sent stays queued, with :data:`UNSENT_MESSAGE`; a worker sends it again.
        """
        sender = sender_name()
        job_id = self._insert(kind, params, created_by, sender=sender, send_lease_s=SEND_LEASE_S)
        self._send_bounded(job_id, sender)
        return job_id

    def resend_unsent(self, limit: int = RESEND_BATCH) -> int:
        """Send again the queued jobs whose send lease lapsed; how many were sent. Stops at the first failure."""
        sent = 0
        for job_id in self.unsent_job_ids(limit):
            sender = sender_name()
            if not self.take_send_lease(job_id, sender, SEND_LEASE_S):
                continue  # sent or claimed meanwhile, or another worker is sending it
            if not self._send_bounded(job_id, sender):
                break  # the broker is still down: the next sweep tries again
            log.info("job %d: sent again to %s", job_id, self.where)
            sent += 1
        return sent

    def send(self, job_id: int, *, delay_ms: int | None = None) -> None:
        """Send (again) the message for job ``job_id``, after ``delay_ms`` milliseconds when given."""
        self.broker.enqueue(job_message(job_id, self.queue_name), delay=delay_ms)

    def close(self) -> None:
        """Stop the sender threads (a send under way finishes) and close the broker's connections."""
        self._senders.shutdown(wait=False, cancel_futures=True)
        self.broker.close()

    def _send_bounded(self, job_id: int, sender: str) -> bool:
        """Send in a sender thread, waiting at most ``send_timeout_s`` (and a little); whether it was sent.

        A send still under way when the wait ends records its own outcome; a hung one lets the send lease lapse.
        """
        started = time.monotonic()
        future = self._senders.submit(self._send_with_retries, job_id, sender, started + self.send_timeout_s)
        try:
            return future.result(timeout=self.send_timeout_s + 1.0)
        except FutureTimeout:
            log.error("job %d: the job queue at %s did not answer within %.1f s; a worker sends it again", job_id,
                      self.where, time.monotonic() - started)
            return False

    def _send_with_retries(self, job_id: int, sender: str, deadline: float) -> bool:
        """Send until the broker takes the message or ``deadline`` (monotonic) nears; record the outcome."""
        pause = SEND_RETRY_PAUSE_S
        while True:
            try:
                self.send(job_id)
            except SEND_ERRORS as exc:  # the broker down, refusing or stalled
                if time.monotonic() + pause >= deadline:
                    log.error("job %d could not be sent to the job queue at %s (%s); it stays queued and a worker "
                              "sends it again", job_id, self.where, type(exc).__name__)
                    self.mark_unsent(job_id, sender, UNSENT_MESSAGE)
                    return False
                time.sleep(pause)
                pause *= 2
            else:
                self.mark_sent(job_id, sender)
                return True
