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

from oncopacs.index.dates import format_iso_date
from reporting.plots import build_dvh_plot, build_trend_plot
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


def _person(value: Any) -> str:
    parts = [p for p in str(value or "").split("=")[0].split("^") if p]
    return f"{parts[0]}, {' '.join(parts[1:])}" if len(parts) > 1 else (parts[0] if parts else "")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("reporting", "templates"), autoescape=select_autoescape(["html"]),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(num=_number, dicom_date=format_iso_date, person=_person,
                               status_text=lambda s: STATUS_TEXT.get(s, str(s)))
    return environment


def _plots(report_type: ReportType, data: dict[str, Any]) -> dict[str, str]:
    if report_type.name == "plan":
        return {"dvh_svg": build_dvh_plot(data["dvh"]["rois"])}
    if report_type.name == "pet-response" and data.get("trend_metric"):
        metric = data["trend_metric"]
        series: dict[str, list[tuple[str, float]]] = {}
        for point in data["time_points"]:
            for row in point["rows"]:
                if metric in row["values"]:
                    series.setdefault(row["structure"], []).append((point["time_point"], row["values"][metric]))
        return {"trend_svg": build_trend_plot(series, metric)}
    return {"trend_svg": ""} if report_type.name == "pet-response" else {}


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
