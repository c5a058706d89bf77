"""The web boundary: an error OncoPACS raises on purpose is a JSON 4xx/5xx naming it, never a traceback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from fusion.errors import VolumeError
from oncopacs.auth.roles import Permission, Role
from oncopacs.errors import (
    DicomInputError,
    GeometryError,
    IntegrityError,
    NotFoundError,
    OncopacsError,
    PermissionDeniedError,
    RemoteNodeError,
    StorageError,
)
from oncopacs.index.query import QueryError
from oncopacs.web.access import requires
from rt.errors import MetricError

RAISED = [
    (NotFoundError("study 1.2.3 is not in the archive"), 404),
    (PermissionDeniedError("your role may not approve reports"), 403),
    (DicomInputError("PatientID", "missing", sop_instance_uid="1.2.3.4"), 422),
    (GeometryError("the dose grid is not axis-aligned"), 422),
    (MetricError("'D95' is not a TG-263 metric"), 422),
    (VolumeError("slices are unevenly spaced"), 422),
    (StorageError("the disk is full"), 503),
    (IntegrityError("stored file altered"), 503),
    (RemoteNodeError("the EHR did not answer"), 502),
    (OncopacsError("the report is final already"), 409),
    (QueryError("range '2024-' must have the form A-B, -B or A-"), 400),
]


@pytest.mark.parametrize(("error", "status"), RAISED, ids=[type(e).__name__ for e, _ in RAISED])
def test_expected_errors_are_json_with_their_message(sqlite_web_app: Flask, sqlite_headers_for: Callable,
                                                     error: Exception, status: int):
    def fail():
        raise error

    sqlite_web_app.add_url_rule("/api/test-failure", "test_failure", requires(Permission.ARCHIVE_READ)(fail))
    reply = sqlite_web_app.test_client().get("/api/test-failure", headers=sqlite_headers_for(Role.PHYSICIST))
    assert reply.status_code == status
    detail = str(error) if status < 500 else "the server could not complete the request: "
    assert reply.get_json()["error"] == HTTP_STATUS_CODES[status] and reply.get_json()["status"] == status
    assert reply.get_json()["detail"].startswith(detail)
    if status >= 500:  # the server's own trouble: its message (paths, hosts) stays in the log
        assert str(error) not in reply.text


def test_an_unexpected_error_is_a_generic_500_without_its_text(sqlite_web_app: Flask, sqlite_headers_for: Callable):
    def fail():
        raise KeyError("PatientName Doe^John")  # a bug: its text may hold anything, so it never leaves the server

    sqlite_web_app.add_url_rule("/api/test-bug", "test_bug", requires(Permission.ARCHIVE_READ)(fail))
    reply = sqlite_web_app.test_client().get("/api/test-bug", headers=sqlite_headers_for(Role.PHYSICIST))
    assert reply.status_code == 500 and "Doe" not in reply.text
    assert reply.get_json()["detail"] == "the server could not complete the request"
