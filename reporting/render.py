"""Report data -> HTML (Jinja2 templates) -> PDF (WeasyPrint).

The PDF has selectable text with embedded (subset) DejaVu fonts, page numbers and the patient's
identification on every page (CSS ``@page`` margin boxes fed by ``string-set``), and plots as
inline SVG, i.e. vector graphics. Rendering the same data at the same time gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from oncopacs.index.display import format_date, format_person_name, format_sex
from reporting.plots import build_dvh_plot, build_timeline_plot
from reporting.subject import ReportSubject
from reporting.types import ReportType

STATUS_TEXT = {"pass": "PASS", "within_tolerance": "WITHIN TOLERANCE", "fail": "FAIL", "not_evaluated": "NOT EVALUATED"}


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """What the page furniture and the approval block show (times ISO 8601, UTC)."""

    id: int
    version: int
    title: str
    status: str  # "draft" or "final"
    conclusion: str
    created_by: str
    created_at: str
    rendered_at: str
    approved_by: str = ""
    approved_at: str = ""
    supersedes_version: int | None = None


def _number(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _iso_day(value: Any) -> str:
    """A DICOM (``20240205``) or ISO 8601 (``2024-02-05``) date as people read it (``5 Feb 2024``)."""
    return format_date(str(value or "").replace("-", ""))


def _change(value: Any) -> str:
    """A change in percent with its sign (``+46.3 %``, ``−53.8 %``); ``—`` when unknown."""
    if value is None or value == "":
        return "—"
    return f"{float(value):+.1f} %".replace("-", "−")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("reporting", "templates"), autoescape=select_autoescape(["html"]),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(num=_number, dicom_date=_iso_day, sex=format_sex, person=format_person_name,
                               status_text=lambda s: STATUS_TEXT.get(s, str(s)), iso_day=_iso_day, change=_change)
    return environment


def _plots(report_type: ReportType, data: dict[str, Any]) -> dict[str, str]:
    if report_type.name == "plan":
        return {"dvh_svg": build_dvh_plot(data["dvh"]["rois"], dose_unit=data["dvh"].get("dose_unit", "Gy"))}
    if report_type.name in ("pet-response", "tumour-board"):  # the response dashboard's timeline, same data
        return {"trend_svg": build_timeline_plot(data.get("timeline", []), data.get("course", []))}
    return {}


def render_html(report_type: ReportType, header: ReportHeader, data: dict[str, Any]) -> str:
    """The report's HTML (plots inlined as SVG)."""
    subject = ReportSubject.from_dict(data["subject"])
    template = _environment().get_template(report_type.template)
    return template.render(report=asdict(header), subject=asdict(subject), patient_name=subject.display_name,
                           data=data, **_plots(report_type, data))


def render_pdf(html: str) -> bytes:
    """The PDF of ``html`` (fonts embedded; identifier derived from the HTML, so output is repeatable)."""
    from weasyprint import HTML

    identifier = hashlib.sha256(html.encode("utf-8")).hexdigest()[:32].encode("ascii")
    return HTML(string=html).write_pdf(pdf_identifier=identifier)


def iso_utc(moment: datetime | None) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (what the PDF metadata and the page furniture show)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else ""
