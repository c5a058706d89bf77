"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

A threaded werkzeug server of ``create_app`` over an archive with the demo loaded; the browser signs
in through /login, opens the demo patient's plan review and checks on the screenshot that contours
(the RTSTRUCT's ROI display colours) and dose (a saturated colourwash) are drawn, then opens the
response page and the tumour board, finds ONCO-RESP-001's PERCIST category and RT course on the board and follows
its link to the response timeline with the RT course drawn.
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP refusals, failed loads
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
    cells = [e.get_attribute("textContent") for e in browser.find_elements("css selector", "td.percist")]
    assert cells == ["baseline", "PMR", "CMR"]


def test_board_leads_to_the_response_timeline_with_the_rt_course(browser, site):
    """The tumour board's journey: the board row (course, response, next step), then the patient's timeline."""
    browser.get(f"{site[0]}/dashboards/board/")
    _wait_for_text(browser, ".cohort .ag-row", "ONCO-RESP-001")
    row = next(r for r in browser.find_elements("css selector", ".cohort .ag-center-cols-container .ag-row")
               if "ONCO-RESP-001" in r.text)
    cell = {c.get_attribute("col-id"): c for c in row.find_elements("css selector", ".ag-cell")}
    assert cell["response"].text == "CMR on 6 May 2024"
    assert cell["prescription"].text == "60 Gy / 30 fx" and cell["rt_dates"].text == "19 Feb – 2 Apr 2024"
    assert "Non-small cell lung cancer" in cell["diagnosis"].text
    cell["pages"].find_element("link text", "Response").click()
    _wait_for_text(browser, "#course-dates", "19 Feb – 2 Apr 2024")
    assert browser.current_url.endswith("/dashboards/response/ONCO-RESP-001")
    _wait_for_text(browser, "#timeline", "RT PROTON_PTV: 60 Gy in 30 fractions")  # the course on the timeline
    band = browser.find_elements("css selector", "#timeline .shapelayer path")
    assert band, "no RT course band drawn on the timeline"


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
    browser.get(f"{url}/login")  # leave any page of an earlier test: its late answers would set the cookie again
    browser.delete_all_cookies()
    browser.get(f"{url}/dashboards/board")
    assert "/login?next=" in browser.current_url, browser.current_url
    assert '"status": 401' not in browser.page_source and '"status":401' not in browser.page_source
    browser.find_element("name", "username").send_keys("oncologist")
    browser.find_element("name", "password").send_keys(PASSWORD)
    browser.find_element("css selector", "button[type=submit]").click()
    _wait_for_text(browser, ".cohort", "ONCO-RESP-001")
    assert browser.current_url.rstrip("/").endswith("/dashboards/board")


def _sign_in(driver, password: str = PASSWORD) -> None:
    driver.find_element("name", "username").send_keys("oncologist")
    driver.find_element("name", "password").send_keys(password)
    driver.find_element("css selector", "button[type=submit]").click()


def _settle(driver) -> None:
    """Wait for the page to finish (Dash titles it "Updating..." while callbacks run): a late answer to the page's
    own requests would otherwise put its session cookie back after a delete_all_cookies()."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete" and not d.title.startswith("Updating"),
        message="the page did not finish loading")


def _page_urls(app) -> dict[str, str]:
    planning = study_uids(app, "ONCO-DEMO-001")
    four_d = study_uids(app, "ONCO-4D-001")["Synthetic 4D CT"]
    return {
        "study browser": "/", "search": "/studies?q=ONCO-DEMO&modality=CT",
        "plan": f"/dashboards/plan/{planning['Proton therapy planning']}",
        "pet": f"/dashboards/pet/{planning['FDG PET-CT staging']}", "review": f"/dashboards/review/{four_d}",
        "response": "/dashboards/response/ONCO-RESP-001", "board": "/dashboards/board/",
    }


def test_every_page_opened_without_a_session_signs_in_and_comes_back(browser, site):
    """Chromium's own navigation to each page with no session: the sign-in form, then that very page."""
    url, app = site
    from selenium.webdriver.support.ui import WebDriverWait

    for name, path in {**_page_urls(app), "dashboards root": "/dashboards/"}.items():
        _settle(browser)
        browser.get(url + "/login")  # leave the page first: its late callbacks or cine timer set the cookie again
        browser.delete_all_cookies()
        browser.get(url + path)
        assert browser.current_url.startswith(f"{url}/login?next="), (name, browser.current_url)
        assert '"status": 401' not in browser.page_source and '"status":401' not in browser.page_source
        _sign_in(browser)
        landing = "/studies" if name == "dashboards root" else path
        WebDriverWait(browser, WAIT_S).until(lambda d, landing=landing: d.current_url == url + landing,
                                             message=f"{name}: signed in at {browser.current_url}, not {landing}")
        WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements("css selector", "#shell-user"),
                                             message=f"{name}: no page header after signing in")


def test_the_shell_frames_every_dashboard_with_user_patient_and_navigation(browser, site):
    url, app = site
    from selenium.webdriver.support.ui import WebDriverWait

    patients = {"plan": "PHANTOM, Proton", "pet": "PHANTOM, Proton", "review": "PHANTOM, FourD",
                "response": "PHANTOM, Responder"}
    browser.get_log("browser")  # what earlier tests left
    for name, path in _page_urls(app).items():
        browser.get(url + path)
        _wait_for_text(browser, "#shell-user", "oncologist")
        assert browser.find_element("css selector", "#shell-role").text.lower() == "oncologist"
        assert browser.find_element("css selector", "#shell-sign-out button").text == "Sign out"
        if name in patients:
            _wait_for_text(browser, "#shell-patient-name", patients[name])
            born = browser.find_element("css selector", "#shell-patient-born").text
            assert born.endswith(" y)") and not born[:4].isdigit(), born  # "12 Mar 1958 (66 y)", not 19580312
            WebDriverWait(browser, WAIT_S).until(
                lambda d, path=path: d.find_elements("css selector", f'#shell-nav a[href="{path}"]'),
                message=f"{name}: no navigation link to the page itself")
        problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert problems == [], (name, problems)  # no CSP refusal, no failed load


def test_the_navigation_offers_plan_review_only_where_a_plan_is(browser, site):
    url, app = site
    responder = study_uids(app, "ONCO-RESP-001")
    browser.get(f"{url}/dashboards/response/ONCO-RESP-001")
    _wait_for_text(browser, "#shell-nav", "PET-CT")
    hrefs = [a.get_attribute("href") for a in browser.find_elements("css selector", "#shell-nav a")]
    fdg = [uid for description, uid in responder.items() if description.startswith("FDG")]
    assert len(fdg) == 3
    for uid in fdg:  # FDG PET-CT with an RTSTRUCT for the statistics, but no plan
        assert f"{url}/dashboards/pet/{uid}" in hrefs and f"{url}/dashboards/plan/{uid}" not in hrefs
    browser.find_element("css selector", "#shell-home").click()
    _wait_for_text(browser, "section.patient", "PHANTOM, Responder")
    assert browser.current_url == f"{url}/"


def test_sign_out_from_a_dashboard_ends_the_session(browser, site):
    url, app = site
    browser.get(url + _page_urls(app)["board"])
    _wait_for_text(browser, "#shell-user", "oncologist")
    browser.find_element("css selector", "#shell-sign-out button").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda d: d.current_url == f"{url}/login", message="sign-out went nowhere")
    browser.get(url + "/dashboards/board/")
    assert browser.current_url.startswith(f"{url}/login?next=")
    _sign_in(browser)  # leave the module's browser signed in
    _wait_for_text(browser, "#shell-user", "oncologist")
    assert browser.current_url == f"{url}/dashboards/board/"
