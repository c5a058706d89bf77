"""Numeric parameters on QIDO-RS, WADO-RS and the JSON API: bad values are a 4xx with a JSON reason, never a 500.

Negative, fractional, non-numeric, huge (past 64 bits, past Python's 4300-digit ``int`` limit),
non-finite and non-ASCII digits ("²" passes ``str.isdigit`` and fails ``int``) go into every
page parameter, numeric matching key, frame number, rendering parameter and row id; a 400 names
the parameter. A hypothesis search adds arbitrary text, integers and floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oncopacs.auth.roles import Role
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.factories import small_ct_series
from tests.web.conftest import TEST_PASSWORD, basic_auth

HOSTILE = (
    "-1", "0", "abc", "1.5", "1e3", "99999999999999999999", "-99999999999999999999", "9" * 5000, "²", "١٢", "٣",
    "nan", "inf", "-inf", "1e999", " ", "+5", "0x10", "1_000", "-0", "\x00", "3.0", "²,5", "9" * 5000 + ",5",
    "5,-1", "0,0", "nan,5", "1e999,5", "5,inf", "0,0,SIGMOID", "5,5,nope", "1,2,3,4",
)
#: (route, parameter): {study}, {series}, {instance} are filled in; a parameter in braces goes in the path.
QUERY_PARAMETERS = [
    *((route, name) for name in ("limit", "offset") for route in (
        "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances", "/dicom-web/studies/{study}/series",
        "/dicom-web/studies/{study}/series/{series}/instances", "/api/patients", "/api/studies", "/api/jobs",
        "/api/audit", "/api/reports", "/api/metrics/search?structure=Rectum&metric=Mean[Gy]")),
    *(("/dicom-web/instances", key) for key in ("InstanceNumber", "SeriesNumber", "StudyDate", "StudyTime")),
    *(("/dicom-web/series", key) for key in ("SeriesNumber", "NumberOfSeriesRelatedInstances")),
    *(("{instance_url}/rendered", name) for name in ("quality", "viewport", "window")),
    *(("{instance_url}/frames/1/rendered", name) for name in ("quality", "viewport", "window")),
    ("{instance_url}/thumbnail", "viewport"), ("/dicom-web/studies/{study}/thumbnail", "viewport"),
    *(("/api/metrics/search?structure=Rectum&metric=Mean[Gy]", name) for name in ("gt", "lt", "between")),
]
PATH_PARAMETERS = [
    "{instance_url}/frames/{value}", "{instance_url}/frames/{value}/rendered",
    "{instance_url}/frames/{value}/thumbnail", "{instance_url}/bulkdata/7FE00010/{value}/00100010",
    "/api/jobs/{value}", "/api/reports/{value}", "/api/reports/{value}/pdf",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, dict[str, str], dict[str, str]]]:
    """A client of the app over a platform holding one CT slice, admin credentials, and the slice's URL parts."""
    folder: Path = tmp_path_factory.mktemp("numeric")
    with open_platform(Settings(data_dir=folder / "data", dicom_port=0, secret_key="numeric")) as platform:
        dataset = small_ct_series(1, prefix="NUM")[0]
        assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
        app: Flask = create_app(platform)
        app.config["TESTING"] = True
        platform.users.add_user("numeric-admin", Role.ADMIN, TEST_PASSWORD)
        parts = {"study": dataset.StudyInstanceUID, "series": dataset.SeriesInstanceUID}
        parts["instance_url"] = (f"/dicom-web/studies/{parts['study']}/series/{parts['series']}"
                                 f"/instances/{dataset.SOPInstanceUID}")
        yield app.test_client(), basic_auth("numeric-admin"), parts


def check_query(served, route: str, name: str, value: str) -> None:
    client, auth, parts = served
    separator = "&" if "?" in route else "?"
    url = f"{route.format(**parts)}{separator}{name}={quote(value, safe='')}"
    reply = client.get(url, headers=auth)
    assert reply.status_code < 500, f"{url[:200]} -> {reply.status_code}"
    if reply.status_code >= 400:
        assert reply.is_json, f"{url[:200]} -> {reply.status_code} without a JSON body"
    if reply.status_code == 400:
        assert name.lower() in reply.get_json()["detail"].lower(), f"{url[:200]}: {reply.get_json()['detail']}"


def check_path(served, route: str, value: str) -> None:
    client, auth, parts = served
    url = route.format(**parts, value=quote(value, safe=""))
    reply = client.get(url, headers=auth)
    assert reply.status_code < 500, f"{url[:200]} -> {reply.status_code}"
    if reply.status_code >= 400:
        assert reply.is_json, f"{url[:200]} -> {reply.status_code} without a JSON body"


@pytest.mark.parametrize(("route", "name"), QUERY_PARAMETERS)
def test_hostile_numbers_in_query_parameters_are_a_4xx_naming_the_parameter(served, route: str, name: str) -> None:
    for value in HOSTILE:
        check_query(served, route, name, value)


@pytest.mark.parametrize("route", PATH_PARAMETERS)
def test_hostile_numbers_in_paths_are_a_4xx(served, route: str) -> None:
    for value in HOSTILE:
        if value.strip() and "\x00" not in value:  # an empty path segment is another route
            check_path(served, route, value)


def test_a_row_id_past_32_bits_is_a_404_not_an_sql_overflow(served) -> None:
    client, auth, _ = served
    for url in ("/api/jobs/2147483648", "/api/reports/99999999999999999999", "/api/reports/2147483648/pdf"):
        reply = client.get(url, headers=auth)
        assert reply.status_code == 404 and reply.is_json, url
    assert client.delete("/api/users/numeric-admin/tokens/99999999999999999999", headers=auth).status_code == 404


def test_a_frame_number_in_other_digits_is_a_400_naming_the_frame(served) -> None:
    client, auth, parts = served
    for suffix in ("/frames/%C2%B2", "/frames/1,%C2%B2", "/frames/%C2%B2/rendered", "/frames/%D9%A3/thumbnail"):
        reply = client.get(parts["instance_url"] + suffix, headers=auth)
        assert reply.status_code == 400 and "frame" in reply.get_json()["detail"], suffix


NUMBERS_AND_TEXT = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=24),
    st.lists(st.integers(min_value=-5, max_value=10**12).map(str), min_size=1, max_size=4).map(",".join),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parameter=st.sampled_from(QUERY_PARAMETERS), value=NUMBERS_AND_TEXT)
def test_any_value_of_a_numeric_query_parameter_is_answered_without_a_500(served, parameter, value: str) -> None:
    check_query(served, *parameter, value)


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(PATH_PARAMETERS), value=NUMBERS_AND_TEXT.filter(lambda v: v.strip() and "/" not in v))
def test_any_value_in_a_numeric_path_segment_is_answered_without_a_500(served, route: str, value: str) -> None:
    check_path(served, route, value)
