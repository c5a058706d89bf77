"""The job queue over the index's jobs table and the worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import verify
from oncopacs.jobs.kinds import VERIFY, open_job_system
from oncopacs.jobs.queue import DatabaseJobQueue, JobRecord, JobStatus
from oncopacs.jobs.worker import INTERRUPTED_MESSAGE, JobRegistry, Worker
from tests.factories import small_ct_series


class RecordingQueue(DatabaseJobQueue):
    """The real queue, also keeping every progress report it writes."""

    def __init__(self, index):
        super().__init__(index)
        self.reports: list[tuple[int, float, str]] = []

    def report_progress(self, job_id: int, progress: float, message: str = "") -> None:
        self.reports.append((job_id, progress, message))
        super().report_progress(job_id, progress, message)


def _wait_finished(queue: DatabaseJobQueue, job_id: int, timeout_s: float = 30.0) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {queue.get(job_id)}")


@pytest.fixture
def stored(archive: Archive) -> Archive:
    for dataset in small_ct_series(12):
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return archive


def test_verify_job_runs_to_completion_with_progress(stored: Archive):
    system = open_job_system(stored)
    queue = RecordingQueue(stored.index)
    worker = Worker(queue, system.registry)
    job_id = queue.enqueue(VERIFY, {}, "physicist")
    assert queue.get(job_id).status == JobStatus.QUEUED

    assert worker.run_pending() == 1

    job = queue.get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.progress == 1.0
    assert job.result == verify(stored).to_dict()
    assert job.result["checked"] == 12 and job.result["ok"] is True
    assert job.created_by == "physicist" and job.started_at is not None and job.finished_at is not None
    fractions = [p for _id, p, _m in queue.reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and len(fractions) > 2
    assert queue.reports[-1][2] == "12 file(s) checked"


def test_verify_job_reports_an_altered_file(stored: Archive):
    system = open_job_system(stored)
    with stored.index.reading() as session:
        from sqlalchemy import select

        from oncopacs.index.models import Instance

        relative = session.scalars(select(Instance.file_path).order_by(Instance.id)).first()
    path = stored.storage.path_of(relative)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    job_id = system.queue.enqueue(VERIFY, {}, "admin")
    system.new_worker().run_pending()
    job = system.queue.get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.result["ok"] is False and job.result["altered"] == [relative]


def test_failing_handler_fails_its_job_and_the_worker_goes_on(stored: Archive):
    system = open_job_system(stored)
    ran = []

    def explode(params, progress):
        progress(0.5, "half way")
        raise ValueError(f"dose grid {params['grid']} is missing")

    system.registry.register("explode", explode)
    system.registry.register("fine", lambda params, progress: ran.append(params) or {"n": params["n"]})
    worker = system.new_worker(poll_interval_s=0.05)
    worker.start()
    try:
        bad = system.queue.enqueue("explode", {"grid": "G1"}, "physicist")
        also_bad = system.queue.enqueue("explode", {"grid": "G2"}, "physicist")
        good = system.queue.enqueue("fine", {"n": 3}, "physicist")
        verify_id = system.queue.enqueue(VERIFY, {}, "physicist")
        worker.wake()
        failed = _wait_finished(system.queue, bad)
        assert failed.status == JobStatus.FAILED
        assert failed.message == "dose grid G1 is missing"
        assert failed.progress == 0.5 and failed.result is None
        assert _wait_finished(system.queue, also_bad).status == JobStatus.FAILED
        assert _wait_finished(system.queue, good).result == {"n": 3}
        assert _wait_finished(system.queue, verify_id).status == JobStatus.SUCCEEDED
        assert worker.running
    finally:
        worker.stop()
    assert not worker.running
    assert ran == [{"n": 3}]


def test_unexpected_errors_keep_their_type(stored: Archive):
    system = open_job_system(stored)
    system.registry.register("typo", lambda params, progress: params["absent"])
    job_id = system.queue.enqueue("typo", {}, "x")
    system.new_worker().run_pending()
    job = system.queue.get(job_id)
    assert job.status == JobStatus.FAILED and job.message == "KeyError: 'absent'"


def test_each_job_is_claimed_exactly_once(archive: Archive):
    queue = DatabaseJobQueue(archive.index)
    ids = {queue.enqueue("count", {"i": i}, "t") for i in range(30)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all():
        while (job := queue.claim_next(frozenset({"count"}))) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == sorted(ids)
    assert all(queue.get(i).status == JobStatus.RUNNING for i in ids)


def test_claim_takes_only_kinds_it_can_run_oldest_first(archive: Archive):
    queue = DatabaseJobQueue(archive.index)
    other = queue.enqueue("elsewhere", {}, "t")
    first = queue.enqueue(VERIFY, {}, "t")
    second = queue.enqueue(VERIFY, {}, "t")
    assert queue.claim_next(frozenset({VERIFY})).id == first
    assert queue.claim_next(frozenset({VERIFY})).id == second
    assert queue.claim_next(frozenset({VERIFY})) is None
    assert queue.claim_next(frozenset()) is None
    assert queue.get(other).status == JobStatus.QUEUED


def test_jobs_left_running_by_a_crash_are_failed_at_start(archive: Archive):
    queue = DatabaseJobQueue(archive.index)
    crashed = queue.enqueue(VERIFY, {}, "t")
    waiting = queue.enqueue("never-registered", {}, "t")
    assert queue.claim_next(frozenset({VERIFY})).id == crashed  # a process claimed it, then died
    worker = Worker(queue, JobRegistry(), poll_interval_s=0.05)
    worker.start()
    worker.stop()
    job = queue.get(crashed)
    assert job.status == JobStatus.FAILED and job.message == INTERRUPTED_MESSAGE and job.finished_at is not None
    assert queue.get(waiting).status == JobStatus.QUEUED


def test_list_filters_and_pages_newest_first(archive: Archive):
    queue = DatabaseJobQueue(archive.index)
    ids = [queue.enqueue(VERIFY if i % 2 else "other", {"i": i}, "t") for i in range(7)]
    queue.claim_next(frozenset({"other"}))
    page = queue.list(limit=3)
    assert page.total == 7 and [j.id for j in page.jobs] == ids[::-1][:3]
    assert [j.id for j in queue.list(kind=VERIFY).jobs] == [ids[5], ids[3], ids[1]]
    running = queue.list(status=JobStatus.RUNNING)
    assert running.total == 1 and running.jobs[0].id == ids[0]
    assert [j.id for j in queue.list(kind="other", status=JobStatus.QUEUED, offset=1).jobs] == [ids[4], ids[2]]
    data = running.jobs[0].to_dict()
    assert data["status"] == "running" and data["params"] == {"i": 0} and data["created_at"].endswith("+00:00")


def test_progress_is_written_only_while_running(archive: Archive):
    queue = DatabaseJobQueue(archive.index)
    job_id = queue.enqueue("x", {}, "t")
    queue.report_progress(job_id, 0.7, "not claimed yet")
    assert queue.get(job_id).progress == 0.0
    queue.claim_next(frozenset({"x"}))
    queue.report_progress(job_id, 1.7, "too far")
    assert queue.get(job_id).progress == 1.0 and queue.get(job_id).message == "too far"


def test_registry_refuses_a_kind_twice():
    registry = JobRegistry()
    registry.register("a", lambda params, progress: None)
    with pytest.raises(ValueError):
        registry.register("a", lambda params, progress: None)
    assert list(registry) == ["a"] and "a" in registry and "b" not in registry


def test_progress_writes_are_throttled(archive: Archive):
    queue = RecordingQueue(archive.index)
    registry = JobRegistry()

    def chatty(params, progress):
        for i in range(2000):
            progress(i / 2000, f"step {i}")
        progress(1.0, "all steps")
        return {"steps": 2000}

    registry.register("chatty", chatty)
    job_id = queue.enqueue("chatty", {}, "t")
    Worker(queue, registry).run_pending()
    assert 100 <= len(queue.reports) <= 130  # one write per 1 % (plus any 0.5 s ticks), not 2001
    assert queue.reports[-1][1:] == (1.0, "all steps")
    job = queue.get(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.result == {"steps": 2000} and job.progress == 1.0
