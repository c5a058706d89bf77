"""``oncopacs viewer``: install OHIF's prebuilt viewer (pinned, hash-checked) for ``/viewer``, or say where it is."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from oncopacs.cli.context import settings_of
from oncopacs.errors import ViewerInstallError
from oncopacs.ohif.bundle import INTEGRITY, PACKAGE, VERSION, fetch_with_npm, find_installed, install_tarball


@click.group("viewer")
def viewer_group() -> None:
    """The OHIF web viewer served at /viewer (OHIF's own build from the npm registry, never built here)."""


@viewer_group.command("install")
@click.option("--tarball", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Install from this file (made elsewhere by `npm pack {PACKAGE}@{VERSION}`) instead of npm.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Install here instead of ONCOPACS_VIEWER_DIR (default: DATA_DIR/viewer).")
@click.pass_context
def install_command(ctx: click.Context, tarball: Path | None, directory: Path | None) -> None:
    """Fetch OHIF (npm pack), check it against the pinned SHA-512, unpack it for /viewer (exit 2 when refused)."""
    target = directory or settings_of(ctx).effective_viewer_dir
    if tarball is None:
        with tempfile.TemporaryDirectory(prefix="oncopacs-ohif-") as scratch:
            click.echo(f"fetching {PACKAGE}@{VERSION} with npm ...", err=True)
            installed = install_tarball(fetch_with_npm(Path(scratch)), target)
    else:
        installed = install_tarball(tarball, target)
    click.echo(f"OHIF {installed.version} installed in {installed.root} (SHA-512 checked); served at /viewer")


def ensure_viewer(target: Path) -> str:
    """Install OHIF into ``target`` when it is missing and npm is there (the demo's way); a line saying where it is.

    Never fails: without npm, or when npm fails, the line says how to install it later.
    """
    installed = find_installed(target)
    if installed is None and shutil.which("npm") is None:
        return (f"OHIF viewer not installed (no npm): `oncopacs viewer install --tarball FILE` installs it "
                f"from `npm pack {PACKAGE}@{VERSION}` made elsewhere")
    if installed is None:
        click.echo(f"installing the OHIF viewer ({PACKAGE}@{VERSION}, via npm) ...", err=True)
        try:
            with tempfile.TemporaryDirectory(prefix="oncopacs-ohif-") as scratch:
                installed = install_tarball(fetch_with_npm(Path(scratch)), target)
        except ViewerInstallError as exc:
            return f"OHIF viewer not installed: {exc}"
    return f"OHIF {installed.version} viewer at /viewer (installed in {installed.root})"


@viewer_group.command("status")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Look here instead of ONCOPACS_VIEWER_DIR (default: DATA_DIR/viewer).")
@click.pass_context
def status_command(ctx: click.Context, directory: Path | None) -> None:
    """Whether the pinned OHIF version is installed, and where; exit 1 when it is not."""
    target = directory or settings_of(ctx).effective_viewer_dir
    installed = find_installed(target)
    if installed is None:
        click.echo(f"OHIF {VERSION} is not installed in {target}: run `oncopacs viewer install`", err=True)
        ctx.exit(1)
    click.echo(f"OHIF {installed.version} installed in {installed.root} ({INTEGRITY})")
