"""OHIF as clinicians meet it: from the study browser into /viewer, the planning CT with its contours, PET-CT fused,
and a length measured in OHIF saved as an SR that comes back into the archive.

Runs OHIF's published build (``.ci/run`` installs it) in headless Chromium with software WebGL. Screenshots go to
``test-artifacts/journeys/ohif/``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from oncopacs.auth.roles import Role
from oncopacs.index.query import QueryLevel, find, find_instances
from oncopacs.ohif.bundle import VERSION, find_installed
from tests.conftest import require
from tests.e2e.browsing import chromium, demo_site, submit_sign_in
from tests.ohif.builds import REAL_VIEWER_DIR

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "journeys" / "ohif"
OHIF_WAIT_S = 90  # OHIF's first load on 2 cores with software WebGL
SR_NAME = "OncoPACS length check"


def _until(driver: Any, condition: Callable[[Any], Any], message: str, timeout: float = OHIF_WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = condition(driver)
            if found:
                return found
        except (StaleElementReferenceException, WebDriverException):
            pass
        if time.monotonic() > deadline:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "failed.png"))  # CI keeps test-artifacts/
            raise AssertionError(f"{message} within {timeout:.0f} s (at {driver.current_url}; failed.png)")
        time.sleep(0.5)


def _pixels(element: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("L"), dtype=np.float64)


def _shows_an_image(driver: Any, viewport_id: str) -> bool:
    """The viewport's pixels vary the way an image's do (not a blank or uniform canvas).

    OHIF's first-visit tour and notice dim the whole page when they appear (at a moment that varies with load):
    they are dismissed first, each time."""
    _dismiss_overlays(driver)
    [viewport] = driver.find_elements("css selector", f"[data-viewportid='{viewport_id}']") or [None]
    return viewport is not None and _pixels(viewport).std() > 10.0


def _dismiss_overlays(driver: Any) -> None:
    """OHIF's first-visit tour and its investigational-use notice (each shown once per browser)."""
    for label in ("Skip all", "Confirm and hide"):
        for element in driver.find_elements("xpath", f"//*[normalize-space(text())='{label}']"):
            if element.is_displayed():
                element.click()


def _button(driver: Any, text: str) -> Any:
    return next((b for b in driver.find_elements("css selector", "button") if b.text.strip() == text
                 and b.is_displayed()), None)


def _own_console_errors(driver: Any) -> list[str]:
    """Console errors that are ours to fix: refused by our CSP, or a failed request to this server."""
    marks = ("Content Security Policy", "/dicom-web", "Failed to load resource", "decodeTask")
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and any(mark in e["message"] for mark in marks)]


def test_ohif_opens_demo_studies_and_saves_a_measurement_into_the_archive(tmp_path: Path):
    require(find_installed(REAL_VIEWER_DIR) is not None,
            f"OHIF {VERSION} is not installed in {REAL_VIEWER_DIR} (`.ci/run` installs it with npm)")
    from selenium.webdriver.common.action_chains import ActionChains

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with demo_site(tmp_path, {"physicist": Role.PHYSICIST}, viewer_dir=str(REAL_VIEWER_DIR)) as (url, app):
        archive = app.extensions["oncopacs.archive"]
        with archive.index.reading() as session:
            studies = {m.values["StudyDescription"]: m.values["StudyInstanceUID"]
                       for m in find(session, QueryLevel.STUDY, {"PatientID": "ONCO-DEMO-001"},
                                     return_keys=("StudyDescription",))}
        planning, pet_ct = studies["Proton therapy planning"], studies["FDG PET-CT staging"]

        with chromium(1600, 1000, console=True, webgl=True) as driver:
            driver.set_page_load_timeout(OHIF_WAIT_S)
            driver.get(f"{url}/?q=ONCO-DEMO-001")
            submit_sign_in(driver, "physicist")  # may store (STOW-RS): the SR is saved
            # 1. From the study browser, as a person goes: the planning study's "Images in OHIF".
            link = _until(driver, lambda d: d.find_element(
                "css selector", f"article[data-study-uid='{planning}'] a.op-viewer-link"), "no OHIF link")
            link.click()
            _until(driver, lambda d: "hangingProtocolId=oncopacs-rt-planning" in d.current_url,
                   "the planning study did not open in the planning protocol")
            _until(driver, lambda d: _shows_an_image(d, "planningCT"), "the planning CT is not drawn")
            _dismiss_overlays(driver)
            _until(driver, lambda d: d.find_element("css selector", "[data-cy='panelSegmentation-btn']"),
                   "no segmentation panel").click()
            panel = _until(driver, lambda d: all(name in d.find_element("tag name", "body").text
                                                 for name in ("BODY", "PTV", "Rectum", "SpinalCord")) and d,
                           "the structure set's ROIs are not listed")
            panel.save_screenshot(str(ARTIFACTS / "1-planning-ct-with-contours.png"))
            assert _own_console_errors(driver) == []

            # 2. A length drawn on the CT, saved from OHIF as an SR (STOW-RS).
            _until(driver, lambda d: d.find_element("css selector", "[data-cy='Length-btn']"), "no Length tool").click()
            canvas = driver.find_element("css selector", "[data-viewportid='planningCT'] canvas")
            (ActionChains(driver).move_to_element_with_offset(canvas, -120, 0).click_and_hold()
             .move_by_offset(60, 10).move_by_offset(60, 10).release().perform())
            driver.find_element("css selector", "[data-cy='trackedMeasurements-btn']").click()
            _until(driver, lambda d: _button(d, "Create SR"), "no Create SR button").click()
            _until(driver, lambda d: d.find_element("css selector", "[data-cy='dialog-input']"),
                   "no report name").send_keys(SR_NAME)
            driver.save_screenshot(str(ARTIFACTS / "2-save-measurement.png"))
            _button(driver, "Save").click()

            def stored_sr(_driver: Any) -> list:
                with archive.index.reading() as session:
                    return find_instances(session, {"StudyInstanceUID": planning, "Modality": "SR",
                                                    "SeriesDescription": SR_NAME})

            [sr] = _until(driver, stored_sr, "the measurement's SR did not reach the archive", timeout=30)
            report = pydicom.dcmread(archive.storage.path_of(sr.file_path))
            assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
            assert "Length" in str(report.ContentSequence) or "410668003" in str(report.ContentSequence)

            # 3. It shows up in the study browser.
            driver.get(f"{url}/?q=ONCO-DEMO-001")
            row = _until(driver, lambda d: d.find_element(
                "xpath", f"//article[@data-study-uid='{planning}']//tr[th[normalize-space(text())='SR']]/td"),
                "the study browser shows no SR")
            assert row.text == "1"
            driver.save_screenshot(str(ARTIFACTS / "3-study-browser-with-sr.png"))

            # 4. PET-CT opens in the fusion protocol: CT, PET and fused rows.
            driver.get(f"{url}/viewer?StudyInstanceUIDs={pet_ct}")
            _until(driver, lambda d: "/viewer/tmtv?" in d.current_url, "PET-CT did not open in the fusion mode")
            _until(driver, lambda d: all(_shows_an_image(d, v) for v in ("ctAXIAL", "ptAXIAL", "fusionAXIAL")),
                   "the CT, PET and fused viewports are not all drawn")
            _dismiss_overlays(driver)
            driver.save_screenshot(str(ARTIFACTS / "4-pet-ct-fusion.png"))
            assert _own_console_errors(driver) == []

            # 5. Images this project did not write, compressed as scanners send them (pydicom's test files):
            # OHIF decodes JPEG 2000 and JPEG in the browser, which the viewer's CSP must allow.
            for name in ("JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
                path = get_testdata_file(name, download=False)
                require(path is not None, f"pydicom's test file {name} is missing")
                dataset = pydicom.dcmread(path)
                result = archive.ingest(Path(path).read_bytes(), source="test")
                assert result.acknowledged, result.reason
                driver.get(f"{url}/viewer?StudyInstanceUIDs={dataset.StudyInstanceUID}")
                _until(driver, lambda d: _shows_an_image(d, "default"), f"{name} is not drawn")
                driver.save_screenshot(str(ARTIFACTS / f"5-{Path(name).stem}.png"))
                assert _own_console_errors(driver) == [], name
