"""The report forms of the browser UI: "Make plan report" (POST /reports/make) and Approve (POST /reports/<id>/approve).

Signed-in sessions post them as a browser does (form fields, the session's CSRF token); every refusal is a page
in words with a 4xx, never JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import select

from dashboards.report_form import BUTTON_ID, STUDY_INPUT_ID, report_form
from oncopacs.audit.events import AuditAction
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Principal, Role
from oncopacs.platform import open_platform
from oncopacs.reports.store import ReportStatus
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES
from tests.reporting.conftest import ingest_demo

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real Argon2id, cheap parameters
USERS = {"phys": Role.PHYSICIST, "ref": Role.REFERRER, "board": Role.TUMOUR_BOARD}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    """The app over a SQLite archive holding the demo patient; one user per role above. Yields (app, plan study)."""
    folder = tmp_path_factory.mktemp("report-forms")
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key="report-forms",
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        demo = ingest_demo(platform.archive)
        app = create_app(platform)
        app.config["TESTING"] = True
        users = app.extensions["oncopacs.users"]
        users.hasher = FAST_HASHER
        for name, role in USERS.items():
            users.add_user(name, role, PASSWORD)
        yield app, str(demo.rt_ion_plan.StudyInstanceUID)


def _signed_in(app: Flask, username: str) -> tuple[FlaskClient, str]:
    """A browser signed in as ``username`` and its session's CSRF token (from the sign-out form)."""
    browser = app.test_client()
    login = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login).group(1)
    assert browser.post("/login", data={"csrf_token": token, "username": username, "password": PASSWORD}
                        ).status_code in (302, 303)
    page = browser.get("/reports").get_data(as_text=True)
    return browser, re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _audited(app: Flask, action: AuditAction, path: str) -> list[AuditRecord]:
    with app.extensions["oncopacs.archive"].index.reading() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.action == action.value,
                                                               AuditRecord.detail == f"POST {path}")))


def _assert_page(reply, code: int, *words: str) -> str:
    """``reply`` is an HTML page with status ``code`` saying each of ``words``."""
    text = reply.get_data(as_text=True)
    assert reply.status_code == code, (reply.status_code, text[:300])
    assert reply.mimetype == "text/html" and not text.lstrip().startswith("{"), text[:200]
    for word in words:
        assert word in text, (word, text[:2000])
    return text


def test_make_then_approve_through_the_forms(site):
    app, study = site
    store = app.extensions["oncopacs.reports"].service.store
    browser, token = _signed_in(app, "phys")

    made = browser.post("/reports/make", data={"csrf_token": token, "type": "plan", "study_uid": study})
    assert made.status_code == 303, made.get_data(as_text=True)[:300]
    report_id = int(re.fullmatch(r"/reports\?status=draft&made=(\d+)", made.headers["Location"]).group(1))
    draft = store.get(report_id)
    assert (draft.status, draft.study_uid, draft.created_by, draft.type) == (ReportStatus.DRAFT, study, "phys", "plan")
    assert study in _audited(app, AuditAction.READ, "/reports/make")[-1].study_uids

    page = _assert_page(browser.get(made.headers["Location"]), 200, f"Draft report {report_id} made")
    row = re.search(rf'<tr id="report-{report_id}"[^>]*>(.*?)</tr>', page, re.S)
    assert row and 'class="op-highlight"' in row.group(0), page
    assert f'href="/api/reports/{report_id}/pdf"' in row.group(1)
    assert f'action="/reports/{report_id}/approve"' in row.group(1) and ">Approve</button>" in row.group(1)
    assert browser.get(f"/api/reports/{report_id}/pdf").data.startswith(b"%PDF")

    approved = browser.post(f"/reports/{report_id}/approve", data={"csrf_token": token})
    assert approved.status_code == 303 and approved.headers["Location"] == f"/reports?approved={report_id}"
    final = store.get(report_id)
    assert final.status is ReportStatus.FINAL and final.approved_by == "phys" and final.sop_instance_uid
    assert _audited(app, AuditAction.STORE, f"/reports/{report_id}/approve")
    page = _assert_page(browser.get(approved.headers["Location"]), 200, f"Report {report_id} approved: final.")
    row = re.search(rf'<tr id="report-{report_id}"[^>]*>(.*?)</tr>', page, re.S)
    assert row and 'data-status="final"' in row.group(0) and "Approve</button>" not in row.group(1)

    again = browser.post(f"/reports/{report_id}/approve", data={"csrf_token": token})
    _assert_page(again, 409, f"Report {report_id} is final; only a draft can be approved.", "Back to the reports")


def test_the_forms_need_the_sessions_csrf_token(site):
    app, study = site
    service = app.extensions["oncopacs.reports"].service
    draft = service.make("plan", study, "phys")
    browser, _ = _signed_in(app, "phys")
    before = service.store.list(limit=1000)
    for forged in ({}, {"csrf_token": "forged"}):
        made = browser.post("/reports/make", data={"type": "plan", "study_uid": study, **forged})
        _assert_page(made, 400, "security token is missing or stale", "reload the page")
        _assert_page(browser.post(f"/reports/{draft.id}/approve", data=forged), 400, "security token")
    assert service.store.list(limit=1000) == before  # nothing made, nothing approved


def test_a_role_that_may_not_write_reports_is_refused_in_words(site):
    app, study = site
    draft = app.extensions["oncopacs.reports"].service.make("plan", study, "phys")
    for username, label in (("ref", "Referrer"), ("board", "Tumour board")):
        browser, token = _signed_in(app, username)
        words = (f"Your role ({label}) may not make or approve reports",
                 "these roles may: Admin, Physicist, Oncologist")
        _assert_page(browser.post("/reports/make", data={"csrf_token": token, "type": "plan", "study_uid": study}),
                     403, *words)
        _assert_page(browser.post(f"/reports/{draft.id}/approve", data={"csrf_token": token}), 403, *words)
        listing = _assert_page(browser.get("/reports?status=draft"), 200, f'id="report-{draft.id}"')
        assert "Approve</button>" not in listing  # the button is only there for a role that may approve
    assert app.extensions["oncopacs.reports"].service.store.get(draft.id).status is ReportStatus.DRAFT


def test_unknown_reports_and_bad_make_fields_are_named(site):
    app, study = site
    browser, token = _signed_in(app, "phys")
    _assert_page(browser.post("/reports/2147483000/approve", data={"csrf_token": token}), 404,
                 "Report 2147483000 does not exist.")

    def make(type_name: str, study_uid: str):
        return browser.post("/reports/make", data={"csrf_token": token, "type": type_name, "study_uid": study_uid})

    _assert_page(make("plan", "not-a-uid"), 400, "is not a StudyInstanceUID")
    _assert_page(make("plan", ""), 400, "is not a StudyInstanceUID")
    _assert_page(make("invoice", study), 400, "Unknown report type", "plan, pet-response, tumour-board")
    unknown = _assert_page(make("plan", "1.2.826.0.1.3680043.10.543.404"), 404, "1.2.826.0.1.3680043.10.543.404")
    assert "Traceback" not in unknown


def test_the_report_list_says_nothing_of_a_report_it_does_not_show(site):
    app, _ = site
    browser, _ = _signed_in(app, "phys")
    page = _assert_page(browser.get("/reports?made=2147483000&approved=2147483000"), 200)
    assert 'id="report-message"' not in page and "op-highlight" not in page
    _assert_page(browser.get("/reports?status=bogus"), 400, "bogus")


@pytest.mark.parametrize("role, can_make", [(Role.PHYSICIST, True), (Role.ONCOLOGIST, True), (Role.REFERRER, False)])
def test_the_plan_pages_form_posts_to_the_flask_route_with_the_csrf_token(site, role: Role, can_make: bool):
    app, _ = site
    with app.test_request_context("/dashboards/plan/_dash-layout"):
        g.principal = Principal("someone", role, "session")
        form = report_form("plan").to_plotly_json()["props"]
    assert (form["method"], form["action"]) == ("post", "/reports/make")
    fields = {c.name: c.value for c in form["children"] if getattr(c, "type", "") == "hidden"}
    assert fields["type"] == "plan" and fields["study_uid"] == ""  # the callback fills it from the URL
    assert bool(fields["csrf_token"]) is can_make
    [button] = [c for c in form["children"] if getattr(c, "id", "") == BUTTON_ID]
    assert button.children == "Make plan report" and button.type == "submit" and button.disabled
    assert button.hidden is not can_make
    assert any(getattr(c, "id", "") == STUDY_INPUT_ID for c in form["children"])
