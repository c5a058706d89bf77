"""OHIF's own prebuilt viewer (the ``dist/`` of the npm package ``@ohif/app``), pinned, hash-checked, installed.

OncoPACS never builds OHIF and commits none of it. :func:`fetch_with_npm` asks npm for the pinned package
(``npm pack``), :func:`install_tarball` checks the tarball against the pinned npm integrity (SHA-512, the value the
registry publishes) and unpacks ``package/dist`` into ``<viewer_dir>/ohif-<version>``.

OHIF's prebuilt files expect to be served from the site root (webpack's public path and ``window.PUBLIC_URL`` are
``/``, fixed at build time). OncoPACS serves them under :data:`MOUNT`, so the install rewrites what names the root,
and refuses a build where it is not as this version has it: ``PUBLIC_URL`` and the ``src``/``href`` paths of
``index.html``, the public path of the app's and its workers' webpack runtimes, and root ``url(/…)`` in the style
sheets, the icons of the web-app manifest. The build's own ``app-config.js`` (a public demo server) and service
worker are removed. Everything else is OHIF's bytes as published.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oncopacs.errors import ViewerInstallError

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
#: npm's ``dist.integrity`` of ``@ohif/app@3.13.2`` (SHA-512 of the tarball, base64).
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
MOUNT = "/viewer/"
MARKER = "oncopacs-install.json"
NPM_TIMEOUT_SECONDS = 600

_PUBLIC_URL = 'window.PUBLIC_URL="/"'
_WEBPACK_PUBLIC_PATH = '__webpack_require__.p = "/";'
_ROOT_PATHS = re.compile(r'\b(src|href)="/(?!/)')
_ROOT_URLS = re.compile(r"url\(/(?!/)")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


@dataclass(frozen=True, slots=True)
class InstalledViewer:
    """An installed OHIF build: where its files are, its version, and the inline scripts of its ``index.html``."""

    root: Path
    version: str
    integrity: str
    #: CSP source expressions (``'sha256-…'``) of index.html's inline scripts.
    inline_script_hashes: tuple[str, ...]


def install_dir(viewer_dir: Path, version: str = VERSION) -> Path:
    """The folder one version is installed in."""
    return viewer_dir / f"ohif-{version}"


def find_installed(viewer_dir: Path) -> InstalledViewer | None:
    """The pinned version installed under ``viewer_dir``, or None when it is not (or not completely) there.

    Its root is absolute: a relative data directory (the demo's ``oncopacs-data``) must not be read against the web
    app's package folder, as Flask reads a relative folder it sends files from."""
    root = install_dir(viewer_dir).resolve()
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
        index_html = (root / "index.html").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    if marker.get("version") != VERSION or marker.get("integrity") != INTEGRITY:
        return None
    hashes = tuple(_csp_hash(script) for script in _INLINE_SCRIPT.findall(index_html))
    return InstalledViewer(root, VERSION, INTEGRITY, hashes)


def fetch_with_npm(work_dir: Path, npm: str = "npm") -> Path:
    """``npm pack @ohif/app@VERSION`` into ``work_dir``; the tarball's path (not yet checked)."""
    if shutil.which(npm) is None:
        raise ViewerInstallError(
            f"npm is not installed: install it (Debian: apt-get install npm) or fetch {PACKAGE}@{VERSION} elsewhere "
            f"with `npm pack {PACKAGE}@{VERSION}` and run `oncopacs viewer install --tarball FILE`")
    try:
        done = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(work_dir), "--json", "--silent"],
            capture_output=True, text=True, timeout=NPM_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise ViewerInstallError(f"npm pack {PACKAGE}@{VERSION} took over {NPM_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ViewerInstallError(f"npm pack {PACKAGE}@{VERSION} failed: {last}")
    tarballs = sorted(work_dir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise ViewerInstallError(f"npm pack {PACKAGE}@{VERSION} left no tarball in {work_dir}")
    return tarballs[0]


def integrity_of(tarball: Path) -> str:
    """The npm-style integrity string (``sha512-<base64>``) of a file."""
    digest = hashlib.sha512()
    with tarball.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def install_tarball(tarball: Path, viewer_dir: Path) -> InstalledViewer:
    """Check ``tarball`` against the pinned integrity, unpack its ``dist/``, mount it at :data:`MOUNT`.

    The tarball is copied first and the copy is both checked and unpacked. An earlier install of the same version
    is replaced only once the new one is complete, by two renames.
    """
    try:
        viewer_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=viewer_dir, prefix=".unpack-") as scratch:
            copy = Path(scratch) / "package.tgz"
            try:
                shutil.copyfile(tarball, copy)
            except OSError as exc:
                raise ViewerInstallError(f"cannot read {tarball}: {exc.strerror or exc}") from None
            found = integrity_of(copy)
            if found != INTEGRITY:
                raise ViewerInstallError(f"{tarball.name} is not {PACKAGE}@{VERSION}: its SHA-512 is {found}, "
                                         f"the pinned one is {INTEGRITY}")
            dist = _unpack_dist(copy, Path(scratch) / "unpacked")
            mount_build(dist, MOUNT)
            (dist / MARKER).write_text(json.dumps({"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY,
                                                   "mount": MOUNT}), encoding="utf-8")
            _swap_in(dist, install_dir(viewer_dir), Path(scratch) / "previous")
    except OSError as exc:
        raise ViewerInstallError(f"cannot install into {viewer_dir}: {exc.strerror or exc}") from None
    installed = find_installed(viewer_dir)
    if installed is None:  # pragma: no cover - the marker was just written
        raise ViewerInstallError(f"the install in {install_dir(viewer_dir)} cannot be read back")
    return installed


def _unpack_dist(tarball: Path, into: Path) -> Path:
    """``package/dist`` of an npm tarball, refusing members that are links, devices or outside the folder."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise ViewerInstallError(f"the tarball holds {member.name[:100]!r}, which is not a plain file")
            if hasattr(tarfile, "data_filter"):  # tarfile's own check as well, where this Python has it (3.11.4+)
                archive.extractall(into, filter="data")
            else:  # pragma: no cover - the members were checked above
                archive.extractall(into)
    except (tarfile.TarError, EOFError) as exc:
        raise ViewerInstallError(f"cannot unpack {tarball.name}: {exc}") from None
    dist = into / "package" / "dist"
    if not (dist / "index.html").is_file():
        raise ViewerInstallError("the tarball has no package/dist/index.html")
    return dist


def _swap_in(new: Path, target: Path, aside: Path) -> None:
    """Put ``new`` at ``target``; a previous install is moved ``aside`` first (and leaves with the scratch folder)."""
    if target.exists():
        target.rename(aside)
    new.rename(target)


def mount_build(dist: Path, mount: str) -> None:
    """Rewrite the build's root public path to ``mount``; refuse a build that is not laid out as this version."""
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    if html.count(_PUBLIC_URL) != 2:  # two inline scripts set it
        raise ViewerInstallError(f"index.html does not set {_PUBLIC_URL} twice: not the layout of {VERSION}")
    html = html.replace(_PUBLIC_URL, f'window.PUBLIC_URL="{mount}"')
    index.write_text(_ROOT_PATHS.sub(rf'\1="{mount}', html), encoding="utf-8")
    bundles = sorted(dist.glob("app.bundle.*.js"))
    if len(bundles) != 1 or _WEBPACK_PUBLIC_PATH not in bundles[0].read_text(encoding="utf-8"):
        raise ViewerInstallError(f"no app.bundle.*.js setting webpack's public path: not the layout of {VERSION}")
    for script in sorted(dist.glob("*.js")):  # the app and each worker bundle has its own webpack runtime
        code = script.read_text(encoding="utf-8")
        if _WEBPACK_PUBLIC_PATH in code:
            script.write_text(code.replace(_WEBPACK_PUBLIC_PATH, f'__webpack_require__.p = "{mount}";'),
                              encoding="utf-8")
    for unused in ("app-config.js", "sw.js"):  # a public demo server's configuration; the service worker
        (dist / unused).unlink(missing_ok=True)
    manifest = dist / "manifest.json"  # the web-app manifest's icons
    if manifest.is_file():
        text = manifest.read_text(encoding="utf-8")
        manifest.write_text(text.replace('"src": "/assets/', f'"src": "{mount}assets/'), encoding="utf-8")
    for sheet in sorted(dist.glob("*.css")):  # fonts referred to from the root
        css = sheet.read_text(encoding="utf-8")
        sheet.write_text(_ROOT_URLS.sub(f"url({mount}", css), encoding="utf-8")


def _csp_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"
