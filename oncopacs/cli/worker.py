"""``oncopacs worker``: job worker processes fed by the queue engine (``ONCOPACS_QUEUE_URL``), until SIGINT or SIGTERM.

With ``--processes 1`` the worker runs in this process. With more, this process supervises that many worker
processes: it restarts one that dies (its job is retried by another once its lease ends) and passes a stop on.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from multiprocessing.process import BaseProcess

from oncopacs.errors import ConfigError
from oncopacs.jobs.consumer import LEASE_S, STOP_TIMEOUT_S, consume, heartbeat_timeout_ms
from oncopacs.jobs.dispatch import DispatchingJobQueue, describe_url, open_broker
from oncopacs.jobs.queue import DatabaseJobQueue
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 2.0  # a worker process that died is started again after this pause


def run_worker(platform: Platform, stop: threading.Event, *, threads: int = 1, lease_s: float = LEASE_S) -> None:
    """Run the jobs of ``platform``'s queue engine in this process, ``threads`` at a time, until ``stop`` is set."""
    url = platform.settings.queue_url
    if not url:
        raise ConfigError("oncopacs worker needs a queue engine: set ONCOPACS_QUEUE_URL (amqp://… or redis://…)")
    queue = platform.jobs.queue
    if not isinstance(queue, DatabaseJobQueue):
        raise TypeError("queue workers need the index's job queue")
    broker = open_broker(url, heartbeat_timeout_ms=heartbeat_timeout_ms(lease_s))
    log.info("worker: %d thread(s) taking jobs (%s) from %s, queue %s", threads, ", ".join(platform.jobs.registry),
             describe_url(url), platform.settings.queue_name)
    resend = queue.resend_unsent if isinstance(queue, DispatchingJobQueue) else None  # jobs queued while it was down
    consume(queue, platform.jobs.registry, broker, stop, queue_name=platform.settings.queue_name, threads=threads,
            lease_s=lease_s, resend=resend)


def serve_worker(settings: Settings, *, processes: int = 1, threads: int = 1, lease_s: float = LEASE_S) -> None:
    """``oncopacs worker``: ``processes`` worker processes of ``threads`` threads each, until SIGINT or SIGTERM."""
    if not settings.queue_url:
        raise ConfigError("oncopacs worker needs a queue engine: set ONCOPACS_QUEUE_URL (amqp://… or redis://…)")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, _frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if processes == 1:
            with open_platform(settings) as platform:
                run_worker(platform, stop, threads=threads, lease_s=lease_s)
        else:
            _supervise(settings, stop, processes=processes, threads=threads, lease_s=lease_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("worker stopped")


def _supervise(settings: Settings, stop: threading.Event, *, processes: int, threads: int, lease_s: float) -> None:
    """Keep ``processes`` worker processes running until ``stop``; then stop them and wait for them."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or connections inherited
    level = logging.getLogger("oncopacs").getEffectiveLevel()

    def start() -> BaseProcess:
        child = context.Process(target=_worker_process, args=(settings, threads, lease_s, level),
                                name="oncopacs-worker", daemon=False)
        child.start()
        return child

    children = [start() for _ in range(processes)]
    try:
        while not stop.wait(RESTART_PAUSE_S):
            for i, child in enumerate(children):
                if not child.is_alive():
                    log.warning("worker process %s ended (exit status %s); starting another", child.pid,
                                child.exitcode)
                    children[i] = start()
    finally:
        for child in children:
            child.terminate()  # SIGTERM: finish the jobs in hand, then exit
        for child in children:
            child.join(STOP_TIMEOUT_S + 10)
            if child.is_alive():
                child.kill()


def _worker_process(settings: Settings, threads: int, lease_s: float, level: int) -> None:
    """One worker process (the target of :func:`_supervise`)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("oncopacs").setLevel(level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop.set())
    with open_platform(settings) as platform:
        run_worker(platform, stop, threads=threads, lease_s=lease_s)
