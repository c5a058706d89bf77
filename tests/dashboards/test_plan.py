"""The plan review page on a demo patient with two doses of its plan (physical, and an EFFECTIVE RBE-weighted copy).

The callback bodies are called in a request of an oncologist; the callbacks that carry the page's behaviour
(loading, crosshair moves, the % <-> Gy switch) are also posted over HTTP the way the browser does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from flask import Flask, g
from pydicom.uid import generate_uid

from dashboards.plan import (
    compare_dvh,
    crosshair_at,
    isodose_levels,
    legend_content,
    plane_content,
    probe_text,
    study_uid_from,
    study_view,
)
from dashboards.plan_views import beams_table, dvh_figure, goals_table
from oncopacs.auth.roles import Principal, Role
from oncopacs.phantom import DemoPatient, build_demo_patient
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.viewer.isodose import MIN_COLOUR_DISTANCE
from oncopacs.web.app import create_app
from rt.structures import read_structure_set
from tests.conftest import TEST_AUDIT_SPOOL_BYTES
from tests.dashboards.conftest import dash_update, texts

WINDOW = (40.0, 400.0)
PLANES = ("axial", "coronal", "sagittal")
LEVELS = "100, 95, 80, 50, 20"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, DemoPatient, str]]:
    """The app over an archive holding the demo patient, an RBE-weighted (EFFECTIVE) copy of its dose, analysed."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("plan-page") / "data", dicom_host="127.0.0.1",
                        dicom_port=0, secret_key="plan-page", audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    demo = build_demo_patient("ONCO-PLANPAGE-001", "Phantom^Planpage")
    effective = copy.deepcopy(demo.rt_dose)
    effective.SOPInstanceUID = generate_uid(entropy_srcs=["plan-page", "rbe dose"])
    effective.file_meta.MediaStorageSOPInstanceUID = effective.SOPInstanceUID
    effective.SeriesInstanceUID = generate_uid(entropy_srcs=["plan-page", "rbe series"])
    effective.DoseType = "EFFECTIVE"
    effective.DoseGridScaling = float(demo.rt_dose.DoseGridScaling) * 1.1
    with open_platform(settings) as platform:
        for dataset in [*demo.all_datasets(), effective]:
            assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
        platform.jobs.new_worker().run_pending()  # the RT analysis of both doses, as the rules queue it
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app, demo, str(effective.SOPInstanceUID)


@contextmanager
def oncologist(app: Flask):
    with app.test_request_context("/dashboards/plan/_dash-update-component", method="POST"):
        g.principal = Principal("dr-plan", Role.ONCOLOGIST, "session")
        yield


@pytest.fixture(scope="module")
def view(site) -> dict:
    app, demo, _ = site
    with oncologist(app):
        return study_view(study_uid_from(f"/dashboards/plan/{demo.rt_dose.StudyInstanceUID}"),
                          str(demo.rt_dose.SOPInstanceUID))


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in css.removeprefix("rgb(").removesuffix(")").split(","))


def test_the_view_opens_on_the_target_with_the_rois_their_colours_and_volumes(view, site):
    app, demo, rbe_uid = site
    rois = {r["name"]: r for r in view["rois"]}
    assert list(rois) == ["BODY", "PTV", "Bladder", "Rectum", "SpinalCord"]
    assert rois["PTV"]["colour"] == [255, 0, 0] and rois["PTV"]["volume_cc"] == pytest.approx(113.1, abs=0.5)
    assert view["dose_unit"] == "Gy" and view["reference_gy"] == pytest.approx(60.0)
    assert view["prescription_text"].startswith("60 Gy in 30 fractions (2 Gy per fraction)")
    with oncologist(app):
        at_start = probe_text(view, "axial", view["start"]["axial"] - 1,
                              *crosshair_at(view, "axial", {p: i - 1 for p, i in view["start"].items()}))
    assert "Gy (10" in at_start or "Gy (9" in at_start  # the crosshair opens inside the PTV, at about 100 %
    labels = {c["value"]: c["label"] for c in view["doses"]}
    assert set(labels) == {str(demo.rt_dose.SOPInstanceUID), rbe_uid}
    assert labels[rbe_uid].endswith("Gy(RBE)") and labels[rbe_uid] != labels[str(demo.rt_dose.SOPInstanceUID)]


def test_each_plane_stacks_ct_wash_crosshair_isodose_lines_then_contours(view, site):
    app, _, _ = site
    levels = isodose_levels(view, LEVELS, "percent")
    start = {p: i - 1 for p, i in view["start"].items()}
    with oncologist(app):
        figures = {plane: plane_content(view, plane, start[plane], window=WINDOW, levels=levels,
                                        crosshair=crosshair_at(view, plane, start)) for plane in start}
    roi_colours = [tuple(r["colour"]) for r in view["rois"]]
    for plane, figure in figures.items():
        ct, wash, *lines = figure["data"]
        assert ct["type"] == wash["type"] == "image" and ct["zsmooth"] == "fast"
        assert ct["source"].startswith("data:image/png;base64,")
        u, v = crosshair_at(view, plane, start)
        vertical, horizontal = figure["layout"]["shapes"]
        assert (vertical["x0"], vertical["x1"], horizontal["y0"], horizontal["y1"]) == (u, u, v, v)
        assert vertical["name"] == horizontal["name"] == "crosshair" and vertical["editable"] is False
        isodose = [t for t in lines if t["name"].endswith("%")]
        contours = [t for t in lines if not t["name"].endswith("%")]
        assert [t["name"] for t in isodose] == ["20 %", "50 %", "80 %", "95 %", "100 %"]  # hottest drawn last
        for trace in isodose:  # never a contour's colour
            assert min(_distance(_rgb(trace["line"]["color"]), c) for c in roi_colours) >= MIN_COLOUR_DISTANCE
        assert {"BODY", "PTV"} <= {t["name"] for t in contours}
        ptv = next(t for t in contours if t["name"] == "PTV")
        assert _rgb(ptv["line"]["color"]) == (255, 0, 0) and ptv["line"]["width"] > isodose[0]["line"]["width"]
        layout = figure["layout"]
        assert layout["yaxis"]["scaleanchor"] == "x" and layout["yaxis"]["range"][0] > layout["yaxis"]["range"][1]
        assert layout["dragmode"] is False and "%{length" in layout["newshape"]["label"]["texttemplate"]
        title = next(a["text"] for a in layout["annotations"] if "/" in a["text"])
        assert title.startswith(f"{plane.capitalize()} {start[plane] + 1}/{view['sizes'][plane]} ·")  # 1-based


def test_axial_contours_are_the_rtstruct_polygons_not_voxel_steps(view, site):
    app, demo, _ = site
    index = view["start"]["axial"] - 1
    with oncologist(app):
        figure = plane_content(view, "axial", index, window=WINDOW)
    ptv = next(t for t in figure["data"] if t.get("name") == "PTV")
    z = view["grid"]["origin"][2] + index * view["grid"]["spacing"][2]
    roi = read_structure_set(demo.rtstruct).roi("PTV")
    plane_z = min(roi.planes(), key=lambda h: abs(h - z))
    polygon = roi.planes()[plane_z][0]
    drawn = np.column_stack([ptv["x"], ptv["y"]])[:-1]
    assert np.allclose(drawn, polygon, atol=0.01)  # exactly the contour points, closed
    steps = np.hypot(*np.diff(drawn, axis=0).T)
    assert steps.max() < 10.0 and len(drawn) >= 16


def test_measure_mode_and_the_wash_switch(view, site):
    app, _, _ = site
    with oncologist(app):
        plain = plane_content(view, "coronal", 30, window=WINDOW, colourwash=False, rois=["PTV"], mode="measure")
    assert plain["data"][1]["type"] == "scatter" and plain["layout"]["dragmode"] == "drawline"
    assert [t["name"] for t in plain["data"][2:]] == ["PTV"]


def test_the_legend_lists_each_level_in_percent_and_gy(view):
    legend, bar, problem = legend_content(view, LEVELS, "percent")
    words = texts(legend)
    assert problem == "" and bar is not None
    for percent, gy in (("100 %", "60 Gy"), ("95 %", "57 Gy"), ("80 %", "48 Gy"), ("50 %", "30 Gy"),
                        ("20 %", "12 Gy")):
        assert percent in words and gy in words
    assert words.index("100 %") < words.index("50 %")  # hottest first
    assert "110 %" in json.dumps(bar.to_plotly_json(), default=str) or "wash 10–110 %" in str(texts(bar))
    _, _, problem = legend_content(view, "100, lots", "percent")
    assert "positive numbers" in problem


def test_switching_percent_to_gy_converts_the_box_over_http(site, view):
    app, _, _ = site
    client = app.test_client()
    users = app.extensions["oncopacs.users"]
    users.add_user("plan-switch", Role.ONCOLOGIST, "correct horse battery")
    headers = {"Authorization": f"Bearer {users.create_token('plan-switch')}"}
    light = {k: v for k, v in view.items() if k not in ("dvh", "goals", "plan")}
    reply = dash_update(client, "/dashboards/plan/", [("isodose", "value")], [("isodose-unit", "value", "gy")],
                        headers, state=[("isodose", "value", LEVELS), ("study", "data", light)])
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    assert reply.get_json()["response"]["isodose"]["value"] == "60, 57, 48, 30, 12"
    back = dash_update(client, "/dashboards/plan/", [("isodose", "value")], [("isodose-unit", "value", "percent")],
                       headers, state=[("isodose", "value", "60, 57, 48, 30, 12"), ("study", "data", light)])
    assert back.get_json()["response"]["isodose"]["value"] == LEVELS


def test_loading_the_page_and_moving_the_crosshair_over_http(site):
    app, demo, _ = site
    client = app.test_client()
    users = app.extensions["oncopacs.users"]
    users.add_user("plan-load", Role.ONCOLOGIST, "correct horse battery")
    headers = {"Authorization": f"Bearer {users.create_token('plan-load')}"}
    path = f"/dashboards/plan/{demo.rt_dose.StudyInstanceUID}"
    outputs = [("study", "data"), ("dvh-doc", "data"), ("plan-docs", "data"), ("message", "children"),
               ("viewer", "style"), ("dose-select", "data"), ("dose-select", "value"), ("isodose-unit", "data"),
               ("rois", "options"), ("rois", "value"), ("goals-glance", "children"), ("plan-text", "children"),
               ("compare-select", "data"), ("compare-note", "children"),
               *((f"{p}-slider", prop) for p in PLANES for prop in ("max", "value")),
               *((f"{p}-view", "children") for p in PLANES), ("isodose-legend", "children"),
               ("colour-bar", "children"), ("isodose-problem", "children"), ("isodose-reference", "children")]
    load_state = [("viewer", "style", {"display": "grid"}), ("isodose", "value", LEVELS),
             ("isodose-unit", "value", "percent"), ("window", "data", None), ("colourwash", "checked", True),
             ("mouse-mode", "value", "wl")]
    reply = dash_update(client, "/dashboards/plan/", outputs,
                        [("url", "pathname", path), ("dose-select", "value", None)], headers, state=load_state)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    loaded = reply.get_json()["response"]
    study = loaded["study"]["data"]
    assert "dvh" not in study and loaded["dvh-doc"]["data"]["rois"]  # the big documents stay out of the study
    assert loaded["axial-slider"]["max"] == 30 and 1 <= loaded["axial-slider"]["value"] <= 30  # 1-based
    assert loaded["isodose-unit"]["data"][1]["label"] == "Gy"
    assert len(loaded["compare-select"]["data"]) == 1
    first = loaded["axial-view"]["children"][0]["props"]  # the loader sends the first views with the study
    assert first["id"] == "axial-graph" and first["figure"]["data"][0]["type"] == "image"
    assert "100 %" in json.dumps(loaded["isodose-legend"]["children"])
    inputs = [("study", "data", study), ("axial-slider", "value", study["start"]["axial"] + 1),
              ("isodose", "value", LEVELS), ("window", "data", {"level": 40, "width": 400}), ("rois", "value", None),
              ("colourwash", "checked", True)]
    state = [("coronal-slider", "value", study["start"]["coronal"]),
             ("sagittal-slider", "value", study["start"]["sagittal"]), ("isodose-unit", "value", "percent"),
             ("mouse-mode", "value", "wl")]
    body = {"output": "axial-graph.figure", "outputs": {"id": "axial-graph", "property": "figure"},
            "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
            "changedPropIds": ["study.data", "axial-slider.value"],  # the loader drew it: nothing to send
            "state": [{"id": i, "property": p, "value": v} for i, p, v in state]}
    assert client.post("/dashboards/plan/_dash-update-component", json=body, headers=headers).status_code == 204
    body["changedPropIds"] = ["axial-slider.value"]  # the wheel: the next slice
    drawn = client.post("/dashboards/plan/_dash-update-component", json=body, headers=headers)
    figure = drawn.get_json()["response"]["axial-graph"]["figure"]
    assert figure["data"][0]["type"] == "image"
    title = next(a["text"] for a in figure["layout"]["annotations"] if "/" in a["text"])
    assert title.startswith(f"Axial {study['start']['axial'] + 1}/30")
    bad = dash_update(client, "/dashboards/plan/", outputs, [("url", "pathname", "/dashboards/plan/not-a-uid"),
                                                             ("dose-select", "value", None)], headers,
                      state=load_state)
    assert "study browser" in json.dumps(bad.get_json()["response"]["message"])


def test_goals_are_coloured_by_result_and_worded_for_people(view):
    counts, grid = goals_table(view["goals"], view["dose_unit"])
    shown = json.dumps(grid.rowData)
    assert "not_evaluated" not in json.dumps([{k: v for k, v in r.items() if k != "status"} for r in grid.rowData])
    assert "Max[%]" not in shown and "<=" not in shown and "not found" not in shown
    rows = {(r["roi"], r["goal"]): r for r in grid.rowData}
    assert rows[("BODY", "Max ≤ 110 %")]["status_text"] == "Pass"
    assert rows[("SpinalCord", "Max ≤ 50 Gy")]["reason"] == "outside the dose grid"
    assert rows[("CTV", "D95% ≥ 98 %")]["reason"] == "no structure CTV in the structure set"
    styles = grid.getRowStyle["styleConditions"]
    assert len({c["style"]["backgroundColor"] for c in styles}) == 4  # pass, within tolerance, fail, not evaluated
    assert "2 pass" in counts.children and "8 not evaluated" in counts.children


def test_the_beam_table_has_mu_energies_and_ion_devices(view):
    (grid,) = beams_table(view["plan"], view["dose_unit"])
    headers = [c["headerName"] for c in grid.columnDefs]
    assert {"MU", "Energy", "Spots", "Range shifter", "Dose / fraction"} <= set(headers)
    assert "Snout" not in headers  # no beam of the demo plan has one: no empty column
    first = grid.rowData[0]
    assert first["meterset"] == "197.1 MU" and first["energy"] == "99.8–131.6 MeV (7 layers)"
    assert first["range_shifter"] == "none" and first["beam_dose"] == "1 Gy"


def test_an_effective_dose_is_labelled_gy_rbe_everywhere(site):
    app, demo, rbe_uid = site
    with oncologist(app):
        rbe = study_view(str(demo.rt_dose.StudyInstanceUID), rbe_uid)
        probe = probe_text(rbe, "axial", rbe["start"]["axial"] - 1, 0.0, 0.0)
    assert rbe["dose_unit"] == "Gy(RBE)" and "Gy(RBE)" in rbe["prescription_text"]
    legend, _, _ = legend_content(rbe, LEVELS, "percent")
    assert "60 Gy(RBE)" in texts(legend) and "Gy(RBE)" in probe
    _, grid = goals_table(rbe["goals"], rbe["dose_unit"])
    assert any(r["goal"] == "Max ≤ 50 Gy(RBE)" for r in grid.rowData)
    figure = dvh_figure(rbe["dvh"], {r["name"]: r["colour"] for r in rbe["rois"]}, dose_unit=rbe["dose_unit"])
    assert figure["layout"]["xaxis"]["title"]["text"] == "Dose (Gy(RBE))"
    (beams,) = beams_table(rbe["plan"], rbe["dose_unit"])
    assert beams.rowData[0]["beam_dose"] == "1 Gy(RBE)"


def test_a_second_dose_compares_on_the_dvh(view, site):
    app, _, rbe_uid = site
    with oncologist(app):
        other = compare_dvh(view["study_uid"], rbe_uid)
        with pytest.raises(ValueError, match="not a dose of this study"):
            compare_dvh(view["study_uid"], "1.2.3.4")
        figure = plane_content(view, "axial", view["start"]["axial"] - 1, window=WINDOW, dose_uid=rbe_uid)
    colours = {r["name"]: r["colour"] for r in view["rois"]}
    dvh = dvh_figure(view["dvh"], colours, compare=other, compare_label="RBE")
    solid = {t["name"]: t for t in dvh["data"] if t["line"]["dash"] == "solid"}
    dashed = {t["name"]: t for t in dvh["data"] if t["line"]["dash"] == "dash"}
    assert "PTV" in solid and "PTV · RBE" in dashed
    assert max(dashed["PTV · RBE"]["x"]) == pytest.approx(1.1 * max(solid["PTV"]["x"]), rel=0.03)
    assert figure["data"][0]["type"] == "image"
    assert dvh["layout"]["showlegend"] is False  # the structures list names the colours; nothing under a mode bar
