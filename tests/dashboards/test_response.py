"""The treatment-response dashboard: timeline values, change from baseline, liver reference, PERCIST, the RT course,
access and audit."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from dashboards.response import (
    NO_TIME_POINTS,
    build_timeline_figure,
    describe_dates,
    render_response_page,
)
from oncopacs.analysis.timeline import BASELINE, read_patient_timeline
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from tests.dashboards.conftest import as_json, dash_update, study_uids, texts, with_class


def _archive(app):
    return app.extensions["oncopacs.archive"]


def _categories(content) -> list[str]:
    return [badge.children for badge in with_class(content, "percist")]


def _text(content) -> str:
    return " ".join(texts(content))


def test_responder_timeline_has_percist_categories_and_the_rt_course(demo_app, as_role):
    with as_role(Role.ONCOLOGIST):
        title, content = render_response_page("/dashboards/response/ONCO-RESP-001")
    assert title == "Treatment response: PHANTOM, Responder (ONCO-RESP-001)"
    assert _categories(content) == [BASELINE, "PMR", "CMR"]
    shown = _text(content)
    # the RT course of the demo's planning study: plan, prescription, treatment days from its 30 treatment records
    assert "PROTON_PTV · Proton" in shown and "60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)" in shown
    assert "19 Feb – 2 Apr 2024" in shown and "30 of 30 fractions in the archive's treatment records" in shown
    assert "Non-small cell lung cancer, right upper lobe" in shown and "Lung, right" in shown
    assert "Prescription: 60 Gy from plan DoseReference 1 'PTV' TargetPrescriptionDose" in shown  # describe()
    planning = study_uids(demo_app, "ONCO-RESP-001")["Proton therapy planning"]
    assert f'"href": "/dashboards/plan/{planning}"' in as_json(content)
    assert "No RT plan" not in shown and "oncopacs pet record" not in as_json(content)


def test_change_from_baseline_and_liver_reference(demo_app, as_role):
    timeline = read_patient_timeline(_archive(demo_app), "ONCO-RESP-001")
    baseline, mid, follow = timeline.points
    # the change is the hottest lesion's SULpeak against the baseline's, as PERCIST computes it (stored response)
    from oncopacs.analysis.results import find_results

    with _archive(demo_app).index.reading() as session:
        stored = {r.time_point: r.document["percist"]["SULpeak_change_percent"]
                  for r in find_results(session, "pet_response", patient_id="ONCO-RESP-001")}
    assert mid.sul_peak_change_pct == pytest.approx(stored[mid.day.strftime("%Y%m%d")])
    assert follow.sul_peak_change_pct == pytest.approx(stored[follow.day.strftime("%Y%m%d")])
    assert follow.suv_peak_change_pct == pytest.approx((follow.suv_peak - baseline.suv_peak) / baseline.suv_peak * 100)
    # liver reference: 1.5 x SULmean + 2 SD is the stored PERCIST measurability threshold
    assert baseline.liver_sul_mean == pytest.approx(1.47, abs=0.05)
    with _archive(demo_app).index.reading() as session:
        thresholds = [r.document["percist"]["measurability_threshold"]
                      for r in find_results(session, "pet_response", patient_id="ONCO-RESP-001")]
    assert thresholds == [pytest.approx(baseline.measurability_threshold)] * 2
    with as_role(Role.ONCOLOGIST):
        _, content = render_response_page("/dashboards/response/ONCO-RESP-001")
    shown = _text(content)
    assert f"SULmean {baseline.liver_sul_mean:.2f} ± {baseline.liver_sul_sd:.2f} g/mL" in shown
    assert f"{baseline.measurability_threshold:.2f} g/mL (1.5 × SULmean + 2 SD)" in shown
    changes = [c for c in texts(with_class(content, "change")) if c != "—"]
    assert changes == [f"{mid.suv_peak_change_pct:+.1f} %".replace("-", "−"),
                       f"{mid.sul_peak_change_pct:+.1f} %".replace("-", "−"),
                       f"{follow.suv_peak_change_pct:+.1f} %".replace("-", "−"),
                       f"{follow.sul_peak_change_pct:+.1f} %".replace("-", "−")]
    assert all(c.startswith("−") for c in changes)  # the responder's uptake falls


def test_timeline_values_come_from_the_stored_results(demo_app):
    timeline = read_patient_timeline(_archive(demo_app), "ONCO-RESP-001")
    assert [p.day for p in timeline.points] == sorted(p.day for p in timeline.points)
    baseline, mid, follow = timeline.points
    # the responder's lesion shrinks and cools at every time point (phantom: 25000 -> 12000 -> 5000 Bq/mL)
    assert baseline.suv_max > mid.suv_max > follow.suv_max > 0
    assert baseline.sul_peak > mid.sul_peak > follow.sul_peak
    assert baseline.tlg_g > mid.tlg_g > follow.tlg_g
    assert baseline.gtv_cc == pytest.approx(4 / 3 * 3.14159 * 1.5**3, rel=0.2)  # GTV radius 15 mm
    from oncopacs.analysis.models import MetricValue

    with _archive(demo_app).index.reading() as session:
        stored = session.scalars(select(MetricValue.value).where(
            MetricValue.patient_id == "ONCO-RESP-001", MetricValue.metric == "SUVmax[g/mL]",
            MetricValue.structure == "GTV", MetricValue.study_instance_uid == baseline.study_uid)).all()
    assert stored == [pytest.approx(baseline.suv_max)]


def test_progressor_ends_in_pmd_and_its_planned_course_is_said(demo_app, as_role):
    timeline = read_patient_timeline(_archive(demo_app), "ONCO-RESP-002")
    assert timeline.points[-1].category == "PMD" and timeline.points[-1].sul_peak_change_pct > 0
    (plan,) = timeline.plans
    span, basis = describe_dates(plan)
    assert span == "19 Feb – 27 Mar 2024 (planned)"  # 28 weekday fractions from the plan date, no record
    assert basis.startswith("estimated: no treatment record in the archive")
    assert plan.goals_failed == 1  # 63.6 Gy hot spot against 50.4 Gy: BODY Max[%] fails
    figure = build_timeline_figure(timeline)
    labels = next(t for t in figure.data if t.name == "PERCIST")
    assert [re.sub("<[^>]+>", "", t) for t in labels.text] == [p.category for p in timeline.points]
    assert "g/mL" in figure.layout.annotations[0].text
    band = next(s for s in figure.layout.shapes if s.type == "rect")
    assert (band.x0, band.x1) == ("2024-02-19", "2024-03-27")  # the RT course on the timeline
    assert any("RT PROTON_PTV: 50.4 Gy(RBE) in 28 fractions" in a.text and "(planned)" in a.text
               for a in figure.layout.annotations)
    threshold = next(t for t in figure.data if t.name.startswith("PERCIST measurability"))
    assert list(threshold.y) == [pytest.approx(p.measurability_threshold) for p in timeline.points]
    with as_role(Role.TUMOUR_BOARD):
        _, content = render_response_page("/dashboards/response/ONCO-RESP-002")
    shown = _text(content)
    assert "Clinical goals: 1 failed (see plan review)" in shown
    assert texts(with_class(content, "during-rt")) == ["during RT"]  # the mid-treatment scan of 25 Mar


def test_unknown_patient_and_missing_results_are_said(demo_app, as_role):
    with as_role(Role.ONCOLOGIST):
        _, missing = render_response_page("/dashboards/response/NOPE")
        _, no_pet = render_response_page("/dashboards/response/ONCO-DEMO-001")
    assert texts(missing) == ["No patient NOPE in the archive."]
    assert NO_TIME_POINTS in texts(no_pet) and "oncopacs pet record" not in as_json(no_pet)
    assert "60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)" in _text(no_pet)  # its plan, still shown


def test_every_command_the_page_mentions_exists():
    from click.testing import CliRunner

    from oncopacs.cli.main import main

    for command in re.findall(r"oncopacs ([a-z]+(?: [a-z]+)?)", NO_TIME_POINTS):
        assert CliRunner().invoke(main, [*command.split(), "--help"]).exit_code == 0, command


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
