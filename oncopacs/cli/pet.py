"""``oncopacs pet …``: SUV statistics and treatment response on PET-CT folders, JSON with ``--json``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from oncopacs.cli.output import emit
from oncopacs.errors import EXPECTED_ERRORS


def _files(folder: Path) -> Iterator[Path]:
    if folder.is_file():
        yield folder
        return
    yield from (p for p in sorted(folder.rglob("*")) if p.is_file())


def read_folder(folder: Path) -> tuple[list[Dataset], list[Dataset]]:
    """(PET slices of the one PET series, RTSTRUCTs) found under ``folder``; other files are skipped."""
    if not folder.exists():
        raise click.ClickException(f"{folder}: no such file or folder")
    pet: dict[str, list[Dataset]] = {}
    structures: list[Dataset] = []
    for path in _files(folder):
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if ds.get("Modality") == "PT":
            pet.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
        elif ds.get("Modality") == "RTSTRUCT":
            structures.append(ds)
    if not pet:
        raise click.ClickException(f"{folder}: no PET (Modality PT) slices found")
    if len(pet) > 1:
        raise click.ClickException(f"{folder}: {len(pet)} PET series found; give a folder with one")
    return next(iter(pet.values())), structures


def _rtstruct(path: Path | None, found: list[Dataset], pet: list[Dataset]) -> Dataset | None:
    """The RTSTRUCT given, else the one found beside the PET on its frame of reference (None if none)."""
    if path is not None:
        try:
            return dcmread(path)
        except FileNotFoundError:
            raise click.ClickException(f"{path}: no such file") from None
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise click.ClickException(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    frame = str(pet[0].get("FrameOfReferenceUID", ""))
    same = [ds for ds in found if any(str(item.get("FrameOfReferenceUID", "")) == frame
                                      for item in ds.get("ReferencedFrameOfReferenceSequence", []))]
    if len(same) > 1:
        raise click.ClickException("several RTSTRUCTs on the PET's frame of reference; choose one with --rtstruct")
    return same[0] if same else None


def _seed(text: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not x,y,z in mm") from None
    return x, y, z


@click.group("pet")
def pet_group() -> None:
    """PET-CT quantification: SUV statistics and treatment response (PERCIST, EORTC, RECIST-style)."""


SUV_CHOICE = click.Choice(["bw", "lbm", "bsa"])


@pet_group.command("suv")
@click.option("--pet", "pet_dir", required=True, type=click.Path(path_type=Path), help="Folder with one PET series.")
@click.option("--rtstruct", "rtstruct_path", type=click.Path(path_type=Path),
              help="RT Structure Set on the PET-CT's frame of reference (default: one found in the folder).")
@click.option("--roi", "roi_names", multiple=True, help="ROI name (repeatable; default: every contoured ROI but BODY).")
@click.option("--seed", "seeds", multiple=True, help="Seed point x,y,z in mm for a 41 %-of-max region (repeatable).")
@click.option("--suv", "suv_type", type=SUV_CHOICE, default="bw", show_default=True, help="SUV normalisation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def suv_command(pet_dir: Path, rtstruct_path: Path | None, roi_names: tuple[str, ...], seeds: tuple[str, ...],
                suv_type: str, as_json: bool) -> None:
    """SUVmax, SUVmean, SUVpeak, SULpeak, MTV and TLG of ROIs or seeded regions."""
    from fusion.pet.stats import (
        compute_roi_stats,
        compute_structure_stats,
        segment_from_seed,
    )
    from fusion.pet.suv import read_suv_image
    from rt.structures import read_structure_set

    pet, found = read_folder(pet_dir)
    try:
        image = read_suv_image(pet, suv_type)
        stats = []
        rtstruct = _rtstruct(rtstruct_path, found, pet)
        if rtstruct is not None:
            structure_set = read_structure_set(rtstruct)
            names = roi_names or tuple(r.name for r in structure_set.rois
                                       if not r.is_empty and r.interpreted_type.upper() != "EXTERNAL")
            stats += compute_structure_stats(image, structure_set, names)
        elif roi_names:
            raise click.ClickException("--roi needs an RTSTRUCT (--rtstruct, or one in the PET folder)")
        for i, seed in enumerate(seeds):
            stats.append(compute_roi_stats(image, segment_from_seed(image, _seed(seed)), f"seed{i + 1}"))
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    if not stats:
        raise click.ClickException("nothing to measure: give --rtstruct (or an RTSTRUCT in the folder) or --seed")
    document = {"suv_type": image.suv_type.value, "unit": image.suv_type.unit,
                "series_instance_uid": image.series_instance_uid, "calibration": image.calibration.to_dict(),
                "rois": [s.to_dict() for s in stats]}
    emit(document, as_json, _render_suv)


def _render_suv(document: dict) -> list[str]:
    unit = document["unit"]
    lines = [f"SUV{document['suv_type']} [{unit}], uptake {document['calibration']['uptake_s'] / 60:.0f} min",
             f"{'ROI':<16} {'SUVmax':>8} {'SUVmean':>8} {'SUVpeak':>8} {'SULpeak':>8} {'MTV [cc]':>9} {'TLG [g]':>9}"]
    for roi in document["rois"]:
        sul = "" if roi["SULpeak"] is None else f"{roi['SULpeak']:.2f}"
        lines.append(f"{roi['name']:<16} {roi['SUVmax']:>8.2f} {roi['SUVmean']:>8.2f} {roi['SUVpeak']:>8.2f} "
                     f"{sul:>8} {roi['MTV_cc']:>9.2f} {roi['TLG']:>9.1f}")
    return lines


@pet_group.command("response")
@click.option("--baseline", "baseline_dir", required=True, type=click.Path(path_type=Path),
              help="Folder with the baseline PET (and its RTSTRUCT).")
@click.option("--followup", "followup_dir", required=True, type=click.Path(path_type=Path),
              help="Folder with the follow-up PET (and its RTSTRUCT).")
@click.option("--rtstruct", "rtstruct_paths", multiple=True, type=click.Path(path_type=Path),
              help="RTSTRUCT of the baseline, then of the follow-up (default: found in each folder).")
@click.option("--roi", "roi_names", multiple=True, help="Lesion ROI name (repeatable; default: ROIs of type GTV).")
@click.option("--liver-roi", "liver_name", default="Liver", show_default=True, help="Liver reference ROI.")
@click.option("--cycles", type=int, default=1, show_default=True, help="Treatment cycles before the follow-up (EORTC).")
@click.option("--new-lesion", "new_lesion", is_flag=True, help="A new lesion was seen at follow-up.")
@click.option("--suv", "suv_type", type=SUV_CHOICE, default="bw", show_default=True, help="SUV normalisation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def response_command(baseline_dir: Path, followup_dir: Path, rtstruct_paths: tuple[Path, ...],
                     roi_names: tuple[str, ...], liver_name: str, cycles: int, new_lesion: bool, suv_type: str,
                     as_json: bool) -> None:
    """PERCIST 1.0, EORTC 1999 and RECIST-style categories of a follow-up against baseline."""
    from oncopacs.analysis.pet import assess_response, measure_time_point

    if len(rtstruct_paths) > 2:
        raise click.ClickException("--rtstruct takes at most two files: baseline, then follow-up")
    paths = list(rtstruct_paths) + [None] * (2 - len(rtstruct_paths))
    measured = []
    try:
        for folder, path, label in ((baseline_dir, paths[0], "baseline"), (followup_dir, paths[1], "follow-up")):
            pet, found = read_folder(folder)
            rtstruct = _rtstruct(path, found, pet)
            if rtstruct is None:
                raise click.ClickException(f"{folder}: no RTSTRUCT on the PET's frame of reference (give --rtstruct)")
            measured.append(measure_time_point(pet, rtstruct, lesion_names=roi_names, liver_name=liver_name,
                                               suv_type=suv_type, label=label,
                                               new_lesions=new_lesion and label == "follow-up"))
        assessment = assess_response([m.time_point for m in measured], cycles=cycles)
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(str(exc)) from None
    document = {"suv_type": suv_type, **assessment.to_dict(),
                "time_points": [m.time_point.to_dict() for m in measured]}
    emit(document, as_json, _render_response)


def _render_response(document: dict) -> list[str]:
    lines = [f"{document['baseline']['date']} -> {document['followup']['date']}"]
    for criterion, category in document["categories"].items():
        lines.append(f"  {criterion:<12} {category}")
    lines += [f"  note: {note}" for note in document["notes"]]
    return lines
