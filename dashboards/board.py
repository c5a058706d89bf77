"""Tumour-board cohort dashboard at ``/dashboards/board``.

One row per patient of the archive (:func:`oncopacs.analysis.cohort.find_cohort`, an AG Grid table):
name and ID, diagnosis (AdmittingDiagnosesDescription recorded with the RT plan), site (the plan's
TreatmentSite, else the most frequent BodyPartExamined), the newest plan's prescription and fractions,
its first and last treatment day (from treatment records, else "planned" from the plan), the latest
PERCIST category with its date, the next step (the rules of :mod:`oncopacs.analysis.cohort`) and links to
the patient's pages: treatment response, plan review (newest plan's study), PET-CT (newest PET study).

Filters by site, status (:mod:`oncopacs.analysis.cohort`; a filter and a CSV column, not a grid column) and
latest category; the filtered table exports to CSV (needs REPORTS_READ), and the
tumour-board PDF of a chosen patient is made through the reporting service (needs REPORTS_WRITE;
the button is disabled otherwise). Viewing and exporting are audited with the patients involved.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from typing import Any

import dash
import dash_ag_grid as dag
import dash_mantine_components as dmc
from dash import Input, Output, State, dcc, html, no_update
from flask import Flask, current_app, g

from dashboards.page_app import PageDash
from dashboards.response import page_href, show_day, show_span
from dashboards.shell import STYLESHEET, Subject, install_shell
from oncopacs.analysis.cohort import FOLLOW_UP_WEEKS, CohortPatient, find_cohort
from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import EXPECTED_ERRORS
from oncopacs.index.display import format_person_name
from oncopacs.web.access import audit_access
from oncopacs.web.navigation import Page
from rt.course import ESTIMATED

BASE_PATH = "/dashboards/board/"
NO_CATEGORY = "none"
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Cell text colours of the latest PERCIST category (the response page's badge colours, as CSS).
_CATEGORY_CSS = {"CMR": "#2b8a3e", "PMR": "#0c8599", "SMD": "#e67700", "PMD": "#c92a2a"}
NOTES = ("Diagnosis: AdmittingDiagnosesDescription recorded with the patient's RT plan. Site: the plan's Treatment "
         "Site, else the most frequent Body Part Examined of the patient's series. Prescription and RT dates: the "
         "newest plan; dates from its treatment records, else \"planned\" (from the plan date at one fraction per "
         f"weekday). Next step, the first that applies: a failed clinical goal of the plan; progression (PMD); an "
         f"RT plan without a quantified PET; {FOLLOW_UP_WEEKS} weeks since the later of the last PET and the end of "
         "RT (follow-up PET due).")


@dataclass(frozen=True, slots=True)
class BoardRow:
    """One patient of the cohort as the board shows it; ``study_uid`` is the study the tumour-board PDF is made for.

    Dates are :class:`datetime.date` (None: unknown); ``rt_basis`` says where the RT dates come from.
    """

    patient_id: str
    patient_name: str  # DICOM PN
    site: str
    status: str
    category: str
    last_time_point: date | None
    study_uid: str
    diagnosis: str = ""
    prescription: str = ""
    rt_start: date | None = None
    rt_end: date | None = None
    rt_basis: str = ""
    response_date: date | None = None
    next_step: str = ""
    plan_study_uid: str = ""
    pet_study_uid: str = ""

    @classmethod
    def of(cls, patient: CohortPatient) -> BoardRow:
        """The row of a cohort patient (category "none" when no response is recorded)."""
        course = patient.course
        return cls(patient.patient_id, patient.patient_name, patient.site, patient.status,
                   patient.category or NO_CATEGORY, patient.last_time_point, patient.study_uid,
                   diagnosis=patient.diagnosis, prescription=course.describe_prescription_short() if course else "",
                   rt_start=course.dates.start if course else None, rt_end=course.dates.end if course else None,
                   rt_basis=course.dates.basis if course else "", response_date=patient.response_date,
                   next_step=patient.next_step, plan_study_uid=patient.plan_study_uid,
                   pet_study_uid=patient.pet_study_uid)

    @property
    def rt_dates(self) -> str:
        """``19 Feb 2024 – 2 Apr 2024``, with ``(planned)`` when estimated from the plan; "" without a plan."""
        if self.rt_start is None or self.rt_end is None:
            return ""
        span = show_span(self.rt_start, self.rt_end)
        return span + (" (planned)" if self.rt_basis == ESTIMATED else "")

    @property
    def response(self) -> str:
        """``CMR on 6 May 2024``; "" when no response is recorded."""
        if self.category == NO_CATEGORY:
            return ""
        return f"{self.category} on {show_day(self.response_date)}" if self.response_date else self.category

    def pages_markdown(self) -> str:
        """Links to the patient's pages (identifiers URL-encoded, labels fixed: no text of the archive in markup)."""
        links = [f"[Response]({page_href(Page.RESPONSE, self.patient_id)})"]
        if self.plan_study_uid:
            links.append(f"[Plan review]({page_href(Page.PLAN, self.plan_study_uid)})")
        if self.pet_study_uid:
            links.append(f"[PET-CT]({page_href(Page.PET, self.pet_study_uid)})")
        return "  \n".join(links)  # one link a line (markdown hard breaks)

    def to_grid(self) -> dict[str, Any]:
        """The row's cells for the grid."""
        return {"patient": format_person_name(self.patient_name) or self.patient_name, "patient_id": self.patient_id,
                "diagnosis": self.diagnosis or "not recorded", "site": self.site,
                "prescription": self.prescription or "no RT plan", "rt_dates": self.rt_dates or "—",
                "response": self.response or "—", "category": self.category, "next_step": self.next_step or "—",
                "status": self.status, "pages": self.pages_markdown()}


def read_board(archive: Archive, *, today: date | None = None) -> list[BoardRow]:
    """Every patient's row, by patient ID (:func:`oncopacs.analysis.cohort.find_cohort`)."""
    return [BoardRow.of(patient) for patient in find_cohort(archive, today=today)]


def filter_rows(rows: list[BoardRow], sites: list[str] | None, statuses: list[str] | None,
                categories: list[str] | None) -> list[BoardRow]:
    """The rows matching every non-empty filter."""
    return [r for r in rows if (not sites or r.site in sites) and (not statuses or r.status in statuses)
            and (not categories or r.category in categories)]


def _safe_cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + text if text.startswith(_CSV_FORMULA_START) else text


def _iso(day: date | None) -> str:
    return day.isoformat() if day else ""


CSV_HEADER = ("PatientID", "PatientName", "Diagnosis", "Site", "Prescription", "RT start", "RT end", "RT dates from",
              "Status", "PERCIST category", "Response date", "Last time point", "Next step")


def rows_to_csv(rows: list[BoardRow]) -> str:
    """The rows as CSV (dates ISO 8601, names as DICOM holds them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow([_safe_cell(v) for v in (
            r.patient_id, r.patient_name, r.diagnosis, r.site, r.prescription, _iso(r.rt_start), _iso(r.rt_end),
            r.rt_basis, r.status, r.category, _iso(r.response_date), _iso(r.last_time_point), r.next_step)])
    return buffer.getvalue()


# -- presentation --------------------------------------------------------------------------------


CELL_STYLE = {"lineHeight": "1.4", "paddingTop": "6px", "paddingBottom": "6px"}


def _category_style() -> dict[str, Any]:
    """Colour the latest response by its category (dash-ag-grid's styleConditions, no code from the archive)."""
    return {"styleConditions": [{"condition": f"params.data.category == '{name}'",
                                 "style": {**CELL_STYLE, "color": colour, "fontWeight": 700}}
                                for name, colour in _CATEGORY_CSS.items()],
            "defaultStyle": CELL_STYLE}


COLUMNS: list[dict[str, Any]] = [
    {"field": "patient", "headerName": "Patient", "pinned": "left", "width": 180, "wrapText": True,
     "autoHeight": True},
    {"field": "patient_id", "headerName": "ID", "width": 155},
    {"field": "diagnosis", "headerName": "Diagnosis", "minWidth": 160, "flex": 1, "wrapText": True,
     "autoHeight": True},
    {"field": "site", "headerName": "Site", "width": 125, "wrapText": True, "autoHeight": True},
    {"field": "prescription", "headerName": "Prescription", "width": 135, "wrapText": True, "autoHeight": True},
    {"field": "rt_dates", "headerName": "RT dates", "width": 150, "wrapText": True, "autoHeight": True},
    {"field": "response", "headerName": "Latest response", "width": 150, "wrapText": True, "autoHeight": True,
     "cellStyle": _category_style(), "cellClass": "percist"},
    {"field": "next_step", "headerName": "Next step", "minWidth": 140, "flex": 1, "wrapText": True,
     "autoHeight": True},
    {"field": "pages", "headerName": "Pages", "width": 120, "cellRenderer": "markdown", "sortable": False,
     "filter": False, "autoHeight": True},
]


def board_grid(rows: list[BoardRow]) -> dag.AgGrid:
    """The cohort as an AG Grid table (text cells; the links column is markdown built from identifiers only)."""
    return dag.AgGrid(id="cohort-grid", className="ag-theme-quartz cohort", rowData=[r.to_grid() for r in rows],
                      columnDefs=COLUMNS, getRowId="params.data.patient_id",
                      defaultColDef={"sortable": True, "resizable": True, "cellStyle": CELL_STYLE},
                      dashGridOptions={"domLayout": "autoHeight", "suppressCellFocus": True},
                      style={"width": "100%"})


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
    patients = [{"label": f"{format_person_name(r.patient_name) or r.patient_name} ({r.patient_id})",
                 "value": r.patient_id} for r in shown if r.study_uid]
    table = board_grid(shown) if shown else html.P("No patient matches these filters.", className="empty")
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
    app = PageDash(__name__, server=server,
                   libraries=("dash_ag_grid",),
                   url_base_pathname=BASE_PATH, title="Tumour board · OncoPACS", suppress_callback_exceptions=True,
                   external_stylesheets=[STYLESHEET])
    install_shell(app, html.Div([
        dcc.Location(id="url"), html.H3("Tumour board", style={"margin": "0 0 0.5rem"}),
        html.Div([_filter("site", "Site"), _filter("status", "Status"), _filter("category", "Latest PERCIST")],
                 style={"display": "flex", "gap": "1em"}),
        html.Div([dmc.Button("Export CSV", id="export-csv", variant="default"), dcc.Download(id="csv-download"),
                  dcc.Dropdown(id="pdf-patient", placeholder="patient for the PDF", style={"minWidth": "20em"}),
                  dmc.Button("Tumour-board PDF", id="make-pdf"), dcc.Download(id="pdf-download"),
                  html.Span(id="pdf-message")],
                 style={"display": "flex", "gap": "1em", "margin": "1em 0", "alignItems": "center"}),
        html.P(id="count"), dcc.Loading(html.Div(id="cohort")),
        dmc.Text(NOTES, fz="xs", c="dimmed", mt="sm", id="board-notes"),
    ]), page_title="Tumour board", subject=Subject.NONE)
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
