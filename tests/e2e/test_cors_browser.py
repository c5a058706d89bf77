"""CORS in a real browser: a page served from another loopback port calls OncoPACS's QIDO-RS with a bearer token.

OncoPACS serves the demo with ``cors_origins`` naming one static server's origin; the same page is also served from a
second, unlisted port. Headless Chromium opens each: from the listed origin the preflight (Authorization and a
non-safelisted Accept) passes and the studies JSON arrives; from the unlisted one the browser refuses the response and
``fetch`` rejects with a TypeError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oncopacs.auth.roles import Role
from oncopacs.cli.demo import load_demo
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES
from tests.e2e.browsing import chromium, wait
from tests.web.conftest import serve_app, serving

pytestmark = pytest.mark.slow  # the demo load and a browser start

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>viewer</title></head><body>
<pre id="result"></pre>
<script>
fetch(%(url)s, {headers: {Authorization: 'Bearer ' + %(token)s, Accept: 'application/dicom+json'}})
  .then(async (reply) => ({status: reply.status, body: await reply.json()}))
  .catch((error) => ({error: error.name + ': ' + error.message}))
  .then((outcome) => { document.getElementById('result').textContent = JSON.stringify(outcome); });
</script></body></html>"""


class _Page:
    """The page's text, set once OncoPACS's address and the token are known."""

    html = b""


def _handler(page: _Page) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/"
            body = page.html if found else b"not found"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8" if found else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


@contextmanager
def static_site(page: _Page) -> Iterator[str]:
    """``page`` served on a free loopback port (http.server in a thread); yields its origin."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _handler(page))) as origin:
        yield origin


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The listed and the unlisted page's origins, OncoPACS (demo loaded) allowing only the first."""
    folder = tmp_path_factory.mktemp("cors")
    page = _Page()
    with static_site(page) as listed, static_site(page) as unlisted:
        settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=folder.name,
                            audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, cors_origins=(listed,))
        with open_platform(settings) as platform:
            load_demo(platform.archive)
            app = create_app(platform)
            users = app.extensions["oncopacs.users"]
            users.add_user("viewer", Role.ONCOLOGIST, "correct horse battery")
            token = users.create_token("viewer")
            with serve_app(app) as url:
                values = {"url": json.dumps(f"{url}/dicom-web/studies"), "token": json.dumps(token)}
                page.html = (PAGE % values).encode()
                yield listed, unlisted


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(800, 600) as driver:
        yield driver


def _outcome(driver: Any, origin: str) -> dict[str, Any]:
    driver.get(f"{origin}/")
    text = wait(driver, lambda d: d.find_element("id", "result").text, f"the page at {origin} wrote no result")
    return json.loads(text)


def test_a_listed_origin_reads_the_studies(browser: Any, sites: tuple[str, str]):
    outcome = _outcome(browser, sites[0])
    assert outcome.get("status") == 200, outcome
    studies = outcome["body"]
    assert isinstance(studies, list) and studies
    assert all(study["0020000D"]["vr"] == "UI" for study in studies)
    patient_ids = {study["00100020"]["Value"][0] for study in studies}
    assert any(pid.startswith("ONCO-") for pid in patient_ids), patient_ids


def test_an_unlisted_origin_is_refused_by_the_browser(browser: Any, sites: tuple[str, str]):
    outcome = _outcome(browser, sites[1])
    assert "status" not in outcome and outcome["error"].startswith("TypeError"), outcome
