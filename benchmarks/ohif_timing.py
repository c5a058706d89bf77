"""OHIF's time to first image in headless Chromium, one OHIF build in front of OncoPACS and of Orthanc.

Used by ``python benchmarks/viewer.py --ohif``. The pieces, each fair to both servers:

* **Data.** One synthetic CT series (``viewer.ensure_ct_series``: 512x512 int16 slices with noise, one
  StudyInstanceUID, CT attributes with rescale and window), sent once with dcmtk's ``storescu`` to
  ``oncopacs serve`` and to Orthanc with its DICOMweb plugin (``orthanc-peer --dicomweb``), both on loopback with
  HTTP Basic credentials.
* **Front server** (:class:`FrontServer`), one per server and the same code for both: a threaded loopback HTTP/1.1
  server that serves the installed OHIF files under ``/viewer/`` from memory (``index.html`` for the routes,
  :func:`oncopacs.ohif.app_config.app_config_js` for ``app-config.js``, a no-op ``init-service-worker.js``) and
  reverse-proxies ``/dicom-web/...`` to the server's DICOMweb root, adding the credentials server-side. Bodies are
  streamed in 64 KiB pieces over one keep-alive upstream connection per browser connection, so both servers pay the
  same proxy overhead. It counts the DICOMweb requests, their bytes and when each ended.
* **Browser.** A new Chromium with a new, empty profile per load (no cache, no service worker), WebGL through
  SwiftShader. A script added before any of OHIF's (``Page.addScriptToEvaluateOnNewDocument``) listens, in the
  capture phase on ``document``, for cornerstone's ``CORNERSTONE_IMAGE_RENDERED`` (fired on the viewport element
  after each render; not bubbling, so capture is what sees it) and stamps ``performance.now()`` (milliseconds since
  the navigation started) at the first one whose viewport holds a decoded image (a stack viewport's ``csImage``, or
  image data) and is not ``noData``/``loading``. OHIF's own ``STUDY_TO_FIRST_IMAGE`` timing listens to the same
  event but skips renders reported as ``preRender``; a stack viewport's first draw of a newly loaded image is one of
  those, and OHIF does not always render again afterwards, so the probe counts it (the stamp is taken in the page,
  so the 50 ms polling from Python adds nothing). A screenshot of the viewport's canvas then checks that the image
  is really there (hundreds of distinct colours, not the handful of an empty viewport).
* **All frames**: the proxy's end time of the last of the series' WADO-RS frame requests, against the navigation's
  start (``performance.timeOrigin``; both clocks are this machine's wall clock), once every frame was fetched.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import mimetypes
import shutil
import statistics
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from peers import BenchError

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 900)
LOAD_TIMEOUT_S = 90.0
CHUNK = 64 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate",
               "proxy-authorization", "content-length"}
_FORWARDED = ("Accept", "Accept-Encoding", "Range", "If-None-Match", "If-Modified-Since")
_NO_SERVICE_WORKER = b"/* no service worker in the benchmark */\n"
_TYPES = {".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".json": "application/json",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".woff2": "font/woff2"}

#: Evaluated in every new document before the page's own scripts: stamps the first rendered image.
PROBE_JS = r"""
(function () {
  var b = window.__ohifBench = {firstImage: null, renders: 0, loaded: 0, skipped: {}};
  function skip(why) { b.skipped[why] = (b.skipped[why] || 0) + 1; }
  document.addEventListener('CORNERSTONE_IMAGE_RENDERED', function (e) {
    b.renders += 1;
    if (b.firstImage !== null) { return; }
    var vp = (e.detail || {}).viewport;
    if (!vp && window.cornerstone) {
      try { vp = window.cornerstone.getEnabledElement(e.target).viewport; } catch (x) { vp = null; }
    }
    if (!vp) { return skip('no viewport'); }
    if (vp.viewportStatus === 'noData' || vp.viewportStatus === 'loading') { return skip(vp.viewportStatus); }
    if (!vp.csImage && !(typeof vp.getImageData === 'function' && vp.getImageData())) { return skip('no image'); }
    b.firstImage = performance.now();
  }, true);
  var hook = setInterval(function () {
    var cs = window.cornerstone;
    if (!cs || !cs.eventTarget) { return; }
    clearInterval(hook);
    cs.eventTarget.addEventListener('CORNERSTONE_IMAGE_LOADED', function () { b.loaded += 1; });
  }, 5);
})();
"""


@dataclass(frozen=True, slots=True)
class Target:
    """A DICOMweb server the front server proxies to: ``http://127.0.0.1:PORT/dicom-web`` and its credentials."""

    name: str
    root: str
    user: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One proxied DICOMweb request: path, status, body bytes, start and end (wall clock, s since the epoch)."""

    path: str
    status: int
    bytes: int
    started: float
    ended: float


@dataclass
class ProxyLog:
    """What the proxy forwarded since the last :meth:`reset` (thread-safe)."""

    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def reset(self) -> None:
        with self.lock:
            self.exchanges.clear()

    def snapshot(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)


@dataclass(frozen=True, slots=True)
class Load:
    """One load of the viewer: milliseconds from the navigation's start, and what went over DICOMweb until then."""

    first_image_ms: float
    first_request_ms: float  # the first DICOMweb request's start
    all_frames_ms: float | None  # the last frame's response end; None when not every frame was fetched
    frames_fetched: int  # distinct frame URLs answered 200
    requests: int  # DICOMweb requests until the first image
    requests_total: int  # DICOMweb requests until the end of the load (all frames, or the wait ran out)
    mbytes_total: float
    distinct_pixel_values: int  # in a screenshot of the viewport once the image was reported
    errors: int  # DICOMweb answers >= 400


class FrontServer:
    """OHIF's files under ``/viewer/`` and ``/dicom-web/...`` proxied to ``target``, on a loopback port."""

    def __init__(self, viewer_root: Path, config_js: str, target: Target):
        self.target = target
        self.log = ProxyLog()
        self.files = {p.relative_to(viewer_root).as_posix(): p.read_bytes()
                      for p in viewer_root.rglob("*") if p.is_file()}
        self.config_js = config_js.encode()
        upstream = urllib.parse.urlsplit(target.root)
        self.upstream_host, self.upstream_port = upstream.hostname or "127.0.0.1", upstream.port or 80
        self.upstream_path = upstream.path.rstrip("/")
        self.authorization = "Basic " + base64.b64encode(":".join(target.user).encode()).decode()
        self._local = threading.local()
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"front-{target.name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FrontServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        """This handler thread's keep-alive connection to the target (one per browser connection)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
            self._local.conn = conn
        return conn

    def static(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a path under ``/viewer/``."""
        rest = path[len("/viewer/"):] if path.startswith("/viewer/") else ""
        if rest == "app-config.js":
            return 200, _TYPES[".js"], self.config_js
        if rest == "init-service-worker.js":
            return 200, _TYPES[".js"], _NO_SERVICE_WORKER
        last = rest.rsplit("/", 1)[-1]
        if path in ("/viewer", "/viewer/") or "." not in last:  # one of OHIF's client-side routes
            return 200, _TYPES[".html"], self.files["index.html"]
        body = self.files.get(rest)
        if body is None:
            return 404, "text/plain", b"not found\n"
        suffix = Path(last).suffix
        kind = _TYPES.get(suffix) or mimetypes.guess_type(last)[0] or "application/octet-stream"
        return 200, kind, body


class _QuietServer(ThreadingHTTPServer):
    """Connections the browser drops when it quits are not errors worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _handler_for(front: FrontServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/dicom-web" or path.startswith("/dicom-web/"):
                self._proxy()
                return
            status, kind, body = front.static(path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self) -> None:
            started = time.time()
            upstream_path = front.upstream_path + self.path[len("/dicom-web"):]
            headers = {name: self.headers[name] for name in _FORWARDED if self.headers.get(name)}
            headers["Authorization"] = front.authorization
            response = None
            for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
                conn = front.upstream(fresh=attempt > 0)
                try:
                    conn.request("GET", upstream_path, headers=headers)
                    response = conn.getresponse()
                    break
                except (http.client.HTTPException, OSError):
                    if attempt:
                        raise
            assert response is not None
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            length = response.getheader("Content-Length")
            chunked = length is None
            self.send_header("Transfer-Encoding" if chunked else "Content-Length", length or "chunked")
            self.end_headers()
            sent = 0
            try:
                while piece := response.read(CHUNK):
                    sent += len(piece)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:  # the browser went away (closed at the end of a load): drop both connections
                self.close_connection = True
                front.upstream(fresh=True)
                return
            if response.will_close:
                front.upstream(fresh=True)
            front.log.add(Exchange(self.path, response.status, sent, started, time.time()))

    return Handler


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A new headless Chromium on an empty profile, WebGL through SwiftShader."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
                     "--enable-unsafe-swiftshader", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                     f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _distinct_pixels(driver) -> int:
    """Distinct RGB values in a screenshot of the viewport's canvas (a blank viewport has a handful)."""
    from PIL import Image
    from selenium.common.exceptions import WebDriverException

    for _ in range(5):  # OHIF may re-render the viewport's element between the look-up and the screenshot
        try:
            canvas = driver.execute_script("return document.querySelector('[data-viewport-uid] canvas')")
            png = canvas.screenshot_as_png if canvas is not None else driver.get_screenshot_as_png()
            break
        except WebDriverException:
            time.sleep(0.1)
    else:
        png = driver.get_screenshot_as_png()
    with Image.open(io.BytesIO(png)) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24) or [])


def load_viewer(front: FrontServer, study_uid: str, frames: int, frames_wait_s: float) -> Load:
    """Open ``/viewer/viewer?StudyInstanceUIDs=`` in a new browser; time its first image, then its frames."""
    front.log.reset()
    url = f"{front.url}/viewer/viewer?StudyInstanceUIDs={study_uid}"
    with tempfile.TemporaryDirectory(prefix="ohif-profile-") as profile, chromium(Path(profile)) as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE_JS})
        driver.get(url)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        state: dict = {}
        while time.monotonic() < deadline:
            state = driver.execute_script(
                "var b = window.__ohifBench || {}; return {first: b.firstImage, origin: performance.timeOrigin, "
                "renders: b.renders, loaded: b.loaded, skipped: b.skipped};")
            if state.get("first") is not None:
                break
            time.sleep(0.05)
        else:
            raise BenchError(f"{front.target.name}: no image in OHIF's viewport after {LOAD_TIMEOUT_S:.0f} s "
                             f"(state {state}, {len(front.log.snapshot())} DICOMweb requests)")
        first_ms, origin_ms = float(state["first"]), float(state["origin"])
        distinct = _distinct_pixels(driver)
        until_first = [e for e in front.log.snapshot() if e.started * 1000 - origin_ms <= first_ms]
        deadline = time.monotonic() + frames_wait_s
        while time.monotonic() < deadline and len(_frame_ends(front.log.snapshot())) < frames:
            time.sleep(0.05)
    exchanges = front.log.snapshot()
    ends = _frame_ends(exchanges)
    return Load(
        first_image_ms=first_ms,
        first_request_ms=min((e.started * 1000 - origin_ms for e in exchanges), default=float("nan")),
        all_frames_ms=max(ends.values()) * 1000 - origin_ms if len(ends) >= frames else None,
        frames_fetched=len(ends),
        requests=len(until_first),
        requests_total=len(exchanges),
        mbytes_total=sum(e.bytes for e in exchanges) / 1e6,
        distinct_pixel_values=distinct,
        errors=sum(1 for e in exchanges if e.status >= 400),
    )


def _frame_ends(exchanges: list[Exchange]) -> dict[str, float]:
    """Each distinct frame URL answered 200, and when its last byte went to the browser."""
    ends: dict[str, float] = {}
    for e in exchanges:
        path = urllib.parse.urlsplit(e.path).path
        if "/frames/" in path and e.status == 200:
            ends[path] = max(ends.get(path, 0.0), e.ended)
    return ends


def summary(values: list[float]) -> dict:
    """Median, minimum, maximum and count (the unit of ``values``)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in this environment"
    if shutil.which(str(CHROMIUM)) is None:
        return f"{CHROMIUM} is not executable"
    return None
