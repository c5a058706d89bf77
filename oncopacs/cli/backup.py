"""``oncopacs backup``: an online, incremental backup of the data directory (:mod:`oncopacs.archive.backup`).

Every run leaves one EXPORT record (DICOM 110106) under the operating-system user and this host, after the
backup, as ``oncopacs import`` leaves its STORE record: a backup copies every patient's data out of the archive.
"""

from __future__ import annotations

import getpass
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.cli.context import opened_platform, settings_of
from oncopacs.cli.output import emit
from oncopacs.errors import AuditError


@click.command("backup")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The backup folder (created; an earlier backup there is updated, unchanged files skipped).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.pass_context
def backup_command(ctx: click.Context, out: Path, as_json: bool) -> None:
    """Back up the index and the stored files while the server may be storing.

    The index is snapshotted first (SQLite online backup, or pg_dump for PostgreSQL), then every file the
    snapshot lists is hard-linked (same file system) or copied and its SHA-256 checked. The folder is a data
    directory: oncopacs --data-dir OUT verify / serve work on it. Exit status 1 when a file is missing or damaged.
    """
    from oncopacs.archive.backup import backup

    config = ctx.find_root().params.get("config")
    with tqdm(unit="file", desc="backup", file=sys.stderr, disable=None) as bar:
        def on_total(total: int) -> None:
            bar.reset(total=total)
        report = backup(settings_of(ctx), out, config_file=config, on_total=on_total, progress=bar.update)
    audit_problem = _record_backup(ctx, report.instances, report.ok)
    emit(report.to_dict(), as_json, _render)
    if audit_problem:
        click.echo(f"oncopacs: backup not audited: {audit_problem}", err=True)
        sys.exit(2)
    if not report.ok:
        click.echo(f"oncopacs: {len(report.missing) + len(report.altered)} stored file(s) missing or damaged; "
                   "the backup lacks them", err=True)
        sys.exit(1)


def _record_backup(ctx: click.Context, instances: int, ok: bool) -> str:
    """Record the run's EXPORT (minor failure when files were missing or damaged); the AuditError's text, or ""."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    damaged = "" if ok else ", some stored files missing or damaged"
    event = AuditEvent(action=AuditAction.EXPORT, outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
                       actor=user, actor_kind=ActorKind.USER, source=socket.gethostname(),
                       detail=f"oncopacs backup: {instances} instance(s) and the index{damaged}")
    try:
        with opened_platform(ctx) as platform:
            platform.audit.record(event)
    except AuditError as exc:  # the backup is made: say so, then that its record is missing
        return str(exc)
    return ""


def _render(document: dict) -> Iterator[str]:
    how = "hard-linked" if document["linked"] else "copied"
    yield (f"backed up {document['instances']} instance(s) to {document['out']} in {document['seconds']:.1f} s: "
           f"{document['new']} new ({how}), {document['skipped']} skipped, {document['damaged']} damaged, "
           f"{document['removed']} removed")
    for label in ("missing", "altered"):
        for path in document[label]:
            yield f"  {label}: {path}"
    yield f"included: {', '.join(document['included'])}"
    for item in document["not_included"]:
        yield f"not included: {item}" + ("" if "re-install" in item else " - back these up yourself")
    yield f"restore: {document['restore']}"
