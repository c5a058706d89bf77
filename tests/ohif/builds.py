"""OHIF builds for tests: a small one laid out as @ohif/app 3.13.2's dist/ is, and the real one .ci/run installs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from oncopacs.ohif.bundle import (
    INTEGRITY,
    MARKER,
    MOUNT,
    VERSION,
    InstalledViewer,
    find_installed,
    install_dir,
    mount_build,
)

#: Where .ci/run installs OHIF's published build (``oncopacs viewer install --dir .viewer``).
REAL_VIEWER_DIR = Path(os.environ.get("ONCOPACS_TEST_VIEWER_DIR") or Path(__file__).resolve().parents[2] / ".viewer")

INDEX_HTML = (
    '<!doctype html><html><head><script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><link href="/app.bundle.css" rel="stylesheet">'
    '<script src="/app-config.js"></script><script>function f(n){return import(n)}window.PUBLIC_URL="/"</script>'
    '<script defer src="/app.bundle.0123456789abcdef.js"></script><a href="//cdn.example/x">x</a></head></html>'
)


def lay_out_dist(dist: Path) -> Path:
    """A dist/ with what the mount rewrites, as 3.13.2 has it: index.html, app and worker bundles, CSS, manifest."""
    dist.mkdir(parents=True)
    (dist / "index.html").write_text(INDEX_HTML, encoding="utf-8")
    runtime = '(() => {\n__webpack_require__.p = "/";\n})();\nconsole.log("app");\n'
    (dist / "app.bundle.0123456789abcdef.js").write_text(runtime, encoding="utf-8")
    (dist / "polySeg.bundle.fedcba9876543210.js").write_text(runtime, encoding="utf-8")
    (dist / "app.bundle.css").write_text("@font-face{src:url(/a34f9d1faa5f3315.woff2)}a{b:url(//x/y.png)}")
    (dist / "manifest.json").write_text(json.dumps({"icons": [{"src": "/assets/icon.png"}]}, indent=2))
    (dist / "assets").mkdir()
    (dist / "assets" / "icon.png").write_bytes(b"\x89PNG fake")
    (dist / "sw.js").write_text("self.addEventListener('install', () => {});")
    (dist / "app-config.js").write_text("window.config = {dataSources: ['a public demo server']};")
    return dist


def install_small_build(viewer_dir: Path) -> InstalledViewer:
    """A small build installed as ``oncopacs viewer install`` leaves one (mounted, with its marker)."""
    dist = lay_out_dist(install_dir(viewer_dir))
    mount_build(dist, MOUNT)
    (dist / MARKER).write_text(json.dumps({"version": VERSION, "integrity": INTEGRITY, "mount": MOUNT}))
    installed = find_installed(viewer_dir)
    assert installed is not None
    return installed
