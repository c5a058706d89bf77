"""The ``oncopacs`` command line.

With ``--json`` standard output carries exactly one JSON document; progress and logs go to
standard error. Exit status 0 on success, non-zero with a one-line reason on standard error.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from tqdm import tqdm

from oncopacs.archive.decoding import guard_pydicom_logs
from oncopacs.cli.audit import audit_group
from oncopacs.cli.backup import backup_command
from oncopacs.cli.context import opened_platform, settings_of
from oncopacs.cli.deid import deid_group
from oncopacs.cli.fusion import fusion_group
from oncopacs.cli.models import models_group
from oncopacs.cli.patients import patients_group
from oncopacs.cli.pet import pet_group
from oncopacs.cli.report import report_group
from oncopacs.cli.rt import rt_group
from oncopacs.cli.storage_keys import storage_group
from oncopacs.cli.tls import tls_group
from oncopacs.cli.users import token_group, user_group
from oncopacs.cli.viewer import viewer_group
from oncopacs.errors import EXPECTED_ERRORS
from oncopacs.settings import Settings


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as exc:
            click.echo(f"oncopacs: {exc}", err=True)
            sys.exit(2)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group(cls=_Cli)
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="TOML settings file.")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Overrides ONCOPACS_DATA_DIR.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on standard error.")
@click.version_option(package_name="oncopacs")
@click.pass_context
def main(ctx: click.Context, config: Path | None, data_dir: Path | None, verbose: bool) -> None:
    """OncoPACS: an open PACS for radiation oncology and proton therapy."""
    _configure_logging(verbose)
    settings = Settings.load(config_file=config)
    guard_pydicom_logs(log_phi=settings.log_phi)  # pydicom's messages quote values: kept out of logs
    ctx.obj = settings.with_overrides(data_dir=data_dir) if data_dir else settings


@main.command()
@click.option("--http-port", type=int, help="Overrides ONCOPACS_HTTP_PORT (default 8042).")
@click.option("--dicom-port", type=int, help="Overrides ONCOPACS_DICOM_PORT (default 11112).")
@click.option("--host", "http_host", help="Interface the HTTP server binds (default 127.0.0.1).")
@click.option("--role", type=click.Choice(["all", "web", "dimse"]),
              help="Overrides ONCOPACS_ROLE (default all): web serves HTTP only, dimse DIMSE and HL7 only.")
@click.pass_context
def serve(ctx: click.Context, http_port: int | None, dicom_port: int | None, http_host: str | None,
          role: str | None) -> None:
    """Serve HTTP (web, DICOMweb, API, /health) and DIMSE in one process (or one of them: --role)."""
    from oncopacs.cli.serve import serve as run
    from oncopacs.platform import open_platform

    settings = settings_of(ctx, http_port=http_port, dicom_port=dicom_port, http_host=http_host, role=role)
    logging.getLogger("oncopacs").setLevel(logging.INFO)
    with open_platform(settings) as platform:
        run(platform)


@main.command()
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (a supervisor restarts one that dies).")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Jobs each process runs at a time.")
@click.option("--lease-seconds", type=click.FloatRange(1, 3600), default=60, show_default=True,
              help="A job's lease, renewed while it runs; a job whose worker died is retried once it ends.")
@click.pass_context
def worker(ctx: click.Context, processes: int, threads: int, lease_seconds: float) -> None:
    """Run queued jobs from the queue engine (ONCOPACS_QUEUE_URL) until SIGINT or SIGTERM."""
    from oncopacs.cli.worker import serve_worker

    logging.getLogger("oncopacs").setLevel(logging.INFO)
    serve_worker(settings_of(ctx), processes=processes, threads=threads, lease_s=lease_seconds)


@main.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.option("--strict", is_flag=True, help="Reject files that are not DICOM instead of skipping them.")
@click.pass_context
def import_command(ctx: click.Context, paths: tuple[Path, ...], as_json: bool, strict: bool) -> None:
    """Import DICOM files and folders (recursively) through the ingest path.

    Files that are not DICOM (README, CSV, ...), DICOMDIRs and hidden files are skipped and listed;
    exit status 1 when any DICOM file is rejected (or, with --strict, any file is not DICOM).
    """
    from oncopacs.archive.importer import import_files, iter_files
    from oncopacs.cli.audit import import_tally, record_import
    from oncopacs.dimse.auditing import patient_ids_of_studies
    from oncopacs.errors import AuditError

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise click.ClickException(f"no such file or folder: {', '.join(missing)}")
    files = list(iter_files(paths))
    tally = import_tally()
    audit_problem = ""
    with opened_platform(ctx) as platform, \
            tqdm(total=len(files), unit="file", desc="import", file=sys.stderr, disable=None) as bar:
        summary = import_files(
            platform.archive, files, on_file=lambda _p: bar.update(1), strict=strict,
            on_result=tally.count_result,
        )
        for _ in range(len(summary.rejected) - tally.failed):  # unreadable, or not DICOM with --strict
            tally.count(None, False)

        def patient_ids_for(study_uids: list[str]) -> list[str]:
            with platform.archive.index.reading() as session:
                return patient_ids_of_studies(session, study_uids)

        try:
            record_import(platform.audit, tally, len(summary.skipped), patient_ids_for)
        except AuditError as exc:  # the files are stored: say so, then that their record is missing
            audit_problem = str(exc)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(f"stored {summary.stored}, duplicate {summary.duplicate}, rejected {len(summary.rejected)}, "
                   f"skipped {len(summary.skipped)}")
        for label, entries in (("rejected", summary.rejected), ("skipped", summary.skipped)):
            for path, reason in entries:
                click.echo(f"  {label} {path}: {reason}")
    if audit_problem:
        click.echo(f"oncopacs: import not audited: {audit_problem}", err=True)
        sys.exit(2)
    if summary.rejected:
        click.echo(f"oncopacs: {len(summary.rejected)} file(s) rejected", err=True)
        sys.exit(1)


@main.command()
@click.option("--repair", is_flag=True, help="Index files that are stored but missing from the index.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def verify(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Re-hash every stored file; report missing, altered and unindexed files."""
    from oncopacs.archive.maintenance import count_indexed, recover_orphans
    from oncopacs.archive.maintenance import verify as run_verify
    with opened_platform(ctx) as platform:  # files re-indexed by --repair meet the rules like any other
        archive = platform.archive
        if repair:
            recovered = recover_orphans(archive)
            click.echo(f"re-indexed {recovered} file(s)", err=True)
        with tqdm(total=count_indexed(archive), unit="file", desc="verify", file=sys.stderr, disable=None) as bar:
            report = run_verify(archive, progress=bar.update)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"checked {report.checked} file(s): {len(report.missing)} missing, "
                   f"{len(report.altered)} altered, {len(report.unreadable)} unreadable, "
                   f"{len(report.unindexed)} not indexed")
        for label, paths in (
            ("missing", report.missing),
            ("altered", report.altered),
            ("unreadable", report.unreadable),
            ("not indexed", report.unindexed),
        ):
            for path in paths:
                click.echo(f"  {label}: {path}")
    if report.unreadable:
        click.echo("oncopacs: unreadable files failed to read (an I/O error) or are sealed with a storage key that is "
                   "not configured: set ONCOPACS_STORAGE_KEY_FILE to the key file they were sealed with", err=True)
    if not report.ok:
        click.echo("oncopacs: the storage area does not match the index", err=True)
        sys.exit(1)


@main.command()
@click.option("--patients", default=2, show_default=True, help="How many demo patients to generate.")
@click.option("--http-port", type=int, help="Overrides ONCOPACS_HTTP_PORT (default 8042).")
@click.option("--dicom-port", type=int, help="Overrides ONCOPACS_DICOM_PORT (default 11112).")
@click.option("--no-serve", is_flag=True, help="Load the demo patients and exit.")
@click.pass_context
def demo(ctx: click.Context, patients: int, http_port: int | None, dicom_port: int | None, no_serve: bool) -> None:
    """Load synthetic demo patients (CT, RTSTRUCT, RT Ion Plan, RT Dose, PET-CT) and serve them."""
    from oncopacs.cli.demo import analyse_demo, ensure_demo_user, load_demo
    from oncopacs.cli.serve import serve as run
    from oncopacs.cli.viewer import ensure_viewer
    from oncopacs.platform import open_platform

    settings = settings_of(ctx, http_port=http_port, dicom_port=dicom_port)
    with open_platform(settings) as platform:
        with tqdm(unit="object", desc="demo patients", file=sys.stderr, disable=None) as bar:
            summary = load_demo(platform.archive, patients, on_object=lambda: bar.update(1))
        click.echo(f"demo data in {settings.data_dir}: {summary.stored} stored, "
                   f"{summary.duplicate} already present", err=True)
        if summary.rejected:
            raise click.ClickException(f"demo data rejected: {summary.rejected[0][1]}")
        with tqdm(unit="job", desc="analysing the demo", file=sys.stderr, disable=None) as bar:
            analysed = analyse_demo(platform, on_job=lambda: bar.update(1))
        click.echo(analysed.describe(), err=True)
        click.echo(ensure_viewer(settings.effective_viewer_dir), err=True)
        username, password = ensure_demo_user(platform.users, settings.data_dir)
        click.echo(f"sign in as {username!r} with password {password!r} (admin; kept in "
                   f"{settings.data_dir / 'demo-credentials.txt'})", err=True)
        if not no_serve:
            logging.getLogger("oncopacs").setLevel(logging.INFO)
            scheme = "https" if settings.tls_enabled else "http"
            click.echo(f"serving on {scheme}://{settings.http_host}:{settings.http_port}/login "
                       f"(DICOMweb at /dicom-web, API at /api, OHIF at /viewer) and DICOM "
                       f"{settings.ae_title}@127.0.0.1:{settings.dicom_port}; Ctrl-C stops", err=True)
            run(platform)


main.add_command(rt_group)
main.add_command(user_group)
main.add_command(token_group)
main.add_command(audit_group)
main.add_command(report_group)
main.add_command(fusion_group)
main.add_command(pet_group)
main.add_command(tls_group)
main.add_command(deid_group)
main.add_command(models_group)
main.add_command(patients_group)
main.add_command(viewer_group)
main.add_command(backup_command)
main.add_command(storage_group)


if __name__ == "__main__":  # pragma: no cover
    main()
