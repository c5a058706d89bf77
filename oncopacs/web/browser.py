"""The study browser at ``/`` and ``/studies``: search studies, see each patient's oncology picture.

Search by patient name or ID (``q``), modality and study date range; each study shows which CT,
structure sets, plans, doses, PET-CT pairs, 4D CTs and registrations belong together (from
:func:`oncopacs.index.oncology.summarize_study`) and its reports, with links to the dashboards that apply to it
(:mod:`oncopacs.web.navigation`); each patient links to the response page and the tumour board. Names, dates and
sex are shown for people (:mod:`oncopacs.index.display`). Needs ARCHIVE_READ; every search is audited with the
patients and studies shown.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date

from flask import Blueprint, current_app, render_template, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.index.display import format_birth_date, format_date, format_person_name, format_sex
from oncopacs.index.oncology import OncologySummary, summarize_study
from oncopacs.index.query import QueryError, QueryLevel, find
from oncopacs.reports.store import ReportRecord
from oncopacs.web.access import audit_access, current_principal, requires
from oncopacs.web.navigation import PageLink, four_d_series, patient_pages, study_pages, viewer_link

bp = Blueprint("browser", __name__, template_folder="templates")
bp.add_app_template_filter(format_person_name, "person")
bp.add_app_template_filter(format_date, "dicom_date")
bp.add_app_template_filter(format_sex, "sex")
bp.add_app_template_filter(lambda value: format_birth_date(value, date.today()), "birth_date")

MAX_STUDIES = 100
MAX_REPORTS_PER_STUDY = 20
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_WILDCARDS = re.compile(r"[*?\\]")
_STUDY_KEYS = ("ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")


@dataclass(frozen=True, slots=True)
class Search:
    """The browser's search form (empty strings: not given)."""

    text: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""

    @property
    def empty(self) -> bool:
        return not (self.text or self.modality or self.date_from or self.date_to)


@dataclass(frozen=True, slots=True)
class StudyView:
    """One study as the browser shows it."""

    values: dict
    oncology: OncologySummary
    reports: tuple[ReportRecord, ...]
    four_d_series: tuple[str, ...]  # CT series whose description names a 4D / respiratory phase

    @property
    def uid(self) -> str:
        return self.values["StudyInstanceUID"]

    @property
    def pages(self) -> tuple[PageLink, ...]:
        """The dashboards that apply to this study."""
        return study_pages(self.oncology)

    @property
    def viewer(self) -> PageLink:
        """The study's images in OHIF."""
        return viewer_link(self.uid)


@dataclass(frozen=True, slots=True)
class PatientView:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    studies: tuple[StudyView, ...]

    @property
    def pages(self) -> tuple[PageLink, ...]:
        """The dashboards about the patient as a whole (response, tumour board)."""
        return patient_pages(self.patient_id)


@bp.get("/")
@requires(Permission.ARCHIVE_READ)
def home():
    """The study browser (the landing page)."""
    return studies()


@bp.get("/studies")
@requires(Permission.ARCHIVE_READ)
def studies() -> tuple[str, int]:
    """Studies matching ?q= (patient name or ID), ?modality=, ?date_from=, ?date_to=, grouped by patient."""
    search = Search(
        text=request.args.get("q", "").strip()[:64],
        modality=request.args.get("modality", "").strip().upper()[:16],
        date_from=request.args.get("date_from", "").strip()[:10],
        date_to=request.args.get("date_to", "").strip()[:10],
    )
    error = ""
    patients: list[PatientView] = []
    try:
        keys = _study_keys(search)
        patients = _search(keys, search.text)
    except ValueError as exc:
        error = str(exc)
    shown = [s for p in patients for s in p.studies]
    audit_access(AuditAction.QUERY, patient_ids=[p.patient_id for p in patients], study_uids=[s.uid for s in shown])
    if any(s.reports for s in shown):
        audit_access(AuditAction.REPORT_VIEW, patient_ids=[r.patient_id for s in shown for r in s.reports],
                     study_uids=[r.study_uid for s in shown for r in s.reports])
    status = 400 if error else 200
    return render_template("browser.html", search=search, patients=patients, error=error,
                           study_count=len(shown), limit=MAX_STUDIES,
                           can_dashboards=current_principal().can(Permission.DASHBOARDS_VIEW),
                           can_reports=current_principal().can(Permission.REPORTS_READ)), status


def _study_keys(search: Search) -> dict[str, str]:
    if search.modality and not re.fullmatch(r"[A-Z0-9_]{1,16}", search.modality):
        raise ValueError(f"{search.modality!r} is not a modality (CT, MR, PT, RTPLAN, ...)")
    low, high = _dicom_date("from", search.date_from), _dicom_date("to", search.date_to)
    if low and high and low > high:
        raise ValueError("the 'from' date is after the 'to' date")
    return {"StudyDate": f"{low}-{high}" if low or high else "", "ModalitiesInStudy": search.modality}


def _dicom_date(name: str, text: str) -> str:
    if not text:
        return ""
    match = _DATE.match(text)
    if match is None:
        raise ValueError(f"the '{name}' date must be YYYY-MM-DD or YYYYMMDD")
    return "".join(match.groups())


def _search(keys: dict[str, str], text: str) -> list[PatientView]:
    """Studies matching ``keys`` whose patient ID equals ``text`` or whose name contains it."""
    archive = current_app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        matches: dict[str, dict] = OrderedDict()
        if text:
            plain = _WILDCARDS.sub("", text)
            variants = [{"PatientID": plain}, {"PatientName": f"*{plain}*"}] if plain else [{}]
        else:
            variants = [{}]
        try:
            for extra in variants:
                for match in find(session, QueryLevel.STUDY, {**keys, **extra}, return_keys=_STUDY_KEYS,
                                  limit=MAX_STUDIES):
                    matches.setdefault(match.values["StudyInstanceUID"], match.values)
        except QueryError as exc:
            raise ValueError(str(exc)) from None
        chosen = sorted(matches.values(), key=lambda v: (str(v.get("PatientName") or ""), str(v.get("PatientID") or ""),
                                                          str(v.get("StudyDate") or "")))[:MAX_STUDIES]
        summaries = {v["StudyInstanceUID"]: summarize_study(session, v["StudyInstanceUID"]) for v in chosen}
    grouped: dict[str, list[StudyView]] = OrderedDict()
    heads: dict[str, dict] = {}
    for values in chosen:
        uid = values["StudyInstanceUID"]
        summary = summaries[uid]
        view = StudyView(values, summary, _reports_of(uid), four_d_series(summary))
        pid = str(values.get("PatientID") or "")
        grouped.setdefault(pid, []).append(view)
        heads.setdefault(pid, values)
    return [PatientView(pid, _text(heads[pid].get("PatientName")), _text(heads[pid].get("PatientBirthDate")),
                        _text(heads[pid].get("PatientSex")), tuple(items)) for pid, items in grouped.items()]


def _reports_of(study_uid: str) -> tuple[ReportRecord, ...]:
    reports = current_app.extensions.get("oncopacs.reports")
    if reports is None or not current_principal().can(Permission.REPORTS_READ):
        return ()
    return tuple(reports.service.store.list(study_uid=study_uid, limit=MAX_REPORTS_PER_STUDY))


def _text(value) -> str:
    return "" if value is None else str(value)
