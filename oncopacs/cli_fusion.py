"""``oncopacs fusion …``: image registration on DICOM folders, printing JSON with ``--json``.

Other fusion commands (``propagate``, ``warp-dose``, ``4d``) are added to :data:`fusion_group`
from :mod:`oncopacs.cli_fusion_more`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click


@click.group("fusion")
def fusion_group() -> None:
    """Image fusion: rigid and deformable registration with QA."""


@fusion_group.command("register")
@click.option("--fixed", "fixed_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder holding the fixed image series (the reference, e.g. the planning CT).")
@click.option("--moving", "moving_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder holding the moving image series (e.g. the new CT or CBCT).")
@click.option("--deformable", is_flag=True, help="Rigid, then deformable registration (default: rigid only).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write the DICOM registration object to (created if missing).")
@click.option("--store", is_flag=True, help="Also store the registration and its QA in the archive (--data-dir).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def register_command(fixed_dir: Path, moving_dir: Path, deformable: bool, out_dir: Path, store: bool,
                     as_json: bool) -> None:
    """Register MOVING to FIXED and write a (Deformable) Spatial Registration object with its QA.

    QA: Jacobian determinant and inverse consistency (rigid: from a reverse registration; deformable:
    from the numerically inverted field); a flagged registration is still written, with its failures.
    """
    from fusion.dicom_reg import build_registration_dataset
    from fusion.errors import FusionError
    from fusion.qa import compute_registration_qa
    from fusion.registration import register_deformable, register_rigid
    from fusion.volume import load_series

    started = time.perf_counter()
    try:
        fixed = load_series(fixed_dir)
        moving = load_series(moving_dir)
        progress = _progress_printer()
        registration = (register_deformable if deformable else register_rigid)(fixed, moving, progress=progress)
        # inverse consistency: a reverse rigid run (cheap), or the inverted field of a deformable result
        reverse = None if deformable else register_rigid(moving, fixed)
        qa = compute_registration_qa(registration, fixed, reverse=reverse)
        dataset = build_registration_dataset(registration, fixed, moving, qa=qa)
    except FusionError as exc:
        raise click.ClickException(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"REG_{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(out_path, enforce_file_format=True)
    document = {
        "registration_file": str(out_path),
        "kind": registration.kind.value,
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "fixed_series_uid": registration.fixed.series_instance_uid,
        "moving_series_uid": registration.moving.series_instance_uid,
        "qa": qa.to_dict(),
        "registration_seconds": round(registration.seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if store:
        from oncopacs.fusion_store import store_registration_with_settings
        document["stored"] = store_registration_with_settings(click.get_current_context().obj, dataset,
                                                              source="cli:fusion-register")
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        verdict = "PASS" if qa.passed else "FLAGGED: " + "; ".join(qa.failures)
        click.echo(f"wrote {out_path} ({document['kind']}, {document['seconds']:.1f} s), QA {verdict}")


def _progress_printer():
    last = [-1]

    def report(fraction: float, message: str) -> None:
        percent = int(fraction * 100)
        if percent // 10 != last[0] // 10 or fraction >= 1.0:
            last[0] = percent
            print(f"{percent:3d}% {message}", file=sys.stderr, flush=True)

    return report


from oncopacs import cli_fusion_more  # noqa: F401  (propagate, warp-dose, 4d)
