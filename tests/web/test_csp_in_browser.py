"""The Content-Security-Policy breaks no page: headless Chromium reports no violation on any page or dashboard.

Chromium writes every refused script, style or image to its console ("Refused to …", "… violates the
following Content Security Policy directive …"); the test reads that console after each page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oncopacs.auth.roles import Role
from oncopacs.cli.demo import analyse_demo, load_demo
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.access import public
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, require
from tests.dashboards.conftest import study_uids
from tests.web.conftest import serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery"
WAIT_S = 30

pytestmark = pytest.mark.slow  # the demo load and a browser start


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    folder = tmp_path_factory.mktemp("csp")
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key="csp-secret",
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        load_demo(platform.archive)
        analyse_demo(platform)
        app = create_app(platform)
        app.extensions["oncopacs.users"].add_user("oncologist", Role.ONCOLOGIST, PASSWORD)
        # a page with an inline script of its own: the policy must refuse it (the check below can fail)
        app.add_url_rule("/csp-probe", "csp_probe", public(lambda: "<html><script>document.title='x'</script></html>"))
        with serve_app(app) as url:
            yield url, app


@pytest.fixture(scope="module")
def browser(site):
    require(CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian's chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def csp_violations(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]]


def wait_for(driver, css: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements("css selector", css), message=f"no {css}")


def test_no_page_or_dashboard_breaks_the_policy(browser, site):
    url, app = site
    browser.get(f"{url}/login?next=/")
    browser.find_element("name", "username").send_keys("oncologist")
    browser.find_element("name", "password").send_keys(PASSWORD)
    browser.find_element("css selector", "button[type=submit]").click()
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
