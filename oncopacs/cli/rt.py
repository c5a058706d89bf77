"""``oncopacs rt …``: RT analysis on files, printing JSON with ``--json`` or a readable table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from oncopacs.cli.output import emit

if TYPE_CHECKING:
    from rt.dose import DoseGrid
    from rt.dvh import DVH
    from rt.goals import GoalTemplate
    from rt.plan import Prescription
    from rt.structures import StructureSet

DEFAULT_METRICS = ("Mean[Gy]", "Min[Gy]", "Max[Gy]", "D95%[Gy]", "D2cc[Gy]")


def read_dicom(path: Path) -> Dataset:
    """A DICOM file, or a one-line error naming the file and the problem."""
    try:
        return dcmread(path)
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file") from None
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def read_dose_file(path: Path, fractions: int | None = None) -> DoseGrid:
    """An RT Dose in Gy for DVHs and goals (RELATIVE or unknown DoseUnits refused, naming the element);
    a FRACTION dose times ``fractions`` when given."""
    from rt.dose import check_absolute_dose, read_dose, scale_fraction_dose

    dose = read_dose(read_dicom(path))
    check_absolute_dose(dose)
    return scale_fraction_dose(dose, fractions) if fractions is not None else dose


def read_plan_options(rtplan_path: Path | None, given_gy: float | None,
                      dose: DoseGrid) -> tuple[Prescription, dict[str, Any]]:
    """(prescription, what the output says about the dose) from ``--rtplan`` and ``--prescription``.

    The prescription is ``--prescription`` when given, else the plan's, with its source; the dose
    document names its unit label, type, summation and why goals may not apply to it.
    """
    from rt.analysis import assess_dose, resolve_prescription
    from rt.plan import choose_prescription, read_plan_summary

    plan = read_plan_summary(read_dicom(rtplan_path)) if rtplan_path else None
    prescription = choose_prescription(resolve_prescription(plan, dose) if plan else None, given_gy, "--prescription")
    role = assess_dose(dose, plan)
    document = {"sop_instance_uid": dose.sop_instance_uid, "dose_unit": dose.dose_unit, "dose_type": dose.dose_type,
                "dose_summation_type": dose.dose_summation_type, "summation_note": role.note,
                "dose_problem": role.problem, "referenced_plan_uid": dose.referenced_plan_uid,
                "fractions_applied": dose.fractions_applied}
    return prescription, document


def _header_lines(document: dict[str, Any]) -> list[str]:
    dose = document["dose"]
    lines = [f"dose: {dose['dose_unit']} ({dose['dose_type'] or 'DoseType missing'}, "
             f"{dose['dose_summation_type'] or 'DoseSummationType missing'})"
             + (f"; {dose['summation_note']}" if dose["summation_note"] else ""),
             f"prescription: {document['prescription']['text']}"]
    if dose["dose_problem"]:
        lines.append(f"note: {dose['dose_problem']}")
    return lines


_PLAN_OPTION = click.option("--rtplan", "rtplan_path", type=click.Path(path_type=Path),
                            help="RT (Ion) Plan file: its prescription is used unless --prescription is given.")
def _finite_dose(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a dose in Gy")
    return value


_PRESCRIPTION_OPTION = click.option(
    "--prescription", "prescription_gy", type=click.FloatRange(min=0.0, min_open=True), callback=_finite_dose,
    help="Prescription dose in Gy (for % metrics and goals); overrides the plan's.")
_FRACTIONS_OPTION = click.option(
    "--fractions", "fractions", type=click.IntRange(min=1),
    help="Multiply a FRACTION RT Dose (one fraction) by this many fractions before the DVHs.")


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
@_PRESCRIPTION_OPTION
@_PLAN_OPTION
@_FRACTIONS_OPTION
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
    rtplan_path: Path | None,
    fractions: int | None,
    dvh_step_gy: float,
    as_json: bool,
) -> None:
    """Cumulative DVHs and metrics of ROIs in a dose (values in the dose's unit: Gy, or Gy(RBE) for EFFECTIVE)."""
    from rt.dvh import compute_available_metrics, compute_roi_dvh, validate_metric
    from rt.errors import OutsideDoseGridError
    from rt.structures import read_structure_set

    structure_set = read_structure_set(read_dicom(rtstruct_path))
    dose = read_dose_file(rtdose_path, fractions)
    prescription, about_dose = read_plan_options(rtplan_path, prescription_gy, dose)
    prescription_gy = prescription.dose_gy
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
        {"rtstruct": str(rtstruct_path), "rtdose": str(rtdose_path), "prescription_gy": prescription_gy,
         "prescription": prescription.to_dict(), "dose_unit": dose.dose_unit, "dose": about_dose, "rois": rois},
        as_json,
        _render_dvh,
    )


def _render_dvh(document: dict) -> list[str]:
    lines = _header_lines(document)
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
    """The plan as a person reads it: what ``--json`` holds, numbers rounded (MU to 0.1, Gy to 0.01, mm to 0.1)."""
    prescription = (f"{_rounded(plan['prescription_gy'], 2)} Gy" if plan.get("prescription_gy") is not None
                    else "no prescription")
    per_fraction = plan.get("dose_per_fraction_gy")
    lines = [
        f"{plan['sop_class']} {plan.get('label') or ''}"
        + (f" ({plan['name']})" if plan.get("name") and plan.get("name") != plan.get("label") else "")
        + f": {plan.get('radiation_type')}, {plan.get('fractions')} fraction(s), {prescription}"
        + (f" ({_rounded(per_fraction, 2)} Gy per fraction)" if per_fraction is not None else ""),
        f"  intent {plan.get('intent') or 'not stated'}, {plan.get('approval_status') or 'approval not stated'}",
    ]
    if plan.get("prescription"):
        lines.append(f"  prescription used for goals: {plan['prescription']['text']}")
    for reference in plan.get("dose_references") or []:
        doses = [f"{label} {_rounded(reference[key], 2)} Gy" for key, label in (
            ("target_prescription_dose_gy", "prescription"), ("delivery_maximum_dose_gy", "delivery maximum"))
            if reference.get(key) is not None]
        lines.append(f"  dose reference {reference.get('number')}: {reference.get('reference_type') or ''} "
                     f"{reference.get('description') or ''}" + (f", {', '.join(doses)}" if doses else ""))
    for beam in plan["beams"]:
        lines.extend(_render_beam(beam))
    return lines


def _render_beam(beam: dict) -> list[str]:
    """A beam's line (geometry, energy, meterset) and, for ions, one line of its beam-line devices."""
    energy = ""
    if beam.get("energy_layers_mev"):
        energy = (f", {beam.get('scan_mode') or 'ion'} {len(beam['energy_layers_mev'])} layers "
                  f"{_rounded(beam.get('min_energy_mev'), 1)}-{_rounded(beam.get('max_energy_mev'), 1)} MeV, "
                  f"{beam.get('spot_count')} spots")
    elif beam.get("nominal_energy_mv") is not None:
        energy = f", {_rounded(beam['nominal_energy_mv'], 1)} MV"
    elif beam.get("nominal_energy_mev") is not None:
        energy = f", {_rounded(beam['nominal_energy_mev'], 1)} MeV"
    dose = f", beam dose {_rounded(beam['beam_dose_gy'], 2)} Gy" if beam.get("beam_dose_gy") is not None else ""
    lines = [
        f"  beam {beam.get('number')} {beam.get('name') or ''} on {beam.get('treatment_machine') or '?'}: "
        f"gantry {_rounded(beam.get('gantry_angle_deg'), 1)} deg, couch {_rounded(beam.get('couch_angle_deg'), 1)} "
        f"deg{energy}, meterset {_number(beam.get('meterset'))} {beam.get('meterset_unit') or ''}{dose}"
    ]
    devices = []
    if beam.get("snout_id") or beam.get("snout_position_mm") is not None:
        position = beam.get("snout_position_mm")
        devices.append(f"snout {beam.get('snout_id') or ''}"
                       + (f" at {_rounded(position, 1)} mm" if position is not None else ""))
    for shifter in beam.get("range_shifters") or []:
        thickness = shifter.get("water_equivalent_thickness_mm")
        devices.append(f"range shifter {shifter.get('id') or shifter.get('number')} ({shifter.get('type') or '?'}"
                       + (f", {_rounded(thickness, 1)} mm WET" if thickness is not None else "")
                       + (f", {shifter['setting']}" if shifter.get("setting") else "") + ")")
    devices += [f"range modulator {d.get('id')} ({d.get('type')})" for d in beam.get("range_modulators") or []]
    devices += [f"spreading {d.get('id')} ({d.get('type')})" for d in beam.get("lateral_spreading_devices") or []]
    if beam.get("energy_layers_mev") and not beam.get("range_shifters"):
        devices.append("no range shifter")
    if devices:
        lines.append(f"    {', '.join(devices)}")
    return lines


def _rounded(value: float | None, digits: int) -> str:
    """``value`` to ``digits`` decimals without trailing zeros ("?" when absent)."""
    return "?" if value is None else f"{round(float(value), digits):g}"


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
    help="Shipped template name (head_and_neck, lung, prostate, proton_generic) or a path to a JSON template.",
)
@_PRESCRIPTION_OPTION
@_PLAN_OPTION
@_FRACTIONS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def goals_command(
    rtstruct_path: Path,
    rtdose_path: Path,
    template_name: str,
    prescription_gy: float | None,
    rtplan_path: Path | None,
    fractions: int | None,
    as_json: bool,
) -> None:
    """Evaluate a clinical goal template: pass, within tolerance, fail or not evaluated, per goal."""
    from rt.goals import evaluate_goals, list_templates, load_template, read_template
    from rt.structures import read_structure_set

    path = Path(template_name)
    if path.suffix == ".json" or path.exists():
        template = read_template(path)
    elif template_name in list_templates():
        template = load_template(template_name)
    else:
        raise click.ClickException(f"no goal template {template_name!r}; shipped: {', '.join(list_templates())}")
    structure_set = read_structure_set(read_dicom(rtstruct_path))
    dose = read_dose_file(rtdose_path, fractions)
    prescription, about_dose = read_plan_options(rtplan_path, prescription_gy, dose)
    dvhs, unavailable = _goal_dvhs(template, structure_set, dose)
    results = evaluate_goals(template, dvhs, prescription.dose_gy, unavailable=unavailable,
                             dose_unit=dose.dose_unit, dose_problem=about_dose["dose_problem"],
                             roi_names=structure_set.roi_names)
    emit(
        {
            "template": template.name,
            "prescription_gy": prescription.dose_gy,
            "prescription": prescription.to_dict(),
            "dose_unit": dose.dose_unit,
            "dose": about_dose,
            "goals": [result.to_dict() for result in results],
        },
        as_json,
        _render_goals,
    )


def _goal_dvhs(template: GoalTemplate, structure_set: StructureSet,
               dose: DoseGrid) -> tuple[dict[str, DVH], dict[str, str]]:
    """(DVHs of the ROIs the goals match, {matched ROI without a DVH: why}); ambiguous matches are left to the goals."""
    from rt.dvh import compute_roi_dvh
    from rt.errors import OutsideDoseGridError, RTError
    from rt.goals import find_roi_name

    dvhs: dict[str, DVH] = {}
    unavailable: dict[str, str] = {}
    for goal in template.goals:
        try:
            name = find_roi_name(goal, structure_set.roi_names)
        except RTError:
            continue  # the goal reports the ambiguity
        if name is None or name in dvhs or name in unavailable:
            continue
        if structure_set.roi(name).is_empty:
            unavailable[name] = "has no closed planar contour: not evaluable"
            continue
        try:
            dvhs[name] = compute_roi_dvh(structure_set, name, dose)
        except OutsideDoseGridError as exc:
            unavailable[name] = f"lies entirely outside the dose grid ({exc.volume_cc:.4g} cc): not evaluable"
        except RTError as exc:
            unavailable[name] = f"has no DVH: {exc}"
    return dvhs, unavailable


def _render_goals(document: dict) -> list[str]:
    lines = [f"template: {document['template']}", *_header_lines(document),
             f"{'status':<17} {'ROI':<20} {'goal':<30} {'measured':>18}  matched"]
    for goal in document["goals"]:
        spec = goal.get("goal") or {}
        text = f"{spec.get('metric', '')} {spec.get('comparator', '')} {spec.get('value', '')}"
        measured = goal.get("measured_value")
        value = "" if measured is None else f"{measured:.3f} {goal.get('unit', '')}"
        matched = (f"{goal['template_roi']} by {goal['match_rule']} {goal['matched_spelling']!r}"
                   if goal.get("match_rule") else f"{goal.get('template_roi', spec.get('roi', ''))}: not found")
        lines.append(
            f"{goal['status']:<17} {goal.get('roi_name') or spec.get('roi', ''):<20} {text:<30} {value:>18}  {matched}"
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
