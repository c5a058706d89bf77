"""The plan review dashboard mounted on the app, and the slice PNG route (the page: tests/dashboards/test_plan.py)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from flask import Flask
from PIL import Image

from oncopacs.analysis.rt import analyse_planning_set, find_planning_sets
from oncopacs.auth.roles import Role
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


def test_the_slice_route_serves_a_png_and_refuses_referrers(app: Flask, sqlite_headers_for: Headers, demo: DemoPatient):
    client = app.test_client()
    url = f"/slices/{demo.rt_dose.StudyInstanceUID}/sagittal/32.png?window=lung&isodose=50,100&unit=percent"
    reply = client.get(url, headers=sqlite_headers_for(Role.PHYSICIST))
    assert reply.status_code == 200 and reply.mimetype == "image/png"
    assert Image.open(io.BytesIO(reply.data)).size[0] >= 384
    assert client.get(url, headers=sqlite_headers_for(Role.REFERRER)).status_code == 403
    bad = client.get(
        f"/slices/{demo.rt_dose.StudyInstanceUID}/axial/999.png", headers=sqlite_headers_for(Role.PHYSICIST)
    )
    assert bad.status_code == 400 and "outside" in bad.get_json()["detail"]


def test_the_dash_layout_is_served_to_dashboard_roles(app: Flask, sqlite_headers_for: Headers):
    client = app.test_client()
    reply = client.get("/dashboards/plan/_dash-layout", headers=sqlite_headers_for(Role.ONCOLOGIST))
    assert reply.status_code == 200
    layout = reply.get_data(as_text=True)
    for component in ("axial-pane", "coronal-pane", "sagittal-pane", "dvh", "isodose", "mouse-mode"):
        assert f'"{component}"' in layout
    assert client.get("/dashboards/plan/_dash-layout", headers=sqlite_headers_for(Role.REFERRER)).status_code == 403
