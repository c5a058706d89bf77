"""Tumour-board cohort dashboard at ``/dashboards/board``.

One row per patient of the archive: name and ID (linking to the response dashboard), site (the most
frequent BodyPartExamined of the patient's series, "unknown" when none), status, the latest PERCIST
category (newest ``pet_response`` result) and the last PET time point. Status is read from what is
recorded: ``assessed`` (a response is stored), ``baseline only`` (PET time point(s), no response),
``planned`` (an RT plan, no PET result), ``imaging only`` (none of these).

Filters by site, status and category; the filtered table exports to CSV (needs REPORTS_READ), and the
tumour-board PDF of a chosen patient is made through the reporting service (needs REPORTS_WRITE;
the button is disabled otherwise). Viewing and exporting are audited with the patients involved.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import dash
from dash import Input, Output, State, dcc, html, no_update
from flask import Flask, current_app, g

from oncopacs.analysis.cohort import CohortPatient, find_cohort
from oncopacs.analysis.pet import read_response_category
from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import EXPECTED_ERRORS
from oncopacs.web.access import audit_access

BASE_PATH = "/dashboards/board/"
RESPONSE_PATH = "/dashboards/response/"
NO_CATEGORY = "none"
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class BoardRow:
    """One patient of the cohort; ``study_uid`` is the study the tumour-board PDF is made for."""

    patient_id: str
    patient_name: str
    site: str
    status: str
    category: str
    last_time_point: str  # ISO date of the newest PET time point, "" when none
    study_uid: str

    @classmethod
    def of(cls, patient: CohortPatient) -> BoardRow:
        """The row of a cohort patient, with the PERCIST category of their newest response (or "none")."""
        category = read_response_category(patient.response).get("category", "") if patient.response else ""
        return cls(patient.patient_id, patient.patient_name, patient.site, patient.status, category or NO_CATEGORY,
                   patient.last_time_point, patient.study_uid)


def read_board(archive: Archive) -> list[BoardRow]:
    """Every patient's row, by patient ID (:func:`oncopacs.analysis.cohort.find_cohort`)."""
    return [BoardRow.of(patient) for patient in find_cohort(archive.index)]


def filter_rows(rows: list[BoardRow], sites: list[str] | None, statuses: list[str] | None,
                categories: list[str] | None) -> list[BoardRow]:
    """The rows matching every non-empty filter."""
    return [r for r in rows if (not sites or r.site in sites) and (not statuses or r.status in statuses)
            and (not categories or r.category in categories)]


def _safe_cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + text if text.startswith(_CSV_FORMULA_START) else text


def rows_to_csv(rows: list[BoardRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["PatientID", "PatientName", "Site", "Status", "PERCIST category", "Last time point"])
    for r in rows:
        writer.writerow([_safe_cell(v) for v in (r.patient_id, r.patient_name, r.site, r.status, r.category,
                                                 r.last_time_point)])
    return buffer.getvalue()


# -- presentation --------------------------------------------------------------------------------


def _table(rows: list[BoardRow]) -> html.Table:
    header = ["Patient", "PatientID", "Site", "Status", "Latest PERCIST", "Last time point"]
    body = [html.Tr([html.Td(r.patient_name), html.Td(dcc.Link(r.patient_id, href=RESPONSE_PATH + r.patient_id)),
                     html.Td(r.site), html.Td(r.status),
                     html.Td(r.category, className=f"percist {r.category}",
                             id={"type": "category", "index": r.patient_id}),
                     html.Td(r.last_time_point)]) for r in rows]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(body)], className="cohort")


def _options(values) -> list[dict[str, str]]:
    return [{"label": v, "value": v} for v in sorted(set(values))]


def _may(permission: Permission) -> bool:
    principal = g.get("principal")
    return principal is not None and principal.can(permission)


def _archive() -> Archive:
    return current_app.extensions["oncopacs.archive"]


def render_board(pathname: str | None, sites, statuses, categories):
    """Callback: (table, count text, site/status/category options, patient options, CSV/PDF disabled)."""
    if not _may(Permission.DASHBOARDS_VIEW):
        return (html.P("Your role may not view dashboards.", className="error"), "", [], [], [], [], True, True)
    rows = read_board(_archive())
    shown = filter_rows(rows, sites, statuses, categories)
    audit_access(AuditAction.READ, patient_ids=[r.patient_id for r in shown],
                 study_uids=[r.study_uid for r in shown if r.study_uid])
    patients = [{"label": f"{r.patient_name} ({r.patient_id})", "value": r.patient_id} for r in shown if r.study_uid]
    table = _table(shown) if shown else html.P("No patient matches these filters.", className="empty")
    return (table, f"{len(shown)} of {len(rows)} patients", _options(r.site for r in rows),
            _options(r.status for r in rows), _options(r.category for r in rows), patients,
            not _may(Permission.REPORTS_READ), not _may(Permission.REPORTS_WRITE))


def export_csv(n_clicks, sites, statuses, categories):
    """Callback: the filtered cohort as CSV (audited EXPORT)."""
    if not n_clicks or not _may(Permission.DASHBOARDS_VIEW) or not _may(Permission.REPORTS_READ):
        return no_update
    shown = filter_rows(read_board(_archive()), sites, statuses, categories)
    audit_access(AuditAction.EXPORT, patient_ids=[r.patient_id for r in shown],
                 study_uids=[r.study_uid for r in shown if r.study_uid])
    return dcc.send_string(rows_to_csv(shown), "tumour-board-cohort.csv", type="text/csv")


def make_board_pdf(n_clicks, patient_id):
    """Callback: make the tumour-board PDF (a draft report) of ``patient_id``; (download, message)."""
    if not n_clicks:
        return no_update, ""
    if not _may(Permission.REPORTS_WRITE):
        return no_update, "Your role may not make reports."
    if not patient_id:
        return no_update, "Choose a patient first."
    row = next((r for r in read_board(_archive()) if r.patient_id == patient_id), None)
    if row is None or not row.study_uid:
        return no_update, f"No study of patient {patient_id} to report on."
    service = current_app.extensions["oncopacs.reports"].service
    try:
        report = service.make("tumour-board", row.study_uid, g.principal.name)
        pdf = service.read_pdf(report)
    except EXPECTED_ERRORS as exc:
        return no_update, f"The report could not be made: {exc}"
    audit_access(AuditAction.EXPORT, patient_ids=[patient_id], study_uids=[row.study_uid])
    return (dcc.send_bytes(pdf, f"tumour-board-{report.id}-v{report.version}.pdf", type="application/pdf"),
            f"Draft report {report.id} made; approve it under /api/reports/{report.id}.")


def _filter(id_: str, label: str) -> html.Label:
    return html.Label([label, dcc.Dropdown(id=id_, multi=True, placeholder="all")], style={"minWidth": "14em"})


def create_board_app(server: Flask) -> dash.Dash:
    """The tumour-board dashboard, mounted on ``server`` at :data:`BASE_PATH`."""
    app = dash.Dash(__name__, server=server,  # type: ignore[arg-type]  # Dash types it bool | Callable
                    url_base_pathname=BASE_PATH, title="Tumour board · OncoPACS", suppress_callback_exceptions=True)
    app.layout = html.Div([
        dcc.Location(id="url"), html.H2("Tumour board"),
        html.Div([_filter("site", "Site"), _filter("status", "Status"), _filter("category", "Latest PERCIST")],
                 style={"display": "flex", "gap": "1em"}),
        html.Div([html.Button("Export CSV", id="export-csv"), dcc.Download(id="csv-download"),
                  dcc.Dropdown(id="pdf-patient", placeholder="patient for the PDF", style={"minWidth": "20em"}),
                  html.Button("Tumour-board PDF", id="make-pdf"), dcc.Download(id="pdf-download"),
                  html.Span(id="pdf-message")], style={"display": "flex", "gap": "1em", "margin": "1em 0"}),
        html.P(id="count"), dcc.Loading(html.Div(id="cohort")),
    ])
    app.callback(Output("cohort", "children"), Output("count", "children"), Output("site", "options"),
                 Output("status", "options"), Output("category", "options"), Output("pdf-patient", "options"),
                 Output("export-csv", "disabled"), Output("make-pdf", "disabled"),
                 Input("url", "pathname"), Input("site", "value"), Input("status", "value"),
                 Input("category", "value"))(render_board)
    app.callback(Output("csv-download", "data"), Input("export-csv", "n_clicks"), State("site", "value"),
                 State("status", "value"), State("category", "value"), prevent_initial_call=True)(export_csv)
    app.callback(Output("pdf-download", "data"), Output("pdf-message", "children"), Input("make-pdf", "n_clicks"),
                 State("pdf-patient", "value"), prevent_initial_call=True)(make_board_pdf)
    return app

