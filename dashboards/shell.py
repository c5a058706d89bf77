"""The application shell around every dashboard: header, patient context bar and navigation (Mantine AppShell).

:func:`install_shell` sets a Dash app's layout to its page content inside :func:`app_shell`:

- the header: the product name (a link to the study browser), the page title, the signed-in user and role, and
  a Sign-out button (a form POSTed to ``auth.logout`` with the session's CSRF token). The layout is a function, so
  Dash builds it per request (``_dash-layout``) for whoever is signed in;
- for pages about a study (``<base><StudyInstanceUID>``) or a patient (``<base><PatientID>``): the patient context
  bar (name, ID, birth date with age, sex, formatted for people) and the navigation (the patient's pages, each study
  with the pages that apply to it, from :mod:`oncopacs.web.navigation`), filled by one callback on the URL
  (:func:`shell_context`, audited as a QUERY of the patient and the studies listed).

Shell component ids start with ``shell-``; the pages keep theirs. Colours and fonts come from
:mod:`oncopacs.web.theme`, the same values the Flask pages' stylesheet uses.
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Any
from urllib.parse import unquote

import dash
import dash_mantine_components as dmc
from dash import Input, Output, dcc, html
from flask import current_app, g, has_request_context, url_for
from flask_wtf.csrf import generate_csrf

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Principal
from oncopacs.index.display import format_birth_date, format_date, format_person_name, format_sex
from oncopacs.uids import is_valid_uid
from oncopacs.web import theme
from oncopacs.web.access import audit_access
from oncopacs.web.navigation import (
    BOARD_HREF,
    STUDY_BROWSER_HREF,
    PatientContext,
    StudyEntry,
    read_patient_context,
)

STYLESHEET = "/static/oncopacs.css"  # the few project rules (sign-out button); pass to dash.Dash(external_stylesheets=)
LOCATION_ID = "shell-url"
PATIENT_BAR_ID = "shell-patient"
NAV_ID = "shell-nav"
PATIENT_BAR_HEIGHT_PX = 40
LOGOUT_PATH = "/logout"

THEME: dict[str, Any] = {
    "fontFamily": theme.FONT_FAMILY,
    "fontFamilyMonospace": theme.MONOSPACE_FONT_FAMILY,
    "headings": {"fontFamily": theme.FONT_FAMILY},
    "primaryColor": theme.PRIMARY_NAME,
    "primaryShade": theme.PRIMARY_SHADE,
    "colors": {theme.PRIMARY_NAME: list(theme.PRIMARY_SHADES)},
    "defaultRadius": "sm",
}

Content = Any  # a Dash component, or a function returning one (built per request)


class Subject(enum.Enum):
    """What the part of the URL after the app's base names."""

    STUDY = "study"  # <base><StudyInstanceUID>
    PATIENT = "patient"  # <base><PatientID>
    NONE = "none"  # nothing: a page about no one patient (the tumour board)


# -- building blocks ------------------------------------------------------------------------------------------


def header(page_title: str, principal: Principal | None, csrf_token: str | None) -> dmc.Group:
    """Product name, page title, user and role, sign-out (only for a browser session: a token has none to end)."""
    brand = dmc.Group([
        dmc.Anchor(theme.PRODUCT_NAME, href=STUDY_BROWSER_HREF, refresh=True, c=theme.HEADER_TEXT, fw=700, fz="lg",
                   underline="never", id="shell-home"),
        dmc.Text("·", c=theme.PRIMARY_SHADES[3]),
        dmc.Text(page_title, c=theme.HEADER_TEXT, fz="md", id="shell-title"),
    ], gap="sm", wrap="nowrap")
    user: list[Any] = []
    if principal is not None:
        user = [dmc.Text(principal.name, c=theme.HEADER_TEXT, fz="sm", id="shell-user"),
                dmc.Badge(principal.role.label, color=theme.PRIMARY_NAME, variant="white", id="shell-role")]
        if principal.via == "session" and csrf_token:
            user.append(html.Form([dcc.Input(type="hidden", name="csrf_token", value=csrf_token),
                                   html.Button("Sign out", type="submit", className="op-sign-out")],
                                  method="post", action=_logout_url(), id="shell-sign-out",
                                  className="op-sign-out-form"))
    return dmc.Group([brand, dmc.Group(user, gap="sm", wrap="nowrap")], justify="space-between",
                     h=theme.HEADER_HEIGHT_PX, px="md", wrap="nowrap", bg=theme.HEADER_BACKGROUND)


def patient_bar(context: PatientContext | None, *, today: date, missing: str = "") -> list[Any]:
    """Name, ID, birth date (age), sex of ``context``; ``missing`` (dimmed) when there is no patient."""
    if context is None:
        return [dmc.Text(missing, c="dimmed", fz="sm")]

    def field(label: str, value: str, id_: str) -> dmc.Group:
        return dmc.Group([dmc.Text(label, c="dimmed", fz="sm"), dmc.Text(value or "unknown", fz="sm", fw=500, id=id_)],
                         gap=6, wrap="nowrap")

    return [dmc.Text(format_person_name(context.patient_name) or "(no name)", fw=700, id="shell-patient-name"),
            field("ID", context.patient_id, "shell-patient-id"),
            field("Born", format_birth_date(context.birth_date, today), "shell-patient-born"),
            field("Sex", format_sex(context.sex), "shell-patient-sex")]


def navigation(context: PatientContext | None, current_path: str) -> list[Any]:
    """The patient's pages, each study with the pages that apply to it, then the pages about everyone."""
    current = _normal(current_path)
    items: list[Any] = []
    if context is not None:
        items.append(_section("Patient"))
        items.extend(_link(p.label, p.href, current) for p in context.pages if p.href != BOARD_HREF)
        items.append(_section("Studies"))
        items.extend(_study(entry, current) for entry in reversed(context.studies))  # newest first
    items.append(_section("Everyone"))
    items.append(_link("Study browser", STUDY_BROWSER_HREF, current))
    items.append(_link("Tumour board", BOARD_HREF, current))
    return items


def app_shell(content: Any, *, page_title: str, principal: Principal | None = None, csrf_token: str | None = None,
              subject: Subject = Subject.NONE, current_path: str = "") -> dmc.MantineProvider:
    """``content`` inside the shell; the patient bar and the navigation start empty when ``subject`` names one
    (:func:`shell_context` fills them), else the navigation is drawn for ``current_path``."""
    with_patient = subject is not Subject.NONE
    top = [header(page_title, principal, csrf_token)]
    if with_patient:
        top.append(dmc.Group([], id=PATIENT_BAR_ID, gap="xl", h=PATIENT_BAR_HEIGHT_PX, px="md", wrap="nowrap",
                             bg=theme.PATIENT_BAR_BACKGROUND, className="op-patient-bar"))
    height = theme.HEADER_HEIGHT_PX + (PATIENT_BAR_HEIGHT_PX if with_patient else 0)
    shell = dmc.AppShell([
        dmc.AppShellHeader(top, withBorder=True),
        dmc.AppShellNavbar(dmc.ScrollArea(html.Div([] if with_patient else navigation(None, current_path),
                                                   id=NAV_ID)), p="xs"),  # AppShellNavbar is the <nav>
        dmc.AppShellMain(html.Div(content, id="shell-content"), bg=theme.PAGE_BACKGROUND),
    ], header={"height": height}, padding="md",
        navbar={"width": theme.NAVBAR_WIDTH_PX, "breakpoint": "sm", "collapsed": {"mobile": True}})  # desktop UI
    children: list[Any] = [dcc.Location(id=LOCATION_ID)] if with_patient else []
    return dmc.MantineProvider([*children, shell], theme=THEME, forceColorScheme="light")


def install_shell(app: dash.Dash, content: Content, *, page_title: str, subject: Subject) -> None:
    """Make ``app``'s layout ``content`` inside the shell, built per request; register the shell's callback."""
    base = app.config.url_base_pathname

    def layout() -> dmc.MantineProvider:
        principal, token = _caller()
        return app_shell(content() if callable(content) else content, page_title=page_title, principal=principal,
                         csrf_token=token, subject=subject, current_path=base)

    app.layout = layout
    if subject is Subject.NONE:
        return

    @app.callback(Output(PATIENT_BAR_ID, "children"), Output(NAV_ID, "children"), Input(LOCATION_ID, "pathname"))
    def _context(pathname: str | None):
        return shell_context(pathname, base=base, subject=subject)


# -- the callback's work ---------------------------------------------------------------------------------------


def subject_of(pathname: str | None, *, base: str, subject: Subject) -> str:
    """The StudyInstanceUID or PatientID the page's URL names ("" when none, or not a UID for a study page)."""
    if not pathname or not pathname.startswith(base) or subject is Subject.NONE:
        return ""
    rest = unquote(pathname[len(base):].strip("/"))
    if subject is Subject.STUDY:
        uid = rest.split("/")[0]
        return uid if is_valid_uid(uid) else ""
    return rest


def shell_context(pathname: str | None, *, base: str, subject: Subject, today: date | None = None
                  ) -> tuple[list[Any], list[Any]]:
    """(patient bar, navigation) for the page at ``pathname`` (audited QUERY when a patient is shown)."""
    key = subject_of(pathname, base=base, subject=subject)
    context = None
    if key:
        archive = current_app.extensions["oncopacs.archive"]
        context = (read_patient_context(archive, study_uid=key) if subject is Subject.STUDY
                   else read_patient_context(archive, patient_id=key))
    if context is not None:
        audit_access(AuditAction.QUERY, patient_ids=[context.patient_id],
                     study_uids=[s.study_uid for s in context.studies])
    missing = f"No {subject.value} in the archive at this address." if key else f"No {subject.value} chosen."
    return (patient_bar(context, today=today or date.today(), missing=missing),
            navigation(context, pathname or ""))


# -- helpers ---------------------------------------------------------------------------------------------------


def _caller() -> tuple[Principal | None, str | None]:
    """The signed-in principal and a CSRF token for the sign-out form (none outside a request: layout validation)."""
    if not has_request_context():
        return None, None
    principal: Principal | None = g.get("principal")
    token = generate_csrf() if principal is not None and principal.via == "session" else None
    return principal, token


def _logout_url() -> str:
    return url_for("auth.logout") if has_request_context() else LOGOUT_PATH


def _normal(path: str) -> str:
    return unquote(path).rstrip("/") or "/"


def _section(title: str) -> dmc.Text:
    return dmc.Text(title, fz="xs", fw=700, c="dimmed", tt="uppercase", mt="sm", mb=4, px="xs")


def _link(label: str, href: str, current: str, **kwargs: Any) -> dmc.NavLink:
    return dmc.NavLink(label=label, href=href, refresh=True, active=_normal(href) == current, **kwargs)


def _study(entry: StudyEntry, current: str) -> dmc.NavLink:
    """The study (date, description) with its pages beneath, then its images in OHIF; a study no dashboard applies
    to says so."""
    title = format_date(entry.study_date) or "(no date)"
    description = entry.study_description or " ".join(entry.modalities)
    if not entry.pages:
        description = f"{description} · no dashboard applies" if description else "no dashboard applies"
    pages = [_link(p.label, p.href, current) for p in (*entry.pages, entry.viewer)]
    return dmc.NavLink(label=title, description=description, children=pages, opened=True, childrenOffset="md",
                       className="op-nav-study", **{"data-study-uid": entry.study_uid})


__all__ = ["LOCATION_ID", "NAV_ID", "PATIENT_BAR_ID", "STYLESHEET", "THEME", "Subject", "app_shell", "header",
           "install_shell", "navigation", "patient_bar", "shell_context", "subject_of"]
