"""What every browser test needs: the demo behind a live server, headless Chromium, and waits.

The waits ignore a stale element: Dash and AG Grid re-render what a test has just found (a late callback,
a grid refresh), and the next poll finds the new element.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from oncopacs.auth.roles import Role
from oncopacs.cli.demo import analyse_demo, load_demo
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, require
from tests.web.conftest import serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery"
WAIT_S = 30


@contextmanager
def demo_site(folder: Path, users: Mapping[str, Role], prepare: Callable[[Flask], None] | None = None,
              **overrides: Any) -> Iterator[tuple[str, Flask]]:
    """The demo as ``oncopacs demo`` runs it (rules first, then the data, analysed) behind a threaded server.

    ``users`` maps user names to roles (all with ``PASSWORD``); ``prepare`` may add to the app before it serves;
    ``overrides`` are settings (e.g. ``viewer_dir``). Yields the base URL and the app.
    """
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=folder.name,
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, **overrides)
    with open_platform(settings) as platform:
        load_demo(platform.archive)
        analyse_demo(platform)
        app = create_app(platform)
        for name, role in users.items():
            app.extensions["oncopacs.users"].add_user(name, role, PASSWORD)
        if prepare is not None:
            prepare(app)
        with serve_app(app) as url:
            yield url, app


@contextmanager
def chromium(width: int, height: int, console: bool = False, webgl: bool = False) -> Iterator[Any]:
    """Debian's headless Chromium through chromedriver (the test skips locally, fails in CI, without them).

    ``console`` keeps the browser console (CSP refusals, failed loads) for ``driver.get_log("browser")``;
    ``webgl`` gives it WebGL in software (SwiftShader), which OHIF's viewports draw with.
    """
    require(CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian's chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    graphics = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader") if webgl else ("--disable-gpu",)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *graphics,
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    if console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Callable[[Any], Any], message: str) -> Any:
    """Poll ``condition`` for up to ``WAIT_S`` s; a stale element means "not yet", not a failure."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message=message)


def wait_for(driver: Any, css: str) -> list[Any]:
    """The elements matching ``css`` once there is at least one."""
    return wait(driver, lambda d: d.find_elements("css selector", css), f"no {css}")


def wait_for_text(driver: Any, css: str, text: str) -> None:
    wait(driver, lambda d: any(text in e.text for e in d.find_elements("css selector", css)),
         f"no {css} with {text!r}")


def settle(driver: Any) -> None:
    """Wait for the page to finish (Dash titles it "Updating..." while callbacks run): a late answer to the page's
    own requests would otherwise put its session cookie back after a delete_all_cookies()."""
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete"
         and not d.title.startswith("Updating"), "the page did not finish loading")


def submit_sign_in(driver: Any, username: str, password: str = PASSWORD) -> None:
    """Fill in and submit the sign-in form on the current page; return once the browser has left it (signed in).

    Waiting matters: a navigation issued while the sign-in POST is still under way goes out without the session
    cookie and lands on the sign-in page again (a race that showed on a loaded machine).
    """
    driver.find_element("name", "username").send_keys(username)
    driver.find_element("name", "password").send_keys(password)
    driver.find_element("css selector", "button[type=submit]").click()
    wait(driver, lambda d: "/login" not in d.current_url, f"{username} was not signed in")
