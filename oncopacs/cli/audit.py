"""``oncopacs audit``: check the audit trail's chain and checkpoints, and export it (DICOM audit messages or JSON).

Also the STORE record of an ``oncopacs import`` run (:func:`import_tally`, :func:`record_import`).
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import click

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import (
    AuditFilter,
    AuditTrail,
    iter_json_export,
    normalize_time,
)
from oncopacs.cli.context import opened_platform
from oncopacs.dimse.auditing import StoreTally, store_event


def _trail(ctx: click.Context) -> AuditTrail:
    """The platform's trail, closed (its last checkpoint written) when the command ends."""
    platform = ctx.with_resource(opened_platform(ctx))
    return platform.audit


@click.group("audit")
def audit_group() -> None:
    """The audit trail: verify its chain and checkpoints, export it."""


@audit_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.pass_context
def verify_command(ctx: click.Context, as_json: bool) -> None:
    """Check every record's seal and its link to the one before, and the trail against its checkpoints.

    Lists every break found (deleted, altered or re-chained records, a rewound head, forged or missing
    checkpoints) and exits 1 if there is any. The check is itself recorded (Audit Log Used) under the
    operating-system user, after it has run."""
    trail = _trail(ctx)
    result = trail.verify()
    trail.record(AuditEvent(action=AuditAction.AUDIT_LOG_USED,
                            outcome=Outcome.SUCCESS if result.ok else Outcome.MINOR_FAILURE, actor=_os_user(),
                            actor_kind=ActorKind.USER, source=socket.gethostname(), detail="oncopacs audit verify"))
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.summary())
    if not result.ok:
        count = len(result.breaks) + result.more_breaks
        first = result.breaks[0]
        click.echo(f"oncopacs: the audit trail is broken: {count} break(s), the first: {first.describe()}", err=True)
        sys.exit(1)


@audit_group.command("export")
@click.option("--since", help="Only records at or after this ISO 8601 time (UTC unless an offset is given).")
@click.option("--until", help="Only records before this ISO 8601 time.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["atna", "json"]),
    default="atna",
    show_default=True,
    help="atna: DICOM Audit Messages (PS3.15 A.5) in an <AuditMessages> document; json: a JSON array.",
)
@click.option(
    "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file instead of standard output."
)
@click.pass_context
def export_command(ctx: click.Context, since: str | None, until: str | None, format_: str, output: Path | None) -> None:
    """Export audit records, oldest first; the export itself is recorded as an EXPORT event."""
    from oncopacs.audit.atna import iter_audit_messages_xml

    for name, value in (("--since", since), ("--until", until)):
        if value:
            try:
                normalize_time(value)
            except ValueError:
                raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time", param_hint=name) from None
    trail = _trail(ctx)
    where = AuditFilter(since=since, until=until)
    range_text = f"since={since or '-'} until={until or '-'}"
    trail.record(
        AuditEvent(
            action=AuditAction.EXPORT,
            outcome=Outcome.SUCCESS,
            actor=_os_user(),
            actor_kind=ActorKind.USER,
            source=socket.gethostname(),
            detail=f"oncopacs audit export --format {format_} {range_text}",
        )
    )
    entries = trail.iter_entries(where)
    chunks = iter_audit_messages_xml(entries, ctx.obj.ae_title) if format_ == "atna" else iter_json_export(entries)
    if output is None:
        stdout = sys.stdout.buffer
        _write(chunks, stdout)
        stdout.flush()
    else:
        with open(output, "wb") as file:
            _write(chunks, file)
        click.echo(f"audit records written to {output}", err=True)


def _write(chunks: Iterator[bytes], stream: BinaryIO) -> None:
    for chunk in chunks:
        stream.write(chunk)


def import_tally() -> StoreTally:
    """An empty tally of one ``oncopacs import`` run: the operating-system user, on this host."""
    return StoreTally(_os_user(), socket.gethostname())


def record_import(trail: AuditTrail, tally: StoreTally, skipped: int,
                  patient_ids_for: Callable[[list[str]], Iterable[str]]) -> None:
    """The run's one STORE record (as a C-STORE association's): its patients and studies, counts, refusals.

    Nothing is recorded when no DICOM file was stored or refused. Raises AuditError.
    """
    if tally.stored + tally.failed:
        trail.record(store_event(tally, ActorKind.USER, "import", f"oncopacs import, {skipped} skipped",
                                 patient_ids_for))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
