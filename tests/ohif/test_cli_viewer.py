"""``oncopacs viewer``: what an administrator sees installing OHIF, offline included, and when it goes wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncopacs.cli.main import main
from oncopacs.cli.viewer import ensure_viewer
from oncopacs.ohif.bundle import VERSION
from tests.ohif.builds import install_small_build


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_tarball_that_is_not_the_pinned_release_is_refused_with_a_message_and_exit_2(tmp_path: Path):
    tarball = tmp_path / "ohif-app-3.13.2.tgz"
    tarball.write_bytes(b"not the release")
    done = _run("--data-dir", str(tmp_path / "data"), "viewer", "install", "--tarball", str(tarball))
    assert done.exit_code == 2
    assert f"is not @ohif/app@{VERSION}: its SHA-512 is sha512-" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "data" / "viewer" / f"ohif-{VERSION}").exists()


def test_status_says_where_it_is_or_how_to_install_it(tmp_path: Path):
    missing = _run("--data-dir", str(tmp_path / "data"), "viewer", "status")
    assert missing.exit_code == 1 and "run `oncopacs viewer install`" in missing.output
    install_small_build(tmp_path / "data" / "viewer")
    found = _run("--data-dir", str(tmp_path / "data"), "viewer", "status")
    assert found.exit_code == 0 and f"OHIF {VERSION} installed in" in found.output


def test_the_demo_never_fails_for_want_of_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    line = ensure_viewer(tmp_path / "viewer")
    assert "not installed (no npm)" in line and "--tarball FILE" in line
    install_small_build(tmp_path / "viewer")
    assert ensure_viewer(tmp_path / "viewer").startswith(f"OHIF {VERSION} viewer at /viewer")
