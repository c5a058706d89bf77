"""``/viewer``: OHIF behind the sign-in, its configuration, its files, and the link that picks the hanging protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from oncopacs.auth.roles import Role
from oncopacs.cli.demo import load_demo
from oncopacs.index.query import QueryLevel, find
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY
from tests.ohif.builds import install_small_build
from tests.web.conftest import _headers_factory


def _app(folder: Path, viewer_dir: Path, demo: bool) -> Iterator[Flask]:
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, viewer_dir=str(viewer_dir))
    with open_platform(settings) as platform:
        if demo:
            load_demo(platform.archive)
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


@pytest.fixture(scope="module")
def viewer_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The demo archive with a small OHIF build installed."""
    folder = tmp_path_factory.mktemp("ohif")
    install_small_build(folder / "viewer")
    yield from _app(folder, folder / "viewer", demo=True)


@pytest.fixture(scope="module")
def headers(viewer_app: Flask) -> Callable[[Role | str], dict[str, str]]:
    return _headers_factory(viewer_app)


def _studies(app: Flask) -> dict[str, str]:
    """Study description -> StudyInstanceUID of the first demo patient."""
    with app.extensions["oncopacs.archive"].index.reading() as session:
        return {str(m.values["StudyDescription"]): m.values["StudyInstanceUID"]
                for m in find(session, QueryLevel.STUDY, {"PatientID": "ONCO-RESP-001"},
                              return_keys=("StudyDescription",))}


def test_a_study_link_opens_the_hanging_protocol_for_what_it_holds(viewer_app: Flask, headers):
    client, studies = viewer_app.test_client(), _studies(viewer_app)
    planning, baseline = studies["Proton therapy planning"], studies["FDG PET-CT baseline"]
    follow_up = studies["FDG PET-CT follow-up"]
    cases = {planning: ("/viewer/viewer", "oncopacs-rt-planning"), baseline: ("/viewer/tmtv", None),
             f"{follow_up},{baseline}": ("/viewer/viewer", "@ohif/hpCompare")}
    for uids, (path, protocol) in cases.items():
        reply = client.get(f"/viewer?StudyInstanceUIDs={uids}", headers=headers(Role.ONCOLOGIST))
        assert reply.status_code == 302, uids
        target = urlsplit(reply.headers["Location"])
        query = parse_qs(target.query)
        assert target.path == path and query["StudyInstanceUIDs"] == [uids]
        assert query.get("hangingProtocolId") == ([protocol] if protocol else None)
    assert client.get("/viewer", headers=headers(Role.ONCOLOGIST)).headers["Location"] == "/viewer/"


@pytest.mark.parametrize(("query", "problem"), [
    ("StudyInstanceUIDs=1.2.3,not-a-uid", "'not-a-uid' is not a DICOM UID"),
    ("StudyInstanceUIDs=" + ",".join(["1.2.3"] * 9), "at most 8 studies open together, not 9"),
    ("StudyInstanceUIDs=" + "1." * 200, "is not a DICOM UID"),
])
def test_a_malformed_link_is_a_400_that_names_the_problem(viewer_app: Flask, headers, query: str, problem: str):
    reply = viewer_app.test_client().get(f"/viewer?{query}", headers=headers(Role.PHYSICIST))
    assert reply.status_code == 400 and problem in reply.get_json()["detail"]


def test_ohif_s_pages_need_a_signed_in_reader(viewer_app: Flask, headers):
    client = viewer_app.test_client()
    bookmark = client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3", headers={"Accept": "text/html"})
    assert bookmark.status_code == 302
    assert bookmark.headers["Location"] == "/login?next=/viewer/viewer?StudyInstanceUIDs%3D1.2.3"
    assert client.get("/viewer/app-config.js").status_code == 401
    assert client.get("/viewer/", headers=headers(Role.REFERRER)).status_code == 403  # may not browse the archive
    page = client.get("/viewer/tmtv", headers=headers(Role.ONCOLOGIST))
    assert page.status_code == 200 and 'window.PUBLIC_URL="/viewer/"' in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-cache"


def test_the_page_s_policy_allows_its_own_scripts_its_decoders_and_workers_and_nothing_inline_else(
        viewer_app: Flask, headers):
    page = viewer_app.test_client().get("/viewer/", headers=headers(Role.ONCOLOGIST))
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    installed = viewer_app.extensions["oncopacs.ohif"]
    assert sorted(policy["script-src"].split()) == sorted(["'self'", "'wasm-unsafe-eval'",
                                                           *installed.inline_script_hashes])
    assert "'unsafe-inline'" not in policy["script-src"] and "http" not in policy["script-src"]
    with viewer_app.test_client().get("/viewer/polySeg.bundle.fedcba9876543210.js") as worker:
        # a worker's policy is its own script's: the image decoders there evaluate generated code
        assert "'unsafe-eval'" in worker.headers["Content-Security-Policy"]
    assert policy["worker-src"] == "'self' blob:" and policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"].split()[0] == "'self'"


def test_the_configuration_is_generated_and_the_build_s_own_never_served(viewer_app: Flask, headers):
    reply = viewer_app.test_client().get("/viewer/app-config.js", headers=headers(Role.PHYSICIST))
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200 and reply.mimetype == "text/javascript"
    assert "Generated by OncoPACS" in text and '"routerBasename": "/viewer"' in text


def test_build_files_are_public_cached_by_content_hash_and_confined_to_the_build(viewer_app: Flask):
    client = viewer_app.test_client()
    with client.get("/viewer/app.bundle.0123456789abcdef.js") as bundle:
        assert bundle.status_code == 200
        assert bundle.headers["Cache-Control"] == "private, max-age=31536000, immutable"
        assert '__webpack_require__.p = "/viewer/"' in bundle.get_data(as_text=True)
    with client.get("/viewer/manifest.json") as manifest:  # browsers fetch it without cookies
        assert manifest.status_code == 200 and manifest.headers["Cache-Control"] == "no-cache"
    with client.get("/viewer/assets/icon.png") as icon:
        assert icon.status_code == 200
    for hidden in ("sw.js", "oncopacs-install.json", "index.html", "../data/index.sqlite", "..%2F..%2Fsecret_key",
                   "assets/../../ohif-3.13.2/oncopacs-install.json", "nothing-here.js", "./oncopacs-install.json",
                   "assets/../oncopacs-install.json", "./index.html", "assets//../index.html"):
        with client.get(f"/viewer/{hidden}") as reply:
            assert reply.status_code in (401, 404), hidden
    worker = client.get("/viewer/init-service-worker.js")
    assert worker.status_code == 200 and "without a service worker" in worker.get_data(as_text=True)


def test_without_an_install_the_page_says_how_to_install_it(tmp_path: Path):
    for app in _app(tmp_path, tmp_path / "no-viewer", demo=False):
        reply = app.test_client().get("/viewer/", headers=_headers_factory(app)(Role.ADMIN))
        assert reply.status_code == 503
        assert "`oncopacs viewer install`" in reply.get_data(as_text=True)
        assert app.test_client().get("/viewer/app.bundle.0123456789abcdef.js").status_code == 404


def test_a_relative_viewer_folder_is_the_working_directory_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The demo's default (``oncopacs-data/viewer``) is relative: its files are found from where the server runs."""
    install_small_build(tmp_path / "oncopacs-data" / "viewer")
    monkeypatch.chdir(tmp_path)
    for app in _app(tmp_path, Path("oncopacs-data/viewer"), demo=False):
        with app.test_client().get("/viewer/app.bundle.0123456789abcdef.js") as reply:
            assert reply.status_code == 200
