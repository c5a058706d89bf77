"""The plan review page on a demo patient with three doses of its proton plan: the planning system's RBE-weighted
(EFFECTIVE) dose, an independent dose check 2 % lower, and a PHYSICAL export (the RBE-weighted dose / 1.1).

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
from dashboards.plan_views import STATUS_COLOURS, beams_table, dvh_figure, goals_table, table_rows
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
    """The app over an archive holding the demo patient with its dose check and a PHYSICAL export, analysed.

    Yields the app, the patient and the PHYSICAL dose's SOP Instance UID.
    """
    settings = Settings(data_dir=tmp_path_factory.mktemp("plan-page") / "data", dicom_host="127.0.0.1",
                        dicom_port=0, secret_key="plan-page", audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    demo = build_demo_patient("ONCO-PLANPAGE-001", "Phantom^Planpage", with_dose_check=True)
    physical = copy.deepcopy(demo.rt_dose)
    physical.SOPInstanceUID = generate_uid(entropy_srcs=["plan-page", "physical dose"])
    physical.file_meta.MediaStorageSOPInstanceUID = physical.SOPInstanceUID
    physical.SeriesInstanceUID = generate_uid(entropy_srcs=["plan-page", "physical series"])
    physical.DoseType = "PHYSICAL"
    physical.DoseGridScaling = float(demo.rt_dose.DoseGridScaling) / 1.1
    with open_platform(settings) as platform:
        for dataset in [*demo.all_datasets(), physical]:
            assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
        platform.jobs.new_worker().run_pending()  # the RT analysis of the three doses, as the rules queue it
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app, demo, str(physical.SOPInstanceUID)


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
    app, demo, physical_uid = site
    rois = {r["name"]: r for r in view["rois"]}
    assert list(rois) == ["BODY", "PTV", "Bladder", "Rectum", "SpinalCord"]
    assert rois["PTV"]["colour"] == [255, 0, 0] and rois["PTV"]["volume_cc"] == pytest.approx(113.1, abs=0.5)
    assert view["dose_unit"] == "Gy(RBE)" and view["reference_gy"] == pytest.approx(60.0)  # a proton plan's dose
    assert view["prescription_text"].startswith("60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)")
    with oncologist(app):
        at_start = probe_text(view, "axial", view["start"]["axial"] - 1,
                              *crosshair_at(view, "axial", {p: i - 1 for p, i in view["start"].items()}))
    assert "Gy(RBE) (10" in at_start or "Gy(RBE) (9" in at_start  # the crosshair opens inside the PTV, about 100 %
    labels = {c["value"]: c["label"] for c in view["doses"]}
    tps_uid, check_uid = str(demo.rt_dose.SOPInstanceUID), str(demo.dose_check.SOPInstanceUID)
    assert next(iter(labels)) == tps_uid and set(labels) == {tps_uid, check_uid, physical_uid}  # the TPS dose first
    assert "Gy(RBE)" in labels[tps_uid] and "Gy(RBE)" in labels[check_uid]
    assert "Independent dose check" in labels[check_uid] and "check" not in labels[tps_uid]  # the series says which
    assert labels[physical_uid].endswith("Gy") and len(set(labels.values())) == 3


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
    for percent, gy in (("100 %", "60 Gy(RBE)"), ("95 %", "57 Gy(RBE)"), ("80 %", "48 Gy(RBE)"),
                        ("50 %", "30 Gy(RBE)"), ("20 %", "12 Gy(RBE)")):
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
    app, demo, physical_uid = site
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
               ("colour-bar", "children"), ("isodose-problem", "children"), ("isodose-reference", "children"),
               ("dvh", "figure"), ("goals", "children"), ("beams", "children")]
    load_state = [("viewer", "style", {"display": "grid"}), ("isodose", "value", LEVELS),
             ("isodose-unit", "value", "percent"), ("window", "data", None), ("colourwash", "checked", True),
             ("mouse-mode", "value", "wl"), ("isodose-unit", "data", None)]
    reply = dash_update(client, "/dashboards/plan/", outputs,
                        [("url", "pathname", path), ("dose-select", "value", None)], headers, state=load_state)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    loaded = reply.get_json()["response"]
    study = loaded["study"]["data"]
    assert "dvh" not in study and loaded["dvh-doc"]["data"]["rois"]  # the big documents stay out of the study
    assert loaded["axial-slider"]["max"] == 30 and 1 <= loaded["axial-slider"]["value"] <= 30  # 1-based
    assert loaded["isodose-unit"]["data"][1]["label"] == "Gy(RBE)"
    assert "viewer" not in loaded  # shown already: not re-rendered for nothing
    assert loaded["dose-select"]["value"] == str(demo.rt_dose.SOPInstanceUID)  # the plan's own dose opens
    assert {c["value"] for c in loaded["compare-select"]["data"]} == {
        str(demo.dose_check.SOPInstanceUID), physical_uid}  # the independent check and the physical export
    assert loaded["compare-note"]["children"] == ""
    first = loaded["axial-view"]["children"][0]["props"]  # the loader sends the first views with the study
    assert first["id"] == "axial-graph" and first["figure"]["data"][0]["type"] == "image"
    assert "100 %" in json.dumps(loaded["isodose-legend"]["children"])
    # and the DVH, goals and beams: no second round trip before the page is usable
    assert {t["name"] for t in loaded["dvh"]["figure"]["data"]} >= {"PTV", "BODY"}
    assert "goals-table" in json.dumps(loaded["goals"]["children"]) and "197.1 MU" in json.dumps(loaded["beams"])
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
    counts, table = goals_table(view["goals"], view["dose_unit"])
    shown = table_rows(table)
    assert "not_evaluated" not in json.dumps(shown)
    assert "Max[%]" not in json.dumps(shown) and "<=" not in json.dumps(shown) and "not found" not in json.dumps(shown)
    rows = {(r["roi"], r["goal"]): r for r in shown}
    assert rows[("BODY", "Max ≤ 110 %")]["status_text"] == "Pass"
    assert rows[("SpinalCord", "Max ≤ 50 Gy(RBE)")]["reason"] == "outside the dose grid"
    assert rows[("CTV", "D95% ≥ 98 %")]["reason"] == "no structure CTV in the structure set"
    _head, body = table.children
    colours = {row.className: row.style["backgroundColor"] for row in body.children}
    assert set(colours) == {"op-row-pass", "op-row-not_evaluated"} and len(set(colours.values())) == 2
    assert len({back for back, _text in STATUS_COLOURS.values()}) == 4  # each status its own colour
    assert "2 pass" in counts.children and "8 not evaluated" in counts.children


def test_the_beam_table_has_mu_energies_and_ion_devices(view):
    (table,) = beams_table(view["plan"], view["dose_unit"])
    head, _body = table.children
    headers = [cell.children for cell in head.children.children]
    assert {"MU", "Energy", "Spots", "Range shifter", "Dose / fraction"} <= set(headers)
    assert "Snout" not in headers  # no beam of the demo plan has one: no empty column
    first = table_rows(table)[0]
    assert first["meterset"] == "197.1 MU" and first["energy"] == "99.8–131.6 MeV (7 layers)"
    assert first["range_shifter"] == "none" and first["beam_dose"] == "1 Gy(RBE)"


@pytest.mark.parametrize(("dose", "unit"), [("tps", "Gy(RBE)"), ("check", "Gy(RBE)"), ("physical", "Gy")])
def test_each_dose_is_labelled_in_its_own_unit_everywhere(site, dose, unit):
    app, demo, physical_uid = site
    uid = {"tps": str(demo.rt_dose.SOPInstanceUID), "check": str(demo.dose_check.SOPInstanceUID),
           "physical": physical_uid}[dose]
    with oncologist(app):
        shown = study_view(str(demo.rt_dose.StudyInstanceUID), uid)
        probe = probe_text(shown, "axial", shown["start"]["axial"] - 1, 0.0, 0.0)
    assert shown["dose_uid"] == uid and shown["dose_unit"] == unit
    assert shown["prescription_text"].startswith(f"60 {unit} in 30 fractions (2 {unit} per fraction)")
    legend, _, _ = legend_content(shown, LEVELS, "percent")
    assert f"60 {unit}" in texts(legend) and f"{unit} (" in probe
    _, goals = goals_table(shown["goals"], shown["dose_unit"])
    assert any(r["goal"] == f"Max ≤ 50 {unit}" for r in table_rows(goals))
    figure = dvh_figure(shown["dvh"], {r["name"]: r["colour"] for r in shown["rois"]}, dose_unit=shown["dose_unit"])
    assert figure["layout"]["xaxis"]["title"]["text"] == f"Dose ({unit})"
    (beams,) = beams_table(shown["plan"], shown["dose_unit"])
    assert table_rows(beams)[0]["beam_dose"] == f"1 {unit}"


def test_the_independent_dose_check_compares_on_the_dvh(view, site):
    app, demo, physical_uid = site
    check_uid = str(demo.dose_check.SOPInstanceUID)
    with oncologist(app):
        check = compare_dvh(view["study_uid"], check_uid)
        physical = compare_dvh(view["study_uid"], physical_uid)
        with pytest.raises(ValueError, match="not a dose of this study"):
            compare_dvh(view["study_uid"], "1.2.3.4")
        figure = plane_content(view, "axial", view["start"]["axial"] - 1, window=WINDOW, dose_uid=check_uid)
    assert check is not None and check["dose"]["dose_unit"] == "Gy(RBE)" and check != view["dvh"]
    colours = {r["name"]: r["colour"] for r in view["rois"]}
    dvh = dvh_figure(view["dvh"], colours, compare=check, compare_label="check")
    solid = {t["name"]: t for t in dvh["data"] if t["line"]["dash"] == "solid"}
    dashed = {t["name"]: t for t in dvh["data"] if t["line"]["dash"] == "dash"}
    assert "PTV" in solid and "PTV · check" in dashed
    assert max(dashed["PTV · check"]["x"]) == pytest.approx(0.98 * max(solid["PTV"]["x"]), rel=0.01)  # 2 % lower
    against_physical = dvh_figure(view["dvh"], colours, compare=physical, compare_label="physical")
    dashed_physical = next(t for t in against_physical["data"] if t["name"] == "PTV · physical")
    assert max(dashed_physical["x"]) == pytest.approx(max(solid["PTV"]["x"]) / 1.1, rel=0.03)
    assert figure["data"][0]["type"] == "image"
    assert dvh["layout"]["showlegend"] is False  # the structures list names the colours; nothing under a mode bar


def test_the_demo_proton_plan_opens_in_gy_rbe_with_its_independent_dose_check_to_compare(demo_app, as_role):
    """``oncopacs demo``: ONCO-DEMO-001's planning study holds the TPS dose and an independent check of it."""
    demo = build_demo_patient(with_dose_check=True)  # the demo's first patient: same UIDs as it loads
    assert demo.dose_check is not None and demo.patient.patient_id == "ONCO-DEMO-001"
    tps_uid, check_uid = str(demo.rt_dose.SOPInstanceUID), str(demo.dose_check.SOPInstanceUID)
    with as_role(Role.ONCOLOGIST):
        opened = study_view(str(demo.rt_dose.StudyInstanceUID))
        check = compare_dvh(opened["study_uid"], check_uid)
    assert opened["dose_uid"] == tps_uid and opened["dose_unit"] == "Gy(RBE)"  # the TPS dose opens, RBE-weighted
    assert opened["prescription_text"].startswith("60 Gy(RBE) in 30 fractions")
    assert [c["value"] for c in opened["doses"] if c["value"] != tps_uid] == [check_uid]  # what compare-select lists
    assert check is not None and check["dose_unit"] == "Gy(RBE)"
    colours = {r["name"]: r["colour"] for r in opened["rois"]}
    figure = dvh_figure(opened["dvh"], colours, compare=check, compare_label="check", dose_unit=opened["dose_unit"])
    ptv = {t["line"]["dash"]: max(t["x"]) for t in figure["data"] if t["name"] in ("PTV", "PTV · check")}
    assert ptv["dash"] == pytest.approx(0.98 * ptv["solid"], rel=0.01)
    assert figure["layout"]["xaxis"]["title"]["text"] == "Dose (Gy(RBE))"
