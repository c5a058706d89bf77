"""Plan evaluation data: plan identification, prescription, beams, DVHs, metrics and clinical goals.

Cached analysis results of the study (kinds ``plan``, ``dvh``, ``goals``) are used when present
in the shapes :mod:`rt` writes (``PlanSummary.to_dict()``, ``{"rois": [...]}``,
``{"goals": [GoalResult.to_dict(), ...]}``); otherwise everything is computed here with the pure
:mod:`rt` package from the study's stored RTPLAN, RTSTRUCT and RTDOSE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom import Dataset

from oncopacs.errors import NotFoundError
from oncopacs.index.oncology import OncologySummary, summarize_study
from reporting.sources import read_results
from reporting.subject import read_subject
from reporting.types import ReportContent, ReportRequest
from rt.dose import read_dose
from rt.dvh import DVH, compute_metrics, compute_roi_dvh
from rt.errors import MetricError, OutsideDoseGridError, RTError
from rt.goals import (
    FAIL,
    NOT_EVALUATED,
    PASS,
    WITHIN_TOLERANCE,
    evaluate_goals,
    find_roi_name,
    list_templates,
    load_template,
)
from rt.plan import read_plan_summary
from rt.structures import read_structure_set

#: DVH metrics tabulated per ROI (TG-263 names, unit in brackets).
ROI_METRICS = ("Mean[Gy]", "Min[Gy]", "Max[Gy]", "D98%[Gy]", "D95%[Gy]", "D50%[Gy]", "D2%[Gy]")
CURVE_POINTS = 120
DEFAULT_ION_TEMPLATE = "proton_generic"


def _choose_chain(summary: OncologySummary) -> tuple[str, str, str]:
    """(plan, structure set, dose) SOP Instance UIDs of the study's first complete planning chain."""
    for chain in summary.treatment_planning_sets:
        if chain.plan_uids and chain.dose_uids and chain.structure_set_uid:
            return chain.plan_uids[0], chain.structure_set_uid, chain.dose_uids[0]
    raise NotFoundError(f"study {summary.study_instance_uid} has no RT plan with its structure set and dose")


def _plan_section(plan_ds: Dataset, cached: dict | None) -> dict[str, Any]:
    summary = cached if cached is not None else read_plan_summary(plan_ds).to_dict()
    beams = []
    for beam in summary.get("beams", []):
        shifters = [f"{r.get('id') or r.get('type') or 'range shifter'}"
                    + (f" ({r['water_equivalent_thickness_mm']:g} mm WET)"
                       if r.get("water_equivalent_thickness_mm") else "")
                    for r in beam.get("range_shifters", [])]
        beams.append({
            "number": beam.get("number"), "name": beam.get("name") or "",
            "radiation_type": beam.get("radiation_type") or "",
            "machine": beam.get("treatment_machine") or "", "gantry_deg": beam.get("gantry_angle_deg"),
            "couch_deg": beam.get("couch_angle_deg"), "scan_mode": beam.get("scan_mode") or "",
            "energy_layers": beam.get("energy_layer_count") or len(beam.get("energy_layers_mev") or []),
            "min_energy_mev": beam.get("min_energy_mev"), "max_energy_mev": beam.get("max_energy_mev"),
            "nominal_energy_mv": beam.get("nominal_energy_mv"), "spots": beam.get("spot_count"),
            "meterset": beam.get("meterset"), "meterset_unit": beam.get("meterset_unit") or "",
            "range_shifters": shifters, "technique": beam.get("technique") or "",
        })
    return {
        "sop_instance_uid": summary.get("sop_instance_uid") or str(plan_ds.SOPInstanceUID),
        "label": summary.get("label") or "", "name": summary.get("name") or "", "intent": summary.get("intent") or "",
        "approval_status": summary.get("approval_status") or "", "radiation_type": summary.get("radiation_type") or "",
        "sop_class": summary.get("sop_class") or "", "fractions": summary.get("fractions"),
        "prescription_gy": summary.get("prescription_gy"), "dose_per_fraction_gy": summary.get("dose_per_fraction_gy"),
        "reviewer": str(plan_ds.get("ReviewerName", "") or ""), "review_date": str(plan_ds.get("ReviewDate", "") or ""),
        "beams": beams, "source": "cached" if cached is not None else "computed",
    }


def _curve(dvh: DVH) -> dict[str, list[float]]:
    total = dvh.total_volume_cc
    doses = np.linspace(0.0, dvh.max_gy, CURVE_POINTS)
    return {"dose_gy": [round(float(d), 4) for d in doses],
            "volume_pct": [round(100.0 * dvh.compute_volume_at_dose_cc(float(d)) / total, 3) for d in doses]}


def _roi_row(dvh: DVH, prescription_gy: float | None) -> dict[str, Any]:
    wanted = list(ROI_METRICS) + (["V95%[%]"] if prescription_gy else [])
    metrics: dict[str, float | None] = {}
    for metric in wanted:
        try:
            metrics[metric] = round(compute_metrics(dvh, [metric], prescription_gy)[metric], 3)
        except MetricError:
            metrics[metric] = None
    return {"name": dvh.roi_name, "volume_cc": round(dvh.total_volume_cc, 2),
            "uncovered_volume_cc": round(dvh.uncovered_volume_cc, 2), "metrics": metrics, "curve": _curve(dvh),
            "note": ""}


def _compute_dvhs(structure_ds: Dataset, dose_ds: Dataset) -> tuple[dict[str, DVH], list[dict[str, Any]]]:
    structure_set = read_structure_set(structure_ds)
    dose = read_dose(dose_ds)
    dvhs: dict[str, DVH] = {}
    outside = []
    for roi in structure_set.rois:
        if roi.is_empty:
            continue
        try:
            dvhs[roi.name] = compute_roi_dvh(structure_set, roi.name, dose)
        except OutsideDoseGridError as exc:  # reported, never silently left out
            outside.append({"name": exc.roi_name, "volume_cc": round(exc.volume_cc, 2),
                            "uncovered_volume_cc": round(exc.volume_cc, 2), "metrics": {}, "curve": None,
                            "note": "entirely outside the dose grid"})
    return dvhs, outside


def _cached_json(request: ReportRequest, session, kind: str, key: str) -> dict | None:
    results = [r for r in read_results(session, kind, study_uid=request.study_uid)
               if isinstance(r.data, dict) and isinstance(r.data.get(key), list)]
    return results[-1].data if results else None


def _goal_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        goal = result.get("goal") or {}
        rows.append({"roi": result.get("roi_name") or goal.get("roi", ""), "metric": goal.get("metric", ""),
                     "comparator": goal.get("comparator", ""), "value": goal.get("value"),
                     "tolerance": goal.get("tolerance"), "priority": goal.get("priority"),
                     "measured": None if result.get("measured_value") is None else round(result["measured_value"], 3),
                     "unit": result.get("unit", ""), "status": result.get("status", NOT_EVALUATED),
                     "reason": result.get("reason", "") or result.get("note", "")})
    return rows


def gather_plan_evaluation(request: ReportRequest) -> ReportContent:
    """Data of the plan evaluation report of ``request.study_uid`` (options: ``goal_template``)."""
    archive = request.archive
    with archive.index.reading() as session:
        subject = read_subject(session, request.study_uid)
        plan_uid, structure_uid, dose_uid = _choose_chain(summarize_study(session, request.study_uid))
        plan_ds = archive.read_instance(plan_uid)
        cached_plan = _cached_json(request, session, "plan", "beams")
        cached_dvh = _cached_json(request, session, "dvh", "rois")
        cached_goals = _cached_json(request, session, "goals", "goals")
        needs_files = cached_dvh is None or cached_goals is None
        structure_ds = archive.read_instance(structure_uid) if needs_files else None
        dose_ds = archive.read_instance(dose_uid) if needs_files else None
    plan = _plan_section(plan_ds, cached_plan)
    prescription = plan["prescription_gy"]
    dvhs: dict[str, DVH] = {}
    outside: list[dict[str, Any]] = []
    if structure_ds is not None and dose_ds is not None:  # read exactly when needs_files
        dvhs, outside = _compute_dvhs(structure_ds, dose_ds)
    if cached_dvh is not None:
        rois = [{"name": r.get("name", ""), "volume_cc": r.get("volume_cc"),
                 "uncovered_volume_cc": r.get("uncovered_volume_cc", 0.0), "metrics": r.get("metrics") or {},
                 "curve": _cached_curve(r), "note": r.get("note", "")} for r in cached_dvh["rois"]]
        dvh_source = "cached"
    else:
        rois = [_roi_row(dvh, prescription) for dvh in dvhs.values()] + outside
        dvh_source = "computed"
    template_name = request.options.get("goal_template") or (
        DEFAULT_ION_TEMPLATE if plan["sop_class"] == "RTIONPLAN" or plan["radiation_type"] == "PROTON" else "")
    goals: dict[str, Any] = {"template": template_name, "source": "", "rows": []}
    if cached_goals is not None:
        goals.update(template=cached_goals.get("template", template_name), source="cached",
                     rows=_goal_rows(cached_goals["goals"]))
    elif template_name:
        if template_name not in list_templates():
            raise RTError(f"no goal template {template_name!r}; shipped: {', '.join(list_templates())}")
        results = [r.to_dict() for r in evaluate_goals(load_template(template_name), dvhs, prescription)]
        outside_names = tuple(r["name"] for r in outside)
        for result, goal in zip(results, load_template(template_name).goals, strict=False):
            found = find_roi_name(goal, outside_names) if result["roi_name"] is None else None
            if found:  # the ROI exists but has no dose: say so instead of "not found"
                result.update(roi_name=found, reason=f"ROI {found!r} lies entirely outside the dose grid")
        goals.update(source="computed", rows=_goal_rows(results))
    counts = {status: sum(1 for r in goals["rows"] if r["status"] == status)
              for status in (PASS, WITHIN_TOLERANCE, FAIL, NOT_EVALUATED)}
    goals["counts"] = counts
    rx = (f"{prescription:g} Gy in {plan['fractions']} fractions" if prescription and plan["fractions"]
          else "no prescription recorded")
    if goals["rows"]:
        conclusion = (f"Plan {plan['label'] or plan['name']} ({rx}): {counts[PASS]} clinical goal(s) passed, "
                      f"{counts[WITHIN_TOLERANCE]} within tolerance, {counts[FAIL]} failed, "
                      f"{counts[NOT_EVALUATED]} not evaluated ({goals['template']}).")
    else:
        conclusion = f"Plan {plan['label'] or plan['name']} ({rx}): no clinical goal template evaluated."
    data = {"subject": subject.to_dict(), "plan": plan, "structure_set_uid": structure_uid, "dose_uid": dose_uid,
            "dvh": {"source": dvh_source, "metrics": list(ROI_METRICS) + (["V95%[%]"] if prescription else []),
                    "rois": rois},
            "goals": goals}
    return ReportContent(subject, conclusion, data)


def _cached_curve(roi: dict[str, Any]) -> dict[str, list[float]] | None:
    """The stored analysis' display curve (:func:`rt.analysis.compute_curve`) as volume % against Gy.

    The RT analysis stores it under ``curve`` (``dose_gy``, ``volume_cc``, ``volume_percent``); None when
    the ROI has none (e.g. outside the dose grid).
    """
    curve = roi.get("curve") or {}
    doses, percent, volumes = curve.get("dose_gy"), curve.get("volume_percent"), curve.get("volume_cc")
    if doses and percent:
        return {"dose_gy": list(doses), "volume_pct": list(percent)}
    total = volumes[0] if volumes else 0
    if not doses or not volumes or not total:
        return None
    return {"dose_gy": list(doses), "volume_pct": [100.0 * v / total for v in volumes]}
