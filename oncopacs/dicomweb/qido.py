"""QIDO-RS (PS3.18 10.6): query parameters -> an index query -> DICOM JSON results.

Parameters are ``{attributeID}={value}`` (a keyword or 8 hex digits; repeated keys are OR-ed like a
backslash list), ``includefield`` (repeatable, comma-separated, ``all``), ``limit``, ``offset`` and
``fuzzymatching``. Matching itself is :mod:`oncopacs.index.query`'s, the same as C-FIND's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from oncopacs.dicomweb.dicom_json import build_qido_result
from oncopacs.index.query import (
    ATTRIBUTES,
    COMPUTED,
    MAX_OFFSET,
    QueryError,
    QueryLevel,
    build_conditions,
    find,
)

#: Most results one response carries unless configured otherwise (more: a Warning and paging).
DEFAULT_MAX_RESULTS = 1000

_DEPTH = {QueryLevel.PATIENT: 0, QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_CONTROL = {"includefield", "limit", "offset", "fuzzymatching"}

#: Returned by default at each level (PS3.18 Tables 6.7.1-2, -2a and -2b), in addition to the match keys.
DEFAULT_RETURN: dict[QueryLevel, tuple[str, ...]] = {
    QueryLevel.STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
        "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    QueryLevel.SERIES: (
        "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
    ),
    QueryLevel.IMAGE: (
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
        "StudyInstanceUID", "SeriesInstanceUID",
    ),
}
#: Study attributes added to series and instance results that are not scoped to one study.
_STUDY_CONTEXT = tuple(k for k in DEFAULT_RETURN[QueryLevel.STUDY] if k not in COMPUTED)
#: Series attributes added to instance results that are not scoped to one series.
_SERIES_CONTEXT = tuple(k for k in DEFAULT_RETURN[QueryLevel.SERIES] if k not in COMPUTED)


class QidoParameterError(QueryError):
    """A QIDO-RS query parameter is unknown, unsupported at this level, or malformed."""

    def __init__(self, parameter: str, problem: str):
        super().__init__(f"query parameter {parameter!r}: {problem}")
        self.parameter = parameter
        self.problem = problem


@dataclass(frozen=True, slots=True)
class QidoQuery:
    """A parsed QIDO-RS request: what to match, what to return, which page."""

    level: QueryLevel
    keys: dict[str, str]  # match keys (keyword -> DICOM query value), incl. the UIDs of the path
    return_keys: tuple[str, ...]  # keywords returned in each result
    limit: int | None = None
    offset: int = 0
    fuzzy_matching: bool = False
    ignored_fields: tuple[str, ...] = field(default=())  # includefield attributes the index does not hold


@dataclass(frozen=True, slots=True)
class QidoResults:
    """One page of results and what the audit record needs."""

    results: list[dict[str, Any]]
    truncated: bool  # more matches than the server's maximum page: a Warning and paging are due
    patient_ids: tuple[str, ...]
    study_uids: tuple[str, ...]


def matchable_keywords(level: QueryLevel) -> set[str]:
    """Keywords that can be matched at ``level`` (attributes of it and the levels above)."""
    keywords = {k for k, a in ATTRIBUTES.items() if _DEPTH[a.level] <= _DEPTH[level]}
    if level == QueryLevel.STUDY:
        keywords.add("ModalitiesInStudy")
    return keywords


def returnable_keywords(level: QueryLevel) -> list[str]:
    """Keywords ``includefield=all`` returns at ``level``, in tag order."""
    keywords = {k for k, a in ATTRIBUTES.items() if _DEPTH[a.level] <= _DEPTH[level]}
    keywords |= {k for k, computed_level in COMPUTED.items() if computed_level == level}
    return _tag_order(keywords)


def parse_qido(
    level: QueryLevel, params: Iterable[tuple[str, str]], path_keys: Mapping[str, str] | None = None
) -> QidoQuery:
    """Parse the query parameters of a search at ``level``; ``path_keys`` are the UIDs of the URL path.

    Raises :class:`QidoParameterError` naming the offending parameter.
    """
    path_keys = dict(path_keys or {})
    keys: dict[str, list[str]] = {}
    fields: list[str] = []
    ignored: list[str] = []
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    matchable = matchable_keywords(level)
    returnable = set(returnable_keywords(level))
    for name, value in params:
        lowered = name.lower()
        if lowered == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item.lower() == "all":
                    include_all = True
                elif item:
                    keyword = _keyword_of(name, item)
                    (fields if keyword in ATTRIBUTES or keyword in COMPUTED else ignored).append(keyword)
        elif lowered == "limit":
            limit = _count_of(name, value, minimum=1)
        elif lowered == "offset":
            offset = _count_of(name, value, minimum=0)
        elif lowered == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QidoParameterError(name, f"must be true or false, not {value!r}")
            fuzzy = value.lower() == "true"
        else:
            keyword = _keyword_of(name, name)
            if not value.strip() and keyword in returnable:
                fields.append(keyword)  # an empty key asks for the attribute (universal matching)
                continue
            if keyword in path_keys:
                raise QidoParameterError(name, f"{keyword} is already given in the URL path")
            if keyword not in matchable:
                raise QidoParameterError(name, _unsupported(keyword, level))
            _check_value(name, keyword, value)
            keys.setdefault(keyword, []).append(value)
    match_keys = {k: "\\".join(v) for k, v in keys.items()}
    for keyword, value in match_keys.items():  # let the engine check what it will match with
        try:
            build_conditions(level, {keyword: value})
        except QueryError as exc:
            raise QidoParameterError(keyword, str(exc)) from None
    returned = returnable_keywords(level) if include_all else _default_return(level, path_keys)
    returned = _tag_order({*returned, *fields, *match_keys, *path_keys})
    return QidoQuery(level, {**match_keys, **path_keys}, tuple(returned), limit, offset, fuzzy, tuple(ignored))


def search(
    session: Session | Connection, query: QidoQuery, base_url: str, max_results: int = DEFAULT_MAX_RESULTS
) -> QidoResults:
    """Run ``query`` against the index; ``base_url`` is the DICOMweb root used for RetrieveURL."""
    page = max_results if query.limit is None else min(query.limit, max_results)
    matches = find(session, query.level, query.keys, return_keys=query.return_keys, limit=page + 1,
                   offset=query.offset)
    more = len(matches) > page
    matches = matches[:page]
    results = [build_qido_result(m.values, query.return_keys, _retrieve_url(base_url, query.level, m.values))
               for m in matches]
    server_cut = more and (query.limit is None or query.limit > max_results)
    return QidoResults(
        results,
        server_cut,
        tuple(dict.fromkeys(m.values.get("PatientID", "") for m in matches if m.values.get("PatientID"))),
        tuple(dict.fromkeys(m.values["StudyInstanceUID"] for m in matches if "StudyInstanceUID" in m.values)),
    )


def _retrieve_url(base_url: str, level: QueryLevel, values: Mapping[str, Any]) -> str:
    url = f"{base_url}/studies/{values['StudyInstanceUID']}"
    if _DEPTH[level] >= 2:
        url += f"/series/{values['SeriesInstanceUID']}"
    if _DEPTH[level] >= 3:
        url += f"/instances/{values['SOPInstanceUID']}"
    return url


def _default_return(level: QueryLevel, path_keys: Mapping[str, str]) -> tuple[str, ...]:
    returned = DEFAULT_RETURN[level]
    if level in (QueryLevel.SERIES, QueryLevel.IMAGE) and "StudyInstanceUID" not in path_keys:
        returned += _STUDY_CONTEXT
    if level == QueryLevel.IMAGE and "SeriesInstanceUID" not in path_keys:
        returned += _SERIES_CONTEXT
    return returned


def _keyword_of(parameter: str, attribute_id: str) -> str:
    """The keyword of a keyword or 8-hex-digit tag; QidoParameterError when it names nothing."""
    if _HEX_TAG.match(attribute_id):
        keyword = keyword_for_tag(int(attribute_id, 16))
        if not keyword:
            raise QidoParameterError(parameter, f"tag {attribute_id} is not a known DICOM attribute")
        return keyword
    if tag_for_keyword(attribute_id) is None:
        raise QidoParameterError(parameter, f"{attribute_id!r} is not a DICOM keyword or 8-hex-digit tag")
    return attribute_id


def _unsupported(keyword: str, level: QueryLevel) -> str:
    if keyword in ATTRIBUTES or keyword in COMPUTED:
        return f"{keyword} cannot be matched in a {level.value.lower()}-level search"
    return f"{keyword} is not a supported matching attribute"


def _count_of(parameter: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise QidoParameterError(parameter, f"must be a whole number, not {value!r}") from None
    if number < minimum:
        raise QidoParameterError(parameter, f"must be at least {minimum}")
    if number > MAX_OFFSET:  # no page starts or ends past what a SQL OFFSET/LIMIT can hold
        raise QidoParameterError(parameter, f"must be at most {MAX_OFFSET}")
    return number


def _check_value(parameter: str, keyword: str, value: str) -> None:
    """Reject numbers, dates and times that are not DICOM IS/US, DA/TM values (or ranges of DA/TM)."""
    vr = ATTRIBUTES[keyword].vr if keyword in ATTRIBUTES else ""
    if vr in ("IS", "US"):
        for alternative in value.split("\\"):
            if not re.fullmatch(r"\s*[+-]?\d+\s*", alternative):
                raise QidoParameterError(parameter, f"{alternative!r} is not a whole number")
        return
    pattern = {"DA": _DATE, "TM": _TIME}.get(vr)
    if pattern is None or not value.strip():
        return
    for alternative in value.split("\\"):
        bounds = alternative.split("-") if "-" in alternative else [alternative]
        if len(bounds) > 2 or not any(b.strip() for b in bounds):
            raise QidoParameterError(parameter, f"{value!r} is not a {vr} value or range")
        for bound in (b.strip() for b in bounds):
            if bound and not pattern.match(bound):
                raise QidoParameterError(parameter, f"{bound!r} is not a {vr} value (e.g. 20240131 or 103000)")


def _tag_order(keywords: Iterable[str]) -> list[str]:
    return sorted(set(keywords), key=lambda k: tag_for_keyword(k) or 0)
