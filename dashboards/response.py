"""Treatment-response dashboard at ``/dashboards/response/<PatientID>``.

Per patient a timeline of the stored PET time points (``pet_timepoint`` results of
:mod:`oncopacs.analysis.pet`): SUVmax and SULpeak of the hottest lesion (g/mL), total MTV41 (cc),
total TLG41 (g) and the contoured GTV volume (cc), each follow-up labelled with its PERCIST 1.0
category against baseline (``pet_response`` results), and the treatment course: the patient's RT
(Ion) Plans with their study date, label, prescription (Gy) and fractions (cached ``plan`` results,
else read from the stored plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import dash
import plotly.graph_objects as go
from dash import Input, Output, dcc, html
from flask import Flask, current_app, g
from plotly.subplots import make_subplots

from oncopacs.analysis.pet import read_response_category
from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.index.dates import format_iso_date
from oncopacs.index.oncology import find_patient_plans
from oncopacs.index.query import find_patient
from oncopacs.web.access import audit_access
from reporting.sources import CachedResult, read_results
from rt.errors import RTError
from rt.plan import read_plan_summary

BASE_PATH = "/dashboards/response/"
BASELINE = "baseline"


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One PET time point: date (ISO), label, study, lesion totals and its PERCIST category.

    suv_max / sul_peak: hottest lesion, g/mL; mtv_cc: summed MTV41, cc; tlg_g: summed TLG41, g;
    gtv_cc: summed contoured lesion volume, cc; category: PERCIST 1.0 vs baseline ("baseline" first).
    """

    date: str
    label: str
    study_uid: str
    suv_max: float | None
    sul_peak: float | None
    mtv_cc: float | None
    tlg_g: float | None
    gtv_cc: float | None
    category: str


@dataclass(frozen=True, slots=True)
class CoursePlan:
    """An RT plan of the treatment course: study date (ISO), label, radiation type, prescription Gy, fractions."""

    date: str
    study_uid: str
    label: str
    radiation_type: str
    prescription_gy: float | None
    fractions: int | None


@dataclass(frozen=True, slots=True)
class PatientResponse:
    """What the page shows for one patient."""

    patient_id: str
    patient_name: str
    points: tuple[TimelinePoint, ...]
    plans: tuple[CoursePlan, ...]

    @property
    def study_uids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([p.study_uid for p in self.points] + [p.study_uid for p in self.plans]))


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _total(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _hottest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarize_time_point(result: CachedResult, category: str) -> TimelinePoint | None:
    """The timeline point of one ``pet_timepoint`` result (None when its JSON is not one)."""
    data = result.data
    if not isinstance(data, dict) or not isinstance(data.get("time_point"), dict):
        return None
    time_point = data["time_point"]
    lesions = [lesion for lesion in time_point.get("lesions", []) if isinstance(lesion, dict)]
    names = {lesion.get("name") for lesion in lesions}
    rois = [r for r in data.get("rois", []) if isinstance(r, dict) and r.get("name") in names]
    return TimelinePoint(
        date=str(time_point.get("date") or format_iso_date(result.time_point)),
        label=str(time_point.get("label") or ""),
        study_uid=result.study_uid,
        suv_max=_hottest([_number(r.get("SUVmax")) for r in rois]),
        sul_peak=_hottest([_number(r.get("SULpeak")) for r in rois]),
        mtv_cc=_total([_number(r.get("MTV_cc")) for r in rois]),
        tlg_g=_total([_number(r.get("TLG")) for r in rois]),
        gtv_cc=_total([_number(lesion.get("volume_cc")) for lesion in lesions]),
        category=category,
    )


def build_timeline(timepoints: list[CachedResult], responses: list[CachedResult]) -> tuple[TimelinePoint, ...]:
    """Time points oldest first (one per date, SUVbw preferred); follow-ups carry their PERCIST category."""
    by_date: dict[str, CachedResult] = {}
    for result in timepoints:
        kept = by_date.get(result.time_point)
        if kept is None or (isinstance(result.data, dict) and result.data.get("suv_type") == "bw"):
            by_date[result.time_point] = result
    categories = {r.time_point: read_response_category(r.data).get("category", "") for r in responses}
    points = []
    for i, date in enumerate(sorted(by_date)):
        result = by_date[date]
        stored = result.data.get("categories", {}) if isinstance(result.data, dict) else {}
        category = (BASELINE if i == 0
                    else categories.get(date) or str(stored.get("PERCIST 1.0", "")) or "not assessed")
        point = summarize_time_point(result, category)
        if point is not None:
            points.append(point)
    return tuple(points)


def read_course(archive: Archive, session, patient_id: str) -> tuple[CoursePlan, ...]:
    """The patient's RT (Ion) Plans, oldest study first (cached ``plan`` results, else the stored plan)."""
    cached = {r.data.get("sop_instance_uid"): r.data for r in read_results(session, "plan", patient_id=patient_id)
              if isinstance(r.data, dict)}
    plans = []
    for stored in find_patient_plans(session, patient_id):
        sop_uid, study_uid, date = stored.sop_instance_uid, stored.study_instance_uid, stored.study_date
        summary = cached.get(sop_uid)
        if summary is None:
            try:
                summary = read_plan_summary(archive.read_instance(sop_uid)).to_dict()
            except (RTError, ValueError, KeyError, AttributeError):
                summary = {"label": "(plan could not be read)"}
        fractions = summary.get("fractions")
        label = str(summary.get("label") or summary.get("name") or "")
        plans.append(CoursePlan(format_iso_date(date), study_uid, label,
                                str(summary.get("radiation_type") or ""), _number(summary.get("prescription_gy")),
                                int(fractions) if isinstance(fractions, int) else None))
    return tuple(plans)


def read_patient_response(archive: Archive, patient_id: str) -> PatientResponse | None:
    """The timeline and course of ``patient_id``; None when the archive has no such patient."""
    with archive.index.reading() as session:
        patient = find_patient(session, patient_id)
        if patient is None:
            return None
        points = build_timeline(read_results(session, "pet_timepoint", patient_id=patient_id),
                                read_results(session, "pet_response", patient_id=patient_id))
        plans = read_course(archive, session, patient_id)
    return PatientResponse(patient_id, patient.patient_name, points, plans)


# -- presentation --------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def build_timeline_figure(response: PatientResponse) -> go.Figure:
    """Three stacked panels over the dates: SUV (g/mL), volumes (cc), TLG (g); PERCIST labels and RT plans."""
    points = response.points
    dates = [p.date for p in points]
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("SUVmax / SULpeak (g/mL)", "MTV41 / GTV volume (cc)", "TLG41 (g)"))
    series = ((1, "SUVmax", [p.suv_max for p in points]), (1, "SULpeak", [p.sul_peak for p in points]),
              (2, "MTV41", [p.mtv_cc for p in points]), (2, "GTV volume", [p.gtv_cc for p in points]),
              (3, "TLG41", [p.tlg_g for p in points]))
    for row, name, values in series:
        figure.add_trace(go.Scatter(x=dates, y=values, name=name, mode="lines+markers"), row=row, col=1)
    figure.add_trace(go.Scatter(x=dates, y=[p.suv_max for p in points], mode="text", showlegend=False,
                                text=[p.category for p in points], textposition="top center", name="PERCIST",
                                hoverinfo="skip"), row=1, col=1)
    if response.plans:
        figure.add_trace(go.Scatter(x=[p.date for p in response.plans], y=[0.0] * len(response.plans),
                                    mode="markers", marker={"symbol": "triangle-up", "size": 14, "color": "#7b3294"},
                                    name="RT plan", text=[p.label for p in response.plans]), row=1, col=1)
    figure.update_layout(height=620, margin={"l": 60, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h"})
    return figure


def _timeline_table(points: tuple[TimelinePoint, ...]) -> html.Table:
    header = ["Date", "Time point", "SUVmax (g/mL)", "SULpeak (g/mL)", "MTV41 (cc)", "TLG41 (g)", "GTV (cc)",
              "PERCIST 1.0"]
    rows = [html.Tr([html.Td(p.date), html.Td(p.label), html.Td(_fmt(p.suv_max)), html.Td(_fmt(p.sul_peak)),
                     html.Td(_fmt(p.mtv_cc, 1)), html.Td(_fmt(p.tlg_g, 1)), html.Td(_fmt(p.gtv_cc, 1)),
                     html.Td(p.category, id={"type": "percist", "index": i}, className=f"percist {p.category}")])
            for i, p in enumerate(points)]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)], className="timeline")


def _course(plans: tuple[CoursePlan, ...]) -> html.Div:
    if not plans:
        return html.Div([html.H3("Treatment course"), html.P("No RT plan of this patient is in the archive.")])
    items = [html.Li(f"{p.date}: {p.label or 'plan'}" + (f" ({p.radiation_type})" if p.radiation_type else "")
                     + (f", {p.prescription_gy:g} Gy" if p.prescription_gy is not None else "")
                     + (f" in {p.fractions} fx" if p.fractions else "")) for p in plans]
    return html.Div([html.H3("Treatment course"), html.Ul(items)])


def patient_id_from_path(pathname: str | None) -> str:
    """The PatientID in ``/dashboards/response/<PatientID>`` (URL-decoded; "" when absent)."""
    if not pathname or not pathname.startswith(BASE_PATH):
        return ""
    return unquote(pathname[len(BASE_PATH):].strip("/"))


def render_response_page(pathname: str | None):
    """Callback: (title, content) of the page for the patient in the URL."""
    principal = g.get("principal")
    if principal is None or not principal.can(Permission.DASHBOARDS_VIEW):
        return "Treatment response", html.P("Your role may not view dashboards.", className="error")
    patient_id = patient_id_from_path(pathname)
    if not patient_id:
        return "Treatment response", html.P("Give a patient: /dashboards/response/<PatientID>.", className="error")
    archive: Archive = current_app.extensions["oncopacs.archive"]
    response = read_patient_response(archive, patient_id)
    if response is None:
        return "Treatment response", html.P(f"No patient {patient_id} in the archive.", className="error")
    audit_access(AuditAction.READ, patient_ids=[patient_id], study_uids=response.study_uids)
    title = f"Treatment response: {response.patient_name} ({patient_id})"
    timeline: html.P | html.Div
    if not response.points:
        timeline = html.P("No PET time points are recorded for this patient yet (oncopacs pet record).",
                          className="empty")
    else:
        timeline = html.Div([dcc.Graph(id="timeline", figure=build_timeline_figure(response)),
                             _timeline_table(response.points)])
    return title, html.Div([timeline, _course(response.plans)])


def create_response_app(server: Flask) -> dash.Dash:
    """The response dashboard, mounted on ``server`` at :data:`BASE_PATH`."""
    app = dash.Dash(__name__, server=server,  # type: ignore[arg-type]  # Dash types it bool | Callable
                    url_base_pathname=BASE_PATH, title="Treatment response · OncoPACS",
                    suppress_callback_exceptions=True)
    app.layout = html.Div([dcc.Location(id="url"), html.H2(id="title"), dcc.Loading(html.Div(id="content"))])
    app.callback(Output("title", "children"), Output("content", "children"), Input("url", "pathname"))(
        render_response_page)
    return app
