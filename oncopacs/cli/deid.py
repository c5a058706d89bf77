"""``oncopacs deid export``: whole studies, de-identified (PS3.15 Basic Profile), as Part 10 files in a folder
(``--out``) or sent to a remote AE or a DICOMweb server (``--to``).

The pseudonyms, date offsets and UID map stay in the index database for authorised re-identification;
the export and standard error name pseudonyms and counts only.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from pathlib import Path

import click
from tqdm import tqdm

from oncopacs.cli.context import opened_platform


@click.group("deid")
def deid_group() -> None:
    """De-identified export for research (DICOM PS3.15 Basic Application Level Confidentiality Profile)."""


@deid_group.command("export")
@click.option("--study", "study_uids", multiple=True, required=True, help="StudyInstanceUID to export (repeatable).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder that receives <pseudonym>/<study>/<series>/<sop>.dcm.")
@click.option("--to", "target", help="Send instead to an AE title of ONCOPACS_REMOTE_AES (C-STORE) or a "
                                     "DICOMweb base URL (STOW-RS).")
@click.option("--no-date-shift", is_flag=True,
              help="Empty dates instead of shifting them by the patient's offset (Retain Longitudinal off).")
@click.option("--no-patient-characteristics", is_flag=True, help="Remove sex, age, size and weight too.")
@click.option("--drop-descriptors", is_flag=True,
              help="Empty free-text descriptors (study/series/plan descriptions) instead of cleaning them.")
@click.option("--allow-burned-in", is_flag=True, help="Export images flagged with burned-in annotation anyway.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.pass_context
def export_command(ctx: click.Context, study_uids: tuple[str, ...], out_dir: Path | None, target: str | None,
                   no_date_shift: bool, no_patient_characteristics: bool, drop_descriptors: bool,
                   allow_burned_in: bool, as_json: bool) -> None:
    """Export studies de-identified; the export is recorded in the audit trail as an EXPORT event."""
    from oncopacs.orchestration.deid_export import DeidSink, DirectorySink, count_instances, export_deidentified
    from oncopacs.orchestration.deid_profile import DeidOptions
    from oncopacs.orchestration.deid_sinks import sink_for
    from oncopacs.orchestration.dicomweb_auth import parse_dicomweb_auth
    from oncopacs.tls import TlsFiles

    if (out_dir is None) == (target is None):
        raise click.UsageError("give exactly one of --out FOLDER and --to AE-TITLE-OR-URL")

    options = DeidOptions(retain_longitudinal_dates=not no_date_shift,
                          retain_patient_characteristics=not no_patient_characteristics,
                          clean_descriptors=not drop_descriptors, allow_burned_in_annotation=allow_burned_in)
    with opened_platform(ctx) as platform:
        total = count_instances(platform.archive, study_uids)  # unknown studies fail before --out is touched
        settings = platform.settings
        sink: DeidSink = DirectorySink(out_dir) if out_dir is not None else sink_for(
            str(target), settings.remote_aes, local_ae_title=settings.ae_title,
            ssl_context=TlsFiles.from_settings(settings).client_context(),
            credentials=parse_dicomweb_auth(settings.dicomweb_auth))
        with tqdm(total=total, unit="object", desc="deid export", file=sys.stderr, disable=None) as bar:
            summary = export_deidentified(platform.archive, platform.audit, study_uids, sink, options,
                                          actor=_os_user(), source=socket.gethostname(),
                                          on_instance=lambda: bar.update(1))
    where = {"out": str(out_dir)} if out_dir is not None else {"to": str(target)}
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), **where}, indent=2))
    else:
        click.echo(f"exported {summary.instances} object(s) of {summary.studies} study(ies) to "
                   f"{next(iter(where.values()))} as {', '.join(summary.pseudonyms)}; {summary.skipped} skipped")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
