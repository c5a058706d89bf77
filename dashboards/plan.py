"""Plan review at /dashboards/plan/<StudyInstanceUID>: CT planes with contours and dose, DVH, goals, plan.

Three planes (axial, coronal, sagittal) rendered on the server (:mod:`oncopacs.viewer.slices`, cached), each a
Plotly image (zoom and pan with the mouse, scroll with its slider); window presets, ROI toggles and
isodose levels (Gy or % of the prescription); the DVH and the clinical-goal table from the cached RT
results (:mod:`oncopacs.analysis.rt`); the plan summary (ion plans: energy layers, spots, range
shifters); a second dose of the study for comparison. Panels appear when their data exists. The
callback bodies are module functions (:func:`study_view`, :func:`plane_figure`, ...) so tests call them.
"""

from __future__ import annotations

import base64
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from flask import Flask, current_app

from oncopacs.analysis.rt import find_planning_sets, load_results
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.errors import NotFoundError
from oncopacs.uids import is_valid_uid
from oncopacs.viewer.slices import (
    PLANES,
    WINDOWS,
    RenderOptions,
    SliceError,
    isodose_levels_gy,
)
from oncopacs.web.access import audit_access
from oncopacs.web.viewer import viewer

URL_BASE = "/dashboards/plan/"
DEFAULT_ISODOSE_PERCENT = "50, 80, 95, 100"
_HIDDEN: dict[str, str] = {"display": "none"}
_SHOWN: dict[str, str] = {}


# -- the callbacks' work ----------------------------------------------------------------------


def study_uid_from(pathname: str | None) -> str:
    """The StudyInstanceUID in ``/dashboards/plan/<uid>`` (ValueError when absent or malformed)."""
    rest = (pathname or "")[len(URL_BASE):] if (pathname or "").startswith(URL_BASE) else ""
    uid = rest.strip("/").split("/")[0]
    if not uid or not is_valid_uid(uid):
        raise ValueError("open a study from the study browser: /dashboards/plan/<StudyInstanceUID>")
    return uid


def study_view(study_uid: str) -> dict[str, Any]:
    """What the page needs of a study (JSON-ready): doses, ROIs, plane sizes, DVH, goals and plan (audited READ)."""
    archive = current_app.extensions["oncopacs.archive"]
    try:
        loaded = viewer().scene(study_uid)
    except NotFoundError as exc:
        audit_access(AuditAction.READ, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
        raise ValueError(str(exc)) from None
    with archive.index.reading() as session:
        sets = find_planning_sets(session, study_uid)
        results = [load_results(session, s) for s in sets]
    first = next((r for r in results if r.planning_set.dose_uid == loaded.inputs.dose_uid), None)
    audit_access(AuditAction.READ, patient_ids=[loaded.inputs.patient_id], study_uids=[study_uid])
    scene = loaded.scene
    return {
        "study_uid": study_uid,
        "patient_id": loaded.inputs.patient_id,
        "dose_uids": [s.dose_uid for s in sets],
        "dose_uid": loaded.inputs.dose_uid,
        "rois": [{"name": r.name, "colour": list(r.colour)} for r in scene.rois],
        "sizes": {plane: scene.plane_size(plane) for plane in PLANES},
        "prescription_gy": scene.prescription_gy,
        "has_dose": scene.dose_gy is not None,
        "dvh": first.dvh if first else None,
        "goals": first.goals if first else None,
        "plan": first.plan if first and first.plan else (loaded.plan.to_dict() if loaded.plan else None),
    }


def plane_figure(study_uid: str, plane: str, index: int, *, window: str = "mediastinum",
                 rois: list[str] | None = None, isodose: str = "", unit: str = "percent",
                 dose_uid: str | None = None, colourwash: bool = True) -> go.Figure:
    """One plane as a Plotly image figure (audited RETRIEVE); ValueError for bad options."""
    try:
        loaded = viewer().scene(study_uid, dose_uid)
    except NotFoundError as exc:
        audit_access(AuditAction.RETRIEVE, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
        raise ValueError(str(exc)) from None
    try:
        values = tuple(float(v) for v in (isodose or "").replace(";", ",").split(",") if v.strip())
        levels = (isodose_levels_gy(values, unit, loaded.scene.prescription_gy)
                  if loaded.scene.dose_gy is not None else ())
        options = RenderOptions(window=window, rois=tuple(rois) if rois is not None else None, isodose_gy=levels,
                                colourwash=colourwash)
        index = min(max(int(index), 0), loaded.scene.plane_size(plane) - 1)
        rendered = viewer().slices.render(loaded.scene, plane, index, options)
    except (SliceError, ValueError) as exc:
        raise ValueError(f"cannot draw the {plane} plane: {exc}") from None
    audit_access(AuditAction.RETRIEVE, patient_ids=[loaded.inputs.patient_id], study_uids=[study_uid])
    source = "data:image/png;base64," + base64.b64encode(rendered.png).decode("ascii")
    width, height = rendered.size
    figure = go.Figure(go.Image(source=source, dx=rendered.pixel_mm, dy=rendered.pixel_mm, hoverinfo="skip"))
    figure.update_layout(margin={"l": 0, "r": 0, "t": 24, "b": 0}, dragmode="pan", height=360,
                         title={"text": f"{plane} {index + 1}/{loaded.scene.plane_size(plane)}", "font": {"size": 12}},
                         paper_bgcolor="#111", font={"color": "#ddd"}, uirevision=f"{study_uid}-{plane}")
    figure.update_xaxes(visible=False, range=[0, width * rendered.pixel_mm])
    figure.update_yaxes(visible=False, scaleanchor="x", range=[height * rendered.pixel_mm, 0])
    return figure


def dvh_figure(dvh: dict[str, Any] | None, rois: list[str] | None = None) -> go.Figure:
    """Cumulative DVHs (volume % against dose Gy), one trace per ROI with a curve."""
    figure = go.Figure()
    for roi in (dvh or {}).get("rois", []):
        curve = roi.get("curve")
        if not curve or (rois is not None and roi["name"] not in rois):
            continue
        figure.add_trace(go.Scatter(x=curve["dose_gy"], y=curve["volume_percent"], mode="lines", name=roi["name"]))
    figure.update_layout(margin={"l": 40, "r": 10, "t": 10, "b": 40}, height=340, xaxis_title="Dose (Gy)",
                         yaxis_title="Volume (%)", legend={"font": {"size": 10}})
    return figure


def goals_table(goals: dict[str, Any] | None) -> html.Table | html.P:
    """The clinical goals with their measured values and status."""
    items = (goals or {}).get("goals") or []
    if not items:
        return html.P((goals or {}).get("choice") or "no clinical goals for this plan", className="muted")
    rows = [html.Tr([html.Th(h) for h in ("ROI", "Goal", "Measured", "Status")])]
    for item in items:
        goal = item["goal"]
        measured = item.get("measured_value")
        text = f"{goal['metric']} {goal['comparator']} {goal['value']:g} {goal.get('unit') or ''}".strip()
        rows.append(html.Tr([html.Td(item.get("roi_name") or goal["roi"]), html.Td(text),
                             html.Td("—" if measured is None else f"{measured:.2f} {item.get('unit') or ''}"),
                             html.Td(item["status"], className=f"status-{item['status']}")]))
    return html.Table(rows, className="goals")


def plan_summary(plan: dict[str, Any] | None) -> html.Div:
    """Plan identification, prescription and one line per beam (ion beams: layers, spots, range shifters)."""
    if not plan:
        return html.Div()
    head = f"{plan.get('label') or plan.get('name') or 'Plan'} · {plan.get('radiation_type') or ''} · " \
           f"{plan.get('prescription_gy') or '?'} Gy in {plan.get('fractions') or '?'} fractions"
    rows = [html.Tr([html.Th(h) for h in ("Beam", "Gantry °", "Couch °", "Energy layers", "Energy (MeV)", "Spots",
                                            "Range shifters")])]
    for beam in plan.get("beams", []):
        energies = (f"{beam['min_energy_mev']:.1f}–{beam['max_energy_mev']:.1f}"
                    if beam.get("min_energy_mev") is not None else (beam.get("nominal_energy_mv") or "—"))
        shifters = ", ".join(f"{r.get('id') or r.get('number')} "
                             f"({r.get('water_equivalent_thickness_mm') or '?'} mm WET)"
                             for r in beam.get("range_shifters", [])) or "—"
        rows.append(html.Tr([html.Td(beam.get("name") or beam.get("number")), html.Td(beam.get("gantry_angle_deg")),
                             html.Td(beam.get("couch_angle_deg")), html.Td(beam.get("energy_layer_count") or "—"),
                             html.Td(energies), html.Td(beam.get("spot_count") or "—"), html.Td(shifters)]))
    return html.Div([html.P(head), html.Table(rows, className="beams")])


# -- the Dash app -------------------------------------------------------------------------------


def _plane_panel(plane: str) -> html.Div:
    return html.Div([dcc.Graph(id=f"{plane}-graph", config={"scrollZoom": True, "displaylogo": False}),
                     dcc.Slider(id=f"{plane}-slider", min=0, max=1, step=1, value=0, marks=None,
                                tooltip={"placement": "bottom"})], className="plane")


def layout() -> html.Div:
    return html.Div([
        dcc.Location(id="url"),
        dcc.Store(id="study"),
        html.H1("Plan review"),
        html.Div(id="message", className="message"),
        html.Div([
            html.Label(["Window ", dcc.RadioItems(id="window", options=list(WINDOWS), value="mediastinum",
                                                  inline=True)]),
            html.Label(["Isodose ", dcc.Input(id="isodose", value=DEFAULT_ISODOSE_PERCENT, debounce=True, size="18"),
                        dcc.RadioItems(id="unit", options=[{"label": "% of Rx", "value": "percent"},
                                                           {"label": "Gy", "value": "gy"}],
                                       value="percent", inline=True)]),
            dcc.Checklist(id="colourwash", options=[{"label": "dose colourwash", "value": "on"}], value=["on"],
                          inline=True),
            dcc.Checklist(id="rois", options=[], value=[], inline=True),
        ], className="controls"),
        html.Div([_plane_panel(p) for p in PLANES], className="planes", style={"display": "flex", "gap": "6px"}),
        html.Div([html.Div([html.H2("DVH"), dcc.Graph(id="dvh")], style={"flex": "3"}),
                  html.Div([html.H2("Clinical goals"), html.Div(id="goals")], style={"flex": "2"})],
                 id="dvh-panel", style=_HIDDEN),
        html.Div([html.H2("Plan"), html.Div(id="plan")], id="plan-panel", style=_HIDDEN),
        html.Div([html.H2("Compare with another dose"), dcc.Dropdown(id="compare-dose", options=[], value=None),
                  dcc.Graph(id="compare-graph", config={"scrollZoom": True, "displaylogo": False})],
                 id="compare-panel", style=_HIDDEN),
    ])


def create_dash(server: Flask) -> dash.Dash:
    app = dash.Dash(__name__, server=server,  # type: ignore[arg-type]  # Dash types it bool | Callable
                    url_base_pathname=URL_BASE, title="Plan review · OncoPACS", suppress_callback_exceptions=True)
    app.layout = layout

    slider_outputs = [o for p in PLANES for o in (Output(f"{p}-slider", "max"), Output(f"{p}-slider", "value"))]

    @app.callback(Output("study", "data"), Output("message", "children"), Output("rois", "options"),
                  Output("rois", "value"), Output("dvh", "figure"), Output("goals", "children"),
                  Output("plan", "children"),
                  Output("dvh-panel", "style"), Output("plan-panel", "style"), Output("compare-panel", "style"),
                  Output("compare-dose", "options"), *slider_outputs, Input("url", "pathname"))
    def _load(pathname):
        try:
            view = study_view(study_uid_from(pathname))
        except ValueError as exc:
            return (None, str(exc), [], [], go.Figure(), None, None, _HIDDEN, _HIDDEN, _HIDDEN, [],
                    *([0, 0] * len(PLANES)))
        names = [r["name"] for r in view["rois"]]
        others = [{"label": uid, "value": uid} for uid in view["dose_uids"] if uid != view["dose_uid"]]
        sliders = [v for p in PLANES for v in (view["sizes"][p] - 1, view["sizes"][p] // 2)]
        return (view, f"Patient {view['patient_id']} · study {view['study_uid']}", names, names,
                dvh_figure(view["dvh"]), goals_table(view["goals"]), plan_summary(view["plan"]),
                _SHOWN if view["dvh"] else _HIDDEN, _SHOWN if view["plan"] else _HIDDEN,
                _SHOWN if others else _HIDDEN, others, *sliders)

    def _plane_callback(plane: str):
        @app.callback(Output(f"{plane}-graph", "figure"), Input(f"{plane}-slider", "value"), Input("window", "value"),
                      Input("rois", "value"), Input("isodose", "value"), Input("unit", "value"),
                      Input("colourwash", "value"), State("study", "data"))
        def _draw(index, window, rois, isodose, unit, wash, study):
            if not study:
                raise dash.exceptions.PreventUpdate
            return plane_figure(study["study_uid"], plane, index or 0, window=window, rois=rois, isodose=isodose,
                                unit=unit, dose_uid=study["dose_uid"], colourwash=bool(wash))

    for plane in PLANES:
        _plane_callback(plane)

    @app.callback(Output("compare-graph", "figure"), Input("compare-dose", "value"), Input("axial-slider", "value"),
                  Input("window", "value"), Input("isodose", "value"), Input("unit", "value"), State("study", "data"))
    def _compare(dose_uid, index, window, isodose, unit, study):
        if not study or not dose_uid:
            raise dash.exceptions.PreventUpdate
        return plane_figure(study["study_uid"], "axial", index or 0, window=window, isodose=isodose, unit=unit,
                            dose_uid=dose_uid)

    @app.callback(Output("dvh", "figure", allow_duplicate=True), Input("rois", "value"), State("study", "data"),
                  prevent_initial_call=True)
    def _dvh_rois(rois, study):
        if not study:
            raise dash.exceptions.PreventUpdate
        return dvh_figure(study["dvh"], rois)

    return app


__all__ = ["URL_BASE", "create_dash", "dvh_figure", "goals_table", "plan_summary", "plane_figure", "study_view"]

