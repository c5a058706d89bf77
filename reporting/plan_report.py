"""Plan evaluation data: plan identification, prescription, beams, DVHs, metrics and clinical goals.

The report shows what the plan review page shows: the study's first planning set (RT Dose, its structure set
and plan; the dose the page opens on) and its stored RT analysis (:func:`oncopacs.analysis.rt.load_results`:
the DVH documents with their display curves, the goals, the plan summary). When the analysis is not stored yet,
the same engine computes it here (:func:`rt.analysis.compute_rt_analysis`), so the numbers are the same either
way. Goals, beams and the prescription are worded by :mod:`oncopacs.viewer.plan_text`, as on the page, and every
dose carries the RT Dose's unit (``Gy(RBE)`` for an EFFECTIVE dose).
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset

from oncopacs.analysis.rt import PlanningSet, find_planning_sets, load_results
from oncopacs.errors import NotFoundError
from oncopacs.viewer.plan_text import (
    beam_rows,
    colour_on_white,
    count_statuses,
    describe_counts,
    describe_prescription,
    goal_rows,
)
from reporting.subject import read_subject
from reporting.types import ReportContent, ReportRequest
from rt.analysis import compute_rt_analysis
from rt.errors import RTError
from rt.goals import list_templates

#: DVH metrics tabulated per ROI (TG-263 names, unit in brackets), as the stored analysis holds them.
ROI_METRICS = ("Mean[Gy]", "Min[Gy]", "Max[Gy]", "D98%[Gy]", "D95%[Gy]", "D50%[Gy]", "D2%[Gy]")
PRESCRIPTION_METRICS = ("V95%[%]",)


def _choose_set(sets: tuple[PlanningSet, ...], study_uid: str) -> PlanningSet:
    """The planning set the plan page opens on (the study's first), or else the first one with a plan."""
    chosen = next((s for s in sets if s.plan_uid), None)
    if chosen is None:
        raise NotFoundError(f"study {study_uid} has no RT plan with its structure set and dose")
    return chosen


def _roi_colours(structure_ds: Dataset) -> dict[str, str]:
    """{ROI name: CSS colour} from ROIDisplayColor, darkened to read on paper (ROIs without one: absent)."""
    names = {int(item.ROINumber): str(item.ROIName) for item in structure_ds.get("StructureSetROISequence", [])
             if "ROINumber" in item and "ROIName" in item}
    colours = {}
    for item in structure_ds.get("ROIContourSequence", []):
        colour = item.get("ROIDisplayColor")
        number = item.get("ReferencedROINumber")
        if number is not None and int(number) in names and colour is not None and len(colour) == 3:
            colours[names[int(number)]] = "rgb({}, {}, {})".format(*colour_on_white([int(c) for c in colour]))
    return colours


def _plan_section(plan: dict[str, Any], plan_ds: Dataset, dose_unit: str) -> dict[str, Any]:
    prescription = plan.get("prescription") or {}
    return {
        "sop_instance_uid": plan.get("sop_instance_uid") or str(plan_ds.SOPInstanceUID),
        "label": plan.get("label") or "", "name": plan.get("name") or "", "intent": plan.get("intent") or "",
        "approval_status": plan.get("approval_status") or "", "radiation_type": plan.get("radiation_type") or "",
        "sop_class": plan.get("sop_class") or "", "fractions": plan.get("fractions"),
        "prescription_gy": plan.get("prescription_gy"), "dose_per_fraction_gy": plan.get("dose_per_fraction_gy"),
        "prescription_text": describe_prescription(plan.get("prescription_gy"), plan.get("fractions"), dose_unit,
                                                   prescription.get("description", "")),
        "reviewer": str(plan_ds.get("ReviewerName", "") or ""), "review_date": str(plan_ds.get("ReviewDate", "") or ""),
        "beams": [row.to_dict() for row in beam_rows(plan, dose_unit)],
    }


def _roi_rows(dvh: dict[str, Any], colours: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for roi in dvh.get("rois", []):
        curve = roi.get("curve") or {}
        doses, percent = curve.get("dose_gy"), curve.get("volume_percent")
        rows.append({"name": roi.get("name", ""), "volume_cc": roi.get("volume_cc"),
                     "uncovered_volume_cc": roi.get("uncovered_volume_cc", 0.0), "metrics": roi.get("metrics") or {},
                     "curve": {"dose_gy": list(doses), "volume_pct": list(percent)} if doses and percent else None,
                     "colour": colours.get(roi.get("name", ""), ""), "note": roi.get("note", "")})
    return rows


def gather_plan_evaluation(request: ReportRequest) -> ReportContent:
    """Data of the plan evaluation report of ``request.study_uid`` (options: ``goal_template``)."""
    archive = request.archive
    template = request.options.get("goal_template") or None
    if template is not None and template not in list_templates():
        raise RTError(f"no goal template {template!r}; shipped: {', '.join(list_templates())}")
    with archive.index.reading() as session:
        subject = read_subject(session, request.study_uid)
        chosen = _choose_set(find_planning_sets(session, request.study_uid), request.study_uid)
        cached = load_results(session, chosen, template)
    plan_ds = archive.read_instance(chosen.plan_uid or "")
    structure_ds = archive.read_instance(chosen.structure_set_uid)
    if cached.plan is not None and cached.dvh is not None and cached.goals is not None:
        dvh, goals, plan, source = cached.dvh, cached.goals, cached.plan, "stored analysis"
    else:  # not analysed yet: the same engine, here
        analysis = compute_rt_analysis(archive.read_instance(chosen.dose_uid), structure_ds, plan_ds,
                                       template=template)
        dvh, goals, plan, source = analysis.dvh, analysis.goals, analysis.plan or {}, "computed for this report"
    dose_unit = str(dvh.get("dose_unit") or "Gy")
    plan_section = _plan_section(plan, plan_ds, dose_unit)
    rows = goal_rows(goals, dose_unit)
    counts = count_statuses(rows)
    prescription = plan_section["prescription_gy"]
    metrics = list(ROI_METRICS) + (list(PRESCRIPTION_METRICS) if prescription else [])
    rx = describe_prescription(prescription, plan_section["fractions"], dose_unit)
    name = plan_section["label"] or plan_section["name"]
    if rows:
        conclusion = f"Plan {name} ({rx}): clinical goals {describe_counts(counts)} ({goals.get('template')})."
    else:
        conclusion = f"Plan {name} ({rx}): no clinical goal template evaluated."
    data = {
        "subject": subject.to_dict(), "plan": plan_section, "structure_set_uid": chosen.structure_set_uid,
        "dose_uid": chosen.dose_uid, "dose_unit": dose_unit, "source": source,
        "dvh": {"source": source, "metrics": metrics, "dose_unit": dose_unit,
                "rois": _roi_rows(dvh, _roi_colours(structure_ds))},
        "goals": {"template": goals.get("template") or "", "choice": goals.get("choice") or "", "source": source,
                  "rows": [r.to_dict() for r in rows], "counts": counts,
                  "summary": describe_counts(counts) if rows else ""},
    }
    return ReportContent(subject, conclusion, data)


__all__ = ["ROI_METRICS", "gather_plan_evaluation"]
