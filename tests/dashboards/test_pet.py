"""The PET-CT fusion dashboard: SUV from the stored files, resampling onto the CT, ROI table, MIP, messages."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from dashboards.pet import VIEWER_EXTENSION, build_mip_figure, render_pet_page, update_fusion
from oncopacs.analysis.models import MetricValue
from oncopacs.auth.roles import Role
from oncopacs.viewer.pet import PetViewer, load_fusion
from tests.dashboards.conftest import dash_update, study_uids, texts


@pytest.fixture(scope="module")
def baseline_uid(demo_app) -> str:
    return study_uids(demo_app, "ONCO-RESP-001")["FDG PET-CT baseline"]


def test_fusion_resamples_suv_onto_the_ct(demo_app, baseline_uid):
    fusion = load_fusion(demo_app.extensions["oncopacs.archive"], baseline_uid)
    assert fusion.ct_hu is not None and fusion.ct_hu.shape == fusion.suv_display.shape
    # same frame and grid in the demo: resampling must keep the SUV maximum (within interpolation)
    assert fusion.suv_display.max() == pytest.approx(fusion.suv_max, rel=0.02)
    assert fusion.ct_hu.min() < -500 and fusion.ct_hu.max() > -100  # air and soft tissue in HU


def test_roi_statistics_match_the_recorded_time_point(demo_app, baseline_uid):
    fusion = load_fusion(demo_app.extensions["oncopacs.archive"], baseline_uid)
    gtv = next(s for s in fusion.roi_stats if s.name == "GTV")
    with demo_app.extensions["oncopacs.archive"].index.reading() as session:
        recorded = session.scalars(select(MetricValue.value).where(
            MetricValue.study_instance_uid == baseline_uid, MetricValue.structure == "GTV",
            MetricValue.metric == "SUVmax[g/mL]")).one()
    assert gtv.suv_max == pytest.approx(recorded) and gtv.unit == "g/mL"
    assert {s.name for s in fusion.roi_stats} >= {"GTV", "Liver"} and "BODY" not in {s.name for s in fusion.roi_stats}


def test_page_shows_fusion_stats_and_mip(demo_app, as_role, baseline_uid):
    with as_role(Role.TUMOUR_BOARD):
        title, content = render_pet_page(f"/dashboards/pet/{baseline_uid}")
    shown = texts(content)
    assert "Phantom^Responder" in title and "ROI statistics" in shown and "GTV" in shown
    with as_role(Role.TUMOUR_BOARD):
        figure = update_fusion(10, 0.3, f"/dashboards/pet/{baseline_uid}")
    pet = figure.data[-1]
    assert pet.opacity == 0.3 and "g/mL" in pet.colorbar.title.text
    assert figure.data[0].name == "CT" and np.nanmax(np.asarray(pet.z, dtype=float)) > 0
    fusion = load_fusion(demo_app.extensions["oncopacs.archive"], baseline_uid)
    mip = build_mip_figure(fusion).data[0]
    assert np.asarray(mip.z).max() == pytest.approx(fusion.suv_max)


def test_missing_data_is_said(demo_app, as_role):
    planning = study_uids(demo_app, "ONCO-DEMO-001")["Proton therapy planning"]
    staging = study_uids(demo_app, "ONCO-DEMO-001")["FDG PET-CT staging"]
    with as_role(Role.ONCOLOGIST):
        assert texts(render_pet_page(f"/dashboards/pet/{planning}")[1]) == ["This study holds no PET series."]
        assert texts(render_pet_page("/dashboards/pet/1.2.3.4")[1]) == ["No study 1.2.3.4 in the archive."]
        staged = texts(render_pet_page(f"/dashboards/pet/{staging}")[1])
    assert any(t.startswith("No ROI statistics") for t in staged)


def test_pet_callback_over_http(demo_app, bearer, baseline_uid):
    client = demo_app.test_client()
    answer = dash_update(client, "/dashboards/pet/", [("title", "children"), ("content", "children")],
                         [("url", "pathname", f"/dashboards/pet/{baseline_uid}")], bearer(Role.ONCOLOGIST))
    assert answer.status_code == 200 and "SUVbw (g" in answer.text, answer.text[:300]
    assert client.get(f"/dashboards/pet/{baseline_uid}", headers=bearer(Role.REFERRER)).status_code == 403


def test_fusions_are_cached_per_app_and_bounded(demo_app, baseline_uid):
    staging = study_uids(demo_app, "ONCO-DEMO-001")["FDG PET-CT staging"]
    app_viewer = demo_app.extensions[VIEWER_EXTENSION]
    assert isinstance(app_viewer, PetViewer)
    assert app_viewer.fusion(baseline_uid) is app_viewer.fusion(baseline_uid)
    small = PetViewer(demo_app.extensions["oncopacs.archive"], max_fusions=1)
    first = small.fusion(baseline_uid)
    assert first is not app_viewer.fusion(baseline_uid) and small.fusion(baseline_uid) is first
    small.fusion(staging)
    assert small.fusion(baseline_uid) is not first  # the baseline was evicted by the staging study
