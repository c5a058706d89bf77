"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

A threaded werkzeug server of ``create_app`` over an archive with the demo loaded; the browser signs
in through /login, opens the demo patient's plan review and checks on the screenshot that contours
(the RTSTRUCT's ROI display colours) and dose (a saturated colourwash) are drawn, then opens the
response page and the tumour board and finds ONCO-RESP-001's PERCIST category.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oncopacs.auth.roles import Role
from oncopacs.cli.demo import analyse_demo, load_demo
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import require
from tests.dashboards.conftest import study_uids
from tests.web.conftest import serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery"
WAIT_S = 30

pytestmark = pytest.mark.slow  # about 25 s: the demo load and a browser start


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    folder = tmp_path_factory.mktemp("e2e")
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key="e2e-secret")
    with open_platform(settings) as platform:  # as `oncopacs demo` runs it: rules first, then the data
        load_demo(platform.archive)
        analyse_demo(platform)
        app = create_app(platform)
        app.extensions["oncopacs.users"].add_user("oncologist", Role.ONCOLOGIST, PASSWORD)
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
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    url = site[0]
    driver.get(f"{url}/login?next=/dashboards/response/ONCO-RESP-001")
    driver.find_element("name", "username").send_keys("oncologist")
    driver.find_element("name", "password").send_keys(PASSWORD)
    driver.find_element("css selector", "button[type=submit]").click()
    yield driver
    driver.quit()


def _wait_for_text(driver, css: str, text: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: any(text in e.text for e in d.find_elements("css selector", css)),
        message=f"no {css} with {text!r}")


def test_sign_in_leads_back_to_the_response_page(browser, site):
    _wait_for_text(browser, "td.percist", "CMR")
    assert browser.current_url.endswith("/dashboards/response/ONCO-RESP-001")
    cells = [e.text for e in browser.find_elements("css selector", "td.percist")]
    assert cells == ["baseline", "PMR", "CMR"]


def test_board_shows_the_demo_patients_category(browser, site):
    browser.get(f"{site[0]}/dashboards/board/")
    _wait_for_text(browser, "table.cohort", "ONCO-RESP-001")
    row = next(r for r in browser.find_elements("css selector", "table.cohort tbody tr") if "ONCO-RESP-001" in r.text)
    assert row.find_element("css selector", "td.percist").text == "CMR"


def _roi_colours(app, study_uid: str) -> list[tuple[int, int, int]]:
    from oncopacs.index.oncology import summarize_study
    from rt.structures import read_structure_set

    archive = app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        summary = summarize_study(session, study_uid)
        structure = read_structure_set(archive.read_instance(summary.structure_sets[0].sop_instance_uid))
    return [tuple(r.colour) for r in structure.rois if r.colour and not r.is_empty]


def _pixels_near(image: np.ndarray, colour, tolerance: int = 12) -> int:
    return int((np.abs(image.astype(int) - np.array(colour)).max(axis=2) <= tolerance).sum())


def test_plan_review_draws_contours_and_dose(browser, site):
    url, app = site
    planning = study_uids(app, "ONCO-DEMO-001")["Proton therapy planning"]
    browser.get(f"{url}/dashboards/plan/{planning}")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements("css selector", ".js-plotly-plot .main-svg"),
                                         message="the plan page drew no figure")
    import time

    time.sleep(3)  # let the slices arrive and paint
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"))
    contour_pixels = {c: _pixels_near(shot, c) for c in _roi_colours(app, planning)}
    assert sum(n >= 20 for n in contour_pixels.values()) >= 1, f"no ROI colour drawn: {contour_pixels}"
    spread = shot.max(axis=2).astype(int) - shot.min(axis=2).astype(int)
    near_roi = np.zeros(spread.shape, dtype=bool)
    for colour in contour_pixels:
        near_roi |= np.abs(shot.astype(int) - np.array(colour)).max(axis=2) <= 40
    assert int(((spread > 120) & ~near_roi).sum()) > 2000, "no saturated dose colourwash on the screenshot"


def test_a_bookmark_opened_without_a_session_signs_in_and_comes_back(browser, site):
    """Chromium's own navigation headers, no session: the login page, never a JSON 401; then the bookmark."""
    url = site[0]
    browser.delete_all_cookies()
    browser.get(f"{url}/dashboards/board")
    assert "/login?next=" in browser.current_url, browser.current_url
    assert '"status": 401' not in browser.page_source and '"status":401' not in browser.page_source
    browser.find_element("name", "username").send_keys("oncologist")
    browser.find_element("name", "password").send_keys(PASSWORD)
    browser.find_element("css selector", "button[type=submit]").click()
    _wait_for_text(browser, "table.cohort", "ONCO-RESP-001")
    assert browser.current_url.rstrip("/").endswith("/dashboards/board")
