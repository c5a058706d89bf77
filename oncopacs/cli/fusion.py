"""``oncopacs fusion register | propagate | warp-dose | 4d``: registration, contour propagation, dose
warping and accumulation, 4D CT, on DICOM folders.

Each prints one JSON document with ``--json`` (progress and logs on stderr), exits 0 on success and
non-zero with a one-line reason otherwise. With ``--store`` the objects also go into the archive, and the run
leaves one STORE record (DICOM 110104) under the operating-system user and this host, as ``oncopacs import`` does.
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.cli.context import opened_platform
from oncopacs.errors import EXPECTED_ERRORS


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
        from oncopacs.analysis.registration import store_registration

        with opened_platform() as platform:
            document["stored"] = store_registration(platform.archive, dataset, source="cli:fusion-register").to_dict()
            _audit_stored(platform, [dataset], "register")
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

#: --registration value for a dose already in the fixed frame of reference.
NO_REGISTRATION = "-"


def _read(path: Path, *, pixels: bool = True) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise click.ClickException(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def _read_folder(folder: Path, *, pixels: bool = True) -> list[Dataset]:
    datasets: list[Dataset] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            datasets.append(dcmread(path, stop_before_pixels=not pixels))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
    if not datasets:
        raise click.ClickException(f"{folder}: no DICOM files")
    return datasets


def _fixed_slices(folder: Path, series_uid: str) -> list[Dataset]:
    """The headers of the fixed series' slices (for references in the objects written)."""
    return [ds for ds in _read_folder(folder, pixels=False)
            if str(ds.get("SeriesInstanceUID", "")) == series_uid and "ImagePositionPatient" in ds]


def _read_registration(path: Path):  # -> fusion.registration.Registration
    from fusion.dicom_reg import read_registration

    try:
        return read_registration(_read(path))
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _store(datasets: Sequence[Dataset], command: str) -> list[dict]:
    """``--store``: ingest the objects written into the configured archive, one dict per object."""
    from oncopacs.analysis.registration import ingest_derived

    with opened_platform() as platform:
        stored = ingest_derived(platform.archive, datasets, source=f"cli:fusion-{command}")
        _audit_stored(platform, datasets, command)
    return [one.to_dict() for one in stored]


def _audit_stored(platform, datasets: Sequence[Dataset], command: str) -> None:
    """The run's STORE record: its patients and studies, under the operating-system user (raises AuditError)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    platform.audit.record(AuditEvent(
        action=AuditAction.STORE, outcome=Outcome.SUCCESS, actor=user, actor_kind=ActorKind.USER,
        source=socket.gethostname(), patient_ids=_values(datasets, "PatientID"),
        study_uids=_values(datasets, "StudyInstanceUID"),
        detail=f"oncopacs fusion {command} --store: {len(datasets)} object(s)"))


def _values(datasets: Sequence[Dataset], keyword: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(ds.get(keyword, "")) for ds in datasets if ds.get(keyword)))


_store_option = click.option(
    "--store", is_flag=True, help="Also ingest the objects written into the archive (--data-dir)."
)


def _emit(document: dict, as_json: bool, line: str) -> None:
    click.echo(json.dumps(document, indent=2) if as_json else line)


def _check_frames(registration, fixed_uid: str, moving_uid: str) -> None:
    """The registration must go from the fixed image's frame of reference to the structure set's / dose's."""
    expected = registration.fixed.frame_of_reference_uid
    if expected and fixed_uid and expected != fixed_uid:
        raise click.ClickException(
            f"the registration's fixed frame of reference {expected} is not the fixed image's {fixed_uid}"
        )
    expected = registration.moving.frame_of_reference_uid
    if expected and moving_uid and expected != moving_uid:
        raise click.ClickException(
            f"the registration's moving frame of reference {expected} is not the input's {moving_uid}"
        )


@fusion_group.command("propagate")
@click.option(
    "--registration",
    "registration_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="(Deformable) Spatial Registration object, fixed = the new image.",
)
@click.option(
    "--rtstruct",
    "rtstruct_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="RT Structure Set drawn on the moving image.",
)
@click.option(
    "--fixed",
    "fixed_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Folder holding the fixed image series.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="RT Structure Set file to write, referencing the fixed series.",
)
@click.option("--roi", "roi_names", multiple=True, help="ROI to propagate (repeatable; default: every ROI).")
@click.option(
    "--reference",
    "reference_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Reference RT Structure Set on the fixed image: report Dice and 95% Hausdorff per ROI.",
)
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def propagate_command(
    registration_path: Path,
    rtstruct_path: Path,
    fixed_dir: Path,
    out_path: Path,
    roi_names: tuple[str, ...],
    reference_path: Path | None,
    store: bool,
    as_json: bool,
) -> None:
    """Warp the ROIs of RTSTRUCT onto the FIXED image through a registration; write a new RT Structure Set."""
    from fusion.propagation import compare_with_reference, propagate_structure_set
    from fusion.rtstruct_writer import build_rtstruct
    from fusion.volume import load_series, read_series_info
    from rt.structures import read_structure_set

    started = time.perf_counter()
    registration = _read_registration(registration_path)
    rtstruct = _read(rtstruct_path)
    try:
        fixed = load_series(fixed_dir)
        info = read_series_info(fixed)
        structure_set = read_structure_set(rtstruct)
        _check_frames(registration, info.frame_of_reference_uid, structure_set.frame_of_reference_uid)
        propagated = propagate_structure_set(structure_set, registration.transform, fixed, roi_names or None)
        overlap = (
            compare_with_reference(propagated, read_structure_set(_read(reference_path)), fixed)
            if reference_path
            else ()
        )
        dataset = build_rtstruct(
            _fixed_slices(fixed_dir, info.series_instance_uid),
            [roi.to_contours() for roi in propagated],
            label="Propagated",
            description=f"Propagated from {structure_set.sop_instance_uid}",
            entropy=[structure_set.sop_instance_uid, str(registration_path.name)],
        )
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(out_path, enforce_file_format=True)
    document = {
        "rtstruct_file": str(out_path),
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "fixed_series_uid": info.series_instance_uid,
        "rois": [
            {"name": roi.name, "volume_cc": round(roi.volume_cc, 3), "contours": len(roi.polygons_mm)}
            for roi in propagated
        ],
        "overlap": [stats.to_dict() for stats in overlap],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if store:
        document["stored"] = _store([dataset], "propagate")
    _emit(
        document,
        as_json,
        f"wrote {out_path}: {len(propagated)} ROI(s)" + "".join(f", {s.roi_name} Dice {s.dice:.3f}" for s in overlap),
    )


def _parse_alpha_beta(values: Sequence[str]) -> dict[str, float]:
    parsed = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            parsed[name] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not ROI=ALPHA_BETA_GY", param_hint="--alpha-beta") from None
        if not name:
            raise click.BadParameter(f"{value!r} is not ROI=ALPHA_BETA_GY", param_hint="--alpha-beta")
    return parsed


@fusion_group.command("warp-dose")
@click.option(
    "--dose",
    "dose_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="RT Dose of one course (repeatable).",
)
@click.option(
    "--registration",
    "registration_paths",
    multiple=True,
    help=f"Registration object per --dose, in the same order ('{NO_REGISTRATION}': already in the fixed frame).",
)
@click.option("--fractions", "fractions", multiple=True, type=float, help="Fractions per --dose (needed for EQD2).")
@click.option(
    "--fixed",
    "fixed_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Folder holding the fixed image series (the dose grid covers it).",
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(path_type=Path, dir_okay=False), help="RT Dose file to write."
)
@click.option("--mode", type=click.Choice(["physical", "eqd2"]), default="physical", show_default=True)
@click.option(
    "--rtstruct",
    "rtstruct_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="RT Structure Set on the fixed image, for per-ROI alpha/beta (EQD2).",
)
@click.option("--alpha-beta", "alpha_beta", multiple=True, help="ROI=ALPHA_BETA_GY (repeatable, needs --rtstruct).")
@click.option(
    "--default-alpha-beta",
    "default_alpha_beta_gy",
    type=float,
    default=3.0,
    show_default=True,
    help="alpha/beta outside the named ROIs, Gy.",
)
@click.option("--spacing", "spacing_mm", type=float, help="Output grid pitch, mm (default: the first dose's).")
@click.option("--override-qa", is_flag=True, help="Use registrations that failed (or lack) QA anyway.")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def warp_dose_command(
    dose_paths: tuple[Path, ...],
    registration_paths: tuple[str, ...],
    fractions: tuple[float, ...],
    fixed_dir: Path,
    out_path: Path,
    mode: str,
    rtstruct_path: Path | None,
    alpha_beta: tuple[str, ...],
    default_alpha_beta_gy: float,
    spacing_mm: float | None,
    override_qa: bool,
    store: bool,
    as_json: bool,
) -> None:
    """Warp each RT Dose onto the FIXED image and sum them (physical or EQD2); write a new RT Dose."""
    from fusion.dose_warp import DoseCourse, accumulate_doses, compute_covering_grid
    from fusion.volume import load_series, read_series_info
    from rt.dose import build_rt_dose, read_dose
    from rt.structures import compute_mask, read_structure_set

    if registration_paths and len(registration_paths) != len(dose_paths):
        raise click.UsageError(f"{len(registration_paths)} --registration for {len(dose_paths)} --dose")
    if fractions and len(fractions) != len(dose_paths):
        raise click.UsageError(f"{len(fractions)} --fractions for {len(dose_paths)} --dose")
    if mode == "eqd2" and not fractions:
        raise click.UsageError("EQD2 needs --fractions for every --dose")
    if alpha_beta and not rtstruct_path:
        raise click.UsageError("--alpha-beta needs --rtstruct")
    ratios = _parse_alpha_beta(alpha_beta)
    started = time.perf_counter()
    try:
        fixed = load_series(fixed_dir)
        info = read_series_info(fixed)
        courses = []
        for i, dose_path in enumerate(dose_paths):
            dose = read_dose(_read(dose_path))
            reg_path = registration_paths[i] if registration_paths else NO_REGISTRATION
            transform = qa = None
            if reg_path != NO_REGISTRATION:
                registration = _read_registration(Path(reg_path))
                _check_frames(registration, info.frame_of_reference_uid, dose.frame_of_reference_uid)
                transform, qa = registration.transform, registration.qa
            courses.append(DoseCourse(dose, fractions[i] if fractions else 1.0, transform, qa))
        first = courses[0].dose.grid
        grid = compute_covering_grid(fixed, (spacing_mm,) * 3 if spacing_mm else first.spacing_mm)
        masks = {}
        if ratios and rtstruct_path is not None:  # --alpha-beta without --rtstruct was refused above
            structure_set = read_structure_set(_read(rtstruct_path))
            masks = {name: (compute_mask(structure_set.roi(name), grid), value) for name, value in ratios.items()}
        total = accumulate_doses(
            courses,
            grid,
            frame_of_reference_uid=info.frame_of_reference_uid,
            mode=mode,
            alpha_beta_by_roi=masks,
            default_alpha_beta_gy=default_alpha_beta_gy,
            override_qa=override_qa,
        )
        template = _fixed_slices(fixed_dir, info.series_instance_uid)[0]
        description = "Accumulated EQD2" if mode == "eqd2" else "Accumulated dose"
        dataset = build_rt_dose(
            total, template, summation_type=total.dose_summation_type, series_description=description
        )
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(out_path, enforce_file_format=True)
    values = total.dose_gy
    covered = np.isfinite(values)
    document = {
        "rtdose_file": str(out_path),
        "sop_instance_uid": str(dataset.SOPInstanceUID),
        "mode": mode,
        "courses": len(courses),
        "grid": total.grid.to_dict(),
        "max_gy": round(float(values[covered].max()), 4) if covered.any() else None,
        "uncovered_percent": round(100.0 * float(1.0 - covered.mean()), 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if store:
        document["stored"] = _store([dataset], "warp-dose")
    _emit(document, as_json, f"wrote {out_path}: {mode} sum of {len(courses)} course(s), max {document['max_gy']} Gy")


@fusion_group.command("4d")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--gtv", "gtv_name", help="Name of the GTV ROI (default: the structure set's only GTV).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the MIP/AIP/MinIP series and the ITV structure set.",
)
@click.option(
    "--method",
    type=click.Choice(["track", "rigid", "deformable"]),
    default="track",
    show_default=True,
    help="How the GTV is found on each phase: track its own neighbourhood (template search), or register "
    "the region around it to the GTV's phase (rigid, deformable; static anatomy nearby can hold these back).",
)
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def ct4d_command(folder: Path, gtv_name: str | None, out_dir: Path, method: str, store: bool, as_json: bool) -> None:
    """4D CT in FOLDER (phase series + GTV structure set): MIP/AIP/MinIP, GTV on every phase, ITV, motion."""
    from fusion.ct4d import analyse_4dct, build_derived_series
    from fusion.rtstruct_writer import RoiContours, build_rtstruct, compute_mask_polygons

    started = time.perf_counter()
    try:
        analysis = analyse_4dct(_read_folder(folder), gtv_name=gtv_name, method=method)
        template = analysis.phases[analysis.reference_index].datasets[0]
        written: dict[str, str] = {}
        series: dict[str, list[Dataset]] = {}
        for number, (kind, image) in enumerate(
            (
                ("MIP", analysis.projections.mip),
                ("AIP", analysis.projections.aip),
                ("MINIP", analysis.projections.minip),
            ),
            start=1,
        ):
            series[kind] = build_derived_series(image, template, kind, series_number=800 + number)
        rois = [RoiContours("ITV", compute_mask_polygons(analysis.itv), "CTV", (255, 128, 0))]
        for phase, occupancy in zip(analysis.phases, analysis.occupancies, strict=True):
            rois.append(
                RoiContours(
                    f"{analysis.gtv_name}_{phase.percent:g}%",
                    compute_mask_polygons(occupancy >= 0.5),
                    "GTV",
                    (255, 0, 0),
                )
            )
        rtstruct = build_rtstruct(
            series["AIP"],
            rois,
            label="ITV",
            description="ITV and GTV per phase of a 4D CT",
            series_description="ITV (4D CT)",
            entropy=[analysis.gtv_name, method],
        )
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    for kind, slices in series.items():
        target = out_dir / kind
        target.mkdir(parents=True, exist_ok=True)
        for ds in slices:
            ds.save_as(target / f"CT_{int(ds.InstanceNumber):04d}.dcm", enforce_file_format=True)
        written[kind] = str(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    rtstruct_path = out_dir / "RTSTRUCT_ITV.dcm"
    rtstruct.save_as(rtstruct_path, enforce_file_format=True)
    written["rtstruct"] = str(rtstruct_path)
    document = {
        **analysis.to_dict(),
        "method": method,
        "outputs": written,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if store:
        document["stored"] = _store([ds for slices in series.values() for ds in slices] + [rtstruct], "4d")
    amplitude = ", ".join(f"{k} {v:.1f}" for k, v in document["amplitude_mm"].items())
    weak = document.get("weak_match_phase_percent") or []
    caution = f"; weak GTV match on phase(s) {', '.join(f'{p:g}%' for p in weak)}: check them" if weak else ""
    _emit(
        document,
        as_json,
        f"{document['phases']} phases; amplitude (mm) {amplitude}; ITV {document['itv_cc']:.2f} cc{caution}",
    )
