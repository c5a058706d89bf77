"""The plan review dashboard's callbacks with the demo patient ingested, and the slice PNG route."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import numpy as np
import pytest
from flask import Flask, g
from PIL import Image

from dashboards.plan import dvh_figure, goals_table, plan_summary, plane_figure, study_uid_from, study_view
from oncopacs.analysis.rt import analyse_planning_set, find_planning_sets
from oncopacs.auth.roles import Principal, Role
from oncopacs.phantom import DemoPatient, build_demo_patient

Headers = Callable[[Role | str], dict[str, str]]


@pytest.fixture(scope="module")
def demo() -> DemoPatient:
    return build_demo_patient("ONCO-PLANVIEW-001", "Phantom^Viewer")


@pytest.fixture
def app(sqlite_web_app: Flask, demo: DemoPatient) -> Flask:
    archive = sqlite_web_app.extensions["oncopacs.archive"]
    for dataset in demo.all_datasets():
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    with archive.index.reading() as session:
        sets = find_planning_sets(session, demo.rt_dose.StudyInstanceUID)
    for planning_set in sets:
        analyse_planning_set(archive, planning_set)
    return sqlite_web_app


def _as_oncologist(app: Flask, path: str = "/dashboards/plan/_dash-update-component"):
    context = app.test_request_context(path, method="POST")
    context.push()
    g.principal = Principal("dr-plan", Role.ONCOLOGIST, "session")
    return context


def test_the_study_view_has_rois_dvh_goals_and_the_plan(app: Flask, demo: DemoPatient):
    context = _as_oncologist(app)
    try:
        view = study_view(study_uid_from(f"/dashboards/plan/{demo.rt_dose.StudyInstanceUID}"))
        figure = dvh_figure(view["dvh"])
        goals = goals_table(view["goals"])
        plan = plan_summary(view["plan"])
    finally:
        context.pop()
    assert [r["name"] for r in view["rois"]] == ["BODY", "PTV", "Bladder", "Rectum", "SpinalCord"]
    assert view["prescription_gy"] == pytest.approx(60.0) and view["has_dose"]
    assert {trace.name for trace in figure.data} == {roi["name"] for roi in view["dvh"]["rois"] if roi["curve"]}
    assert len(figure.data) >= 4
    ptv = next(t for t in figure.data if t.name == "PTV")
    assert ptv.y[0] == pytest.approx(100.0, abs=0.5) and max(ptv.x) > 55.0
    assert "Energy layers" in str(plan) and view["plan"]["beams"]
    assert goals is not None


def _pixels(figure) -> np.ndarray:
    source = figure.data[0].source
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))


def test_the_axial_plane_shows_contours_and_dose(app: Flask, demo: DemoPatient):
    context = _as_oncologist(app)
    try:
        view = study_view(demo.rt_dose.StudyInstanceUID)
        middle = view["sizes"]["axial"] // 2
        drawn = _pixels(plane_figure(view["study_uid"], "axial", middle, isodose="95", unit="percent"))
        bare = _pixels(plane_figure(view["study_uid"], "axial", middle, rois=[], colourwash=False))
        no_ptv = _pixels(plane_figure(view["study_uid"], "axial", middle, rois=["BODY"], colourwash=False))
    finally:
        context.pop()
    assert (bare[..., 0] == bare[..., 1]).all() and (bare[..., 1] == bare[..., 2]).all()  # grey CT only
    assert (drawn == (255, 0, 0)).all(axis=2).sum() > 50  # PTV contour (red) and the 95 % isodose
    coloured = (np.ptp(drawn.astype(int), axis=2) > 30)
    assert coloured.sum() > 2000  # dose wash over the target
    assert (no_ptv == (0, 255, 0)).all(axis=2).sum() > 100 and not (no_ptv == (255, 0, 0)).all(axis=2).any()


def test_the_slice_route_serves_a_png_and_refuses_referrers(app: Flask, sqlite_headers_for: Headers, demo: DemoPatient):
    client = app.test_client()
    url = f"/viewer/{demo.rt_dose.StudyInstanceUID}/sagittal/32.png?window=lung&isodose=50,100&unit=percent"
    reply = client.get(url, headers=sqlite_headers_for(Role.PHYSICIST))
    assert reply.status_code == 200 and reply.mimetype == "image/png"
    assert Image.open(io.BytesIO(reply.data)).size[0] >= 384
    assert client.get(url, headers=sqlite_headers_for(Role.REFERRER)).status_code == 403
    bad = client.get(
        f"/viewer/{demo.rt_dose.StudyInstanceUID}/axial/999.png", headers=sqlite_headers_for(Role.PHYSICIST)
    )
    assert bad.status_code == 400 and "outside" in bad.get_json()["detail"]


def test_the_dash_layout_and_a_callback_over_http(app: Flask, sqlite_headers_for: Headers, demo: DemoPatient):
    client = app.test_client()
    headers = sqlite_headers_for(Role.ONCOLOGIST)
    assert client.get("/dashboards/plan/_dash-layout", headers=headers).status_code == 200
    path = f"/dashboards/plan/{demo.rt_dose.StudyInstanceUID}"
    body = {"inputs": [{"id": "url", "property": "pathname", "value": path}], "changedPropIds": ["url.pathname"]}
    body["outputs"] = [{"id": i, "property": p} for i, p in (
        ("study", "data"), ("message", "children"), ("rois", "options"), ("rois", "value"), ("dvh", "figure"),
        ("goals", "children"), ("plan", "children"), ("dvh-panel", "style"), ("plan-panel", "style"),
        ("compare-panel", "style"), ("compare-dose", "options"), ("axial-slider", "max"), ("axial-slider", "value"),
        ("coronal-slider", "max"), ("coronal-slider", "value"), ("sagittal-slider", "max"),
        ("sagittal-slider", "value"))]
    body["output"] = "..." .join(f"{o['id']}.{o['property']}" for o in body["outputs"]).join(("..", ".."))
    reply = client.post("/dashboards/plan/_dash-update-component", json=body, headers=headers)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:500]
    data = reply.get_json()["response"]
    assert data["study"]["data"]["patient_id"] == "ONCO-PLANVIEW-001"
    assert data["rois"]["value"] == ["BODY", "PTV", "Bladder", "Rectum", "SpinalCord"]
