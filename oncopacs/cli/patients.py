"""``oncopacs patients merges`` and ``oncopacs patients unmerge ID``: the merges ADT^A40 made, and their undo.

An undo is written to the audit trail (Patient Record) by the operating-system user who ran the command. A
running server's ingest notices it within a few seconds (it checks the merges every
``MERGE_CHECK_INTERVAL_S``). Errors: one line on standard error, exit status 2.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys

import click

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.cli.context import opened_platform
from oncopacs.index.demographics import DemographicsError, list_merges, revert_merge


@click.group("patients")
def patients_group() -> None:
    """Patient merges made by the EHR (ADT^A40)."""


@patients_group.command("merges")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.pass_context
def merges(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List the patient merges, newest first."""
    with opened_platform(ctx) as platform:
        found = list_merges(platform.index, limit=limit)
    if as_json:
        click.echo(json.dumps([_as_dict(m) for m in found]))
        return
    for m in found:
        state = f"reverted {m.reverted_at:%Y-%m-%d %H:%M} by {m.reverted_by}" if m.reverted_at else "active"
        click.echo(f"{m.id}\t{m.merged_at:%Y-%m-%d %H:%M}\t{m.prior_patient_id} -> {m.surviving_patient_id}\t"
                   f"{len(m.moved_study_uids)} studies\t{state}")


@patients_group.command("unmerge")
@click.argument("merge_id", type=click.IntRange(1, 2**31 - 1))
@click.pass_context
def unmerge(ctx: click.Context, merge_id: int) -> None:
    """Revert merge MERGE_ID: its studies go back to the prior patient."""
    with opened_platform(ctx) as platform:
        try:
            merge = revert_merge(platform.index, merge_id, f"cli: {_os_user()}")
        except DemographicsError as exc:
            click.echo(f"oncopacs: {exc}", err=True)
            sys.exit(2)
        platform.audit.record(AuditEvent(
            action=AuditAction.PATIENT_RECORD, outcome=Outcome.SUCCESS, actor=_os_user(),
            actor_kind=ActorKind.SYSTEM, source=socket.gethostname(),
            patient_ids=(merge.surviving_patient_id, merge.prior_patient_id), study_uids=merge.moved_study_uids,
            detail=f"cli: reverted patient merge {merge.id}"))
    click.echo(f"reverted merge {merge.id}: {len(merge.moved_study_uids)} studies moved back")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


def _as_dict(merge) -> dict:  # a MergeRecord
    return {"id": merge.id, "surviving_patient_id": merge.surviving_patient_id,
            "surviving_issuer": merge.surviving_issuer, "prior_patient_id": merge.prior_patient_id,
            "prior_issuer": merge.prior_issuer, "moved_study_uids": list(merge.moved_study_uids),
            "merged_at": merge.merged_at.isoformat(),
            "reverted_at": merge.reverted_at.isoformat() if merge.reverted_at else None,
            "reverted_by": merge.reverted_by}
