"""The study browser: search, the oncology picture per patient, escaping, permission and audit."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date

import pytest
from flask import Flask
from pydicom.uid import generate_uid
from sqlalchemy import select

from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from oncopacs.index.display import format_birth_date, format_date
from oncopacs.phantom import DemoPatient, build_demo_patient
from tests.factories import small_ct_series

Headers = Callable[[Role | str], dict[str, str]]
SCRIPT_NAME = "<script>alert(1)</script>^Evil"


@pytest.fixture(scope="module")
def demo() -> DemoPatient:
    return build_demo_patient("ONCO-BROWSE-001", "Phantom^Browser")


@pytest.fixture
def browse(sqlite_web_app: Flask, sqlite_headers_for: Headers, demo: DemoPatient):
    archive = sqlite_web_app.extensions["oncopacs.archive"]
    evil = [copy.deepcopy(ds) for ds in small_ct_series(2, prefix="EVIL")]
    for ds in evil:
        ds.PatientName = SCRIPT_NAME
    for dataset in [*demo.all_datasets(), *small_ct_series(3, studies=3, prefix="T"), *evil]:
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return sqlite_web_app.test_client(), sqlite_headers_for(Role.ONCOLOGIST)


def test_the_browser_lists_every_patient_with_the_oncology_picture(browse, demo: DemoPatient):
    client, headers = browse
    for path in ("/", "/studies"):
        reply = client.get(path, headers=headers)
        assert reply.status_code == 200
        page = reply.get_data(as_text=True)
        assert "PHANTOM, Browser" in page and "T-00002" in page
    plan_uid = demo.rt_ion_plan.StudyInstanceUID
    pet_uid = demo.pet[0].StudyInstanceUID
    assert f'href="/dashboards/plan/{plan_uid}"' in page
    assert f'href="/dashboards/pet/{pet_uid}"' in page
    assert f'href="/dashboards/plan/{pet_uid}"' not in page  # the PET-CT study holds no plan
    assert "Planning set" in page and "ion plan" in page and "PET-CT" in page
    assert 'href="/dashboards/response/ONCO-BROWSE-001"' in page and 'href="/dashboards/board/"' in page


def test_search_by_name_id_modality_and_date(browse):
    client, headers = browse
    by_name = client.get("/studies?q=browser", headers=headers).get_data(as_text=True)
    assert "ONCO-BROWSE-001" in by_name and "T-00001" not in by_name
    by_id = client.get("/studies?q=T-00001", headers=headers).get_data(as_text=True)
    assert "T-00001" in by_id and "ONCO-BROWSE-001" not in by_id
    by_modality = client.get("/studies?modality=PT", headers=headers).get_data(as_text=True)
    assert "ONCO-BROWSE-001" in by_modality and "T-00001" not in by_modality
    assert "1 study of 1 patient" in by_modality
    by_date = client.get("/studies?date_from=2024-01-20&date_to=2024-01-31&q=ONCO-BROWSE-001", headers=headers)
    assert "1 study of 1 patient" in by_date.get_data(as_text=True)


def test_a_bad_search_is_a_readable_400(browse):
    client, headers = browse
    reply = client.get("/studies?date_from=yesterday", headers=headers)
    assert reply.status_code == 400
    assert "YYYY-MM-DD" in reply.get_data(as_text=True)


def test_a_patient_name_holding_markup_is_shown_as_text(browse):
    client, headers = browse
    page = client.get("/studies?q=EVIL", headers=headers).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "<SCRIPT>" not in page
    assert "&lt;SCRIPT&gt;ALERT(1)&lt;/SCRIPT&gt;, Evil" in page


def test_the_browser_needs_archive_read_and_a_sign_in(browse, sqlite_headers_for: Headers):
    client, _ = browse
    assert client.get("/studies", headers=sqlite_headers_for(Role.REFERRER)).status_code == 403
    assert client.get("/studies").status_code == 401
    redirect = client.get("/", headers={"Accept": "text/html"})
    assert redirect.status_code == 302 and redirect.headers["Location"] == "/login?next=/"


def test_searches_are_audited_with_the_patients_shown(browse, sqlite_web_app: Flask):
    client, headers = browse
    client.get("/studies?q=ONCO-BROWSE-001", headers=headers)
    with sqlite_web_app.extensions["oncopacs.archive"].index.reading() as session:
        records = list(session.scalars(select(AuditRecord).where(AuditRecord.detail.like("GET /studies?q=ONCO%"))))
    assert len(records) == 1
    assert "ONCO-BROWSE-001" in str(records[0].patient_ids)


def test_names_dates_and_sex_are_shown_for_people(browse, demo: DemoPatient):
    client, headers = browse
    page = client.get("/studies?q=ONCO-BROWSE-001", headers=headers).get_data(as_text=True)
    born = demo.planning_ct[0].PatientBirthDate
    assert format_birth_date(born, date.today()) in page and f"{born}" not in page
    assert format_date(demo.planning_ct[0].StudyDate) in page and str(demo.planning_ct[0].StudyDate) not in page
    assert {"M": "Male", "F": "Female", "O": "Other"}[demo.planning_ct[0].PatientSex] in page
    assert 'id="shell-user">test-oncologist<' in page and 'id="shell-role">Oncologist<' in page


def test_an_fdg_study_with_a_bare_structure_set_gets_no_plan_review(browse, demo: DemoPatient):
    """A structure set on a PET-CT study (contours for SUV statistics), without plan or dose, is no planning set."""
    client, headers = browse
    archive = client.application.extensions["oncopacs.archive"]
    structures = copy.deepcopy(demo.rtstruct)
    pet_study = demo.pet[0].StudyInstanceUID
    structures.StudyInstanceUID = pet_study
    structures.SeriesInstanceUID = generate_uid(entropy_srcs=["browser", "bare rtstruct series"])
    structures.SOPInstanceUID = generate_uid(entropy_srcs=["browser", "bare rtstruct"])
    assert archive.ingest_dataset(structures, source="test").acknowledged
    page = client.get("/studies?q=ONCO-BROWSE-001", headers=headers).get_data(as_text=True)
    assert f'href="/dashboards/pet/{pet_study}"' in page
    assert f'href="/dashboards/plan/{pet_study}"' not in page
    assert f'href="/dashboards/plan/{demo.rt_ion_plan.StudyInstanceUID}"' in page


def test_the_page_has_the_shell_header_and_stylesheet(browse):
    client, headers = browse
    page = client.get("/", headers=headers).get_data(as_text=True)
    assert '<link rel="stylesheet" href="/static/oncopacs.css">' in page and "--op-header-background" in page
    assert 'id="shell-home"' in page and "Sign out" not in page  # a token has no session to end
    with client.get("/static/oncopacs.css") as stylesheet:  # public: the sign-in page needs it
        assert stylesheet.status_code == 200 and b".op-sign-out" in stylesheet.data
