"""The queue engine: jobs dispatched through RabbitMQ and Redis (loopback) to ``oncopacs worker`` processes.

Leases and conditional writes are tested on the index alone (SQLite and PostgreSQL); the brokers with real
worker subprocesses, one of them killed mid-job. Each test uses its own broker queue, deleted afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oncopacs.errors import ConfigError
from oncopacs.jobs.consumer import JobConsumer
from oncopacs.jobs.dispatch import SEND_TIMEOUT_S, UNSENT_MESSAGE, DispatchingJobQueue, pika_url
from oncopacs.jobs.kinds import VERIFY
from oncopacs.jobs.queue import MAX_ATTEMPTS, ClaimOutcome, DatabaseJobQueue, JobRecord, JobStatus
from oncopacs.jobs.worker import INTERRUPTED_MESSAGE, JobRegistry
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY, free_port, require
from tests.factories import small_ct_series
from tests.jobs.sleepy_worker import SLEEP

REPO = Path(__file__).resolve().parents[2]
BROKERS = {
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
    "redis": ("redis://127.0.0.1:6379/0", 6379),
}
WORKER_LEASE_S = 2.0  # short leases, so a killed worker's job is taken over within seconds


# -- settings ---------------------------------------------------------------------------------------------------

def test_queue_url_is_checked_and_never_quoted():
    assert Settings.load(env={}).queue_url == ""
    url = "amqp://guest:guest@127.0.0.1:5672//"
    assert Settings.load(env={"ONCOPACS_QUEUE_URL": url}).queue_url == url
    assert Settings.load(env={"ONCOPACS_QUEUE_URL": "redis://127.0.0.1:6379/0"}).queue_url.startswith("redis://")
    for bad in ("http://user:s3cret@host/", "s3cret", "amqp://"):
        with pytest.raises(ConfigError, match="queue_url") as caught:
            Settings.load(env={"ONCOPACS_QUEUE_URL": bad})
        assert "s3cret" not in str(caught.value)
    assert "guest:guest" not in repr(Settings(queue_url=url))
    with pytest.raises(ConfigError, match="queue_name"):
        Settings.load(env={"ONCOPACS_QUEUE_NAME": "jobs.DQ"})


def test_amqp_urls_get_bounded_timeouts_unless_they_set_their_own():
    import pika

    params = pika.URLParameters(pika_url("amqp://guest:guest@127.0.0.1:5672//", timeouts=True))
    assert params.virtual_host == "/" and params.socket_timeout == 2.0 and params.stack_timeout == 3.0
    assert params.blocked_connection_timeout == 30.0
    own = pika.URLParameters(pika_url("amqp://u:p@h:5672/v?socket_timeout=7&heartbeat=30", timeouts=True))
    assert own.virtual_host == "v" and own.socket_timeout == 7.0 and own.heartbeat == 30 and own.stack_timeout == 3.0
    assert pika_url("amqp://guest:guest@127.0.0.1:5672//") == "amqp://guest:guest@127.0.0.1:5672/%2F"


# -- leases on the index (SQLite and PostgreSQL) ----------------------------------------------------------------

@pytest.fixture
def queue(platform: Platform) -> DatabaseJobQueue:
    assert isinstance(platform.jobs.queue, DatabaseJobQueue)
    return platform.jobs.queue


def _expire_lease(queue: DatabaseJobQueue, job_id: int) -> None:
    """As if the lease holder had died a while ago."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from oncopacs.jobs.models import Job

    with queue.index.write_connection() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(
            lease_expires_at=datetime.now(UTC) - timedelta(seconds=5)))


def test_a_job_taken_over_after_its_lease_expired_is_written_once(queue: DatabaseJobQueue):
    job_id = queue.enqueue("test", {}, "tester")
    first = queue.claim(job_id, "worker-a", 30)
    assert first.outcome is ClaimOutcome.CLAIMED and first.job.attempts == 1
    assert first.job.status is JobStatus.RUNNING
    busy = queue.claim(job_id, "worker-b", 30)
    assert busy.outcome is ClaimOutcome.BUSY and 25 < busy.retry_after_s <= 30
    assert queue.renew_lease(job_id, "worker-a", 30)

    _expire_lease(queue, job_id)  # worker-a "died"
    second = queue.claim(job_id, "worker-b", 30)
    assert second.outcome is ClaimOutcome.CLAIMED and second.job.attempts == 2
    assert not queue.report_progress(job_id, 0.5, "stale", owner="worker-a")
    assert not queue.renew_lease(job_id, "worker-a", 30)
    assert queue.report_progress(job_id, 0.5, "half", owner="worker-b")
    assert queue.succeed(job_id, {"by": "b"}, "done", owner="worker-b")
    assert not queue.succeed(job_id, {"by": "a"}, "done", owner="worker-a")  # too late: not written
    assert not queue.fail(job_id, "late", owner="worker-a")
    job = queue.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result == {"by": "b"} and job.attempts == 2
    assert queue.claim(job_id, "worker-c", 30).outcome is ClaimOutcome.FINISHED
    assert queue.claim(job_id + 1000, "worker-c", 30).outcome is ClaimOutcome.GONE


def test_a_job_whose_workers_keep_dying_is_failed(queue: DatabaseJobQueue):
    job_id = queue.enqueue("test", {}, "tester")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claim = queue.claim(job_id, f"worker-{attempt}", 30)
        assert claim.outcome is ClaimOutcome.CLAIMED and claim.job.attempts == attempt
        _expire_lease(queue, job_id)
    claim = queue.claim(job_id, "worker-last", 30)
    assert claim.outcome is ClaimOutcome.EXHAUSTED
    assert claim.job.status is JobStatus.FAILED and f"interrupted {MAX_ATTEMPTS} times" in claim.job.message


def test_start_up_fails_only_jobs_no_queue_worker_will_retry(queue: DatabaseJobQueue):
    embedded, live, expired = (queue.enqueue("test", {}, "tester") for _ in range(3))
    assert queue.claim_next(frozenset({"test"})).id == embedded  # the embedded worker: no lease
    assert queue.claim(live, "worker-a", 30).outcome is ClaimOutcome.CLAIMED
    assert queue.claim(expired, "worker-b", 30).outcome is ClaimOutcome.CLAIMED
    _expire_lease(queue, expired)

    assert queue.fail_interrupted(INTERRUPTED_MESSAGE, leased=False) == 1  # `serve` with a queue engine
    assert queue.get(embedded).status is JobStatus.FAILED
    assert queue.get(expired).status is JobStatus.RUNNING  # a queue worker takes it over
    assert queue.fail_interrupted(INTERRUPTED_MESSAGE) == 1  # `serve` without one: nothing would retry it
    assert queue.get(expired).status is JobStatus.FAILED
    assert queue.get(live).status is JobStatus.RUNNING  # a live lease is never failed


def test_the_consumer_runs_a_job_once_and_drops_or_defers_other_messages(queue: DatabaseJobQueue):
    ran: list[int] = []
    deferred: list[tuple[int, int]] = []
    registry = JobRegistry()
    registry.register("test", lambda params, progress: ran.append(params["n"]) or {"n": params["n"]})
    consumer = JobConsumer(queue, registry, lambda job_id, delay_ms: deferred.append((job_id, delay_ms)),
                           lease_s=10)
    job_id = queue.enqueue("test", {"n": 7}, "tester")
    assert consumer.perform(job_id) is ClaimOutcome.CLAIMED
    assert consumer.perform(job_id) is ClaimOutcome.FINISHED  # redelivered after it ran: dropped
    assert ran == [7] and queue.get(job_id).result == {"n": 7} and queue.get(job_id).attempts == 1

    other = queue.enqueue("test", {"n": 8}, "tester")
    assert queue.claim(other, "elsewhere", 10).outcome is ClaimOutcome.CLAIMED
    assert consumer.perform(other) is ClaimOutcome.BUSY
    assert deferred and deferred[0][0] == other and 9_000 < deferred[0][1] <= 11_000
    assert ran == [7]


def test_a_job_that_cannot_be_sent_stays_queued_for_a_worker_to_send(sqlite_settings: Settings):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with open_platform(sqlite_settings.with_overrides(queue_url=url)) as platform:
        queue = platform.jobs.queue
        assert isinstance(queue, DispatchingJobQueue)
        asked = time.monotonic()
        job = queue.get(queue.enqueue(VERIFY, {}, "tester"))
        assert time.monotonic() - asked < SEND_TIMEOUT_S + 1.0
        assert job.status is JobStatus.QUEUED and job.message == UNSENT_MESSAGE
        assert queue.unsent_job_ids(10) == (job.id,)
        assert queue.resend_unsent() == 0  # still down: it stays unsent
        assert queue.unsent_job_ids(10) == (job.id,)


def test_a_send_lease_is_held_until_the_message_is_sent_and_taken_over_once_lapsed(queue: DatabaseJobQueue):
    job_id = queue._insert("test", {}, "tester", sender="sender-a", send_lease_s=30)
    assert queue.unsent_job_ids(10) == ()  # the sender is still trying
    assert not queue.take_send_lease(job_id, "sender-b", 30)
    assert queue.mark_unsent(job_id, "sender-a", "waiting")  # gave up: the lease lapses now
    assert queue.get(job_id).message == "waiting" and queue.unsent_job_ids(10) == (job_id,)
    assert queue.take_send_lease(job_id, "sender-b", 30)
    assert not queue.take_send_lease(job_id, "sender-c", 30)  # of racing workers, one sends it
    assert not queue.mark_sent(job_id, "sender-a")  # no longer the sender's
    assert queue.mark_sent(job_id, "sender-b") and queue.get(job_id).message == ""
    assert queue.unsent_job_ids(10) == ()

    claimed = queue._insert("test", {}, "tester", sender="sender-d", send_lease_s=30)
    assert queue.claim(claimed, "worker-a", 30).outcome is ClaimOutcome.CLAIMED  # delivered before it was marked
    assert not queue.mark_sent(claimed, "sender-d") and not queue.mark_unsent(claimed, "sender-d", "waiting")
    assert queue.renew_lease(claimed, "worker-a", 30)  # the worker's lease is untouched
    _expire_lease(queue, claimed)
    assert queue.unsent_job_ids(10) == ()  # a running job's lapsed lease is the worker's, not a send lease


# -- the brokers, with worker subprocesses ----------------------------------------------------------------------

def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(params=sorted(BROKERS))
def queue_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """SQLite settings with a queue engine (RabbitMQ or Redis on loopback) and a queue of this test's own."""
    url, port = BROKERS[request.param]
    require(listening(port), f"{request.param} is not reachable on 127.0.0.1:{port}")
    name = f"oncopacs-test-{uuid.uuid4().hex[:12]}"
    yield Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                   audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, queue_url=url, queue_name=name)
    delete_queue(url, name)


def delete_queue(url: str, name: str) -> None:
    """Remove the test's queues (and their delay and dead-letter queues) from the broker."""
    if url.startswith("amqp"):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
        try:
            channel = connection.channel()
            for queue_name in (name, f"{name}.DQ", f"{name}.XQ"):
                channel.queue_delete(queue_name)
        finally:
            connection.close()
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [*client.scan_iter(f"dramatiq:{name}*"), *client.scan_iter(f"dramatiq:__acks__.*.{name}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class WorkerProcess:
    """A queue worker subprocess (``oncopacs worker``, or the test worker with ``test_sleep``) and its log."""

    def __init__(self, settings: Settings, command: list[str], log_path: Path):
        env = {**os.environ, "ONCOPACS_DATA_DIR": str(settings.data_dir), "ONCOPACS_QUEUE_URL": settings.queue_url,
               "ONCOPACS_QUEUE_NAME": settings.queue_name, "ONCOPACS_SECRET_KEY": TEST_SECRET_KEY,
               "ONCOPACS_AUDIT_SPOOL_BYTES": str(TEST_AUDIT_SPOOL_BYTES), "ONCOPACS_DICOM_PORT": "0"}
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen([sys.executable, *command], env=env, cwd=REPO, stdout=self._log,
                                        stderr=self._log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def _sleepy_worker(settings: Settings, log_path: Path) -> WorkerProcess:
    return WorkerProcess(settings, ["-m", "tests.jobs.sleepy_worker", str(WORKER_LEASE_S)], log_path)


def _wait_for(queue: DatabaseJobQueue, job_id: int, done, worker: WorkerProcess, timeout_s: float) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if done(job):
            return job
        if worker.process.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.process.returncode}): {worker.log_tail()}")
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stayed {queue.get(job_id)}; worker log: {worker.log_tail()}")


@pytest.mark.slow
def test_a_job_queued_by_one_platform_runs_in_an_oncopacs_worker_process(queue_settings: Settings, tmp_path: Path):
    from oncopacs.auth.roles import Role
    from oncopacs.web.app import create_app

    with open_platform(queue_settings) as platform:
        for dataset in small_ct_series(6):
            assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
        app = create_app(platform)
        app.config["TESTING"] = True
        platform.users.add_user("physicist", Role.PHYSICIST, "correct horse battery")
        headers = {"Authorization": f"Bearer {platform.users.create_token('physicist')}"}
        client = app.test_client()
        created = client.post("/api/jobs", json={"kind": VERIFY}, headers=headers)
        assert created.status_code == 202, created.get_json()
        job_id = created.get_json()["id"]
        time.sleep(0.5)
        assert client.get(f"/api/jobs/{job_id}", headers=headers).get_json()["status"] == "queued"  # no worker yet

        worker = WorkerProcess(queue_settings, ["-m", "oncopacs.cli", "worker", "--threads", "2"],
                               tmp_path / "worker.log")
        try:
            job = _wait_for(platform.jobs.queue, job_id, lambda j: j.status is not JobStatus.QUEUED
                            and j.status is not JobStatus.RUNNING, worker, 30)
        finally:
            code = worker.stop()
        assert code == 0, worker.log_tail()
        assert job.status is JobStatus.SUCCEEDED, job.message
        listed = client.get("/api/jobs", headers=headers).get_json()
        shown = next(j for j in listed["jobs"] if j["id"] == job_id)
        assert shown["status"] == "succeeded" and shown["progress"] == 1.0
        assert shown["result"]["checked"] == 6 and shown["result"]["ok"] is True


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_is_retried_and_written_once(queue_settings: Settings, tmp_path: Path):
    notes = tmp_path / "sleep.log"
    with open_platform(queue_settings) as platform:
        queue = platform.jobs.queue
        assert isinstance(queue, DispatchingJobQueue)
        job_id = queue.enqueue(SLEEP, {"seconds": 2, "log": str(notes)}, "tester")

        first = _sleepy_worker(queue_settings, tmp_path / "worker-1.log")
        try:
            _wait_for(queue, job_id, lambda j: j.status is JobStatus.RUNNING and j.progress > 0.1, first, 30)
        finally:
            first.kill()
        assert queue.get(job_id).status is JobStatus.RUNNING  # killed mid-job: nothing marks it finished

        second = _sleepy_worker(queue_settings, tmp_path / "worker-2.log")
        try:
            job = _wait_for(queue, job_id, lambda j: j.status is JobStatus.SUCCEEDED, second, 45)
        finally:
            assert second.stop() == 0, second.log_tail()
    assert job.result == {"pid": second.pid} and job.attempts == 2 and job.progress == 1.0
    assert notes.read_text().splitlines() == [f"start {first.pid}", f"start {second.pid}", f"done {second.pid}"]


def test_serve_with_a_queue_engine_runs_no_embedded_worker(sqlite_settings: Settings):
    from oncopacs.cli.serve import _start_job_worker

    settings = sqlite_settings.with_overrides(queue_url=f"redis://127.0.0.1:{free_port()}/0")  # never reached here
    with open_platform(settings) as platform:
        queue = platform.jobs.queue
        assert isinstance(queue, DispatchingJobQueue)
        embedded, leased = (DatabaseJobQueue.enqueue(queue, "test", {}, "tester") for _ in range(2))
        assert queue.claim_next(frozenset({"test"})).id == embedded
        assert queue.claim(leased, "worker-a", 30).outcome is ClaimOutcome.CLAIMED
        _expire_lease(queue, leased)
        assert _start_job_worker(platform) is None
        assert queue.get(embedded).status is JobStatus.FAILED and queue.get(embedded).message == INTERRUPTED_MESSAGE
        assert queue.get(leased).status is JobStatus.RUNNING  # left for a queue worker to take over


def test_the_worker_command_needs_a_queue_engine(tmp_path: Path):
    from click.testing import CliRunner

    from oncopacs.cli.main import main

    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "worker"],
                                env={"ONCOPACS_QUEUE_URL": ""})
    assert result.exit_code == 2 and "ONCOPACS_QUEUE_URL" in result.output
