"""``/viewer``: OHIF v3, its pages behind OncoPACS's sign-in, configured for its DICOMweb.

- ``/viewer?StudyInstanceUIDs=UID[,UID]`` (the link every page that shows a study carries) redirects to the OHIF
  mode and hanging protocol for what the studies hold (:func:`oncopacs.ohif.app_config.viewer_route`).
- ``/viewer/`` is OHIF's study list (our QIDO-RS); ``/viewer/<mode>?…`` its viewer routes (``index.html``).
- ``/viewer/app-config.js`` is generated (:func:`oncopacs.ohif.app_config.app_config_js`), never the build's.
- ``/viewer/init-service-worker.js`` is a no-op: a service worker would keep patient images in the browser's
  cache after sign-out.
- A path with a file extension is a file of the installed build (``oncopacs viewer install``): OHIF's published
  scripts, styles and icons, no patient data, so served without sign-in (the browser fetches the web-app manifest
  without cookies); content-hashed names are cached for a year.

OHIF's pages get their own Content-Security-Policy: scripts from this origin only (plus the hashes of
``index.html``'s inline scripts, never ``'unsafe-inline'``), WebAssembly compilation, ``blob:`` workers; its
scripts (whose policy is a worker's) may also evaluate code, as its JPEG 2000 and JPEG-LS decoders do. Every image
OHIF shows comes through ``/dicom-web``, which audits it.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, send_from_directory
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter, ValidationError

from oncopacs.auth.roles import Permission
from oncopacs.index.query import QueryError, QueryLevel, find
from oncopacs.ohif.app_config import app_config_js, viewer_route
from oncopacs.ohif.bundle import MARKER, MOUNT, InstalledViewer, find_installed
from oncopacs.uids import is_valid_uid
from oncopacs.web.access import public, requires
from oncopacs.web.headers import content_security_policy


class RouteConverter(PathConverter):
    """A path with no dot: one of OHIF's client-side routes, never a file."""

    regex = r"[^.]+"


class BuildFileConverter(PathConverter):
    """A path whose last segment has a file extension (``app.bundle.….js``, ``assets/x.png``)."""

    regex = r"(?:[^/]+/)*[^/]+\.[A-Za-z0-9]+"

    def to_python(self, value: str) -> str:
        """The path, or 404 when it has ``.`` or ``..`` segments: each file has one name, so a hidden one stays
        hidden (``./sw.js``, ``assets/../app-config.js``)."""
        if any(segment in {"", ".", ".."} for segment in value.split("/")):
            raise ValidationError()
        return value


bp = Blueprint("ohif", __name__)


@bp.record_once
def _register_converters(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["build_file"] = BuildFileConverter
    state.app.url_map.converters["ohif_route"] = RouteConverter

MAX_STUDIES_PER_LINK = 8
_HASHED_NAME = re.compile(r"(^|[./])[0-9a-f]{16}\.[a-z0-9]+$|\.bundle\.[0-9a-f]{16}\.js$")
_NO_SERVICE_WORKER = "/* OncoPACS serves OHIF without a service worker: cached images would outlive sign-out. */\n"
_IMMUTABLE = "private, max-age=31536000, immutable"


def viewer_csp(inline_script_hashes: tuple[str, ...], *, evaluation: bool = False) -> str:
    """The Content-Security-Policy of OHIF's pages (``evaluation`` off) and of its scripts and workers (on)."""
    # OHIF's image decoders (emscripten builds of OpenJPEG, CharLS, libjpeg-turbo) run in workers, which get the
    # policy of their own script's response, and evaluate generated code: without 'unsafe-eval' there, a JPEG 2000
    # image fails to decode. The page, which shows text from the archive's files, never evaluates strings.
    scripts = ["'unsafe-eval'", "'wasm-unsafe-eval'"] if evaluation else ["'wasm-unsafe-eval'"]
    return content_security_policy(inline_script_hashes, extra={
        "script-src": scripts,
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["data:", "blob:"],
        "media-src": ["'self'", "blob:"],
    })


def installed_viewer() -> InstalledViewer | None:
    """The OHIF build under the configured viewer directory (looked up once it is there)."""
    found = current_app.extensions.get("oncopacs.ohif")
    if found is None:
        found = find_installed(current_app.extensions["oncopacs.settings"].effective_viewer_dir)
        if found is not None:
            current_app.extensions["oncopacs.ohif"] = found
    return found


@bp.get("/viewer")
@requires(Permission.ARCHIVE_READ)
def open_studies():
    """Open ``?StudyInstanceUIDs=`` in OHIF with the oncology hanging protocol that fits; no UIDs: the study list."""
    text = request.args.get("StudyInstanceUIDs", "").strip()
    if not text:
        return redirect(MOUNT)
    uids = [uid.strip() for uid in text.split(",") if uid.strip()]
    if len(uids) > MAX_STUDIES_PER_LINK:
        abort(400, description=f"at most {MAX_STUDIES_PER_LINK} studies open together, not {len(uids)}")
    for uid in uids:
        if not is_valid_uid(uid):
            abort(400, description=f"{uid[:70]!r} is not a DICOM UID")
    return redirect(viewer_route(uids, _modalities_of(uids)).url(MOUNT))


@bp.get("/viewer/")
@bp.get("/viewer/<ohif_route:route>")
@requires(Permission.ARCHIVE_READ)
def page(route: str = "") -> Response | tuple[str, int]:
    """OHIF's page for one of its routes (study list, ``viewer``, ``tmtv``, ``segmentation``, ...)."""
    installed = installed_viewer()
    if installed is None:
        return _not_installed()
    return _index(installed)


@bp.get("/viewer/app-config.js")
@requires(Permission.ARCHIVE_READ)
def app_config() -> Response:
    """OHIF's configuration for this archive (generated; the build's own file is never served)."""
    return _script(app_config_js(MOUNT))


@bp.get("/viewer/init-service-worker.js")
@public
def no_service_worker() -> Response:
    """A script that registers no service worker: cached images would outlive sign-out."""
    return _script(_NO_SERVICE_WORKER)


@bp.get("/viewer/<build_file:path>")
@public
def build_file(path: str) -> Response:
    """A file of OHIF's published build (scripts, styles, WebAssembly, icons: no patient data, so no sign-in;
    the browser fetches some, like the web-app manifest, without cookies)."""
    installed = installed_viewer()
    if installed is None or path in {"sw.js", MARKER, "index.html", "app-config.js"}:
        abort(404)
    if _file_in(installed.root, path) is None:
        abort(404, description=f"the viewer has no file {path[:100]!r}")
    response = send_from_directory(installed.root, path, max_age=None, conditional=True)
    response.headers["Cache-Control"] = _IMMUTABLE if _HASHED_NAME.search(path) else "no-cache"
    _protect(response, installed, evaluation=path.endswith(".js"))  # a worker's policy is its script's
    return response


def _index(installed: InstalledViewer) -> Response | tuple[str, int]:
    try:
        page = (installed.root / "index.html").read_bytes()
    except OSError:  # being reinstalled, or removed: looked up again on the next request
        current_app.extensions.pop("oncopacs.ohif", None)
        return _not_installed()
    response = Response(page, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    _protect(response, installed)
    return response


def _script(text: str) -> Response:
    response = Response(text, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _protect(response: Response, installed: InstalledViewer, *, evaluation: bool = False) -> None:
    response.headers["Content-Security-Policy"] = viewer_csp(installed.inline_script_hashes, evaluation=evaluation)
    if response.mimetype == "application/octet-stream" and request.path.endswith(".wasm"):
        response.mimetype = "application/wasm"


def _file_in(root: Path, path: str) -> Path | None:
    if not path:
        return None
    candidate = (root / path).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate if candidate.is_file() else None


def _not_installed() -> tuple[str, int]:
    message = ("The OHIF viewer is not installed on this server. An administrator installs it with "
               "`oncopacs viewer install` (it needs npm), or offline with `oncopacs viewer install --tarball FILE`.")
    return render_template("viewer_missing.html", message=message), 503


def _modalities_of(uids: list[str]) -> list[str]:
    archive = current_app.extensions["oncopacs.archive"]
    found: list[str] = []
    with archive.index.reading() as session:
        for uid in uids:
            try:
                matches = find(session, QueryLevel.STUDY, {"StudyInstanceUID": uid},
                               return_keys=("ModalitiesInStudy",), limit=1)
            except QueryError as exc:
                abort(400, description=str(exc))
            for match in matches:
                value = match.values.get("ModalitiesInStudy") or []
                found.extend([value] if isinstance(value, str) else [str(item) for item in value])
    return found
