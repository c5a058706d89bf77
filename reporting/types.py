"""The report types: each is a Jinja2 template plus a function that gathers what it shows.

A data function takes a :class:`ReportRequest` and returns :class:`ReportContent` whose ``data``
is plain JSON (stored with the report, so the approved PDF shows exactly what the draft showed).
Sections without data say so; nothing is made up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oncopacs.archive.ingest import Archive
from reporting.subject import ReportSubject


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What to report on: a study of the archive, and type-specific options."""

    archive: Archive
    study_uid: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReportContent:
    """A report's subject, one-line conclusion and the JSON data its template renders."""

    subject: ReportSubject
    conclusion: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportType:
    """One kind of report: name, title, template, the code sent to the EHR and its data function."""

    name: str
    title: str
    template: str
    code: str  # local code (HL7 OBR-4 / FHIR DiagnosticReport.code)
    service_section: str  # HL7 OBR-24 diagnostic service section (RT, NM, OTH)
    gather: Callable[[ReportRequest], ReportContent]


CODE_SYSTEM = "urn:oncopacs:report-type"


def _registry() -> dict[str, ReportType]:
    from reporting.board_report import gather_tumour_board
    from reporting.pet_report import gather_pet_response
    from reporting.plan_report import gather_plan_evaluation

    types = (
        ReportType("plan", "Treatment plan evaluation", "plan.html", "RTPLANEVAL", "RT", gather_plan_evaluation),
        ReportType("pet-response", "PET response assessment", "pet_response.html", "PETRESP", "NM",
                   gather_pet_response),
        ReportType("tumour-board", "Tumour board summary", "tumour_board.html", "TUMBOARD", "OTH", gather_tumour_board),
    )
    return {t.name: t for t in types}


REPORT_TYPE_NAMES = ("plan", "pet-response", "tumour-board")


def report_type(name: str) -> ReportType:
    """The report type called ``name``; ValueError naming the valid ones otherwise."""
    types = _registry()
    if name not in types:
        raise ValueError(f"unknown report type {name!r} (valid: {', '.join(REPORT_TYPE_NAMES)})")
    return types[name]
