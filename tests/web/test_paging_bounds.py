"""A page offset or limit too large for SQL is a 400 naming the parameter, on every paged route (never a 500)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from oncopacs.auth.roles import Role

HUGE = "99999999999999999999"  # past a signed 64-bit integer, which SQLite's and PostgreSQL's OFFSET take
PAGED = [
    "/api/patients", "/api/studies", "/api/jobs", "/api/audit", "/api/reports",
    "/api/metrics/search?structure=Rectum&metric=Mean[Gy]",
    "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances", "/dicom-web/studies/1.2.3/series",
]


@pytest.mark.parametrize("route", PAGED)
@pytest.mark.parametrize("parameter", ["offset", "limit"])
def test_a_huge_page_number_is_a_400_naming_it(sqlite_web_app: Flask, sqlite_headers_for: Callable, route: str,
                                               parameter: str):
    separator = "&" if "?" in route else "?"
    reply = sqlite_web_app.test_client().get(f"{route}{separator}{parameter}={HUGE}",
                                              headers=sqlite_headers_for(Role.ADMIN))
    assert reply.status_code == 400, reply.text
    assert reply.is_json and parameter in reply.get_json()["detail"]
