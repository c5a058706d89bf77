"""Every path under /dashboards/ is behind the login and the DASHBOARDS_VIEW permission."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from oncopacs.auth.roles import Permission, Role
from oncopacs.web.dashboards import DASHBOARDS_ROOT
from tests.web.conftest import TEST_PASSWORD

from .test_route_security import dummy_url

STUDY_UID = "1.2.826.0.1.3680043.10.543.999.1"


def dashboard_rules(app: Flask):
    return [rule for rule in app.url_map.iter_rules() if rule.rule.startswith(DASHBOARDS_ROOT.rstrip("/"))]


def dashboard_urls(app: Flask) -> list[tuple[str, str]]:
    urls = [(dummy_url(rule), method) for rule in dashboard_rules(app)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return [*urls, ("/dashboards/no-such-page", "GET"), (f"/dashboards/plan/{STUDY_UID}", "GET")]


def test_the_plan_dashboard_and_dash_internals_are_mounted(sqlite_web_app: Flask):
    paths = {rule.rule for rule in dashboard_rules(sqlite_web_app)}
    assert {"/dashboards/", "/dashboards/plan/", "/dashboards/plan/<path:path>", "/dashboards/plan/_dash-layout",
            "/dashboards/plan/_dash-update-component"} <= paths


def test_every_dashboard_view_declares_dashboards_view(sqlite_web_app: Flask):
    for rule in dashboard_rules(sqlite_web_app):
        view = sqlite_web_app.view_functions[rule.endpoint]
        assert getattr(view, "required_permission", None) is Permission.DASHBOARDS_VIEW, rule.rule


def test_unauthenticated_requests_are_refused_everywhere(sqlite_web_app: Flask):
    client = sqlite_web_app.test_client()
    for url, method in dashboard_urls(sqlite_web_app):
        assert client.open(url, method=method).status_code == 401, (method, url)
        page = client.open(url, method=method, headers={"Accept": "text/html"})
        assert page.status_code == 302, (method, url)
        assert page.headers["Location"].startswith("/login?next=")


def test_a_browser_is_sent_to_login_and_back(sqlite_web_app: Flask):
    store = sqlite_web_app.extensions["oncopacs.users"]
    store.add_user("dr-who", Role.ONCOLOGIST, TEST_PASSWORD)
    client = sqlite_web_app.test_client()
    target = f"/dashboards/plan/{STUDY_UID}"
    visit = client.get(target, headers={"Accept": "text/html"})
    assert visit.status_code == 302
    login_url = visit.headers["Location"]
    form = client.get(login_url)
    token = form.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    signed_in = client.post(login_url, data={"username": "dr-who", "password": TEST_PASSWORD, "csrf_token": token})
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == target
    page = client.get(target, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "Plan review" in page.get_data(as_text=True)


def test_a_referrer_is_forbidden_everywhere(
    sqlite_web_app: Flask, sqlite_headers_for: Callable[[Role], dict[str, str]]
):
    client = sqlite_web_app.test_client()
    headers = sqlite_headers_for(Role.REFERRER)
    for url, method in dashboard_urls(sqlite_web_app):
        assert client.open(url, method=method, headers=headers).status_code == 403, (method, url)


@pytest.mark.parametrize("path", ["", "_dash-layout", "_dash-dependencies", STUDY_UID])
def test_an_oncologist_gets_the_pages(sqlite_web_app: Flask, sqlite_headers_for: Callable[[Role], dict[str, str]],
                                      path: str):
    reply = sqlite_web_app.test_client().get(f"/dashboards/plan/{path}", headers=sqlite_headers_for(Role.ONCOLOGIST))
    assert reply.status_code == 200


def test_routes_dash_adds_lazily_are_guarded_too(sqlite_web_app: Flask):
    """A rule added after mounting (as Dash does at its first request) still gets the permission."""
    sqlite_web_app.add_url_rule("/dashboards/plan/_late", "late", lambda: "late")
    assert sqlite_web_app.view_functions["late"].required_permission is Permission.DASHBOARDS_VIEW
