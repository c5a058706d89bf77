"""Installing OHIF's published build: the pinned hash, the mount at /viewer, and refusals that name the problem."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from oncopacs.ohif.bundle import (
    INTEGRITY,
    MARKER,
    VERSION,
    ViewerInstallError,
    _unpack_dist,
    fetch_with_npm,
    find_installed,
    install_dir,
    install_tarball,
    integrity_of,
    mount_build,
)
from tests.conftest import require
from tests.ohif.builds import REAL_VIEWER_DIR, install_small_build, lay_out_dist


def test_mounting_points_every_root_path_at_viewer(tmp_path: Path):
    dist = lay_out_dist(tmp_path / "dist")
    mount_build(dist, "/viewer/")
    html = (dist / "index.html").read_text()
    assert html.count('window.PUBLIC_URL="/viewer/"') == 2 and 'PUBLIC_URL="/"' not in html
    assert re.findall(r'(?:src|href)="(/[^/"][^"]*)"', html) == [
        "/viewer/manifest.json", "/viewer/app.bundle.css", "/viewer/app-config.js",
        "/viewer/app.bundle.0123456789abcdef.js"]
    assert 'href="//cdn.example/x"' in html  # a protocol-relative address is not a root path
    for bundle in ("app.bundle.0123456789abcdef.js", "polySeg.bundle.fedcba9876543210.js"):
        assert '__webpack_require__.p = "/viewer/";' in (dist / bundle).read_text()
    assert (dist / "app.bundle.css").read_text() == (
        "@font-face{src:url(/viewer/a34f9d1faa5f3315.woff2)}a{b:url(//x/y.png)}")
    assert json.loads((dist / "manifest.json").read_text())["icons"][0]["src"] == "/viewer/assets/icon.png"
    assert not (dist / "app-config.js").exists() and not (dist / "sw.js").exists()  # a demo server; a cache


def test_a_tarball_member_outside_its_folder_or_a_link_is_refused(tmp_path: Path):
    for name, kind in (("../evil.js", tarfile.REGTYPE), ("package/dist/index.html", tarfile.SYMTYPE)):
        tarball = tmp_path / "bad.tgz"
        with tarfile.open(tarball, "w:gz") as archive:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            archive.addfile(info, io.BytesIO(b""))
        with pytest.raises(ViewerInstallError, match="which is not a plain file"):
            _unpack_dist(tarball, tmp_path / "into")
        assert not (tmp_path / "evil.js").exists()


@pytest.mark.parametrize("breakage", ["index", "runtime"])
def test_a_build_laid_out_otherwise_is_refused(tmp_path: Path, breakage: str):
    dist = lay_out_dist(tmp_path / "dist")
    if breakage == "index":
        (dist / "index.html").write_text("<html>PUBLIC_URL is set elsewhere</html>")
    else:
        (dist / "app.bundle.0123456789abcdef.js").write_text("__webpack_require__.p = 'auto';")
    with pytest.raises(ViewerInstallError, match=r"not the layout of 3\.13\.2"):
        mount_build(dist, "/viewer/")


def test_a_tarball_that_is_not_the_pinned_release_is_refused_before_unpacking(tmp_path: Path):
    tarball = tmp_path / "ohif-app-3.13.2.tgz"
    with tarfile.open(tarball, "w:gz") as archive:  # a well-formed package with another hash
        body = b"<html></html>"
        info = tarfile.TarInfo("package/dist/index.html")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    with pytest.raises(ViewerInstallError, match=r"is not @ohif/app@3\.13\.2: its SHA-512 is sha512-"):
        install_tarball(tarball, tmp_path / "viewer")
    assert not (tmp_path / "viewer").exists() or not any((tmp_path / "viewer").iterdir())


def test_integrity_is_npm_s_sha512_in_base64(tmp_path: Path):
    file = tmp_path / "x"
    file.write_bytes(b"abc")
    assert integrity_of(file) == ("sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qm"
                                  "slPpUyknw==")


def test_without_npm_the_message_says_how_to_install_offline(tmp_path: Path):
    with pytest.raises(ViewerInstallError, match=r"npm is not installed.*--tarball FILE"):
        fetch_with_npm(tmp_path, npm="no-such-npm-here")


def test_an_install_is_found_only_when_complete_and_of_the_pinned_version(tmp_path: Path):
    installed = install_small_build(tmp_path)
    assert installed.version == VERSION and installed.root == install_dir(tmp_path)
    assert len(installed.inline_script_hashes) == 2 and all(h.startswith("'sha256-") for h in
                                                             installed.inline_script_hashes)
    marker = installed.root / MARKER
    marker.write_text(json.dumps({"version": "3.12.0", "integrity": INTEGRITY}))
    assert find_installed(tmp_path) is None
    marker.unlink()
    assert find_installed(tmp_path) is None


def test_the_published_build_is_installed_and_mounted():
    """The real @ohif/app 3.13.2 that .ci/run installs: nothing in it still points at the site root."""
    installed = find_installed(REAL_VIEWER_DIR)
    require(installed is not None, f"OHIF {VERSION} is not installed in {REAL_VIEWER_DIR} (`.ci/run` installs it)")
    assert installed is not None
    html = (installed.root / "index.html").read_text()
    assert not re.search(r'(?:src|href)="/(?!viewer/|/)', html)
    public_paths = {p.name: re.findall(r'__webpack_require__\.p = "([^"]*)";', p.read_text())
                    for p in installed.root.glob("*.js")}
    found = {name: paths for name, paths in public_paths.items() if paths}
    assert len(found) >= 2 and all(paths == ["/viewer/"] for paths in found.values()), found
    assert not any(re.search(r"url\(/(?!viewer/|/)", p.read_text()) for p in installed.root.glob("*.css"))
