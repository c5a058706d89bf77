"""Plan review at /dashboards/plan/<StudyInstanceUID>, to the conventions of Eclipse and MIM.

The viewer fills the window: the axial view, coronal and sagittal beside it, and a side panel with the
isodose legend (each level in % and in the dose's unit), the dose wash's colour bar (up to above 100 %),
the structures (colour swatch, volume) and the DVH. Below: the clinical goals coloured by result, the
plan with its beams (MU, energies, snout and range shifters), and a second dose of the study to compare.

In a view: the mouse wheel scrolls slices; dragging changes the window and level (presets kept); a click
moves the crosshair, and so the other two views; the probe under the views reads HU and dose under the
cursor; the Measure mode draws lines labelled with their length in mm. Images (windowed CT, dose wash) are
rendered on the server and cached (:mod:`oncopacs.viewer.layers`); contours come from the RTSTRUCT's
points and isodose lines are traced on the dose, both drawn as vectors (:mod:`dashboards.plan_views`).
Doses carry the RT Dose's unit everywhere (``Gy(RBE)`` for an EFFECTIVE dose). The callback bodies are
module functions (:func:`study_view`, :func:`plane_content`, ...) so tests call them. One callback loads the
study and answers with everything the page opens on (views, legend, DVH, goals, beams): each chained round trip
cost 0.1-0.2 s of the page's time to usable (``benchmarks/dashboards.py``).
"""

from __future__ import annotations

import re
from typing import Any

import dash
import dash_mantine_components as dmc
import numpy as np
from dash import Input, Output, State, dcc, html
from flask import Flask, current_app

from dashboards import plan_scripts
from dashboards.page_app import PageDash
from dashboards.plan_views import (
    beams_table,
    colour_bar,
    dvh_figure,
    empty_figure,
    goals_summary,
    goals_table,
    isodose_legend,
    plane_figure,
    roi_options,
)
from dashboards.report_form import register_report_form, report_form
from dashboards.shell import PATIENT_BAR_HEIGHT_PX, STYLESHEET, Subject, install_shell
from oncopacs.analysis.rt import find_planning_sets, load_results
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.errors import NotFoundError
from oncopacs.index.oncology import series_descriptions
from oncopacs.uids import is_valid_uid
from oncopacs.viewer.isodose import (
    GY,
    PERCENT,
    IsodoseLevel,
    LevelsError,
    convert_levels,
    format_number,
    parse_levels,
    plan_isodose_levels,
    to_gy,
    wash_top_percent,
)
from oncopacs.viewer.layers import PlaneFrame, plane_frame, plane_position_mm, probe
from oncopacs.viewer.plan_text import describe_prescription
from oncopacs.viewer.scene import LoadedScene
from oncopacs.viewer.slices import PLANES, WINDOWS, Scene, SliceError
from oncopacs.web import theme
from oncopacs.web.access import audit_access
from oncopacs.web.viewer import viewer

URL_BASE = "/dashboards/plan/"
DEFAULT_ISODOSE_PERCENT = "100, 95, 80, 50, 20"
DEFAULT_WINDOW = "mediastinum"
MOUSE_MODES: dict[str, str | bool] = {"wl": False, "pan": "pan", "zoom": "zoom", "measure": "drawline"}
_TARGET = re.compile(r"^(PTV|CTV|GTV|ITV)", re.IGNORECASE)
_SHELL_PX = theme.HEADER_HEIGHT_PX + PATIENT_BAR_HEIGHT_PX + 2 * 16  # header, patient bar, the main's padding
_HIDDEN: dict[str, str] = {"display": "none"}
_SLIDER_PX = 36  # a slice slider's strip under its view
_DOCUMENTS = ("dvh", "goals", "plan")  # the stored analysis: kept out of the study store


# -- the callbacks' work ----------------------------------------------------------------------------------------


def study_uid_from(pathname: str | None) -> str:
    """The StudyInstanceUID in ``/dashboards/plan/<uid>`` (ValueError when absent or malformed)."""
    rest = (pathname or "")[len(URL_BASE):] if (pathname or "").startswith(URL_BASE) else ""
    uid = rest.strip("/").split("/")[0]
    if not uid or not is_valid_uid(uid):
        raise ValueError("open a study from the study browser: /dashboards/plan/<StudyInstanceUID>")
    return uid


def _load_scene(study_uid: str, dose_uid: str | None, action: AuditAction) -> LoadedScene:
    try:
        return viewer().scene(study_uid, dose_uid)
    except NotFoundError as exc:
        audit_access(action, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
        raise ValueError(str(exc)) from None


def study_view(study_uid: str, dose_uid: str | None = None) -> dict[str, Any]:
    """What the page needs of a study and one of its doses (JSON-ready; audited READ).

    The doses to choose from (labelled by plan), ROIs with colours and volumes, the grid and each plane's
    frame, the slices to open on (the target's centre), the reference dose of the isodose levels, the dose
    unit, and the stored RT analysis (DVH, goals, plan) of that dose.
    """
    loaded = _load_scene(study_uid, dose_uid, AuditAction.READ)
    archive = current_app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        sets = find_planning_sets(session, study_uid)
        results = [load_results(session, s) for s in sets]
        descriptions = series_descriptions(session, [s.dose_uid for s in sets])
    audit_access(AuditAction.READ, patient_ids=[loaded.inputs.patient_id], study_uids=[study_uid])
    scene = loaded.scene
    chosen = next((r for r in results if r.planning_set.dose_uid == loaded.inputs.dose_uid), None)
    dvh = chosen.dvh if chosen else None
    plan = chosen.plan if chosen and chosen.plan else (loaded.plan.to_dict() if loaded.plan else None)
    dose_unit = str((dvh or {}).get("dose_unit") or scene.dose_unit)
    prescription = scene.prescription_gy or (plan or {}).get("prescription_gy")
    reference = prescription or scene.max_dose_gy
    volumes = {r["name"]: r.get("volume_cc") for r in (dvh or {}).get("rois", [])}
    grid = scene.grid
    rx = (plan or {}).get("prescription") or {}
    return {
        "study_uid": study_uid,
        "patient_id": loaded.inputs.patient_id,
        "dose_uid": loaded.inputs.dose_uid,
        "doses": _dose_choices(results, descriptions),
        "rois": [{"name": r.name, "colour": list(r.colour), "volume_cc": _volume(volumes.get(r.name), c)}
                 for r, c in zip(scene.rois, scene.contours, strict=False)],
        "grid": {"origin": list(grid.origin_mm), "spacing": list(grid.spacing_mm), "shape": list(grid.shape)},
        "sizes": {plane: scene.plane_size(plane) for plane in PLANES},
        "frames": {plane: _frame_dict(plane_frame(grid, plane)) for plane in PLANES},
        "start": start_indices(scene),
        "has_dose": scene.dose_gy is not None,
        "prescription_gy": prescription,
        "reference_gy": reference,
        "reference_name": "prescription" if prescription else "maximum dose",
        "max_dose_gy": scene.max_dose_gy,
        "dose_unit": dose_unit,
        "prescription_text": describe_prescription(prescription, (plan or {}).get("fractions") or rx.get("fractions"),
                                                   dose_unit, rx.get("description", "")),
        "dvh": dvh,
        "goals": chosen.goals if chosen else None,
        "plan": plan,
    }


def _volume(stored: float | None, roi: Any) -> float:
    """The ROI volume (cc) the DVH analysis stored, else the contour stack's own."""
    return float(stored) if stored is not None else round(float(roi.compute_volume_cc()), 2)


def _dose_choices(results: list[Any], descriptions: dict[str, str]) -> list[dict[str, str]]:
    """The study's doses labelled for people: plan label, the dose series' description (else its summation type),
    unit, and a number when two look alike."""
    labels = []
    for result in results:
        plan = result.plan or {}
        dose = (result.dvh or {}).get("dose") or {}
        name = plan.get("label") or plan.get("name") or "RT Dose"
        kind = str(dose.get("dose_summation_type") or "").lower()
        what = descriptions.get(result.planning_set.dose_uid, "").strip() or (f"{kind} dose" if kind else "")
        unit = dose.get("dose_unit") or ""
        labels.append(" · ".join(str(p) for p in (name, what, unit) if p))
    seen: dict[str, int] = {}
    choices = []
    for result, label in zip(results, labels, strict=True):
        seen[label] = seen.get(label, 0) + 1
        text = label if labels.count(label) == 1 else f"{label} ({seen[label]})"
        choices.append({"value": result.planning_set.dose_uid, "label": text})
    return choices


def _frame_dict(frame: PlaneFrame) -> dict[str, Any]:
    return {"plane": frame.plane, "u0_mm": frame.u0_mm, "v0_mm": frame.v0_mm, "du_mm": frame.du_mm,
            "dv_mm": frame.dv_mm, "width": frame.width, "height": frame.height}


def start_indices(scene: Scene) -> dict[str, int]:
    """1-based slices to open on: the centre of the first target ROI (PTV, CTV, GTV, ITV), else of the dose
    maximum, else the middle."""
    target = next((r for r in scene.rois if _TARGET.match(r.name)), None)
    if target is not None:
        k, j, i = (round(float(np.mean(a))) + o for a, o in zip(np.nonzero(target.mask), target.offset,
                                                                        strict=True))
    elif scene.dose_gy is not None and scene.dose_gy.size and float(scene.dose_gy.max()) > 0:
        k, j, i = (int(v) for v in np.unravel_index(int(np.argmax(scene.dose_gy)), scene.dose_gy.shape))
    else:
        k, j, i = (n // 2 for n in scene.grid.shape)
    return {"axial": k + 1, "coronal": j + 1, "sagittal": i + 1}


def crosshair_at(view: dict[str, Any], plane: str, indices: dict[str, int]) -> tuple[float, float]:
    """The crosshair on ``plane`` (display mm) for 0-based ``indices`` of the three planes."""
    origin, spacing = view["grid"]["origin"], view["grid"]["spacing"]
    x = origin[0] + indices["sagittal"] * spacing[0]
    y = origin[1] + indices["coronal"] * spacing[1]
    z = origin[2] + indices["axial"] * spacing[2]
    return {"axial": (x, y), "coronal": (x, -z), "sagittal": (y, -z)}[plane]


def isodose_levels(view: dict[str, Any], text: str | None, unit: str) -> tuple[IsodoseLevel, ...]:
    """The typed levels as coloured isodose levels, hottest first (LevelsError when they cannot be read)."""
    reference = view.get("reference_gy")
    if not view.get("has_dose") or not reference:
        return ()
    avoid = [tuple(r["colour"]) for r in view["rois"]]
    return plan_isodose_levels(to_gy(parse_levels(text), unit, reference), reference, avoid=avoid)


def plane_content(view: dict[str, Any], plane: str, index: int, *, window: tuple[float, float],
                  levels: tuple[IsodoseLevel, ...] = (), rois: list[str] | None = None, colourwash: bool = True,
                  crosshair: tuple[float, float] | None = None, mode: str = "wl",
                  dose_uid: str | None = None) -> dict[str, Any]:
    """One plane's figure at 0-based ``index`` (audited RETRIEVE); ValueError for what cannot be drawn."""
    loaded = _load_scene(view["study_uid"], dose_uid or view["dose_uid"], AuditAction.RETRIEVE)
    scene, layers = loaded.scene, viewer().layers
    try:
        index = min(max(int(index), 0), scene.plane_size(plane) - 1)
        level_hu, width_hu = window
        ct = layers.ct(scene, plane, index, float(level_hu), float(width_hu))
        reference = view.get("reference_gy")
        wash = layers.wash(scene, plane, index, float(reference)) if colourwash and reference else None
        isodose = [(level, layers.isodose(scene, plane, index, level.dose_gy)) for level in levels]
        outlines = [o for o in layers.outlines(scene, plane, index) if rois is None or o.name in rois]
    except SliceError as exc:
        raise ValueError(f"cannot draw the {plane} plane: {exc}") from None
    audit_access(AuditAction.RETRIEVE, patient_ids=[loaded.inputs.patient_id], study_uids=[view["study_uid"]])
    position = plane_position_mm(scene.grid, plane, index)
    axis = {"axial": "z", "coronal": "y", "sagittal": "x"}[plane]
    title = f"{plane.capitalize()} {index + 1}/{scene.plane_size(plane)} · {axis} {position:.1f} mm"
    return plane_figure(plane, ct=ct, wash=wash, outlines=outlines, isodose=isodose, crosshair=crosshair, title=title,
                        dragmode=MOUSE_MODES.get(mode, False), revision=f"{view['study_uid']}-{plane}")


def first_views(view: dict[str, Any], *, isodose: str | None, unit: str | None, window: dict[str, float] | None,
                colourwash: bool = True, mode: str | None = "wl") -> dict[str, dict[str, Any]]:
    """The three planes' figures at the slices the view opens on (what the loader sends with the study)."""
    try:
        levels = isodose_levels(view, isodose, unit or PERCENT)
    except LevelsError:
        levels = ()
    window = window or _window_data(DEFAULT_WINDOW)
    start = {plane: index - 1 for plane, index in view["start"].items()}
    return {plane: plane_content(view, plane, start[plane], window=(window["level"], window["width"]), levels=levels,
                                 colourwash=colourwash, crosshair=crosshair_at(view, plane, start), mode=mode or "wl")
            for plane in PLANES}


def probe_text(view: dict[str, Any], plane: str, index: int, u_mm: float, v_mm: float) -> str:
    """``Axial 16 · (x, y, z) = (…) mm · 40 HU · 57.2 Gy (95.3 %)`` for the point under the cursor.

    Not audited on its own: it reads the voxels of slices this user has just been sent (each one audited).
    """
    scene = _load_scene(view["study_uid"], view["dose_uid"], AuditAction.RETRIEVE).scene
    try:
        found = probe(scene, plane, min(max(int(index), 0), scene.plane_size(plane) - 1), float(u_mm), float(v_mm))
    except SliceError as exc:
        raise ValueError(str(exc)) from None
    if found is None:
        return "outside the CT"
    x, y, z = found.position_mm
    parts = [f"({x:.1f}, {y:.1f}, {z:.1f}) mm", f"{found.hu:.0f} HU"]
    if found.dose_gy is not None:
        dose = f"{format_number(found.dose_gy)} {view['dose_unit']}"
        reference = view.get("reference_gy")
        parts.append(f"{dose} ({found.dose_gy / reference * 100.0:.1f} %)" if reference else dose)
    return " · ".join(parts)


def legend_content(view: dict[str, Any] | None, text: str | None, unit: str) -> tuple[list[Any], Any, str]:
    """(legend, colour bar, problem) for the typed isodose levels."""
    if not view or not view.get("has_dose") or not view.get("reference_gy"):
        return [html.Span("No dose in this study.", className="op-dimmed")], None, ""
    reference = float(view["reference_gy"])
    bar = colour_bar(reference, wash_top_percent(view.get("max_dose_gy"), reference), view["dose_unit"])
    try:
        levels = isodose_levels(view, text, unit)
    except LevelsError as exc:
        return [], bar, str(exc)
    return isodose_legend(levels, view["dose_unit"]), bar, ""


def legend_outputs(view: dict[str, Any] | None, text: str | None, unit: str) -> tuple[Any, Any, str, str]:
    """(legend, colour bar, problem, what the % refer to) of the isodose card."""
    legend, bar, problem = legend_content(view, text, unit)
    reference = ""
    if view and view.get("reference_gy"):
        reference = f"% of {format_number(view['reference_gy'])} {view['dose_unit']} ({view['reference_name']})"
    return legend, bar, problem, reference


def compare_dvh(study_uid: str, dose_uid: str | None) -> dict[str, Any] | None:
    """The stored DVH of another dose of the study (None when not chosen or not analysed)."""
    if not dose_uid:
        return None
    archive = current_app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        chosen = next((s for s in find_planning_sets(session, study_uid) if s.dose_uid == dose_uid), None)
        if chosen is None:
            raise ValueError(f"dose {dose_uid} is not a dose of this study")
        return load_results(session, chosen).dvh


# -- the page ---------------------------------------------------------------------------------------------------


def view_graph(plane: str, figure: dict[str, Any]) -> dcc.Graph:
    """A plane's graph, created with its first figure (one plot: no empty plot drawn first, then replaced)."""
    return dcc.Graph(id=f"{plane}-graph", figure=figure, responsive=True, clear_on_unhover=True,
                     config={"scrollZoom": False, "displaylogo": False, "displayModeBar": False,
                             "doubleClick": "reset", "showTips": False},
                     style={"height": "100%", "width": "100%"})


def _pane(plane: str) -> html.Div:
    graph = html.Div(id=f"{plane}-view", style={"flex": "1 1 0", "minHeight": 0, "width": "100%"})
    slider = html.Div(dcc.Slider(id=f"{plane}-slider", min=1, max=2, step=1, value=1, marks=None, updatemode="drag"),
                      # its height from the start: the slider (loaded lazily) would otherwise push the view up when it
                      # arrives, and all three views would be laid out and drawn again
                      style={"padding": "2px 6px 0", "background": "#1b1e22", "height": f"{_SLIDER_PX}px",
                             "boxSizing": "border-box"}, className="op-slice-slider")
    return html.Div([graph, slider], id=f"{plane}-pane", style={
        "gridArea": plane, "display": "flex", "flexDirection": "column", "minHeight": 0, "minWidth": 0,
        "background": "#000", "borderRadius": "4px", "overflow": "hidden"})


def _card(title: Any, body: list[Any], **style: Any) -> html.Div:
    return html.Div([html.Div(title, style={"fontSize": "12px", "fontWeight": 700, "color": "#495057",
                                            "textTransform": "uppercase", "letterSpacing": "0.03em",
                                            "marginBottom": "4px"}), *body],
                    style={"background": "#fff", "border": f"1px solid {theme.BORDER_COLOUR}", "borderRadius": "6px",
                           "padding": "6px 8px", **style})


def _toolbar() -> html.Div:
    presets = [{"label": name.capitalize(), "value": name} for name in WINDOWS]
    return html.Div([
        dmc.Select(id="dose-select", data=[], value=None, size="xs", w=300, allowDeselect=False,
                   label=None, placeholder="Dose", comboboxProps={"withinPortal": True}),
        dmc.Group([dmc.Text("Window", size="xs", fw=600, c="dimmed"),
                   dmc.SegmentedControl(id="window-preset", size="xs", value=DEFAULT_WINDOW,
                                        data=[*presets, {"label": "Custom", "value": "custom", "disabled": True}]),
                   dmc.Text(id="window-text", size="xs", c="dimmed", w=130)], gap=6, wrap="nowrap"),
        dmc.Group([dmc.Text("Mouse", size="xs", fw=600, c="dimmed"),
                   dmc.SegmentedControl(id="mouse-mode", size="xs", value="wl",
                                        data=[{"label": "Window/level", "value": "wl"},
                                              {"label": "Pan", "value": "pan"}, {"label": "Zoom", "value": "zoom"},
                                              {"label": "Measure", "value": "measure"}]),
                   dmc.Button("Clear lines", id="clear-measures", size="compact-xs", variant="subtle")],
                  gap=6, wrap="nowrap"),
    ], style={"display": "flex", "flexWrap": "wrap", "alignItems": "center", "gap": "6px 18px"})


def _side_panel() -> html.Div:
    isodose = _card("Isodose", [
        html.Div([dmc.TextInput(id="isodose", value=DEFAULT_ISODOSE_PERCENT, size="xs", debounce=400,
                                style={"flex": "1 1 auto"}, **{"aria-label": "Isodose levels"}),
                  dmc.SegmentedControl(id="isodose-unit", size="xs", value=PERCENT,
                                       data=[{"label": "%", "value": PERCENT}, {"label": "Gy", "value": GY}])],
                 style={"display": "flex", "gap": "6px", "alignItems": "center"}),
        html.Div(id="isodose-problem", style={"color": "#c92a2a", "fontSize": "12px"}),
        html.Div(id="isodose-reference", style={"fontSize": "11px", "color": "#868e96", "margin": "2px 0"}),
        html.Div(id="isodose-legend"),
        html.Div([dmc.Switch(id="colourwash", checked=True, size="xs", label="Dose wash", mb=2),
                  html.Div(id="colour-bar")], style={"marginTop": "4px"}),
    ], flex="0 0 auto")
    structures = _card("Structures", [dcc.Checklist(id="rois", options=[], value=[], labelStyle={
        "display": "block", "fontSize": "13px", "lineHeight": "20px", "whiteSpace": "nowrap"})],
        flex="0 1 auto", overflowY="auto", minHeight="60px")
    # in the first layout: its graph starts loading Plotly while the study loads (the views then draw at once)
    dvh = _card("DVH", [dcc.Graph(id="dvh", figure=empty_figure(background="#ffffff"), responsive=True,
                                  style={"flex": "1 1 0", "minHeight": 0},
                                  config={"displaylogo": False, "displayModeBar": False})],
        flex="1 1 0", minHeight="180px", display="flex", flexDirection="column")
    return html.Div([isodose, structures, dvh], id="side-panel", style={
        "gridArea": "side", "display": "flex", "flexDirection": "column", "gap": "6px", "minHeight": 0,
        "minWidth": 0, "overflow": "hidden"})


def _section(title: str, body: list[Any], section_id: str) -> html.Section:
    return html.Section([dmc.Title(title, order=4, mb=6), *body], id=section_id, style={"marginTop": "16px"})


def layout() -> html.Div:
    views = html.Div([_pane(p) for p in PLANES] + [_side_panel()], id="views", style={
        "display": "grid", "gap": "6px", "minHeight": 0,
        "gridTemplateColumns": "minmax(0, 1.5fr) minmax(0, 1fr) minmax(280px, 0.95fr)",
        "gridTemplateRows": "minmax(0, 1fr) minmax(0, 1fr)",
        "gridTemplateAreas": '"axial coronal side" "axial sagittal side"'})
    status = html.Div([
        html.Div([html.Span("Probe: ", style={"fontWeight": 600}), html.Span(id="probe", children="—"),
                  html.Span(id="measure", style={"marginLeft": "24px", "color": "#0b7285"})],
                 style={"overflow": "hidden", "textOverflow": "ellipsis", "minWidth": 0}),
        html.Div(id="goals-glance", style={"display": "flex", "gap": "4px", "alignItems": "center",
                                           "flex": "0 0 auto"}),
    ], style={"fontSize": "13px", "whiteSpace": "nowrap", "display": "flex", "justifyContent": "space-between",
              "gap": "12px", "alignItems": "center"})
    viewer_block = html.Div([_toolbar(), views, status], id="viewer", style={
        "display": "grid", "gridTemplateRows": "auto minmax(0, 1fr) auto", "gap": "6px",
        "height": f"calc(100vh - {_SHELL_PX}px)", "minHeight": "440px"})
    return html.Div([
        dcc.Location(id="url"),
        dcc.Store(id="study"), dcc.Store(id="window", data=_window_data(DEFAULT_WINDOW)),
        dcc.Store(id="dvh-doc"), dcc.Store(id="plan-docs"), dcc.Store(id="previews-cleared"),
        dcc.Store(id="compare-dvh"), dcc.Store(id="client-ready"), dcc.Store(id="mode-applied"),
        dcc.Store(id="indices-seen"),
        html.Div(id="message"),
        viewer_block,
        _section("Clinical goals", [html.Div(id="goals")], "goals-section"),
        _section("Plan", [html.Div(id="plan-text", style={"marginBottom": "6px"}), html.Div(id="beams")],
                 "plan-section"),
        _section("Report", [report_form("plan")], "report-section"),
        _section("Compare with another dose of this study", [
            dmc.Select(id="compare-select", data=[], value=None, size="xs", w=320, clearable=True,
                       placeholder="Another dose of the study"),
            html.Div(id="compare-note", className="op-dimmed", style={"fontSize": "13px", "margin": "4px 0"}),
            html.Div(id="compare-pane", style={"maxWidth": "560px", "display": "none"}),
        ], "compare-section"),
    ])


def _window_data(preset: str) -> dict[str, float]:
    level, width = WINDOWS[preset]
    return {"level": level, "width": width}


def create_dash(server: Flask) -> dash.Dash:
    app = PageDash(__name__, server=server,
                   url_base_pathname=URL_BASE, title="Plan review · OncoPACS", suppress_callback_exceptions=True,
                   external_stylesheets=[STYLESHEET])
    install_shell(app, layout, page_title="Plan review", subject=Subject.STUDY)
    _register_loading(app)
    _register_views(app)
    _register_panels(app)
    _register_browser_side(app)
    register_report_form(app)
    return app


def _register_loading(app: dash.Dash) -> None:
    sliders = [o for p in PLANES for o in (Output(f"{p}-slider", "max"), Output(f"{p}-slider", "value"))]

    @app.callback(Output("study", "data"), Output("dvh-doc", "data"), Output("plan-docs", "data"),
                  Output("message", "children"), Output("viewer", "style"),
                  Output("dose-select", "data"), Output("dose-select", "value"), Output("isodose-unit", "data"),
                  Output("rois", "options"), Output("rois", "value"), Output("goals-glance", "children"),
                  Output("plan-text", "children"), Output("compare-select", "data"), Output("compare-note", "children"),
                  *sliders, *(Output(f"{p}-view", "children") for p in PLANES),
                  Output("isodose-legend", "children"), Output("colour-bar", "children"),
                  Output("isodose-problem", "children"), Output("isodose-reference", "children"),
                  Output("dvh", "figure"), Output("goals", "children"), Output("beams", "children"),
                  Input("url", "pathname"), Input("dose-select", "value"), State("viewer", "style"),
                  State("isodose", "value"), State("isodose-unit", "value"), State("window", "data"),
                  State("colourwash", "checked"), State("mouse-mode", "value"), State("isodose-unit", "data"))
    def _load(pathname, dose_uid, viewer_style, isodose, level_unit, window, wash, mode, units_shown):
        try:
            view = study_view(study_uid_from(pathname), dose_uid)
            views = first_views(view, isodose=isodose, unit=level_unit, window=window, colourwash=bool(wash),
                                mode=mode)
        except ValueError as exc:
            alert = dmc.Alert(str(exc), color="red", title="Cannot show this plan")
            return (None, None, None, alert, {**(viewer_style or {}), **_HIDDEN}, *([dash.no_update] * 9),
                    *([dash.no_update] * 6), *([dash.no_update] * 3), *([dash.no_update] * 4),
                    *([dash.no_update] * 3))
        unit = view["dose_unit"]
        names = [r["name"] for r in view["rois"]]
        others = [c for c in view["doses"] if c["value"] != view["dose_uid"]]
        note = ("" if others else "This study holds one RT Dose. A second plan or dose of the study (a re-plan, "
                                  "a verification or per-beam dose) appears here to compare with.")
        style = _unchanged_or(viewer_style, {**(viewer_style or {}), "display": "grid"})
        sliders_out = [v for p in PLANES for v in (view["sizes"][p], view["start"][p])]
        light = {k: v for k, v in view.items() if k not in _DOCUMENTS}  # every callback's input: keep it small
        return (light, view["dvh"], {"goals": view["goals"], "plan": view["plan"]}, None, style, view["doses"],
                view["dose_uid"], _unchanged_or(units_shown, [{"label": "%", "value": PERCENT},
                                                              {"label": unit, "value": GY}]),
                roi_options(view["rois"]), names, goals_summary(view["goals"], unit), _plan_text(view),
                others, note, *sliders_out, *([view_graph(p, views[p])] for p in PLANES),
                *legend_outputs(view, isodose, level_unit or PERCENT), _dvh_figure(view, names),
                goals_table(view["goals"], unit), beams_table(view["plan"], unit))


def _unchanged_or(shown: Any, value: Any) -> Any:
    """``value``, or no_update when the page already shows it (each update re-renders the component)."""
    return dash.no_update if shown == value else value


def _dvh_figure(view: dict[str, Any], rois: list[str] | None, compared: dict[str, Any] | None = None,
                compare_label: str = "") -> dict[str, Any]:
    """The DVH of the view's dose for the ROIs shown, a compared dose's curves dashed."""
    colours = {r["name"]: r["colour"] for r in view["rois"]}
    return dvh_figure(view["dvh"], colours, rois=rois, dose_unit=view["dose_unit"],
                      prescription_gy=view.get("prescription_gy"), compare=compared, compare_label=compare_label)


def _plan_text(view: dict[str, Any]) -> list[Any]:
    plan = view.get("plan") or {}
    if not plan:
        return [html.P("The archive holds no plan for this dose.", className="op-dimmed")]
    name = " · ".join(str(p) for p in (plan.get("label"), plan.get("name")) if p) or "Plan"
    kind = {"RTIONPLAN": "RT Ion Plan", "RTPLAN": "RT Plan"}.get(str(plan.get("sop_class")), str(plan.get("sop_class")))
    facts = [kind, str(plan.get("radiation_type") or "").capitalize(), str(plan.get("approval_status") or "").lower()]
    return [html.Div([html.Strong(name), html.Span(" · " + " · ".join(f for f in facts if f),
                                                   className="op-dimmed")]),
            html.Div(["Prescription: ", html.Span(view["prescription_text"], id="prescription-text")],
                     style={"fontSize": "14px"})]


def _register_views(app: dash.Dash) -> None:
    def register(plane: str) -> None:
        others = [p for p in PLANES if p != plane]

        @app.callback(Output(f"{plane}-graph", "figure"),
                      Input("study", "data"), Input(f"{plane}-slider", "value"),
                      Input("isodose", "value"), Input("window", "data"), Input("rois", "value"),
                      Input("colourwash", "checked"), *(State(f"{p}-slider", "value") for p in others),
                      State("isodose-unit", "value"), State("mouse-mode", "value"), prevent_initial_call=True)
        def _draw(view, own, isodose, window, rois, wash, first_other, second_other, unit, mode):
            indices = {plane: own, others[0]: first_other, others[1]: second_other}
            if not view or None in indices.values():
                raise dash.exceptions.PreventUpdate
            if "study.data" in {t["prop_id"] for t in dash.callback_context.triggered}:
                raise dash.exceptions.PreventUpdate  # the loader drew this study's first views itself
            indices = {p: i - 1 for p, i in indices.items()}
            crosshair = crosshair_at(view, plane, indices)
            try:
                levels = isodose_levels(view, isodose, unit)
            except LevelsError:
                levels = ()  # the legend says what is wrong with the levels
            window = window or _window_data(DEFAULT_WINDOW)
            return plane_content(view, plane, indices[plane], window=(window["level"], window["width"]),
                                 levels=levels, rois=rois, colourwash=bool(wash), crosshair=crosshair, mode=mode)

    for plane in PLANES:
        register(plane)

    @app.callback(Output("probe", "children"), *(Input(f"{p}-graph", "hoverData") for p in PLANES),
                  *(State(f"{p}-slider", "value") for p in PLANES), State("study", "data"),
                  prevent_initial_call=True)
    def _probe(axial_hover, coronal_hover, sagittal_hover, axial, coronal, sagittal, view):
        trigger = dash.callback_context.triggered_id
        hover = {"axial-graph": axial_hover, "coronal-graph": coronal_hover, "sagittal-graph": sagittal_hover}.get(
            str(trigger))
        if not view or not hover or not hover.get("points"):
            return "—"
        plane = str(trigger).removesuffix("-graph")
        index = {"axial": axial, "coronal": coronal, "sagittal": sagittal}[plane] - 1
        point = hover["points"][0]
        try:
            return f"{plane.capitalize()} {index + 1} · " + probe_text(view, plane, index, point["x"], point["y"])
        except (ValueError, KeyError, TypeError):
            return "—"

    @app.callback(Output("window", "data"), Input("window-preset", "value"), prevent_initial_call=True)
    def _preset(preset):
        if preset not in WINDOWS:
            raise dash.exceptions.PreventUpdate
        return _window_data(preset)


def _register_panels(app: dash.Dash) -> None:
    @app.callback(Output("isodose", "value"), Input("isodose-unit", "value"), State("isodose", "value"),
                  State("study", "data"), prevent_initial_call=True)
    def _convert(unit, text, view):
        if not view or not view.get("reference_gy"):
            raise dash.exceptions.PreventUpdate
        before = GY if unit == PERCENT else PERCENT
        try:
            return convert_levels(text, before, unit, view["reference_gy"])
        except LevelsError:
            raise dash.exceptions.PreventUpdate from None

    @app.callback(Output("isodose-legend", "children"), Output("colour-bar", "children"),
                  Output("isodose-problem", "children"), Output("isodose-reference", "children"),
                  Input("isodose", "value"), Input("study", "data"), State("isodose-unit", "value"),
                  prevent_initial_call=True)
    def _legend(text, view, unit):
        if "study.data" in {t["prop_id"] for t in dash.callback_context.triggered}:
            raise dash.exceptions.PreventUpdate  # the loader wrote the legend with the study
        return legend_outputs(view, text, unit)

    @app.callback(Output("dvh", "figure", allow_duplicate=True), Input("rois", "value"), Input("compare-dvh", "data"),
                  Input("study", "data"), State("dvh-doc", "data"), State("compare-select", "data"),
                  State("compare-select", "value"), prevent_initial_call=True)
    def _dvh(rois, compared, view, dvh, choices, compare_uid):
        if not view or "study.data" in {t["prop_id"] for t in dash.callback_context.triggered}:
            raise dash.exceptions.PreventUpdate  # the loader drew the DVH with the study
        label = next((c["label"] for c in choices or [] if c["value"] == compare_uid), "")
        return _dvh_figure({**view, "dvh": dvh}, rois, compared, label)

    @app.callback(Output("compare-dvh", "data"), Output("compare-pane", "style"), Output("compare-pane", "children"),
                  Input("compare-select", "value"), State("study", "data"), State("compare-pane", "style"),
                  State("compare-select", "data"), prevent_initial_call=True)
    def _compare_dose(dose_uid, view, style, choices):
        shown = {**(style or {}), "display": "block" if dose_uid else "none"}
        if not view or not dose_uid:
            return None, shown, []
        label = next((c["label"] for c in choices or [] if c["value"] == dose_uid), "the other dose")
        caption = html.P(f"{label}: the axial slice the views show, in the same window and isodose levels; its "
                         "DVH is drawn dashed beside the images.", style={"fontSize": "13px", "margin": "4px 0"})
        graph = dcc.Graph(id="compare-graph", figure=empty_figure(), responsive=True,
                          style={"height": "420px", "background": "#000", "borderRadius": "4px"},
                          config={"scrollZoom": False, "displaylogo": False, "displayModeBar": False})
        return compare_dvh(view["study_uid"], dose_uid), shown, [caption, graph]

    @app.callback(Output("compare-graph", "figure"), Input("compare-select", "value"), Input("axial-slider", "value"),
                  Input("isodose", "value"), Input("window", "data"), Input("colourwash", "checked"),
                  State("isodose-unit", "value"), State("study", "data"), State("rois", "value"))
    def _compare(dose_uid, axial, isodose, window, wash, unit, view, rois):
        if not view or not dose_uid or not axial:
            raise dash.exceptions.PreventUpdate
        try:
            levels = isodose_levels(view, isodose, unit)
        except LevelsError:
            levels = ()
        window = window or _window_data(DEFAULT_WINDOW)
        return plane_content(view, "axial", axial - 1, window=(window["level"], window["width"]), levels=levels,
                             rois=rois, colourwash=bool(wash), dose_uid=dose_uid)


def _register_browser_side(app: dash.Dash) -> None:
    app.clientside_callback(plan_scripts.SETUP, Output("client-ready", "data"), Input("study", "data"))
    app.clientside_callback(plan_scripts.CROSSHAIRS, Output("indices-seen", "data"),
                            *(Input(f"{p}-slider", "value") for p in PLANES), State("study", "data"))
    app.clientside_callback(plan_scripts.CROSSHAIR, *(Output(f"{p}-slider", "value", allow_duplicate=True)
                                                      for p in PLANES),
                            *(Input(f"{p}-graph", "clickData") for p in PLANES), State("study", "data"),
                            prevent_initial_call=True)
    app.clientside_callback(plan_scripts.MOUSE_MODE, Output("mode-applied", "data"), Input("mouse-mode", "value"))
    app.clientside_callback(plan_scripts.WINDOW_TEXT, Output("window-text", "children"), Input("window", "data"))
    app.clientside_callback(plan_scripts.FIGURES, Output("previews-cleared", "data"),
                            *(Input(f"{p}-graph", "figure") for p in PLANES))
    app.clientside_callback(plan_scripts.MEASURE, Output("measure", "children"),
                            *(Input(f"{p}-graph", "relayoutData") for p in PLANES), prevent_initial_call=True)
    app.clientside_callback(plan_scripts.CLEAR_MEASURES, Output("measure", "children", allow_duplicate=True),
                            Input("clear-measures", "n_clicks"), prevent_initial_call=True)


__all__ = ["URL_BASE", "compare_dvh", "create_dash", "crosshair_at", "first_views", "isodose_levels", "legend_content",
           "plane_content", "probe_text", "start_indices", "study_uid_from", "study_view"]
