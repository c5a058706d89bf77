"""``oncopacs report …``: make, approve and send PDF reports (JSON with ``--json``).

Approving needs a user whose role has ``reports.write``; approving and sending are written to the
audit trail under that user (making and sending under the operating-system user: a Patient Record read, or an
Export when ``--out`` writes the PDF outside the archive).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path

import click

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.auth.roles import Principal
from oncopacs.auth.users import UserStore
from oncopacs.cli.context import opened_platform


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _service(ctx: click.Context):
    return ctx.with_resource(opened_platform(ctx)).reports.service  # closed when the command ends


def _audit(service, action: AuditAction, actor: str, report, detail: str) -> None:
    service.archive.audit.record(AuditEvent(  # the platform's trail: sealed with its key
        action=action, outcome=Outcome.SUCCESS, actor=actor, actor_kind=ActorKind.USER, source=socket.gethostname(),
        patient_ids=(report.patient_id,), study_uids=(report.study_uid,), detail=f"cli: {detail}"))


@click.group("report")
def report_group() -> None:
    """PDF reports: make a draft, approve it (archive + EHR delivery), send it."""


@report_group.command("make")
@click.argument("type_name", metavar="TYPE", type=click.Choice(["plan", "pet-response", "tumour-board"]))
@click.option("--study", "study_uid", required=True, help="StudyInstanceUID the report is about.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write the PDF here.")
@click.option("--goals", "goal_template", help="Clinical goal template of a plan report (default: by modality).")
@click.option("--question", "questions", multiple=True, help="Open question for a tumour-board summary (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def make_command(ctx: click.Context, type_name: str, study_uid: str, out_path: Path | None, goal_template: str | None,
                 questions: tuple[str, ...], as_json: bool) -> None:
    """Make a draft report of TYPE (plan, pet-response, tumour-board) for a study."""
    service = _service(ctx)
    options = {"questions": list(questions)} | ({"goal_template": goal_template} if goal_template else {})
    report = service.make(type_name, study_uid, _os_user(), options)
    pdf_path = service.store.pdf_dir / f"{report.pdf_sha256}.pdf"
    if out_path is not None:
        out_path.write_bytes(service.read_pdf(report))
        pdf_path = out_path
    _audit(service, AuditAction.READ if out_path is None else AuditAction.EXPORT, _os_user(), report,
           f"report make {report.id}" + ("" if out_path is None else " --out"))
    document = {"report_id": report.id, "status": report.status.value, "version": report.version,
                "pdf": str(pdf_path), "conclusion": report.conclusion}
    click.echo(json.dumps(document, indent=2) if as_json else f"report {report.id} ({report.status.value}): {pdf_path}")


@report_group.command("approve")
@click.argument("report_id", type=int)
@click.option("--user", "username", required=True, help="User approving (role must allow reports.write).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def approve_command(ctx: click.Context, report_id: int, username: str, as_json: bool) -> None:
    """Approve a draft: it becomes final, is archived as Encapsulated PDF and queued for the EHR."""
    service = _service(ctx)
    user = UserStore(service.archive.index).get(username)
    if user.disabled:
        raise click.ClickException(f"user {username!r} is disabled")
    report = service.approve(report_id, Principal(user.username, user.role, "cli"))
    _audit(service, AuditAction.STORE, username, report, f"report approve {report_id}")
    document = report.to_dict()
    click.echo(json.dumps(document, indent=2) if as_json
               else f"report {report.id} v{report.version} final, archived as {report.sop_instance_uid}")


@report_group.command("send")
@click.argument("report_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def send_command(ctx: click.Context, report_id: int, as_json: bool) -> None:
    """Send a final report to every configured destination now (HL7 MLLP, FHIR); per destination the outcome."""
    service = _service(ctx)
    deliveries = service.send(report_id, _os_user())
    _audit(service, AuditAction.EXPORT, _os_user(), service.store.get(report_id), f"report send {report_id}")
    if as_json:
        click.echo(json.dumps({"report_id": report_id, "deliveries": [d.to_dict() for d in deliveries]}, indent=2))
    else:
        for d in deliveries:
            click.echo(f"{d.destination.value} {d.endpoint}: {d.status.value} {d.ack_code}"
                       + (f" ({d.last_error})" if d.last_error else ""))
    unacknowledged = [d for d in deliveries if d.status.value != "acknowledged"]
    if unacknowledged:
        first = unacknowledged[0]
        click.echo(
            f"oncopacs: {len(unacknowledged)} of {len(deliveries)} deliveries not acknowledged "
            f"({first.destination.value}: {first.last_error or first.status.value})",
            err=True,
        )
        ctx.exit(1)
