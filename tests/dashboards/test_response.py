"""The treatment-response dashboard: timeline values, PERCIST categories, course, access and audit."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from dashboards.response import (
    BASELINE,
    build_timeline_figure,
    read_patient_response,
    render_response_page,
)
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from tests.dashboards.conftest import dash_update, texts, with_class


def _archive(app):
    return app.extensions["oncopacs.archive"]


def test_responder_timeline_has_percist_categories_in_order(demo_app, as_role):
    with as_role(Role.ONCOLOGIST):
        title, content = render_response_page("/dashboards/response/ONCO-RESP-001")
    assert "Phantom^Responder" in title and "ONCO-RESP-001" in title
    assert with_class(content, "percist") == [BASELINE, "PMR", "CMR"]
    assert "No RT plan of this patient is in the archive." in texts(content)


def test_timeline_values_come_from_the_stored_results(demo_app):
    response = read_patient_response(_archive(demo_app), "ONCO-RESP-001")
    assert [p.date for p in response.points] == sorted(p.date for p in response.points)
    baseline, mid, follow = response.points
    # the responder's lesion shrinks and cools at every time point (phantom: 25000 -> 12000 -> 5000 Bq/mL)
    assert baseline.suv_max > mid.suv_max > follow.suv_max > 0
    assert baseline.sul_peak > mid.sul_peak > follow.sul_peak
    assert baseline.tlg_g > mid.tlg_g > follow.tlg_g
    assert baseline.gtv_cc == pytest.approx(4 / 3 * 3.14159 * 1.5**3, rel=0.2)  # GTV radius 15 mm
    # every number equals the MetricValue row of the same result
    from oncopacs.analysis.models import MetricValue

    with _archive(demo_app).index.reading() as session:
        stored = session.scalars(select(MetricValue.value).where(
            MetricValue.patient_id == "ONCO-RESP-001", MetricValue.metric == "SUVmax[g/mL]",
            MetricValue.structure == "GTV", MetricValue.study_instance_uid == baseline.study_uid)).all()
    assert stored == [pytest.approx(baseline.suv_max)]


def test_progressor_ends_in_pmd_and_figure_labels_it(demo_app):
    response = read_patient_response(_archive(demo_app), "ONCO-RESP-002")
    assert response.points[-1].category == "PMD"
    figure = build_timeline_figure(response)
    labels = next(t for t in figure.data if t.name == "PERCIST")
    assert list(labels.text) == [p.category for p in response.points]
    assert "g/mL" in figure.layout.annotations[0].text


def test_unknown_patient_and_missing_results_are_said(demo_app, as_role):
    with as_role(Role.ONCOLOGIST):
        _, missing = render_response_page("/dashboards/response/NOPE")
        _, no_pet = render_response_page("/dashboards/response/ONCO-DEMO-001")
    assert texts(missing) == ["No patient NOPE in the archive."]
    assert any("No PET time points" in t for t in texts(no_pet))


def test_callback_over_http_is_audited_and_guarded(demo_app, bearer):
    client = demo_app.test_client()
    outputs = [("title", "children"), ("content", "children")]
    inputs = [("url", "pathname", "/dashboards/response/ONCO-RESP-002")]
    answer = dash_update(client, "/dashboards/response/", outputs, inputs, bearer(Role.TUMOUR_BOARD))
    assert answer.status_code == 200, answer.text
    body = answer.get_json()["response"]
    assert "PMD" in json.dumps(body["content"]["children"])
    with _archive(demo_app).index.reading() as session:
        last = session.scalars(select(AuditRecord).order_by(AuditRecord.id.desc())).first()
    assert last.actor == "dash-tumour_board" and "ONCO-RESP-002" in last.patient_ids
    refused = dash_update(client, "/dashboards/response/", outputs, inputs, bearer(Role.REFERRER))
    assert refused.status_code == 403
    page = client.get("/dashboards/response/ONCO-RESP-002", headers=bearer(Role.ONCOLOGIST))
    assert page.status_code == 200 and b"_dash-config" in page.data
