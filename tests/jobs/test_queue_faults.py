"""The queue engine under faults: a worker killed mid-job, a broker restarted, a broker down when a job is queued.

Worker kills use the shared RabbitMQ and Redis (a queue of the test's own). Broker restarts never touch the shared
services: each test starts a private Redis (append-only file, fsync on every write) or a private RabbitMQ node on
free loopback ports, in its own temporary folder, and kills it with SIGKILL. Durations are printed (run with -s).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oncopacs.jobs.dispatch import SEND_TIMEOUT_S, UNSENT_MESSAGE, DispatchingJobQueue
from oncopacs.jobs.queue import DatabaseJobQueue, JobRecord, JobStatus
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY, free_port, require
from tests.jobs.sleepy_worker import SLEEP
from tests.jobs.test_queue_engine import BROKERS, WORKER_LEASE_S, WorkerProcess, delete_queue, listening

pytestmark = pytest.mark.slow

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the Debian package's script (not the su wrapper)
#: Ports a private RabbitMQ must not take: the shared node's distribution port, and the range rabbitmqctl uses.
RABBITMQ_RESERVED_PORTS = frozenset({25672, *range(35672, 35683)})
BROKER_START_S = 90.0


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                    audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, queue_url=url,
                    queue_name=f"oncopacs-test-{uuid.uuid4().hex[:12]}")


def _sleep_params(tmp_path: Path, name: str, seconds: float) -> dict[str, object]:
    return {"seconds": seconds, "log": str(tmp_path / f"{name}.notes")}


def _notes(params: dict[str, object]) -> list[str]:
    path = Path(str(params["log"]))
    return path.read_text().splitlines() if path.exists() else []


def _worker(settings: Settings, log_path: Path) -> WorkerProcess:
    """``oncopacs worker``'s run loop (:func:`oncopacs.cli.worker.run_worker`) with the ``test_sleep`` kind."""
    return WorkerProcess(settings, ["-m", "tests.jobs.sleepy_worker", str(WORKER_LEASE_S)], log_path)


def _wait(queue: DatabaseJobQueue, job_ids: list[int], done: Callable[[JobRecord], bool],
          workers: list[WorkerProcess], timeout_s: float) -> list[JobRecord]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [queue.get(job_id) for job_id in job_ids]
        if all(job is not None and done(job) for job in jobs):
            return [job for job in jobs if job is not None]
        logs = "\n".join(w.log_tail() for w in workers)
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs stayed {jobs}; worker logs:\n{logs}")
        for worker in workers:
            if worker.process.poll() is not None:
                raise AssertionError(f"a worker exited ({worker.process.returncode}): {logs}")
        time.sleep(0.1)


def _succeeded(job: JobRecord) -> bool:
    return job.status is JobStatus.SUCCEEDED


# -- 1. a worker killed mid-job (the shared brokers) -------------------------------------------------------------

@pytest.fixture(params=sorted(BROKERS))
def shared_broker_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    url, port = BROKERS[request.param]
    require(listening(port), f"{request.param} is not reachable on 127.0.0.1:{port}")
    settings = _settings(tmp_path, url)
    yield settings
    delete_queue(url, settings.queue_name)


def test_a_killed_worker_s_job_is_finished_once_by_the_worker_still_running(shared_broker_settings: Settings,
                                                                             tmp_path: Path):
    """Two workers; the one running the job gets SIGKILL; the other finishes it, writing its result once."""
    settings = shared_broker_settings
    with open_platform(settings) as platform:
        queue = platform.jobs.queue
        assert isinstance(queue, DispatchingJobQueue)
        workers = [_worker(settings, tmp_path / f"worker-{n}.log") for n in (1, 2)]
        try:
            params = _sleep_params(tmp_path, "job", 3)
            job_id = queue.enqueue(SLEEP, params, "tester")
            _wait(queue, [job_id], lambda j: j.status is JobStatus.RUNNING and j.progress > 0.1, workers, 30)
            [started] = _notes(params)
            victim = next(w for w in workers if started == f"start {w.pid}")
            survivor = next(w for w in workers if w is not victim)
            victim.kill()  # SIGKILL: no chance to give the job back
            killed_at = time.monotonic()
            [job] = _wait(queue, [job_id], _succeeded, [survivor], 60)
            took_s = time.monotonic() - killed_at
        finally:
            codes = [w.stop() for w in workers]
    print(f"\n{settings.queue_url.split(':')[0]}: killed worker's 3 s job finished {took_s:.1f} s after the kill "
          f"(lease {WORKER_LEASE_S} s)")
    assert codes[workers.index(survivor)] == 0, survivor.log_tail()
    assert job.result == {"pid": survivor.pid} and job.attempts == 2 and job.progress == 1.0
    assert _notes(params) == [f"start {victim.pid}", f"start {survivor.pid}", f"done {survivor.pid}"]


# -- 2. a broker restarted: private brokers ---------------------------------------------------------------------

class PrivateBroker(abc.ABC):
    """A broker of the test's own on a free loopback port, its data in ``folder``; started and killed at will."""

    kind = ""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The broker's URL for ONCOPACS_QUEUE_URL."""

    @abc.abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and environment."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether it answers a client now."""

    def start(self) -> float:
        """Start it (on the same port and data); seconds until it answers."""
        command, env = self.command()
        self.starts += 1
        log = open(self.folder / f"broker-{self.starts}.log", "wb")  # noqa: SIM115 - the child keeps it
        started = time.monotonic()
        self.process = subprocess.Popen(command, env=env, cwd=self.folder, stdout=log, stderr=log,
                                        start_new_session=True)
        log.close()
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() - started > BROKER_START_S:
                self.kill()
                raise AssertionError(f"the private {self.kind} did not start: {self.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL to all its processes, as a crash or power cut of the broker's host would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        deadline = time.monotonic() + 10
        while listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.process = None

    def log_tail(self) -> str:
        return (self.folder / f"broker-{self.starts}.log").read_text(errors="replace")[-3000:]


class PrivateRedis(PrivateBroker):
    """``redis-server`` with an append-only file fsynced on every write: what it acknowledged survives SIGKILL."""

    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ([shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
                dict(os.environ))

    def ready(self) -> bool:
        import redis

        try:
            with redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


class PrivateRabbitmq(PrivateBroker):
    """A RabbitMQ node of its own (own name, ports, database and logs); persistent messages survive SIGKILL.

    Dramatiq declares durable queues, publishes persistent messages and (``confirm_delivery``) waits for the
    broker's confirm, which RabbitMQ sends only once a persistent message is on disk.
    """

    kind = "rabbitmq"

    def __init__(self, folder: Path):
        super().__init__(folder)
        while self.port in RABBITMQ_RESERVED_PORTS:
            self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port in RABBITMQ_RESERVED_PORTS or self.dist_port == self.port:
            self.dist_port = free_port()
        self.node = f"oncotest-{uuid.uuid4().hex[:8]}@localhost"
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "rabbitmq.conf").write_text("")  # not the shared node's /etc/rabbitmq/rabbitmq.conf
        (folder / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("RABBITMQ_", "ERL_"))}
        folder = self.folder
        env.update(
            HOME=str(folder), RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(folder / "mnesia"), RABBITMQ_LOG_BASE=str(folder / "log"), RABBITMQ_LOGS="-",
            RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(folder / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(folder / "node.pid"), ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return [RABBITMQ_SERVER], env

    def ready(self) -> bool:
        import pika
        import pika.exceptions

        if not listening(self.port):
            return False
        try:
            pika.BlockingConnection(pika.URLParameters(
                f"amqp://guest:guest@127.0.0.1:{self.port}/%2F?socket_timeout=1&stack_timeout=2")).close()
        except pika.exceptions.AMQPError:
            return False
        return True


def _private_broker(kind: str, folder: Path) -> PrivateBroker:
    if kind == "redis":
        require(shutil.which("redis-server") is not None, "redis-server is not installed")
        return PrivateRedis(folder)
    require(Path(RABBITMQ_SERVER).exists(), f"{RABBITMQ_SERVER} is not installed")
    require(os.geteuid() == 0, "a private RabbitMQ node is started as root here")
    return PrivateRabbitmq(folder)


@pytest.fixture(params=["rabbitmq", "redis"])
def private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = _private_broker(request.param, tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.kill()


def test_jobs_queued_before_a_broker_crash_and_while_it_is_down_all_run_once(private_broker: PrivateBroker,
                                                                           tmp_path: Path):
    """Queue jobs with no worker, SIGKILL the broker, queue one more while it is down, restart it, start a worker."""
    broker = private_broker
    first_start_s = broker.start()
    settings = _settings(tmp_path, broker.url)
    with open_platform(settings) as platform:
        queue = platform.jobs.queue
        assert isinstance(queue, DispatchingJobQueue)
        params = [_sleep_params(tmp_path, f"job-{n}", 0.2) for n in range(6)]
        before = [queue.enqueue(SLEEP, p, "tester") for p in params[:5]]
        assert queue.unsent_job_ids(100) == () and all(queue.get(j).message == "" for j in before)  # all sent

        broker.kill()
        asked = time.monotonic()
        during = queue.enqueue(SLEEP, params[5], "tester")
        send_failed_s = time.monotonic() - asked
        unsent = queue.get(during)
        assert unsent.status is JobStatus.QUEUED and unsent.message == UNSENT_MESSAGE
        assert queue.unsent_job_ids(100) == (during,)

        restart_s = broker.start()  # the same port and data folder
        worker = _worker(settings, tmp_path / "worker.log")
        try:
            jobs = _wait(queue, [*before, during], _succeeded, [worker], 60)
        finally:
            code = worker.stop()
    print(f"\n{broker.kind}: started in {first_start_s:.1f} s, restarted in {restart_s:.1f} s; a send to it while "
          f"down gave up after {send_failed_s:.2f} s")
    assert code == 0, worker.log_tail()
    assert send_failed_s < SEND_TIMEOUT_S + 1.0
    for job, job_params in zip(jobs, params, strict=True):  # each ran once, in the one worker
        assert job.attempts == 1 and job.result == {"pid": worker.pid} and job.message == "done"
        assert _notes(job_params) == [f"start {worker.pid}", f"done {worker.pid}"]


# -- 3. the broker down (or stalled) when a job is queued --------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_queueing_with_the_broker_down_answers_at_once_and_keeps_the_job(kind: str, tmp_path: Path):
    """An HTTP request queueing a job while nothing listens at the queue URL: 202 within the send bound, job kept."""
    from oncopacs.auth.roles import Role
    from oncopacs.jobs.kinds import VERIFY
    from oncopacs.web.app import create_app

    port = free_port()  # nothing listens there
    url = f"amqp://guest:guest@127.0.0.1:{port}//" if kind == "rabbitmq" else f"redis://127.0.0.1:{port}/0"
    with open_platform(_settings(tmp_path, url)) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        platform.users.add_user("physicist", Role.PHYSICIST, "correct horse battery")
        headers = {"Authorization": f"Bearer {platform.users.create_token('physicist')}"}
        asked = time.monotonic()
        created = app.test_client().post("/api/jobs", json={"kind": VERIFY}, headers=headers)
        answered_s = time.monotonic() - asked
        assert created.status_code == 202, created.get_json()
        job = platform.jobs.queue.get(created.get_json()["id"])
        assert isinstance(platform.jobs.queue, DispatchingJobQueue)
        unsent = platform.jobs.queue.unsent_job_ids(10)
    print(f"\n{kind} down: POST /api/jobs answered in {answered_s:.2f} s")
    assert answered_s < SEND_TIMEOUT_S + 1.0
    assert job is not None and job.status is JobStatus.QUEUED and job.message == UNSENT_MESSAGE
    assert unsent == (job.id,)


def _stalled_listener() -> tuple[socket.socket, threading.Event, list[socket.socket]]:
    """A loopback port that accepts connections and never answers (a broker hung, or a black-holing proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    return server, stop, accepted


@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_queueing_with_a_stalled_broker_is_bounded_and_keeps_the_job(kind: str, tmp_path: Path):
    server, stop, accepted = _stalled_listener()
    port = server.getsockname()[1]
    url = f"amqp://guest:guest@127.0.0.1:{port}//" if kind == "rabbitmq" else f"redis://127.0.0.1:{port}/0"
    try:
        with open_platform(_settings(tmp_path, url)) as platform:
            queue = platform.jobs.queue
            assert isinstance(queue, DispatchingJobQueue)
            asked = time.monotonic()
            job_id = queue.enqueue(SLEEP, {}, "tester")
            answered_s = time.monotonic() - asked
            job = queue.get(job_id)
    finally:
        stop.set()
        for connection in accepted:
            connection.close()
        server.close()
    print(f"\n{kind} stalled: enqueue returned after {answered_s:.2f} s")
    assert accepted, "the client never connected"
    assert answered_s < SEND_TIMEOUT_S + 2.0
    assert job is not None and job.status is JobStatus.QUEUED  # kept; sent again once its send lease lapses


def test_a_job_queued_while_redis_was_down_is_sent_by_the_worker_once_it_is_back(tmp_path: Path):
    """Nothing listens when the job is queued; Redis then starts on that port and a worker runs the job once."""
    broker = _private_broker("redis", tmp_path / "broker")
    settings = _settings(tmp_path, broker.url)
    try:
        with open_platform(settings) as platform:
            queue = platform.jobs.queue
            assert isinstance(queue, DispatchingJobQueue)
            params = _sleep_params(tmp_path, "job", 0.2)
            job_id = queue.enqueue(SLEEP, params, "tester")
            assert queue.get(job_id).message == UNSENT_MESSAGE
            broker.start()
            worker = _worker(settings, tmp_path / "worker.log")
            try:
                started = time.monotonic()
                [job] = _wait(queue, [job_id], _succeeded, [worker], 60)
                took_s = time.monotonic() - started
            finally:
                code = worker.stop()
    finally:
        broker.kill()
    print(f"\nredis back: the job queued while it was down finished {took_s:.1f} s after the worker started")
    assert code == 0, worker.log_tail()
    assert job.attempts == 1 and job.result == {"pid": worker.pid} and job.message == "done"
    assert _notes(params) == [f"start {worker.pid}", f"done {worker.pid}"]
