"""One browser journey per role on the demo, in headless Chromium (issue 16, item 8).

Physicist: a plan-review bookmark without a session → sign-in → plan page with DVH and goals → its "Make plan
report" button → the report list with the new draft highlighted → its PDF downloaded (the rasterised first page has
the PTV's DVH curve in the PTV's colour) → its Approve button → the report final on the list.
Oncologist: study browser → patient → plan review with contours and the isodose legend. Referrer: the report
list → an approved report's PDF with the patient's name. (The tumour board's journey is in test_browser.py.)
Each journey saves screenshots under ``test-artifacts/journeys/<role>/`` at the repository root, which CI keeps.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from oncopacs.auth.roles import Principal, Role
from tests.dashboards.conftest import study_uids
from tests.e2e.browsing import chromium, demo_site, settle, submit_sign_in, wait
from tests.e2e.test_browser import _pixels_near, _roi_colours

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "journeys"
PATIENT = "ONCO-DEMO-001"
PATIENT_NAME = "PHANTOM, Proton"
DPI = 60  # pdftoppm -r

pytestmark = pytest.mark.slow  # the demo load and a browser start


def _approved_plan_report(app: Flask) -> None:
    service = app.extensions["oncopacs.reports"].service
    draft = service.make("plan", _planning(app), "physicist")
    service.approve(draft.id, Principal("physicist", Role.PHYSICIST, "session"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    """The demo behind a threaded server, one user per role, and one approved plan report for the referrer."""
    users = {role.value: role for role in (Role.PHYSICIST, Role.ONCOLOGIST, Role.REFERRER)}
    with demo_site(tmp_path_factory.mktemp("journeys"), users, prepare=_approved_plan_report) as served:
        yield served


@pytest.fixture(scope="module")
def browser(site):
    with chromium(1600, 1000) as driver:
        yield driver


def _planning(app) -> str:
    return study_uids(app, PATIENT)["Proton therapy planning"]


def _sign_in(driver, url: str, role: Role, path: str) -> None:
    """Open ``path`` with no session: the sign-in form (never JSON), then back at ``path`` as ``role``."""
    if driver.current_url.startswith(url):
        settle(driver)  # a late answer of the last page would put its session cookie back
        driver.get(url + "/login")  # so leave it (its timers too) before the cookies go
    driver.delete_all_cookies()
    driver.get(url + path)
    assert driver.current_url.startswith(f"{url}/login?next="), driver.current_url
    _assert_no_json(driver)
    submit_sign_in(driver, role.value)
    wait(driver, lambda d: d.current_url == url + path, f"{role.value}: signed in at {driver.current_url}")


def _assert_no_json(driver) -> None:
    body = driver.find_element("tag name", "body").text.strip()
    assert not body.startswith(("{", "[")), f"raw JSON on screen: {body[:120]!r}"


def _shot(driver, role: Role, name: str) -> np.ndarray:
    """Save the window as ``<role>/<name>.png``; its RGB pixels."""
    folder = ARTIFACTS / role.value
    folder.mkdir(parents=True, exist_ok=True)
    png = driver.get_screenshot_as_png()
    (folder / f"{name}.png").write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _fetch(driver, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, str, bytes]:
    """What the page's own ``fetch`` gets (its session, same origin): status, content type, body."""
    result = driver.execute_async_script("""
        const [path, method, body, done] = arguments;
        const init = {method, credentials: 'same-origin', headers: {'Accept': 'application/json, application/pdf'}};
        if (body !== null) { init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json'; }
        fetch(path, init).then(async r => {
            const bytes = new Uint8Array(await r.arrayBuffer());
            let text = ''; for (let i = 0; i < bytes.length; i += 8192)
                text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
            done([r.status, r.headers.get('Content-Type') || '', btoa(text)]);
        }).catch(e => done([0, String(e), '']));""", path, method, body)
    return int(result[0]), result[1], base64.b64decode(result[2])


def _plan_page(driver) -> None:
    for plane in ("axial", "coronal", "sagittal"):
        wait(driver, lambda d, p=plane: d.find_elements("css selector", f"#{p}-graph .imagelayer image"),
              f"the {plane} view shows no image")
    wait(driver, lambda d: d.find_elements("css selector", "#isodose-legend-list li"), "no isodose legend")


def _rgb(css: str) -> tuple[int, int, int]:
    numbers = re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", css)
    assert numbers, f"not a CSS rgb() colour: {css!r}"
    r, g, b = (int(n) for n in numbers.groups())
    return r, g, b


def _first_page(pdf: bytes, folder: Path, keep: Path) -> np.ndarray:
    """Page 1 of ``pdf`` rasterised at 60 dpi (``pdftoppm``), kept as ``keep``; its RGB pixels."""
    (folder / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", str(DPI), "-png", "-f", "1", "-l", "1", str(folder / "report.pdf"),
                    str(folder / "page")], check=True, timeout=60)
    png = next(folder.glob("page*.png")).read_bytes()
    keep.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _band(pdf: bytes, first: str, last: str) -> tuple[int, int]:
    """The pixel rows (at DPI) of page 1 from the word ``first`` down to the word ``last`` (``pdftotext -bbox``)."""
    words = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", "-", "-"], input=pdf, capture_output=True,
                           check=True, timeout=60).stdout.decode()
    y = {w: float(top) for top, w in re.findall(r'yMin="([\d.]+)"[^>]*>([^<]+)</word>', words)}
    assert first in y and last in y, f"page 1 lacks {first!r} or {last!r}"
    return int(y[first] * DPI / 72), int(y[last] * DPI / 72)


def test_physicist_bookmark_plan_report_pdf_and_approval(browser, site, tmp_path):
    url, app = site
    path = f"/dashboards/plan/{_planning(app)}"
    _sign_in(browser, url, Role.PHYSICIST, path)
    _plan_page(browser)
    wait(browser, lambda d: d.find_elements("css selector", "#dvh .scatterlayer .trace"), "the DVH has no curves")
    wait(browser, lambda d: d.find_elements("css selector", "#goals tbody tr"), "no clinical goals table")
    _shot(browser, Role.PHYSICIST, "1-plan")
    _assert_no_json(browser)
    browser.execute_script("document.getElementById('goals-section').scrollIntoView()")
    wait(browser, lambda d: d.find_element("css selector", "#goals tbody tr").text, "the goals table shows no text")
    _shot(browser, Role.PHYSICIST, "2-goals")
    shown_goals = [r.text for r in browser.find_elements("css selector", "#goals tbody tr")]

    browser.execute_script("document.getElementById('report-section').scrollIntoView()")
    make = wait(browser, lambda d: next((b for b in d.find_elements("id", "report-make") if b.is_enabled()), None),
                "no enabled Make plan report button on the plan page")
    assert make.text == "Make plan report"
    _shot(browser, Role.PHYSICIST, "3-make-report")
    make.click()  # a form POST to /reports/make, then the report list with the new draft
    wait(browser, lambda d: d.current_url.startswith(f"{url}/reports?status=draft&made="), "no report list after Make")
    report_id = int(browser.current_url.rsplit("=", 1)[1])
    row = browser.find_element("id", f"report-{report_id}")
    assert "op-highlight" in row.get_attribute("class") and row.get_attribute("data-status") == "draft"
    assert f"Draft report {report_id} made" in browser.find_element("id", "report-message").text
    _assert_no_json(browser)
    _shot(browser, Role.PHYSICIST, "4-draft-in-report-list")
    store = app.extensions["oncopacs.reports"].service.store
    data = store.get(report_id).data
    goals = [(g["roi"], g["goal"]) for g in data["goals"]["rows"]]
    assert any(roi in shown and goal in shown for roi, goal in goals for shown in shown_goals), (goals, shown_goals)

    status, kind, pdf = _fetch(browser, row.find_element("css selector", "a.report-pdf").get_attribute("href"))
    assert status == 200 and kind == "application/pdf" and pdf.startswith(b"%PDF")
    (ARTIFACTS / "physicist" / "plan-report-draft.pdf").write_bytes(pdf)
    page = _first_page(pdf, tmp_path, ARTIFACTS / "physicist" / "5-report-page-1.png")
    top, bottom = _band(pdf, "histograms", "metrics")  # the DVH section: its heading to the next one's
    ptv = next(r for r in data["dvh"]["rois"] if r["name"].upper().startswith("PTV") and r["colour"])
    curve_pixels = _pixels_near(page[top:bottom], _rgb(ptv["colour"]), tolerance=30)
    assert curve_pixels >= 30, f"the DVH chart has {curve_pixels} pixels of the PTV's colour {ptv['colour']}"

    row.find_element("css selector", ".report-approve button").click()  # a form POST with the session's CSRF token
    wait(browser, lambda d: d.current_url == f"{url}/reports?approved={report_id}", "no report list after Approve")
    row = browser.find_element("id", f"report-{report_id}")
    assert row.find_element("css selector", ".report-status").text == "final"
    assert not row.find_elements("css selector", ".report-approve")
    assert browser.find_element("id", "report-message").text == f"Report {report_id} approved: final."
    assert store.get(report_id).status.value == "final"
    _assert_no_json(browser)
    _shot(browser, Role.PHYSICIST, "6-approved")


def test_oncologist_browser_patient_plan_review(browser, site):
    url, app = site
    _sign_in(browser, url, Role.ONCOLOGIST, "/")
    wait(browser, lambda d: d.find_elements("css selector", f'section.patient[data-patient-id="{PATIENT}"]'),
          "the study browser lists no demo patient")
    _shot(browser, Role.ONCOLOGIST, "1-study-browser")
    _assert_no_json(browser)
    patient = browser.find_element("css selector", f'section.patient[data-patient-id="{PATIENT}"]')
    assert PATIENT_NAME in patient.find_element("tag name", "h2").text
    study = patient.find_element("css selector", f'article.op-study[data-study-uid="{_planning(app)}"]')
    link = next(a for a in study.find_elements("css selector", ".op-links a") if "plan" in a.get_attribute("href"))
    link.click()
    wait(browser, lambda d: d.current_url == f"{url}/dashboards/plan/{_planning(app)}", "no plan review")
    _plan_page(browser)
    wait(browser, lambda d: PATIENT_NAME in d.find_element("id", "shell-patient-name").text, "no patient in header")
    import time

    time.sleep(2)  # let the slices' contours and dose paint
    shot = _shot(browser, Role.ONCOLOGIST, "2-plan-review")
    _assert_no_json(browser)
    legend = browser.find_element("id", "isodose-legend").text
    for words in ("95 %", "57 Gy", "50 %"):
        assert words in legend, legend
    contour_pixels = {c: _pixels_near(shot, c) for c in _roi_colours(app, _planning(app))}
    assert any(n >= 20 for n in contour_pixels.values()), f"no ROI colour drawn: {contour_pixels}"


def _sign_in_at_home(driver, url: str, role: Role) -> None:
    """Sign in from /login with no ``next``: the page the role lands on."""
    if driver.current_url.startswith(url):
        settle(driver)
        driver.get(f"{url}/login")  # leave the last page (its late answers, its timers) before the cookies go
    driver.delete_all_cookies()
    driver.get(f"{url}/login")
    submit_sign_in(driver, role.value)
    wait(driver, lambda d: "/login" not in d.current_url, f"{role.value} was not signed in")


def test_referrer_report_list_then_the_approved_pdf(browser, site, tmp_path):
    url, _app = site
    _sign_in_at_home(browser, url, Role.REFERRER)
    _shot(browser, Role.REFERRER, "1-landing")
    status, _, listing = _fetch(browser, "/api/reports?status=final")  # the report list the product offers
    assert status == 200
    final = [int(r["report_id"]) for r in json.loads(listing)["reports"]]
    assert final, "the referrer sees no approved report"
    status, kind, pdf = _fetch(browser, f"/api/reports/{final[-1]}/pdf")
    assert status == 200 and kind == "application/pdf" and pdf.startswith(b"%PDF")
    (ARTIFACTS / "referrer" / "approved-report.pdf").write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True, timeout=60).stdout
    assert PATIENT_NAME in text.decode("utf-8", "replace") and "FINAL" in text.decode("utf-8", "replace").upper()
    page = _first_page(pdf, tmp_path, ARTIFACTS / "referrer" / "2-report-page-1.png")  # headless has no PDF viewer
    assert (page.max(axis=2).astype(int) - page.min(axis=2) > 100).sum() > 200, "page 1 of the PDF is colourless"


def test_referrer_lands_on_a_report_list_page_not_json(browser, site):
    _sign_in_at_home(browser, site[0], Role.REFERRER)
    _shot(browser, Role.REFERRER, "3-report-list")
    _assert_no_json(browser)
    assert browser.current_url.endswith("/reports")
    table = browser.find_element("id", "report-list")  # the approved report, with its PDF link
    assert "FINAL" in table.text.upper() and table.find_elements("link text", "PDF")
