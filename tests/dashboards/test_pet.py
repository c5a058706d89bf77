"""The PET-CT fusion dashboard: SUV from the stored files, resampling onto the CT, ROI table, MIP, messages."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from dashboards.pet import (
    VIEWER_EXTENSION,
    build_fusion_figure,
    build_mip_figure,
    default_window,
    find_hotspot,
    load_outlines,
    render_pet_page,
    update_fusion,
)
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
    assert "PHANTOM, Responder" in title and "ROI statistics" in shown and "GTV" in shown
    with as_role(Role.TUMOUR_BOARD):
        figure = update_fusion(10, 0.3, None, f"/dashboards/pet/{baseline_uid}")
    pet = next(t for t in figure.data if t.name == "SUVbw")
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


def test_page_opens_on_the_hottest_voxel_with_contours_drawn(demo_app, as_role, baseline_uid):
    fusion = load_fusion(demo_app.extensions["oncopacs.archive"], baseline_uid)
    spot = find_hotspot(fusion)
    assert spot.suv_max == pytest.approx(float(fusion.suv_display.max()))
    assert fusion.suv_display[spot.slice_index].max() == pytest.approx(spot.suv_max)
    with as_role(Role.ONCOLOGIST):
        _title, content = render_pet_page(f"/dashboards/pet/{baseline_uid}")
    shown = " ".join(texts(content))
    assert f"SUVmax {spot.suv_max:.2f} g/mL" in shown and f"z {spot.z_mm:.1f} mm" in shown
    graph = next(c for c in _walk(content) if getattr(c, "id", None) == "fusion")
    assert f"z = {spot.z_mm:.1f} mm" in graph.figure.layout.title.text
    drawn = {t.name for t in graph.figure.data if t.type == "scatter"}
    assert "GTV" in drawn and "BODY" not in drawn  # the GTV holds the hottest lesion in the demo
    gtv = next(t for t in graph.figure.data if t.name == "GTV")
    xs = [v for v in gtv.x if v is not None]
    assert min(xs) <= spot.x_mm <= max(xs)  # the contour surrounds the hottest voxel
    assert not graph.figure.layout.xaxis.visible and not graph.figure.layout.yaxis.visible  # no grid over images
    slider = next(c for c in _walk(content) if getattr(c, "id", None) == "slice")
    assert slider.value == spot.slice_index + 1  # 1-based, as the title counts
    with as_role(Role.ONCOLOGIST):
        moved = update_fusion(slider.value, 0.5, [1.0, 5.0], f"/dashboards/pet/{baseline_uid}")
    assert moved.layout.title.text == graph.figure.layout.title.text


def test_suv_window_makes_the_pet_transparent_below_the_threshold(demo_app, baseline_uid):
    fusion = load_fusion(demo_app.extensions["oncopacs.archive"], baseline_uid)
    spot = find_hotspot(fusion)
    low, high = default_window(fusion)
    assert 0 < low < high and fusion.suv_max <= high < fusion.suv_max + 0.1
    figure = build_fusion_figure(fusion, spot.slice_index, 0.5, (3.0, 6.0))
    pet = next(t for t in figure.data if t.name == "SUVbw")
    values = np.asarray(pet.z, dtype=float)
    assert np.nanmin(values) >= 3.0 and np.isnan(values).mean() > 0.5  # CT shows where PET is below 3 g/mL
    assert (pet.zmin, pet.zmax) == (3.0, 6.0)
    ct = np.asarray(figure.data[0].z, dtype=float)
    assert np.ptp(ct) > 300  # CT detail kept under the overlay


def test_no_rtstruct_still_shows_the_hottest_voxel(demo_app, as_role):
    staging = study_uids(demo_app, "ONCO-DEMO-001")["FDG PET-CT staging"]
    assert load_outlines(demo_app.extensions["oncopacs.archive"], staging) == ()
    with as_role(Role.ONCOLOGIST):
        shown = " ".join(texts(render_pet_page(f"/dashboards/pet/{staging}")[1]))
    assert "SUVmax" in shown and "hottest voxel" in shown


def _walk(node):
    yield node
    children = getattr(node, "children", None)
    for child in children if isinstance(children, list | tuple) else [children] if children is not None else []:
        if not isinstance(child, str):
            yield from _walk(child)
