"""The queue engine's sending side: jobs stay rows of the index; a broker message carries each job's id to a worker.

With ``queue_url`` set (RabbitMQ ``amqp://`` or Redis ``redis://``), :class:`DispatchingJobQueue` writes the
job row as :class:`~oncopacs.jobs.queue.DatabaseJobQueue` does and, once that is committed, sends a Dramatiq
message holding only the job's id. ``oncopacs worker`` processes (:mod:`oncopacs.jobs.consumer`) receive it.
Dramatiq acknowledges a message only after the job ran, so a message whose worker was killed is delivered
again; the row's lease decides who runs it, and its status whether it still needs running.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries

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
UNREACHABLE_MESSAGE = "the job queue could not be reached to hand this job to a worker; submit it again"


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
        return RabbitmqBroker(url=pika_url(url), middleware=middleware, confirm_delivery=True)
    return RedisBroker(url=url, middleware=middleware, heartbeat_timeout=heartbeat_timeout_ms,
                       maintenance_chance=REDIS_MAINTENANCE_CHANCE)


def pika_url(url: str) -> str:
    """An AMQP URL as pika reads it: the virtual host "/" written ``//`` (as Celery and kombu write it) is ``/%2F``."""
    parts = urlsplit(url)
    return parts._replace(path="/%2F").geturl() if parts.path == "//" else url


def job_message(job_id: int, queue_name: str = QUEUE_NAME) -> dramatiq.Message[Any]:
    """The message that asks a worker to run job ``job_id``."""
    return dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={})


class DispatchingJobQueue(DatabaseJobQueue):
    """Jobs in the index, each also announced on the broker for ``oncopacs worker`` processes."""

    def __init__(self, index: IndexDatabase, broker: dramatiq.Broker, url: str, queue_name: str = QUEUE_NAME):
        super().__init__(index)
        self.broker = broker
        self.queue_name = queue_name
        self.where = f"{describe_url(url)} (queue {queue_name})"

    def enqueue(self, kind: str, params: Mapping[str, Any], created_by: str) -> int:
        """Add a queued job (committed), then send its id to the workers; its id.

        A job whose message cannot be sent is failed at once with a reason, so it never waits for nobody.
        """
        job_id = super().enqueue(kind, params, created_by)
        try:
            self.send(job_id)
        except (dramatiq.errors.DramatiqError, redis.RedisError, OSError) as exc:  # the broker down or refusing
            log.error("job %d (%s) could not be sent to the job queue at %s: %s", job_id, kind, self.where,
                      type(exc).__name__)
            self.fail_queued(job_id, UNREACHABLE_MESSAGE)
        return job_id

    def send(self, job_id: int, *, delay_ms: int | None = None) -> None:
        """Send (again) the message for job ``job_id``, after ``delay_ms`` milliseconds when given."""
        self.broker.enqueue(job_message(job_id, self.queue_name), delay=delay_ms)
