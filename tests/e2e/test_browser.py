"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

A threaded werkzeug server of ``create_app`` over an archive with the demo loaded; the browser signs
in through /login, opens the demo patient's plan review and checks on the screenshot that contours
(the RTSTRUCT's ROI display colours) and dose (a saturated colourwash) are drawn, then opens the
response page and the tumour board, finds ONCO-RESP-001's PERCIST category and RT course on the board and follows
its link to the response timeline with the RT course drawn.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from oncopacs.auth.roles import Role
from tests.dashboards.conftest import study_uids
from tests.e2e.browsing import chromium, demo_site, settle, submit_sign_in, wait, wait_for, wait_for_text

pytestmark = pytest.mark.slow  # about 25 s: the demo load and a browser start


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    with demo_site(tmp_path_factory.mktemp("e2e"), {"oncologist": Role.ONCOLOGIST}) as served:
        yield served


@pytest.fixture(scope="module")
def browser(site):
    with chromium(1400, 1100, console=True) as driver:
        driver.get(f"{site[0]}/login?next=/dashboards/response/ONCO-RESP-001")
        submit_sign_in(driver, "oncologist")
        yield driver


def test_sign_in_leads_back_to_the_response_page(browser, site):
    wait_for_text(browser, "td.percist", "CMR")
    assert browser.current_url.endswith("/dashboards/response/ONCO-RESP-001")
    cells = [e.get_attribute("textContent") for e in browser.find_elements("css selector", "td.percist")]
    assert cells == ["baseline", "PMR", "CMR"]


def test_board_leads_to_the_response_timeline_with_the_rt_course(browser, site):
    """The tumour board's journey: the board row (course, response, next step), then the patient's timeline."""
    browser.get(f"{site[0]}/dashboards/board/")
    cells = wait(browser, lambda d: _board_row(d, "ONCO-RESP-001"), "no board row for ONCO-RESP-001")
    assert cells["response"] == "CMR on 6 May 2024"
    assert cells["prescription"] == "60 Gy(RBE) / 30 fx" and cells["rt_dates"] == "19 Feb – 2 Apr 2024"
    assert "Non-small cell lung cancer" in cells["diagnosis"]
    wait(browser, lambda d: _follow_board_link(d, "ONCO-RESP-001", "Response"), "no Response link on the board row")
    wait_for_text(browser, "#course-dates", "19 Feb – 2 Apr 2024")
    assert browser.current_url.endswith("/dashboards/response/ONCO-RESP-001")
    wait_for_text(browser, "#timeline", "RT PROTON_PTV: 60 Gy(RBE) in 30 fractions")  # the course on the timeline
    band = browser.find_elements("css selector", "#timeline .shapelayer path")
    assert band, "no RT course band drawn on the timeline"


def _board_row(driver, patient_id: str) -> dict[str, str] | None:
    """The text of each cell of the board's row for ``patient_id`` (by column id), once the grid shows it."""
    for row in driver.find_elements("css selector", ".cohort .ag-center-cols-container .ag-row"):
        if patient_id in row.text:
            return {c.get_attribute("col-id"): c.text for c in row.find_elements("css selector", ".ag-cell")}
    return None


def _follow_board_link(driver, patient_id: str, link: str) -> bool:
    for row in driver.find_elements("css selector", ".cohort .ag-center-cols-container .ag-row"):
        if patient_id in row.text:
            row.find_element("css selector", '.ag-cell[col-id="pages"]').find_element("link text", link).click()
            return True
    return False


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
    wait_for(browser, ".js-plotly-plot .main-svg")  # the plan page drew a figure
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
    submit_sign_in(browser, "oncologist")
    wait_for_text(browser, ".cohort", "ONCO-RESP-001")
    assert browser.current_url.rstrip("/").endswith("/dashboards/board")


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
    for name, path in {**_page_urls(app), "dashboards root": "/dashboards/"}.items():
        settle(browser)
        browser.get(url + "/login")  # leave the page first: its late callbacks or cine timer set the cookie again
        browser.delete_all_cookies()
        browser.get(url + path)
        assert browser.current_url.startswith(f"{url}/login?next="), (name, browser.current_url)
        assert '"status": 401' not in browser.page_source and '"status":401' not in browser.page_source
        submit_sign_in(browser, "oncologist")
        landing = "/studies" if name == "dashboards root" else path
        wait(browser, lambda d, landing=landing: d.current_url == url + landing,
             f"{name}: signed in at {browser.current_url}, not {landing}")
        wait(browser, lambda d: d.find_elements("css selector", "#shell-user"),
             f"{name}: no page header after signing in")


def test_the_shell_frames_every_dashboard_with_user_patient_and_navigation(browser, site):
    url, app = site
    patients = {"plan": "PHANTOM, Proton", "pet": "PHANTOM, Proton", "review": "PHANTOM, FourD",
                "response": "PHANTOM, Responder"}
    browser.get_log("browser")  # what earlier tests left
    for name, path in _page_urls(app).items():
        browser.get(url + path)
        wait_for_text(browser, "#shell-user", "oncologist")
        assert browser.find_element("css selector", "#shell-role").text.lower() == "oncologist"
        assert browser.find_element("css selector", "#shell-sign-out button").text == "Sign out"
        if name in patients:
            wait_for_text(browser, "#shell-patient-name", patients[name])
            born = browser.find_element("css selector", "#shell-patient-born").text
            assert born.endswith(" y)") and not born[:4].isdigit(), born  # "12 Mar 1958 (66 y)", not 19580312
            wait(browser, lambda d, path=path: d.find_elements("css selector", f'#shell-nav a[href="{path}"]'),
                 f"{name}: no navigation link to the page itself")
        problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert problems == [], (name, problems)  # no CSP refusal, no failed load


def test_the_navigation_offers_plan_review_only_where_a_plan_is(browser, site):
    url, app = site
    responder = study_uids(app, "ONCO-RESP-001")
    browser.get(f"{url}/dashboards/response/ONCO-RESP-001")
    wait_for_text(browser, "#shell-nav", "PET-CT")
    hrefs = [a.get_attribute("href") for a in browser.find_elements("css selector", "#shell-nav a")]
    fdg = [uid for description, uid in responder.items() if description.startswith("FDG")]
    assert len(fdg) == 3
    for uid in fdg:  # FDG PET-CT with an RTSTRUCT for the statistics, but no plan
        assert f"{url}/dashboards/pet/{uid}" in hrefs and f"{url}/dashboards/plan/{uid}" not in hrefs
    browser.find_element("css selector", "#shell-home").click()
    wait_for_text(browser, "section.patient", "PHANTOM, Responder")
    assert browser.current_url == f"{url}/"


def test_sign_out_from_a_dashboard_ends_the_session(browser, site):
    url, app = site
    browser.get(url + _page_urls(app)["board"])
    wait_for_text(browser, "#shell-user", "oncologist")
    browser.find_element("css selector", "#shell-sign-out button").click()
    wait(browser, lambda d: d.current_url == f"{url}/login", "sign-out went nowhere")
    browser.get(url + "/dashboards/board/")
    assert browser.current_url.startswith(f"{url}/login?next=")
    submit_sign_in(browser, "oncologist")  # leave the module's browser signed in
    wait_for_text(browser, "#shell-user", "oncologist")
    assert browser.current_url == f"{url}/dashboards/board/"
