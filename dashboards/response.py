"""Treatment-response dashboard at ``/dashboards/response/<PatientID>``.

Per patient (:func:`oncopacs.analysis.timeline.read_patient_timeline`, the data the PET response and
tumour-board PDFs read too):

- three cards: the RT course (newest plan: label, prescription and fractions, first and last treatment
  day, from treatment records or estimated from the plan and said so; diagnosis and site), the latest
  PERCIST 1.0 response, and the baseline liver reference (SULmean ± SD and the measurability threshold);
- the timeline: hottest-lesion SUVmax, SUVpeak and SULpeak (g/mL) with the PERCIST measurability threshold,
  MTV41 and GTV volume (cc), TLG41 (g), each follow-up labelled with its PERCIST category and the RT course
  drawn as a band over the treatment days;
- the table of time points with the change from baseline (%) of SUVpeak and SULpeak, the liver reference
  and the PERCIST category with its reasons; the plans of the course with links to plan review.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import quote, unquote

import dash
import dash_mantine_components as dmc
import plotly.graph_objects as go
from dash import Input, Output, dcc, html
from flask import Flask, current_app, g
from plotly.subplots import make_subplots

from dashboards.page_app import PageDash
from dashboards.shell import STYLESHEET, Subject, install_shell
from oncopacs.analysis.course import CoursePlan
from oncopacs.analysis.timeline import (
    BASELINE,
    NOT_ASSESSED,
    PatientTimeline,
    TimelinePoint,
    read_patient_timeline,
)
from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.index.display import format_date, format_person_name
from oncopacs.web.access import audit_access
from oncopacs.web.navigation import Page, viewer_link
from rt.course import ESTIMATED, FROM_RECORDS

BASE_PATH = "/dashboards/response/"
#: Badge colours of the PERCIST 1.0 categories (Mantine colour names).
CATEGORY_COLOURS = {"CMR": "green", "PMR": "teal", "SMD": "yellow", "PMD": "red", BASELINE: "gray",
                    NOT_ASSESSED: "gray"}
RT_BAND_COLOUR = "rgba(123, 50, 148, 0.10)"
RT_COLOUR = "#7b3294"
NO_TIME_POINTS = ("No PET time point of this patient is quantified yet. A PET-CT sent to the archive (C-STORE, "
                  "STOW-RS or oncopacs import) is analysed on arrival once an RTSTRUCT on the PET's frame of "
                  "reference is there too: lesions are its ROIs of type GTV, the PERCIST liver reference its "
                  "ROI \"Liver\". Each analysed scan appears here as a time point; the first is the baseline.")

__all__ = ["BASE_PATH", "NO_TIME_POINTS", "build_timeline_figure", "create_response_app", "describe_dates",
           "page_href", "patient_id_from_path", "render_response_page", "show_day", "show_span"]


# -- wording ----------------------------------------------------------------------------------------------


def show_day(day: date | None) -> str:
    """A date as people read it (``19 Feb 2024``; "" for none), through :mod:`oncopacs.index.display`."""
    return format_date(day.strftime("%Y%m%d")) if day else ""


def show_span(start: date, end: date) -> str:
    """``19 Feb – 2 Apr 2024`` (the year once when both days share it)."""
    first = show_day(start)
    if start.year == end.year:
        first = first.removesuffix(f" {start.year}")
    return f"{first} – {show_day(end)}"


def page_href(page: Page, key: str) -> str:
    """The address of a dashboard about ``key`` (a StudyInstanceUID, or a PatientID for the response page)."""
    return f"/dashboards/{page.value}/{quote(key, safe='')}"


def describe_dates(plan: CoursePlan) -> tuple[str, str]:
    """(first – last treatment day, where they come from) of a plan, in words."""
    dates = plan.dates
    if dates.start is None or dates.end is None:
        return "treatment dates unknown", "the plan has no plan date or no planned fractions"
    span = show_span(dates.start, dates.end)
    if dates.basis == FROM_RECORDS:
        planned = f" of {dates.fractions_planned}" if dates.fractions_planned else ""
        return span, f"{dates.fractions_recorded}{planned} fractions in the archive's treatment records"
    if dates.basis == ESTIMATED:
        return (f"{span} (planned)", f"estimated: no treatment record in the archive, so from the plan date "
                f"{show_day(plan.plan_date)} at one fraction per weekday")
    return span, dates.basis


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _change(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} %".replace("-", "−")


# -- figure -----------------------------------------------------------------------------------------------


def _x_range(timeline: PatientTimeline) -> list[str]:
    days = [p.day for p in timeline.points] + [d for plan in timeline.plans for d in (plan.dates.start, plan.dates.end)
                                               if d is not None]
    return [(min(days) - timedelta(days=10)).isoformat(), (max(days) + timedelta(days=10)).isoformat()]


def build_timeline_figure(timeline: PatientTimeline) -> go.Figure:
    """Three panels over the dates: SUV/SUL (g/mL) with the PERCIST threshold, volumes (cc), TLG (g); the PERCIST
    category of each time point above it and each plan's treatment days as a shaded band."""
    points = timeline.points
    days = [p.day.isoformat() for p in points]
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.46, 0.27, 0.27],
                           subplot_titles=("Hottest lesion: SUVmax, SUVpeak, SULpeak (g/mL)",
                                           "MTV41 and GTV volume (cc)", "TLG41 (g)"))
    series = ((1, "SUVmax", [p.suv_max for p in points], "#1f77b4", "solid"),
              (1, "SUVpeak", [p.suv_peak for p in points], "#6baed6", "solid"),
              (1, "SULpeak", [p.sul_peak for p in points], "#d62728", "solid"),
              (1, "PERCIST measurability (1.5 × liver SULmean + 2 SD)", [p.measurability_threshold for p in points],
               "#8c564b", "dash"),
              (2, "MTV41", [p.mtv_cc for p in points], "#2ca02c", "solid"),
              (2, "GTV volume", [p.gtv_cc for p in points], "#98df8a", "solid"),
              (3, "TLG41", [p.tlg_g for p in points], "#ff7f0e", "solid"))
    for row, name, values, colour, dash_style in series:
        figure.add_trace(go.Scatter(x=days, y=values, name=name, mode="lines+markers",
                                    line={"color": colour, "dash": dash_style}, connectgaps=True), row=row, col=1)
    labels = [f"<b>{p.category}</b>" if p.category != NOT_ASSESSED else "not assessed" for p in points]
    tops = [max([v for v in (p.suv_max, p.suv_peak, p.sul_peak) if v is not None], default=0.0) for p in points]
    figure.add_trace(go.Scatter(x=days, y=tops, mode="text", showlegend=False, text=labels, name="PERCIST",
                                textposition="top center", textfont={"size": 13, "color": "#1d2329"},
                                hoverinfo="skip"), row=1, col=1)
    for plan in timeline.plans:
        if plan.dates.start is None or plan.dates.end is None:
            continue
        label = f"RT {plan.label}: {plan.describe_prescription()}" + (" (planned)" if plan.dates.is_estimate else "")
        figure.add_vrect(x0=plan.dates.start.isoformat(), x1=plan.dates.end.isoformat(), fillcolor=RT_BAND_COLOUR,
                         line_width=0, layer="below", row="all", col=1)
        figure.add_annotation(x=plan.dates.start.isoformat(), y=0.99, xref="x", yref="y domain", text=label,
                              showarrow=False, xanchor="left", yanchor="top", xshift=4,
                              font={"color": RT_COLOUR, "size": 12}, bgcolor="rgba(255, 255, 255, 0.7)")
    top = max(tops + [t for t in (p.measurability_threshold for p in points) if t is not None], default=1.0)
    figure.update_yaxes(range=[0, top * 1.25], row=1, col=1)
    figure.update_yaxes(rangemode="tozero", row=2, col=1)
    figure.update_yaxes(rangemode="tozero", row=3, col=1)
    figure.update_xaxes(range=_x_range(timeline), type="date", tickformat="%-d %b %Y")
    figure.update_layout(height=640, margin={"l": 60, "r": 20, "t": 40, "b": 40}, plot_bgcolor="#ffffff",
                         paper_bgcolor="#ffffff", legend={"orientation": "h", "y": -0.08},
                         font={"family": "system-ui, sans-serif"})
    figure.update_xaxes(showgrid=True, gridcolor="#eceff3")
    figure.update_yaxes(showgrid=True, gridcolor="#eceff3")
    return figure


# -- page parts -------------------------------------------------------------------------------------------


def category_badge(category: str) -> dmc.Badge:
    return dmc.Badge(category, color=CATEGORY_COLOURS.get(category, "gray"),
                     variant="light" if category in (BASELINE, NOT_ASSESSED) else "filled")


def _card(title: str, children: list[Any], id_: str) -> dmc.Paper:
    return dmc.Paper([dmc.Text(title, fw=700, fz="sm", c="dimmed", tt="uppercase", mb=6), *children],
                     withBorder=True, p="md", radius="sm", id=id_)


def _fact(label: str, value: str, **kwargs: Any) -> dmc.Text:
    return dmc.Text([html.Span(f"{label}: ", style={"color": "#5c6670"}), value], fz="sm", **kwargs)


def course_card(timeline: PatientTimeline) -> dmc.Paper:
    """The newest plan of the course; the treatment days and where they come from."""
    if not timeline.plans:
        return _card("RT course", [dmc.Text("No RT plan of this patient is in the archive.", fz="sm",
                                            className="empty")], "course-card")
    plan = timeline.plans[-1]
    span, basis = describe_dates(plan)
    radiation = f" · {plan.radiation_type.title()}" if plan.radiation_type else ""
    children: list[Any] = [
        dmc.Group([dmc.Text(f"{plan.label or 'Plan'}{radiation}", fw=700),
                   dmc.Anchor("Plan review", href=page_href(Page.PLAN, plan.study_instance_uid), fz="sm",
                              refresh=True)], justify="space-between"),
        dmc.Text(plan.describe_prescription(), fz="lg", fw=600, id="course-prescription"),
        dmc.Text(span, fw=500, id="course-dates"),
        dmc.Text(basis, fz="xs", c="dimmed", id="course-basis"),
        goals_text(plan),
        _fact("Diagnosis", plan.diagnosis or "not recorded with the plan", mt=6),
        _fact("Site", plan.treatment_site or "not recorded with the plan"),
    ]
    if plan.prescription_text:
        children.append(dmc.Text(f"Prescription: {plan.prescription_text}", fz="xs", c="dimmed"))
    if len(timeline.plans) > 1:
        children.append(dmc.Text(f"{len(timeline.plans)} plans in the course: see the table below.", fz="xs"))
    return _card("RT course", children, "course-card")


def goals_text(plan: CoursePlan) -> dmc.Text:
    """The plan's clinical goals in a line: failures in red."""
    if plan.goals_failed is None:
        return dmc.Text("Clinical goals: none evaluated", fz="sm", c="dimmed", id="course-goals")
    if plan.goals_failed == 0:
        return dmc.Text("Clinical goals: every evaluated goal met", fz="sm", id="course-goals")
    return dmc.Text(f"Clinical goals: {plan.goals_failed} failed (see plan review)", fz="sm", c="red", fw=600,
                    id="course-goals")


def during_rt(day: date, plans: tuple[CoursePlan, ...]) -> bool:
    """Whether ``day`` falls within a plan's treatment days (first to last, inclusive)."""
    return any(p.dates.start is not None and p.dates.end is not None and p.dates.start <= day <= p.dates.end
               for p in plans)


def response_card(timeline: PatientTimeline) -> dmc.Paper:
    """The newest assessed follow-up: its PERCIST category, date and change of SULpeak."""
    latest = timeline.latest_assessed
    if latest is None:
        text = ("No follow-up PET yet: the first time point is the baseline." if timeline.points
                else "No PET time point yet.")
        return _card("Latest response", [dmc.Text(text, fz="sm")], "response-card")
    return _card("Latest response", [
        dmc.Group([category_badge(latest.category), dmc.Text("PERCIST 1.0", fz="sm", c="dimmed")], gap="xs"),
        dmc.Text(f"{show_day(latest.day)} ({latest.label or 'follow-up'})", fw=500, mt=4),
        _fact("SULpeak vs baseline", f"{_number(latest.sul_peak)} g/mL, {_change(latest.sul_peak_change_pct)}"),
        *([dmc.Text("; ".join(latest.basis), fz="xs", c="dimmed")] if latest.basis else []),
    ], "response-card")


def liver_card(timeline: PatientTimeline) -> dmc.Paper:
    """The baseline liver reference and the PERCIST 1.0 measurability of the hottest lesion."""
    baseline = timeline.baseline
    if baseline is None:
        return _card("Liver reference (PERCIST)", [dmc.Text("No baseline PET yet.", fz="sm")], "liver-card")
    threshold = baseline.measurability_threshold
    if baseline.liver_sul_mean is None or threshold is None:
        return _card("Liver reference (PERCIST)", [dmc.Text(
            "No \"Liver\" ROI in the baseline contours: lesion measurability and complete response against the "
            "liver cannot be checked.", fz="sm")], "liver-card")
    measurable = baseline.sul_peak is not None and baseline.sul_peak >= threshold
    return _card("Liver reference (PERCIST)", [
        dmc.Text(f"SULmean {baseline.liver_sul_mean:.2f} ± {baseline.liver_sul_sd or 0.0:.2f} g/mL", fw=600,
                 id="liver-reference"),
        _fact("Measurability threshold", f"{threshold:.2f} g/mL (1.5 × SULmean + 2 SD)"),
        _fact("Baseline SULpeak", f"{_number(baseline.sul_peak)} g/mL: "
              + ("measurable" if measurable else "below the threshold, not measurable")),
        dmc.Text(f"Baseline {show_day(baseline.day)}", fz="xs", c="dimmed"),
    ], "liver-card")


TABLE_HEADER = ("Date", "Time point", "SUVmax (g/mL)", "SUVpeak (g/mL)", "Δ SUVpeak", "SULpeak (g/mL)",
                "Δ SULpeak", "Liver SULmean ± SD (g/mL)", "MTV41 (cc)", "TLG41 (g)", "GTV (cc)", "PERCIST 1.0",
                "Basis")


def _head(header: tuple[str, ...]) -> dmc.TableThead:
    return dmc.TableThead(dmc.TableTr([dmc.TableTh(h) for h in header]))


def timeline_table(points: tuple[TimelinePoint, ...], plans: tuple[CoursePlan, ...] = ()) -> dmc.Table:
    """One row per time point; Δ is the change from baseline (%); a scan within the RT course is marked."""
    cell = dmc.TableTd

    def liver(p: TimelinePoint) -> str:
        return "—" if p.liver_sul_mean is None else f"{p.liver_sul_mean:.2f} ± {p.liver_sul_sd or 0.0:.2f}"

    def label(p: TimelinePoint, i: int) -> list[Any]:
        marks = [dmc.Badge("during RT", color="grape", variant="light", size="xs", ml=4, className="during-rt")]
        compare = [html.Br(), dcc.Link("vs baseline in OHIF", href=viewer_link(p.study_uid, points[0].study_uid).href,
                                       refresh=True, className="compare-in-ohif", style={"fontSize": "0.75rem"})]
        return [p.label, *(marks if during_rt(p.day, plans) else []), *(compare if i > 0 else [])]

    rows = [dmc.TableTr([
        cell(dcc.Link(show_day(p.day), href=page_href(Page.PET, p.study_uid), refresh=True),
             style={"whiteSpace": "nowrap"}),
        cell(label(p, i)), cell(_number(p.suv_max)), cell(_number(p.suv_peak)),
        cell("—" if i == 0 else _change(p.suv_peak_change_pct), className="change"),
        cell(_number(p.sul_peak)), cell("—" if i == 0 else _change(p.sul_peak_change_pct), className="change"),
        cell(liver(p)), cell(_number(p.mtv_cc, 1)), cell(_number(p.tlg_g, 1)), cell(_number(p.gtv_cc, 1)),
        cell(category_badge(p.category), id={"type": "percist", "index": i}, className=f"percist {p.category}",
             style={"minWidth": "7rem"}),
        cell("; ".join(p.basis), style={"fontSize": "0.75rem", "color": "#5c6670", "maxWidth": "16rem"}),
    ]) for i, p in enumerate(points)]
    return dmc.Table([_head(TABLE_HEADER), dmc.TableTbody(rows)], className="timeline", striped=True,
                     highlightOnHover=True, withTableBorder=True, fz="sm")


def course_table(plans: tuple[CoursePlan, ...]) -> dmc.Table:
    """Every plan of the course, oldest first."""
    cell = dmc.TableTd
    header = ("Plan", "Radiation", "Prescription", "Treatment days", "Dates from", "Clinical goals", "")
    rows = []
    for plan in plans:
        span, basis = describe_dates(plan)
        goals = ("not evaluated" if plan.goals_failed is None
                 else "all evaluated goals met" if plan.goals_failed == 0 else f"{plan.goals_failed} failed")
        link = dcc.Link("Plan review", href=page_href(Page.PLAN, plan.study_instance_uid), refresh=True)
        rows.append(dmc.TableTr([cell(plan.label), cell(plan.radiation_type.title()),
                                 cell(plan.describe_prescription()), cell(span, style={"whiteSpace": "nowrap"}),
                                 cell(basis, style={"fontSize": "0.75rem", "color": "#5c6670"}), cell(goals),
                                 cell(link, style={"whiteSpace": "nowrap"})]))
    return dmc.Table([_head(header), dmc.TableTbody(rows)], className="course", withTableBorder=True, fz="sm")


def render_timeline(timeline: PatientTimeline) -> html.Div:
    """The page's content for one patient."""
    cards = dmc.SimpleGrid([course_card(timeline), response_card(timeline), liver_card(timeline)], cols=3,
                           spacing="md")
    parts: list[Any] = [cards]
    if timeline.points:
        parts += [dmc.Paper(dcc.Graph(id="timeline", figure=build_timeline_figure(timeline),
                                      config={"displaylogo": False}), withBorder=True, p="xs", mt="md"),
                  dmc.Title("PET time points", order=4, mt="md", mb="xs"),
                  timeline_table(timeline.points, timeline.plans),
                  dmc.Text("Δ: change from the baseline's hottest lesion (PERCIST compares the hottest lesion at each "
                           "time point). SUL: SUV normalised to lean body mass. During RT: the scan lies within the "
                           "treatment days, when inflammation may add uptake.", fz="xs", c="dimmed", mt=4)]
    else:
        parts.append(dmc.Alert(NO_TIME_POINTS, title="No PET time points", color="gray", mt="md", className="empty"))
    if timeline.plans:
        parts += [dmc.Title("Treatment course", order=4, mt="md", mb="xs"), course_table(timeline.plans)]
    return html.Div(parts)


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
    timeline = read_patient_timeline(archive, patient_id)
    if timeline is None:
        return "Treatment response", html.P(f"No patient {patient_id} in the archive.", className="error")
    audit_access(AuditAction.READ, patient_ids=[patient_id], study_uids=timeline.study_uids)
    name = format_person_name(timeline.patient_name) or patient_id
    return f"Treatment response: {name} ({patient_id})", render_timeline(timeline)


def create_response_app(server: Flask) -> dash.Dash:
    """The response dashboard, mounted on ``server`` at :data:`BASE_PATH`."""
    app = PageDash(__name__, server=server,
                   url_base_pathname=BASE_PATH, title="Treatment response · OncoPACS",
                   suppress_callback_exceptions=True, external_stylesheets=[STYLESHEET])
    install_shell(app, html.Div([dcc.Location(id="url"), html.H3(id="title", style={"margin": "0 0 0.75rem"}),
                                 dcc.Loading(html.Div(id="content"))]),
                  page_title="Treatment response", subject=Subject.PATIENT)
    app.callback(Output("title", "children"), Output("content", "children"), Input("url", "pathname"))(
        render_response_page)
    return app
