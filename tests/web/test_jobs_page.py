"""The jobs page (``/jobs``): recent jobs of every kind in words, their status, progress and outcome.

Jobs are queued through the platform's own queue; the failed prefetch is run by the real worker (prefetch is not
configured in these settings, so it fails saying so). Signed-in sessions use the page as a browser does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.queue import JobStatus
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from oncopacs.web.jobs_page import PER_PAGE

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real Argon2id, cheap parameters
USERS = {"admin": Role.ADMIN, "phys": Role.PHYSICIST, "ref": Role.REFERRER}
PATIENT = "PAT-4711"
SERIES = "1.2.826.0.1.3680043.8.498.1"
PREFETCH_RESULT = {"source": "PACS2", "found": 7, "relevant": 3, "moved": 2, "partial": 0, "skipped": 1,
                   "failed": 0, "studies": [{"study_instance_uid": "1.2.3.4", "outcome": "moved"}]}


@pytest.fixture
def app(sqlite_settings: Settings) -> Iterator[Flask]:
    """The app over a SQLite platform (prefetch not configured); one user per role above."""
    with open_platform(sqlite_settings) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        platform.users.hasher = FAST_HASHER
        for name, role in USERS.items():
            platform.users.add_user(name, role, PASSWORD)
        yield app


def jobs_of(app: Flask) -> JobSystem:
    return app.extensions["oncopacs.jobs"]


def queue_jobs(app: Flask) -> dict[str, int]:
    """One job in each state: a finished prefetch and plug-in analysis, a running RT analysis, a queued SUV
    statistics job, a prefetch that failed in the worker, a job of a kind this page does not know."""
    system = jobs_of(app)
    queue = system.queue
    ids = {"done_prefetch": queue.enqueue("prefetch", {"patient_id": PATIENT, "reason": "SIU^S12 appointment 1"},
                                          "hl7")}
    assert queue.claim_next(frozenset({"prefetch"})).id == ids["done_prefetch"]  # type: ignore[union-attr]
    queue.succeed(ids["done_prefetch"], PREFETCH_RESULT, "done")
    ids["plugin"] = queue.enqueue("plugin_analysis", {"plugin": "lung-seg", "series_instance_uid": SERIES}, "rules")
    queue.claim_next(frozenset({"plugin_analysis"}))
    queue.succeed(ids["plugin"], {"plugin": "lung-seg", "version": "1.0", "series_instance_uid": SERIES,
                                  "stored": ["1.2.3.5", "1.2.3.6"], "refused": [], "metrics": None}, "done")
    ids["failed_prefetch"] = queue.enqueue("prefetch", {"patient_id": "PAT-0815", "reason": "SIU^S12"}, "hl7")
    assert system.new_worker().run_pending() == 1  # the real prefetch handler: not configured here
    ids["running"] = queue.enqueue("rt_analysis", {"study_instance_uid": "1.2.3"}, "phys")
    queue.claim_next(frozenset({"rt_analysis"}))
    queue.report_progress(ids["running"], 0.4, "2 of 5 planning sets analysed")
    ids["queued"] = queue.enqueue("pet_statistics", {"pet_series_uid": SERIES}, "system:ingest-rule")
    ids["odd"] = queue.enqueue("nightly_cleanup", {"older_than_days": 30}, "admin")
    return ids


def signed_in(app: Flask, username: str) -> FlaskClient:
    browser = app.test_client()
    login = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login).group(1)
    assert browser.post("/login", data={"csrf_token": token, "username": username, "password": PASSWORD}
                        ).status_code in (302, 303)
    return browser


def html(reply, code: int = 200) -> str:
    text = reply.get_data(as_text=True)
    assert reply.status_code == code, (reply.status_code, text[:300])
    assert reply.mimetype == "text/html" and not text.lstrip().startswith("{"), text[:200]
    return text


def row(page: str, job_id: int) -> str:
    return re.search(rf'<tr id="job-{job_id}" .*?</tr>', page, re.S).group(0)


def listed(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="job-(\d+)"', page)]


def test_jobs_of_every_kind_in_words_newest_first(app: Flask):
    ids = queue_jobs(app)
    page = html(signed_in(app, "admin").get("/jobs"))
    assert listed(page) == sorted(ids.values(), reverse=True)
    expected = {"done_prefetch": ("Prefetch of priors", "succeeded"), "plugin": ("Plug-in analysis", "succeeded"),
                "failed_prefetch": ("Prefetch of priors", "failed"), "running": ("RT analysis", "running"),
                "queued": ("SUV statistics", "queued"), "odd": ("nightly_cleanup", "queued")}
    for name, (words, status) in expected.items():
        cells = row(page, ids[name])
        assert f'<td class="jobs-kind">{words}' in cells, name
        assert f'<span class="jobs-status jobs-status-{status}">{status}</span>' in cells, name
    prefetch = row(page, ids["done_prefetch"])
    assert "7 found, 3 relevant, 2 moved, 1 skipped, 0 failed (from PACS2)." in prefetch
    assert f"Patient ID {PATIENT}" in prefetch and "hl7" in prefetch
    assert "lung-seg: 2 object(s) stored." in row(page, ids["plugin"])
    assert "Patient ID" not in row(page, ids["plugin"])  # only prefetch jobs show a patient
    assert 'id="shell-jobs"' in page  # the header links to the page
    [entry] = app.extensions["oncopacs.platform"].audit.query(AuditFilter(action=AuditAction.READ)).entries
    assert set(entry.patient_ids) == {PATIENT, "PAT-0815"} and entry.actor == "admin"


def test_a_failed_job_shows_its_error_and_a_running_one_its_progress(app: Flask):
    ids = queue_jobs(app)
    page = html(signed_in(app, "phys").get("/jobs"))  # may read, as GET /api/jobs
    failed = row(page, ids["failed_prefetch"])
    assert 'class="op-attention"' in failed
    assert "Prefetch is not configured (ONCOPACS_PREFETCH_FROM)." in failed
    assert jobs_of(app).queue.get(ids["failed_prefetch"]).status is JobStatus.FAILED  # type: ignore[union-attr]
    running = row(page, ids["running"])
    assert '<progress max="100" value="40"' in running and "40 %" in running
    assert "2 of 5 planning sets analysed" in running
    assert "<progress" not in row(page, ids["queued"]) and "Waiting for the worker." in row(page, ids["queued"])
    assert '<meta http-equiv="refresh" content="5">' in page  # jobs queued and running: the page reloads


def test_the_filter_narrows_by_kind_and_status(app: Flask):
    ids = queue_jobs(app)
    browser = signed_in(app, "admin")
    page = html(browser.get("/jobs?kind=prefetch"))
    assert listed(page) == [ids["failed_prefetch"], ids["done_prefetch"]]
    assert '<option value="prefetch" selected>Prefetch of priors</option>' in page
    assert listed(html(browser.get("/jobs?kind=prefetch&status=failed"))) == [ids["failed_prefetch"]]
    assert listed(html(browser.get("/jobs?status=queued"))) == [ids["odd"], ids["queued"]]
    finished = html(browser.get("/jobs?status=succeeded"))
    assert listed(finished) == [ids["plugin"], ids["done_prefetch"]]
    assert "http-equiv" not in finished  # nothing listed waits or runs: no reload
    assert 'id="jobs-empty"' in html(browser.get("/jobs?kind=registration"))
    refused = html(browser.get("/jobs?status=sleeping"), 400)
    assert "Unknown job status 'sleeping' (valid: queued, running, succeeded, failed)." in unescape(refused)
    for page in ("zero", "0", "-1", "9" * 30):
        assert "page number must be a whole number" in html(browser.get(f"/jobs?page={page}"), 400)


def test_pages_of_fifty(app: Flask):
    queue = jobs_of(app).queue
    ids = [queue.enqueue("verify", {}, "admin") for _ in range(PER_PAGE + 3)]
    browser = signed_in(app, "admin")
    first = html(browser.get("/jobs"))
    assert listed(first) == ids[::-1][:PER_PAGE] and "page 1 of 2" in first
    assert 'href="/jobs?page=2"' in first and "Archive verification" in first
    assert listed(html(browser.get("/jobs?page=2"))) == ids[2::-1]
    beyond = html(browser.get("/jobs?page=3"))
    assert not listed(beyond) and f"there are {PER_PAGE + 3}, on 2 pages" in beyond


def test_no_raw_parameters_on_the_page(app: Flask):
    ids = queue_jobs(app)
    page = html(signed_in(app, "admin").get("/jobs"))
    for job_id in ids.values():
        job = jobs_of(app).queue.get(job_id)
        assert job is not None and json.dumps(job.params) not in page
    assert "older_than_days" not in page and "SIU^S12" not in page and SERIES not in page
    assert "{&#34;" not in page and "&#34;:" not in page and '{"' not in page


def test_who_may_not_see_the_jobs_is_refused(app: Flask):
    queue_jobs(app)
    referrer = signed_in(app, "ref")
    refused = html(referrer.get("/jobs"), 403)
    assert "Your role (Referrer) may not see the jobs" in refused and PATIENT not in refused
    assert 'id="shell-jobs"' not in html(referrer.get("/reports"))  # no link to a page it may not see

    anonymous = app.test_client().get("/jobs", headers={"Accept": "text/html"})
    assert anonymous.status_code in (302, 303) and "/login?next=/jobs" in anonymous.headers["Location"]


def test_no_jobs_yet_says_so(app: Flask):
    page = html(signed_in(app, "admin").get("/jobs"))
    assert 'id="jobs-empty"' in page and "No job has been queued yet" in page and "http-equiv" not in page


def test_a_job_the_queue_engine_could_not_take_says_so(sqlite_settings: Settings):
    """With the broker down the job stays queued, and the page says why it waits instead of 'Waiting for the
    worker.' (a worker sends it again once the broker answers)."""
    from tests.conftest import free_port

    settings = sqlite_settings.with_overrides(queue_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    with open_platform(settings) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        platform.users.hasher = FAST_HASHER
        platform.users.add_user("phys", Role.PHYSICIST, PASSWORD)
        job_id = jobs_of(app).queue.enqueue("verify", {}, "phys")
        page = html(signed_in(app, "phys").get("/jobs"))
        cells = row(page, job_id)
        assert '<span class="jobs-status jobs-status-queued">queued</span>' in cells
        assert "could not be reached" in unescape(cells) and "Waiting for the worker." not in cells
