"""The plan review page in headless Chromium, as a physicist uses it, on the demo.

The three views fit the window at common screen sizes; the isodose legend and the structures are listed; the
mouse wheel scrolls slices without scrolling the page; a click moves the crosshair of the other views; the
probe reads HU and dose; switching % to Gy converts the levels typed. Screenshots go to the test's folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oncopacs.auth.roles import Role
from tests.dashboards.conftest import study_uids
from tests.e2e.browsing import chromium, demo_site, submit_sign_in, wait

SCREENS = ((1280, 800), (1600, 1000), (1920, 1080))

pytestmark = pytest.mark.slow  # the demo load and a browser start


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    folder = tmp_path_factory.mktemp("plan-e2e")
    with demo_site(folder, {"physicist": Role.PHYSICIST}) as (url, app):
        planning = study_uids(app, "ONCO-DEMO-001")["Proton therapy planning"]
        yield url, f"{url}/dashboards/plan/{planning}", folder


@pytest.fixture(scope="module")
def browser(site):
    with chromium(1600, 1000, console=True) as driver:
        driver.get(f"{site[0]}/login")
        submit_sign_in(driver, "physicist")
        yield driver


def _open(driver, url: str, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.get(url)
    for plane in ("axial", "coronal", "sagittal"):
        wait(driver, lambda d, p=plane: d.find_elements("css selector", f"#{p}-graph .imagelayer image"),
              f"the {plane} view shows no image")
    wait(driver, lambda d: d.find_elements("css selector", "#isodose-legend-list li"), "no isodose legend")


def _title(driver, plane: str) -> str:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)"
        ".find(t => t.includes('/')) || ''", f"#{plane}-graph .annotation-text")


def test_the_three_views_fit_the_window_with_legend_and_structures(browser, site):
    _url, page, folder = site
    for width, height in SCREENS:
        _open(browser, page, width, height)
        time.sleep(0.5)
        boxes = browser.execute_script("""return ['axial', 'coronal', 'sagittal', 'side-panel'].map(id => {
            const e = document.getElementById(id === 'side-panel' ? id : id + '-pane').getBoundingClientRect();
            return [id, e.left, e.top, e.right, e.bottom]; });""")
        for name, left, top, right, bottom in boxes:
            assert left >= 0 and top >= 0, (width, height, name)
            assert right <= width and bottom <= height, f"{name} cut off at {width}x{height}: {right}, {bottom}"
            assert right - left > 150 and bottom - top > 150, (width, height, name)
        browser.save_screenshot(str(folder / f"plan-{width}x{height}.png"))
    legend = browser.find_element("id", "isodose-legend").text
    for words in ("100 %", "60 Gy", "95 %", "57 Gy", "50 %", "30 Gy"):
        assert words in legend
    structures = browser.find_element("id", "rois").text
    assert "PTV" in structures and "113.1 cc" in structures
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert problems == []  # no CSP refusal, no failed load


def test_wheel_scrolls_slices_and_a_click_moves_the_crosshair(browser, site):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    _open(browser, site[1], 1600, 1000)
    axial = browser.find_element("css selector", "#axial-graph .nsewdrag")
    first = _title(browser, "axial")
    number, count = (int(v) for v in first.split(" ")[1].split("/"))
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(axial), 0, 100).perform()
    wait(browser, lambda d: _title(d, "axial").startswith(f"Axial {number + 1}/{count}"), "the wheel did not scroll")
    assert browser.execute_script("return window.scrollY") == 0  # the page stays put: the wheel is the slice's
    before = _title(browser, "sagittal")
    ActionChains(browser).move_to_element_with_offset(axial, -80, 0).click().perform()
    wait(browser, lambda d: _title(d, "sagittal") != before, "a click did not move the sagittal view")
    ActionChains(browser).move_to_element_with_offset(axial, 0, 0).perform()
    wait(browser, lambda d: "HU" in d.find_element("id", "probe").text, "no probe reading")
    assert " Gy(RBE) (" in browser.find_element("id", "probe").text


def test_switching_to_gy_converts_the_levels(browser, site):
    _open(browser, site[1], 1600, 1000)
    box = browser.find_element("css selector", "#isodose")
    assert box.get_attribute("value") == "100, 95, 80, 50, 20"
    browser.find_element("xpath", "//div[@id='isodose-unit']//label[normalize-space()='Gy(RBE)']").click()
    wait(browser, lambda d: d.find_element("css selector", "#isodose").get_attribute("value") == "60, 57, 48, 30, 12",
          "the levels were not converted to Gy")
    assert "57 Gy" in browser.find_element("id", "isodose-legend").text


def test_the_dvh_comes_with_the_views_and_follows_the_structure_list(browser, site):
    _open(browser, site[1], 1600, 1000)
    curves = ("const g = document.querySelector('#dvh .js-plotly-plot');"
              "return g && g.data ? g.data.map(t => t.name) : []")
    wait(browser, lambda d: "PTV" in d.execute_script(curves), "no PTV curve on the DVH with the views")
    browser.find_element("xpath", "//div[@id='rois']//label[.//span[text()='PTV']]//input").click()
    wait(browser, lambda d: "PTV" not in d.execute_script(curves), "hiding PTV left its DVH curve")
    browser.find_element("xpath", "//div[@id='rois']//label[.//span[text()='PTV']]//input").click()
    wait(browser, lambda d: "PTV" in d.execute_script(curves), "showing PTV again drew no curve")
