"""QIDO-RS routes (PS3.18 10.6): search for studies, series and instances.

Answers ``application/dicom+json``: 200 with an array (``[]`` when nothing matches, which
dicomweb-client and OHIF both read as no results). When more matches exist than the server's
maximum page (``app.config["QIDO_MAX_RESULTS"]``, default 1000, capped by the ``find_limit``
setting that C-FIND shares) the page ends there and a ``Warning: 299`` header says so; clients
page on with ``offset``. A bad parameter is a 400 whose JSON names it.
"""

from __future__ import annotations

import json
import re

from flask import Response, abort, current_app, jsonify, request

from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.dicomweb.qido import (
    DEFAULT_MAX_RESULTS,
    QidoParameterError,
    parse_qido,
    search,
)
from oncopacs.index.query import QueryError, QueryLevel
from oncopacs.web.access import audit_access, requires
from oncopacs.web.dicomweb import bp

DICOM_JSON = "application/dicom+json"
WARN_AGENT = "oncopacs"
_UID = re.compile(r"^[0-9][0-9.]{0,63}$")


@bp.get("/studies")
@requires(Permission.ARCHIVE_READ)
def search_for_studies():
    return _search(QueryLevel.STUDY)


@bp.get("/series")
@requires(Permission.ARCHIVE_READ)
def search_for_all_series():
    return _search(QueryLevel.SERIES)


@bp.get("/studies/<study>/series")
@requires(Permission.ARCHIVE_READ)
def search_for_series(study: str):
    return _search(QueryLevel.SERIES, StudyInstanceUID=study)


@bp.get("/instances")
@requires(Permission.ARCHIVE_READ)
def search_for_all_instances():
    return _search(QueryLevel.IMAGE)


@bp.get("/studies/<study>/instances")
@requires(Permission.ARCHIVE_READ)
def search_for_study_instances(study: str):
    return _search(QueryLevel.IMAGE, StudyInstanceUID=study)


@bp.get("/studies/<study>/series/<series>/instances")
@requires(Permission.ARCHIVE_READ)
def search_for_instances(study: str, series: str):
    return _search(QueryLevel.IMAGE, StudyInstanceUID=study, SeriesInstanceUID=series)


def check_path_uids(**uids: str) -> None:
    """400 when a UID of the URL path is not digits and dots (at most 64 characters)."""
    for name, uid in uids.items():
        if not _UID.match(uid):
            abort(400, description=f"{name} {uid!r} in the URL is not a DICOM UID")


def dicomweb_base_url() -> str:
    """The absolute URL of this server's DICOMweb root (for RetrieveURL and BulkDataURI)."""
    return request.url_root.rstrip("/") + (bp.url_prefix or "")


def max_results() -> int:
    """The most matches one response carries: the page (``QIDO_MAX_RESULTS``, default 1000), never more than the
    archive's query limit that C-FIND answers by too (``find_limit``, ONCOPACS_FIND_LIMIT; 0: no limit)."""
    page = int(current_app.config.get("QIDO_MAX_RESULTS", DEFAULT_MAX_RESULTS))
    settings = current_app.extensions.get("oncopacs.settings")
    limit = settings.find_limit if settings is not None else 0
    return min(page, limit) if limit else page


def _search(level: QueryLevel, **path_uids: str) -> Response:
    check_path_uids(**path_uids)
    try:
        query = parse_qido(level, request.args.items(multi=True), path_uids)
        archive = current_app.extensions["oncopacs.archive"]
        with archive.index.read_connection() as connection:
            page = search(connection, query, dicomweb_base_url(), max_results())
    except QidoParameterError as exc:
        return _bad_parameter(exc.parameter, str(exc))
    except QueryError as exc:
        return _bad_parameter("", str(exc))
    audit_access(AuditAction.QUERY, patient_ids=page.patient_ids, study_uids=page.study_uids)
    response = Response(json.dumps(page.results), status=200, mimetype=DICOM_JSON)
    if page.truncated:
        _warn(response, "The number of results exceeded the maximum supported by the server. "
                        "Additional results can be requested.")
    if query.fuzzy_matching:
        _warn(response, "The fuzzymatching parameter is not supported. Only literal matching has been performed.")
    if query.ignored_fields:
        _warn(response, f"includefield {', '.join(query.ignored_fields)} is not supported and was ignored.")
    return response


def _warn(response: Response, text: str) -> None:
    response.headers.add("Warning", f'299 {WARN_AGENT} "{text}"')


def _bad_parameter(parameter: str, detail: str) -> Response:
    response = jsonify(error="Bad Request", detail=detail, parameter=parameter, status=400)
    response.status_code = 400
    return response
