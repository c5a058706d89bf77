"""``oncopacs rt …``: RT analysis on files, printing JSON with ``--json`` or a readable table."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from oncopacs.cli.output import emit

DEFAULT_METRICS = ("Mean[Gy]", "Min[Gy]", "Max[Gy]", "D95%[Gy]", "D2cc[Gy]")


def read_dicom(path: Path) -> Dataset:
    """A DICOM file, or a one-line error naming the file and the problem."""
    try:
        return dcmread(path)
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file") from None
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


@click.group("rt")
def rt_group() -> None:
    """RT analysis: DVHs and metrics, plan summaries."""


@rt_group.command("dvh")
@click.option(
    "--rtstruct", "rtstruct_path", required=True, type=click.Path(path_type=Path), help="RT Structure Set file."
)
@click.option("--rtdose", "rtdose_path", required=True, type=click.Path(path_type=Path), help="RT Dose file.")
@click.option("--roi", "roi_names", multiple=True, help="ROI name (repeatable; default: every ROI with contours).")
@click.option("--metric", "metrics", multiple=True, help="TG-263 metric, e.g. 'D95%[Gy]', 'V20Gy[%]' (repeatable).")
@click.option("--prescription", "prescription_gy", type=float, help="Prescription dose in Gy (for % metrics).")
@click.option(
    "--dvh-step", "dvh_step_gy", type=float, default=0.1, show_default=True, help="Dose step of the printed DVH, Gy."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def dvh_command(
    rtstruct_path: Path,
    rtdose_path: Path,
    roi_names: tuple[str, ...],
    metrics: tuple[str, ...],
    prescription_gy: float | None,
    dvh_step_gy: float,
    as_json: bool,
) -> None:
    """Cumulative DVHs and metrics of ROIs in a dose."""
    from rt.dose import read_dose
    from rt.dvh import compute_available_metrics, compute_roi_dvh, validate_metric
    from rt.errors import OutsideDoseGridError
    from rt.structures import read_structure_set

    structure_set = read_structure_set(read_dicom(rtstruct_path))
    dose = read_dose(read_dicom(rtdose_path))
    names = roi_names or tuple(roi.name for roi in structure_set.rois if not roi.is_empty)
    wanted = [validate_metric(m) for m in metrics or DEFAULT_METRICS + (
        (f"V{prescription_gy:g}Gy[%]",) if prescription_gy else ())]  # a typo stops the command, named
    rois = []
    for name in names:
        try:
            dvh = compute_roi_dvh(structure_set, name, dose)
        except OutsideDoseGridError as exc:  # reported, never silently left out
            rois.append(
                {
                    "name": exc.roi_name,
                    "volume_cc": round(exc.volume_cc, 4),
                    "uncovered_volume_cc": round(exc.volume_cc, 4),
                    "metrics": {},
                    "dvh": None,
                    "note": "entirely outside the dose grid",
                }
            )
            continue
        steps = np.arange(0.0, dvh.max_gy + dvh_step_gy, dvh_step_gy)
        available = compute_available_metrics(dvh, wanted, prescription_gy)  # a 0.9 cc ROI has no D2cc: said, not fatal
        rois.append(
            {
                "name": dvh.roi_name,
                "volume_cc": round(dvh.volume_cc + dvh.uncovered_volume_cc, 4),
                "uncovered_volume_cc": round(dvh.uncovered_volume_cc, 4),
                "metrics": {m: round(available.values[m], 4) if m in available.values else None for m in wanted},
                "not_evaluable": available.not_evaluable,
                "dvh": {
                    "dose_gy": [round(float(d), 4) for d in steps],
                    "volume_cc": [round(dvh.compute_volume_at_dose_cc(float(d)), 4) for d in steps],
                },
            }
        )
    emit(
        {"rtstruct": str(rtstruct_path), "rtdose": str(rtdose_path), "prescription_gy": prescription_gy, "rois": rois},
        as_json,
        _render_dvh,
    )


def _render_dvh(document: dict) -> list[str]:
    lines = []
    metric_names = next((list(roi["metrics"]) for roi in document["rois"] if roi["metrics"]), [])
    lines.append(
        f"{'ROI':<20} {'volume [cc]':>12} {'uncovered [cc]':>15} " + " ".join(f"{m:>12}" for m in metric_names)
    )
    for roi in document["rois"]:
        cells = [f"{'n/e':>12}" if roi["metrics"].get(m) is None else f"{roi['metrics'][m]:>12.3f}"
                 for m in metric_names]
        values = " ".join(cells) if roi["metrics"] else roi.get("note", "")
        lines.append(f"{roi['name']:<20} {roi['volume_cc']:>12.2f} {roi['uncovered_volume_cc']:>15.2f} {values}")
    lines += [f"n/e {roi['name']} {metric}: {reason}" for roi in document["rois"]
              for metric, reason in roi.get("not_evaluable", {}).items()]
    return lines


@rt_group.command("plan")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def plan_command(path: Path, as_json: bool) -> None:
    """Summary of an RT Plan or RT Ion Plan: prescription, fractions, beams."""
    from rt.plan import read_plan_summary

    emit(read_plan_summary(read_dicom(path)).to_dict(), as_json, _render_plan)


def _render_plan(plan: dict) -> list[str]:
    prescription = f"{plan['prescription_gy']:g} Gy" if plan.get("prescription_gy") is not None else "no prescription"
    lines = [
        f"{plan['sop_class']} {plan.get('label') or ''}: {plan.get('radiation_type')}, "
        f"{plan.get('fractions')} fraction(s), {prescription}"
    ]
    for beam in plan["beams"]:
        energy = ""
        if beam.get("energy_layers_mev"):
            energy = f"{len(beam['energy_layers_mev'])} layers, {beam.get('spot_count')} spots"
        elif beam.get("nominal_energy_mv") is not None:
            energy = f"{beam['nominal_energy_mv']:g} MV"
        lines.append(
            f"  beam {beam.get('number')} {beam.get('name') or ''}: gantry {beam.get('gantry_angle_deg')} deg, "
            f"{energy}, meterset {_number(beam.get('meterset'))} {beam.get('meterset_unit') or ''}"
        )
    return lines


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


@rt_group.command("goals")
@click.option(
    "--rtstruct", "rtstruct_path", required=True, type=click.Path(path_type=Path), help="RT Structure Set file."
)
@click.option("--rtdose", "rtdose_path", required=True, type=click.Path(path_type=Path), help="RT Dose file.")
@click.option(
    "--template",
    "template_name",
    required=True,
    help="Shipped template name (see --list) or a path to a JSON template.",
)
@click.option("--prescription", "prescription_gy", type=float, help="Prescription dose in Gy (for % goals).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def goals_command(
    rtstruct_path: Path, rtdose_path: Path, template_name: str, prescription_gy: float | None, as_json: bool
) -> None:
    """Evaluate a clinical goal template: pass, within tolerance, fail or not evaluated, per goal."""
    from rt.dose import read_dose
    from rt.dvh import compute_roi_dvh
    from rt.errors import OutsideDoseGridError
    from rt.goals import (
        evaluate_goals,
        find_roi_name,
        list_templates,
        load_template,
        read_template,
    )

    path = Path(template_name)
    if path.suffix == ".json" or path.exists():
        template = read_template(path)
    elif template_name in list_templates():
        template = load_template(template_name)
    else:
        raise click.ClickException(f"no goal template {template_name!r}; shipped: {', '.join(list_templates())}")
    from rt.structures import read_structure_set

    structure_set = read_structure_set(read_dicom(rtstruct_path))
    dose = read_dose(read_dicom(rtdose_path))
    dvhs = {}
    for goal in template.goals:
        name = find_roi_name(goal, structure_set.roi_names)
        if name and name not in dvhs:
            try:
                dvhs[name] = compute_roi_dvh(structure_set, name, dose)
            except OutsideDoseGridError:
                continue  # the goal reports the ROI as not evaluated
    results = evaluate_goals(template, dvhs, prescription_gy)
    emit(
        {
            "template": template.to_dict().get("name", template_name),
            "prescription_gy": prescription_gy,
            "goals": [result.to_dict() for result in results],
        },
        as_json,
        _render_goals,
    )


def _render_goals(document: dict) -> list[str]:
    lines = [f"{'status':<17} {'ROI':<16} {'goal':<28} {'measured':>10}"]
    for goal in document["goals"]:
        spec = goal.get("goal") or {}
        text = f"{spec.get('metric', '')} {spec.get('comparator', '')} {spec.get('value', '')}"
        measured = goal.get("measured_value")
        value = "" if measured is None else f"{measured:.3f}"
        lines.append(
            f"{goal['status']:<17} {goal.get('roi_name') or spec.get('roi', ''):<16} {text:<28} {value:>10}"
            + (f"  ({goal['reason']})" if goal.get("reason") else "")
        )
    return lines


@rt_group.command("sum")
@click.argument("doses", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="RT Dose file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def sum_command(doses: tuple[Path, ...], out_path: Path, as_json: bool) -> None:
    """Sum RT Doses (resampled onto the first one's grid) into a new RT Dose file."""
    from rt.dose import build_rt_dose, read_dose
    from rt.summation import compute_dose_sum

    datasets = [read_dicom(path) for path in doses]
    total = compute_dose_sum([read_dose(ds) for ds in datasets])
    summed = build_rt_dose(total, datasets[0])
    summed.save_as(out_path, enforce_file_format=True)
    emit(
        {
            "out": str(out_path),
            "inputs": [str(p) for p in doses],
            "sop_instance_uid": str(summed.SOPInstanceUID),
            "max_dose_gy": round(float(np.nanmax(total.dose_gy)), 4),
            "uncovered_voxels": int(np.isnan(total.dose_gy).sum()),
        },
        as_json,
        lambda d: [f"wrote {d['out']}: max {d['max_dose_gy']} Gy ({len(d['inputs'])} doses)"],
    )


@rt_group.command("gamma")
@click.argument("reference_path", type=click.Path(path_type=Path))
@click.argument("evaluated_path", type=click.Path(path_type=Path))
@click.option(
    "--dose-diff", "dose_diff_percent", type=float, default=3.0, show_default=True, help="Dose difference, %."
)
@click.option("--dta", "dta_mm", type=float, default=3.0, show_default=True, help="Distance to agreement, mm.")
@click.option("--local", is_flag=True, help="Local instead of global dose difference.")
@click.option(
    "--threshold",
    "threshold_percent",
    type=float,
    default=10.0,
    show_default=True,
    help="Lower dose cut-off, % of the reference maximum.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def gamma_command(
    reference_path: Path,
    evaluated_path: Path,
    dose_diff_percent: float,
    dta_mm: float,
    local: bool,
    threshold_percent: float,
    as_json: bool,
) -> None:
    """3D gamma index of an evaluated RT Dose against a reference RT Dose."""
    from rt.dose import read_dose
    from rt.gamma import compute_gamma

    result = compute_gamma(
        read_dose(read_dicom(reference_path)),
        read_dose(read_dicom(evaluated_path)),
        dose_diff_percent=dose_diff_percent,
        dta_mm=dta_mm,
        local=local,
        threshold_percent=threshold_percent,
    )
    document = {key: value for key, value in result.to_dict().items() if key not in ("gamma", "grid")}
    emit(
        document,
        as_json,
        lambda d: [
            f"gamma {dose_diff_percent:g}%/{dta_mm:g} mm {'local' if local else 'global'}, "
            f"threshold {threshold_percent:g}%: "
            f"{d['pass_rate_percent']:.2f}% of {d['number_evaluated']} voxels pass"
        ],
    )
