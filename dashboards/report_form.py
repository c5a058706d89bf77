"""A dashboard's "Make … report" button: a plain form POSTed to Flask's ``/reports/make`` (report_list.make).

:func:`report_form` is the layout piece (the session's CSRF token, the report type and the page's study as
hidden fields; a plain button, as Mantine's Button cannot submit a form); :func:`register_report_form` fills the
study from the page's URL (``<base><StudyInstanceUID>``, the ``dcc.Location`` with id ``url``) and enables the
button once there is one. The draft is made by the report service, as ``POST /api/reports`` makes it (about 1 s
for the demo's plan report); the browser then lands on ``/reports`` with the draft highlighted, its PDF and
Approve button. A role that may not make reports sees a sentence instead of the button.
"""

from __future__ import annotations

import dash
from dash import Input, Output, dcc, html
from flask import g, has_request_context, url_for
from flask_wtf.csrf import generate_csrf

from dashboards.shell import Subject, subject_of
from oncopacs.auth.roles import Permission
from reporting.types import report_type

FORM_ID = "report-form"
STUDY_INPUT_ID = "report-study-uid"
BUTTON_ID = "report-make"
LOCATION_ID = "url"  # the page's own dcc.Location
MAKE_PATH = "/reports/make"


def report_form(type_name: str) -> html.Form:
    """The form that makes a ``type_name`` report (e.g. "plan") of the page's study, for the signed-in user."""
    title = report_type(type_name).title
    can_make, token = _caller()
    button = html.Button(f"Make {type_name.replace('-', ' ')} report", type="submit", id=BUTTON_ID,
                         className="op-button", disabled=True, hidden=not can_make)
    note = (f"Makes a draft “{title}” PDF of this study; check it and approve it on the Reports page."
            if can_make else "Your role may not make reports; approved reports are on the Reports page.")
    return html.Form([
        dcc.Input(type="hidden", name="csrf_token", value=token),
        dcc.Input(type="hidden", name="type", value=type_name),
        dcc.Input(type="hidden", name="study_uid", value="", id=STUDY_INPUT_ID),
        button, html.Span(note, className="op-dimmed"),
    ], method="post", action=_make_url(), id=FORM_ID, className="op-report-form")


def register_report_form(app: dash.Dash) -> None:
    """Fill the form's study from the page's URL; enable its button once the URL names a study."""
    base = app.config.url_base_pathname

    @app.callback(Output(STUDY_INPUT_ID, "value"), Output(BUTTON_ID, "disabled"), Input(LOCATION_ID, "pathname"))
    def _study(pathname: str | None) -> tuple[str, bool]:
        study_uid = subject_of(pathname, base=base, subject=Subject.STUDY)
        return study_uid, not study_uid


def _caller() -> tuple[bool, str]:
    """Whether the signed-in user may make reports, and the session's CSRF token (none outside a request)."""
    if not has_request_context():
        return True, ""  # Dash's layout validation: every id present
    principal = g.get("principal")
    if principal is None or not principal.can(Permission.REPORTS_WRITE):
        return False, ""
    return True, generate_csrf() if principal.via == "session" else ""


def _make_url() -> str:
    return url_for("report_list.make") if has_request_context() else MAKE_PATH


__all__ = ["BUTTON_ID", "FORM_ID", "STUDY_INPUT_ID", "register_report_form", "report_form"]
