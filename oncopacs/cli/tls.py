"""``oncopacs tls``: trial certificates, and a check of the configured TLS files."""

from __future__ import annotations

from pathlib import Path

import click

from oncopacs.cli.context import settings_of
from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import DEFAULT_DAYS, write_trial_certificates


@click.group("tls")
def tls_group() -> None:
    """TLS for HTTPS, DICOM-TLS and outgoing links (ONCOPACS_TLS_CERT, _KEY, _CA)."""


@tls_group.command("selfsigned")
@click.option("--out", "folder", required=True, type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
              help="Folder for ca.pem, server.pem, server-key.pem, client.pem, client-key.pem.")
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="A DNS name or IP address clients use to reach this server (repeatable); "
                   "localhost, 127.0.0.1 and ::1 are always included.")
@click.option("--days", default=DEFAULT_DAYS, show_default=True, help="Validity of the certificates in days.")
@click.option("--force", is_flag=True, help="Replace certificate files already in the folder.")
def selfsigned_command(folder: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Write a trial CA, a server certificate and key, and a client certificate and key.

    Prints the environment lines that turn TLS on. For trials: in production use certificates
    from the hospital's CA.
    """
    made = write_trial_certificates(folder, hosts, days=days, force=force)
    click.echo(f"wrote a trial CA, a server certificate for {', '.join(made.hosts)} and a client certificate "
               f"to {made.ca.parent} (valid until {made.not_after:%Y-%m-%d}; keys mode 0600)", err=True)
    for line in made.env_lines():
        click.echo(line)


@tls_group.command("check")
@click.pass_context
def check_command(ctx: click.Context) -> None:
    """Check the configured certificate, key and CA as ``oncopacs serve`` would; exit 2 with the reason if unusable."""
    settings = settings_of(ctx)
    files = TlsFiles.from_settings(settings)
    files.check()
    if files.serving:
        click.echo(f"HTTPS on port {settings.http_port} and DICOM-TLS on port {settings.dicom_tls_port}: "
                   f"certificate {files.cert} and key {files.key} are usable")
    else:
        click.echo("TLS is off: no ONCOPACS_TLS_CERT and ONCOPACS_TLS_KEY")
    if files.ca is not None:
        click.echo(f"client certificates signed by {files.ca} are required; outgoing TLS peers are verified "
                   "against it")
    else:
        click.echo("no client certificates are required; outgoing TLS peers are verified against the system's CAs")
