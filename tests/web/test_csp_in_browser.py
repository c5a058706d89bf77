"""The Content-Security-Policy breaks no page: headless Chromium reports no violation on any page or dashboard.

Chromium writes every refused script, style or image to its console ("Refused to …", "… violates the
following Content Security Policy directive …"); the test reads that console after each page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask

from oncopacs.auth.roles import Role
from oncopacs.web.access import public
from tests.dashboards.conftest import study_uids
from tests.e2e.browsing import chromium, demo_site, submit_sign_in, wait_for

pytestmark = pytest.mark.slow  # the demo load and a browser start


def _add_probe(app: Flask) -> None:
    """A page with an inline script of its own: the policy must refuse it (so the check below can fail)."""
    app.add_url_rule("/csp-probe", "csp_probe", public(lambda: "<html><script>document.title='x'</script></html>"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    with demo_site(tmp_path_factory.mktemp("csp"), {"oncologist": Role.ONCOLOGIST}, prepare=_add_probe) as served:
        yield served


@pytest.fixture(scope="module")
def browser(site):
    with chromium(1400, 1100, console=True) as driver:
        yield driver


def csp_violations(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]]


def test_no_page_or_dashboard_breaks_the_policy(browser, site):
    url, app = site
    browser.get(f"{url}/login?next=/")
    submit_sign_in(browser, "oncologist")
    wait_for(browser, "section.patient")
    assert csp_violations(browser) == []

    demo, four_d = study_uids(app, "ONCO-DEMO-001"), study_uids(app, "ONCO-4D-001")
    pages = {
        f"/dashboards/plan/{demo['Proton therapy planning']}": ".js-plotly-plot .main-svg",
        f"/dashboards/pet/{demo['FDG PET-CT staging']}": ".js-plotly-plot .main-svg",
        f"/dashboards/review/{four_d['Synthetic 4D CT']}": ".js-plotly-plot .main-svg",
        "/dashboards/response/ONCO-RESP-001": "td.percist",
        "/dashboards/board/": ".cohort .ag-row",  # an AG Grid row
    }
    for path, drawn in pages.items():
        browser.get(url + path)
        wait_for(browser, drawn)  # the renderer ran (its inline script is allowed by hash) and drew
        time.sleep(2)  # let the callbacks' images and styles arrive
        assert csp_violations(browser) == [], path


def test_a_refused_inline_script_would_be_seen(browser, site):
    """The check above can fail: a page with an inline script of its own is reported by Chromium."""
    browser.get(f"{site[0]}/csp-probe")
    time.sleep(1)
    assert any("script-src" in message for message in csp_violations(browser))
