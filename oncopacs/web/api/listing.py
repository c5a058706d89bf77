"""What the JSON API's list views share: paging arguments and the shape of index matches.

Attributes are given under their DICOM keywords (``PatientID``, ``StudyDate``, ...), as the
index's query layer names them, so a client can move between ``/api`` and QIDO-RS freely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import abort, current_app, request

from oncopacs.archive.ingest import Archive
from oncopacs.index.query import ATTRIBUTES, MAX_OFFSET, QueryLevel

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The URL converter of a row id (job, report, token): ids past a 32-bit integer (the columns' type on
#: PostgreSQL) do not match the route, so they are a 404 instead of an overflow in SQL.
ROW_ID = f"int(max={2**31 - 1})"


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def read_page(default_limit: int = DEFAULT_LIMIT) -> Page:
    """``?limit=`` (1..MAX_LIMIT) and ``?offset=`` (>= 0) of this request; 400 when malformed."""
    limit = _read_int("limit", default_limit)
    offset = _read_int("offset", 0)
    if not 1 <= limit <= MAX_LIMIT:
        abort(400, description=f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        abort(400, description=f"offset must be between 0 and {MAX_OFFSET}")
    return Page(limit, offset)


def _read_int(name: str, default: int) -> int:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        abort(400, description=f"{name} must be a whole number, not {raw[:40]!r}")


def archive() -> Archive:
    return current_app.extensions["oncopacs.archive"]


def pick(values: Mapping[str, Any], levels: Iterable[QueryLevel], extra: Iterable[str] = ()) -> dict[str, Any]:
    """The attributes of ``levels`` (and the computed ``extra`` ones) from a query match, by keyword."""
    wanted = set(levels)
    keywords = [k for k, attribute in ATTRIBUTES.items() if attribute.level in wanted] + list(extra)
    return {keyword: values[keyword] for keyword in keywords if keyword in values}


PATIENT_COUNTS = ("NumberOfPatientRelatedStudies",)
STUDY_COUNTS = ("ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_COUNTS = ("NumberOfSeriesRelatedInstances",)


def study_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """A study as the API lists it: its attributes, its patient's ID and name, and its counts."""
    return {
        **pick(values, [QueryLevel.STUDY], STUDY_COUNTS),
        "PatientID": values.get("PatientID"),
        "PatientName": values.get("PatientName"),
    }


def series_json(values: Mapping[str, Any]) -> dict[str, Any]:
    return {**pick(values, [QueryLevel.SERIES], SERIES_COUNTS), "StudyInstanceUID": values.get("StudyInstanceUID")}
