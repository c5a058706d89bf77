"""``oncopacs storage``: encryption at rest (:mod:`oncopacs.archive.encryption`): a key file, rotation, unsealing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from oncopacs.cli.context import settings_of
from oncopacs.cli.output import emit
from oncopacs.errors import ConfigError


@click.group("storage")
def storage_group() -> None:
    """Encryption at rest of stored files and backups (ONCOPACS_STORAGE_KEY_FILE)."""


@storage_group.command("keygen")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def keygen_command(path: Path) -> None:
    """Write a new key file PATH (mode 0600) holding one random AES-256 key.

    Keep it outside the data directory, and back it up apart from the data: without it nothing sealed can be read.
    To rotate, put the new key line first in the configured key file, restart, run `oncopacs storage rekey`.
    """
    from oncopacs.archive.encryption import generate_key_file

    key = generate_key_file(path)
    click.echo(f"wrote {path} (key id {key.key_id.hex()}); set ONCOPACS_STORAGE_KEY_FILE={path.resolve()}",
               err=True)


@storage_group.command("rekey")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.pass_context
def rekey_command(ctx: click.Context, as_json: bool) -> None:
    """Re-seal every stored file not sealed with the current key (plaintext ones included).

    Each file is checked against the index's SHA-256 and replaced atomically; safe while the server runs.
    Exit status 1 when a file is missing or damaged (left as it is).
    """
    from oncopacs.archive.rekey import rekey
    from oncopacs.platform import open_archive

    archive = open_archive(settings_of(ctx))
    try:
        with tqdm(unit="file", desc="rekey", file=sys.stderr, disable=None) as bar:
            report = rekey(archive, on_total=lambda total: bar.reset(total=total), progress=bar.update)
    finally:
        archive.close()
    emit(report.to_dict(), as_json, _render)
    if not report.ok:
        click.echo(f"oncopacs: {len(report.damaged)} stored file(s) missing or damaged, not re-sealed", err=True)
        sys.exit(1)


@storage_group.command("unseal")
@click.argument("sealed", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def unseal_command(sealed: Path, out: Path) -> None:
    """Unseal SEALED (e.g. a backup's index.pgdump.enc) into OUT (mode 0600) with the configured key file."""
    from oncopacs.archive.encryption import storage_keys_of, unseal_file

    keys = storage_keys_of(settings_of())
    if keys is None:
        raise ConfigError("no storage key is configured: set storage_key_file (ONCOPACS_STORAGE_KEY_FILE)")
    if out.exists():
        raise ConfigError(f"{out} already exists")
    unseal_file(sealed, out, keys)
    click.echo(f"unsealed {sealed} into {out}", err=True)


def _render(document: dict) -> Iterator[str]:
    yield (f"checked {document['checked']} file(s): {document['resealed']} re-sealed with the current key, "
           f"{document['current']} already current, {len(document['damaged'])} damaged")
    for path in document["damaged"]:
        yield f"  damaged: {path}"
