"""A browser opening any page without a session lands on the sign-in form, whatever its Accept header; machines
(``/api``, ``/dicom-web``) keep their 401 JSON. Every GET route of the URL map is walked, so new pages are covered."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from oncopacs.auth.roles import Role
from oncopacs.web.auth import MACHINE_PREFIXES
from tests.web.conftest import TEST_PASSWORD
from tests.web.test_route_security import PUBLIC_ENDPOINTS, dummy_url

CHROMIUM_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
                   "application/signed-exchange;v=b3;q=0.7")
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none"}
#: How browsers open a page: a bookmark or typed address, with and without the fetch metadata (Chromium sends
#: Sec-Fetch-* only to trustworthy origins: HTTPS or loopback, so not to a plain-HTTP hospital host name).
NAVIGATIONS = {
    "chromium": {"Accept": CHROMIUM_ACCEPT, **NAVIGATE},
    "chromium over plain HTTP": {"Accept": CHROMIUM_ACCEPT},
    "firefox": {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", **NAVIGATE},
    "safari": {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    "navigation accepting anything": {"Accept": "*/*", **NAVIGATE},
    "navigation preferring JSON": {"Accept": "application/json", **NAVIGATE},
    "navigation without Accept": dict(NAVIGATE),
}
#: Page addresses beyond the routes' own (Dash serves every path under its base from one catch-all rule).
PAGES = ("/", "/studies?q=ONCO&modality=CT", "/dashboards", "/dashboards/", "/dashboards/board",
         "/dashboards/board/", "/dashboards/plan/1.2.826.0.1.3680043.10.543.1",
         "/dashboards/pet/1.2.826.0.1.3680043.10.543.1", "/dashboards/review/1.2.826.0.1.3680043.10.543.1",
         "/dashboards/response/ONCO-RESP-001", "/dashboards/response/ONCO%201", "/dashboards/no-such-page")


def next_of(location: str) -> str:
    """The page a sign-in form at ``location`` (``/login?next=...``) returns to; "" when it is not one."""
    parts = urlsplit(location)
    return parse_qs(parts.query).get("next", [""])[0] if parts.path == "/login" else ""


def page_urls(app: Flask) -> list[str]:
    """Every GET route that is neither public nor for machines, plus :data:`PAGES`."""
    routed = [dummy_url(rule) for rule in app.url_map.iter_rules()
              if "GET" in rule.methods and rule.endpoint not in PUBLIC_ENDPOINTS]
    return sorted({*PAGES, *(url for url in routed if not url.startswith(MACHINE_PREFIXES))})


@pytest.mark.parametrize("browser", sorted(NAVIGATIONS))
def test_every_page_sends_a_browser_without_a_session_to_the_login_form(sqlite_web_app: Flask, browser: str):
    client = sqlite_web_app.test_client()
    wrong = []
    urls = page_urls(sqlite_web_app)
    assert len(urls) > len(PAGES) and any(u.startswith("/dashboards/plan/") for u in urls)
    for url in urls:
        reply = client.get(url, headers=NAVIGATIONS[browser])
        if reply.status_code != 302 or next_of(reply.headers["Location"]) != url:
            wrong.append(f"{url} -> {reply.status_code} {reply.headers.get('Location')}")
    assert wrong == []


@pytest.mark.parametrize("url", ["/dashboards/response/ONCO%201", "/dashboards/response/A%3FB%23C%25D",
                                 "/studies?q=ONCO&modality=CT", "/dashboards/board",
                                 "/dashboards/plan/1.2.826.0.1.3680043.10.543.1"])
def test_signing_in_returns_to_the_page_as_it_was_asked_for(sqlite_web_app: Flask, url: str):
    sqlite_web_app.extensions["oncopacs.users"].add_user("nurse", Role.TUMOUR_BOARD, TEST_PASSWORD)
    client = sqlite_web_app.test_client()
    login = client.get(url, headers=NAVIGATIONS["chromium"]).headers["Location"]
    assert login.startswith("/login?next=")
    form = client.get(login).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    signed_in = client.post(login, data={"csrf_token": token, "username": "nurse", "password": TEST_PASSWORD})
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == url


@pytest.mark.parametrize("browser", sorted(NAVIGATIONS))
def test_machine_routes_answer_401_json_even_to_a_navigation(sqlite_web_app: Flask, browser: str):
    client = sqlite_web_app.test_client()
    for url in ("/api/me", "/api/studies", "/dicom-web/studies", "/api/reports/1/pdf"):
        reply = client.get(url, headers=NAVIGATIONS[browser])
        assert reply.status_code == 401, url
        assert reply.get_json()["status"] == 401 and "Basic" in reply.headers["WWW-Authenticate"]


def test_a_script_without_a_session_gets_401_not_the_form(sqlite_web_app: Flask):
    """A page's own fetch (Sec-Fetch-Mode: cors) or a script asking for anything is no person: no redirect."""
    client = sqlite_web_app.test_client()
    for headers in ({"Accept": "*/*"}, {"Accept": "application/json", "Sec-Fetch-Mode": "cors"}, {}):
        assert client.get("/dashboards/board/_dash-layout", headers=headers).status_code == 401
