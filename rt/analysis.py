"""RT analysis of one planning set (RT Dose + RT Structure Set + optional RT Plan) with the pure ``rt`` package.

:func:`compute_rt_analysis` turns the three datasets into what the archive caches: per ROI the DVH
(curve resampled for display), the standard TG-263 metric set, the plan summary and the clinical
goals. Doses in Gy, volumes in cc, metric names in TG-263 form (``D95%[Gy]``, ``V70Gy[%]``).

Metric set per ROI (:func:`standard_metrics`): ``Mean``/``Min``/``Max[Gy]``, ``D98%``, ``D95%``,
``D50%``, ``D2%``, ``D2cc``, ``D0.03cc[Gy]``, ``V<d>Gy[%]`` and ``V<d>Gy[cc]`` for d = 5, 10, ... Gy up
to the dose grid's maximum, and with a prescription ``D95%[%]``, ``D2%[%]``, ``V95%[%]``,
``V100%[%]``, ``V107%[%]``; plus every metric the chosen goal template asks of that ROI. A metric
that does not apply (``D2cc`` of a 1 cc ROI) is left out rather than guessed.

Goal template (:func:`choose_template`): the one requested; else ``proton_generic`` for a proton or
ion plan; else the shipped template with the most goals whose ROI the structure set has (matched
by :mod:`rt.roi_names`: names, TG-263 names, the templates' aliases and spellings; ties by name);
else none (goals are then not evaluated).

The prescription is the plan's, with its source (:attr:`rt.plan.PlanSummary.prescription`: a
TARGET TargetPrescriptionDose, else fraction-group doses x fractions, else BeamDose x fractions);
none without a plan, or when the RT Dose references another plan (ReferencedRTPlanSequence).
Dose values are labelled as the RT Dose is (``Gy``; ``Gy(RBE)`` for DoseType EFFECTIVE); a dose
that is not a whole plan's (DoseSummationType BEAM, FRACTION, ...) gets its DVHs, but its goals are
not evaluated and say why (a BEAM dose of every treatment beam of its own plan is that plan's dose:
:func:`assess_dose`). A ROI outside the dose grid or without contours makes its goals
not_evaluated with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import Dataset

from rt.dose import DoseGrid, check_absolute_dose, read_dose
from rt.dvh import DVH, compute_available_metrics, compute_roi_dvh
from rt.errors import OutsideDoseGridError, RTError
from rt.goals import (
    ClinicalGoal,
    GoalTemplate,
    evaluate_goals,
    find_roi_name,
    list_templates,
    load_template,
)
from rt.plan import RX_NONE, PlanSummary, Prescription, read_plan_summary
from rt.structures import StructureSet, read_structure_set
from rt.tg263 import map_to_tg263

#: Bumped whenever the metric set or the stored shape changes, so cached results are recomputed.
#: 2: ROI matching rules, prescription source, dose unit label and summation type in the documents.
RESULT_VERSION = 2
#: DVH bin width, Gy.
BIN_WIDTH_GY = 0.01
#: Step between absolute V-metrics, Gy.
V_METRIC_STEP_GY = 5
#: The stored display curve has at most this many dose steps.
MAX_CURVE_POINTS = 400
_CURVE_STEPS_GY = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0)
_DOSE_METRICS = ("Mean[Gy]", "Min[Gy]", "Max[Gy]", "D98%[Gy]", "D95%[Gy]", "D50%[Gy]", "D2%[Gy]", "D2cc[Gy]",
                 "D0.03cc[Gy]")
_PRESCRIPTION_METRICS = ("D95%[%]", "D2%[%]", "V95%[%]", "V100%[%]", "V107%[%]")
_ION_TYPES = frozenset({"PROTON", "ION"})
_OUTSIDE_NOTE = "entirely outside the dose grid"
_EMPTY_NOTE = "no closed planar contour"
PROTON_TEMPLATE = "proton_generic"

Progress = Callable[[float, str], None]


@dataclass(frozen=True, slots=True)
class RoiResult:
    """One ROI's DVH summary: names, volumes (cc), metrics and the display curve (None when not computed)."""

    name: str
    number: int
    tg263_name: str | None
    kind: str
    volume_cc: float
    uncovered_volume_cc: float
    metrics: dict[str, float]
    curve: dict[str, list[float]] | None
    note: str = ""
    not_evaluable: dict[str, str] = field(default_factory=dict)  # metric -> why this ROI cannot answer it

    @property
    def structure(self) -> str:
        """The name metrics are searched under: the TG-263 name where known, else the ROI name."""
        return self.tg263_name or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "number": self.number, "tg263_name": self.tg263_name, "kind": self.kind,
            "volume_cc": self.volume_cc, "uncovered_volume_cc": self.uncovered_volume_cc,
            "metrics": self.metrics, "curve": self.curve, "note": self.note, "not_evaluable": self.not_evaluable,
        }


@dataclass(frozen=True, slots=True)
class RTAnalysis:
    """Everything computed for one planning set; each part becomes one cached result."""

    dvh: dict[str, Any]
    goals: dict[str, Any]
    plan: dict[str, Any] | None
    rois: tuple[RoiResult, ...]


@dataclass(frozen=True, slots=True)
class TemplateChoice:
    """The goal template used (None: none applies) and why: "requested", "ion plan" or "structures"."""

    template: GoalTemplate | None
    reason: str


def choose_template(requested: str | None, plan: PlanSummary | None, structures: StructureSet) -> TemplateChoice:
    """The goal template for this planning set (rules in the module docstring)."""
    if requested:
        return TemplateChoice(load_template(requested), "requested")
    if plan is not None and plan.radiation_type in _ION_TYPES:
        return TemplateChoice(load_template(PROTON_TEMPLATE), "ion plan")
    names = _goal_names(structures)
    best: tuple[int, str] | None = None
    for name in list_templates():
        if name == PROTON_TEMPLATE:
            continue
        template = load_template(name)
        found = sum(1 for goal in template.goals if _safe_find(goal, names))
        if found and (best is None or found > best[0]):
            best = (found, name)
    if best is None:
        return TemplateChoice(None, "no shipped template matches the structure names")
    return TemplateChoice(load_template(best[1]), "structures")


def _safe_find(goal: ClinicalGoal, names: tuple[str, ...]) -> str | None:
    try:
        return find_roi_name(goal, names)
    except RTError:
        return None


def _goal_names(structures: StructureSet) -> tuple[str, ...]:
    """Names of the ROIs with contours, for matching goals (TG-263 names are a rule of the matching)."""
    return tuple(dict.fromkeys(roi.name for roi in structures.rois if not roi.is_empty))


def resolve_prescription(plan: PlanSummary | None, dose: DoseGrid) -> Prescription:
    """The plan's prescription (with its source); none without a plan or when the dose references another plan."""
    if plan is None:
        return Prescription(None, RX_NONE, "no prescription: no RT Plan with this RT Dose")
    if dose.referenced_plan_uid and plan.sop_instance_uid and dose.referenced_plan_uid != plan.sop_instance_uid:
        return Prescription(None, RX_NONE, f"no prescription: the RT Dose references RT Plan "
                                           f"{dose.referenced_plan_uid}, not {plan.sop_instance_uid}")
    return plan.prescription


@dataclass(frozen=True, slots=True)
class DoseRole:
    """What an RT Dose stands for when goals are judged: ``note`` (shown with the dose, "" for a plain PLAN
    dose) and ``problem`` (why goals for the whole plan do not apply; "" when they do)."""

    note: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"note": self.note, "problem": self.problem}


def _treatment_beams(plan: PlanSummary) -> set[int]:
    beams = [b for b in plan.beams if b.treatment_delivery_type != "SETUP" and b.number is not None]
    with_meterset = {b.number for b in beams if b.meterset and b.number is not None}
    return with_meterset or {b.number for b in beams if b.number is not None}


def assess_dose(dose: DoseGrid, plan: PlanSummary | None) -> DoseRole:
    """The dose's role (DoseSummationType): a BEAM dose of every treatment beam of its own plan is that plan's dose."""
    if dose.dose_summation_type == "BEAM" and plan is not None and plan.sop_instance_uid \
            and dose.referenced_plan_uid == plan.sop_instance_uid:
        beams = _treatment_beams(plan)
        if beams and beams <= set(dose.referenced_beam_numbers):
            shown = ", ".join(str(b) for b in sorted(beams))
            return DoseRole(f"BEAM dose of every treatment beam of its plan ({shown}): the plan dose", "")
    return DoseRole(dose.summation_note, dose.plan_dose_problem)


def standard_metrics(max_dose_gy: float, prescription_gy: float | None) -> tuple[str, ...]:
    """The metric names computed for every ROI (module docstring)."""
    top = math.floor(max(max_dose_gy, 0.0) / V_METRIC_STEP_GY) * V_METRIC_STEP_GY
    volumes = [f"V{d}Gy[{unit}]" for d in range(V_METRIC_STEP_GY, top + 1, V_METRIC_STEP_GY) for unit in ("%", "cc")]
    relative = _PRESCRIPTION_METRICS if prescription_gy else ()
    return (*_DOSE_METRICS, *relative, *volumes)


def compute_rt_analysis(
    dose_ds: Dataset,
    structure_ds: Dataset,
    plan_ds: Dataset | None,
    *,
    template: str | None = None,
    progress: Progress | None = None,
) -> RTAnalysis:
    """DVHs, metrics, plan summary and goals of one planning set (see the module docstring)."""
    report = progress or (lambda fraction, message: None)
    plan = read_plan_summary(plan_ds) if plan_ds is not None else None
    structures = read_structure_set(structure_ds)
    dose = read_dose(dose_ds)
    check_absolute_dose(dose)
    prescription = resolve_prescription(plan, dose)
    prescription_gy = prescription.dose_gy
    choice = choose_template(template, plan, structures)
    goal_metrics = _goal_metrics(choice.template, structures)
    metrics = standard_metrics(dose.max_dose_gy, prescription_gy)
    rois, dvhs = [], {}
    for done, roi in enumerate(structures.rois):
        report(done / max(len(structures.rois), 1), f"DVH of ROI {roi.number}")
        if roi.is_empty:  # listed, never dropped silently
            mapped = map_to_tg263(roi.name)
            rois.append(RoiResult(roi.name, roi.number, mapped.standard, mapped.kind, 0.0, 0.0, {}, None,
                                  _EMPTY_NOTE))
            continue
        wanted = tuple(dict.fromkeys((*metrics, *goal_metrics.get(roi.name, ()))))
        result, dvh = _analyse_roi(structures, roi.name, roi.number, dose, wanted, prescription_gy)
        rois.append(result)
        if dvh is not None:
            dvhs[roi.name] = dvh
    unavailable = {roi.name: _unavailable_reason(roi) for roi in rois if roi.name not in dvhs}
    role = assess_dose(dose, plan)
    goals = _evaluate_goals(choice, dvhs, unavailable, prescription, dose, role)
    dvh_document = {
        "dose_uid": dose.sop_instance_uid,
        "structure_set_uid": structures.sop_instance_uid,
        "structure_set_label": structures.label,
        "plan_uid": plan.sop_instance_uid if plan is not None else None,
        "prescription_gy": prescription_gy,
        "prescription": prescription.to_dict(),
        "dose_unit": dose.dose_unit,
        "dose": {"dose_units": dose.dose_units, "dose_type": dose.dose_type, "dose_unit": dose.dose_unit,
                 "dose_summation_type": dose.dose_summation_type, "summation_note": role.note,
                 "dose_problem": role.problem,
                 "referenced_plan_uid": dose.referenced_plan_uid,
                 "referenced_beam_numbers": list(dose.referenced_beam_numbers),
                 "max_dose_gy": round(dose.max_dose_gy, 4), "spacing_mm": list(dose.spacing_mm)},
        "bin_width_gy": BIN_WIDTH_GY,
        "rois": [r.to_dict() for r in rois],
    }
    report(1.0, f"{len(rois)} ROI(s) analysed")
    return RTAnalysis(dvh_document, goals, plan.to_dict() if plan is not None else None, tuple(rois))


def _analyse_roi(structures: StructureSet, name: str, number: int, dose: DoseGrid, metrics: Iterable[str],
                 prescription_gy: float | None) -> tuple[RoiResult, DVH | None]:
    mapped = map_to_tg263(name)
    try:
        dvh = compute_roi_dvh(structures, name, dose, bin_width_gy=BIN_WIDTH_GY)
    except OutsideDoseGridError as exc:  # reported, never silently dropped
        volume = round(exc.volume_cc, 4)
        return RoiResult(name, number, mapped.standard, mapped.kind, volume, volume, {}, None, _OUTSIDE_NOTE), None
    except RTError as exc:
        return RoiResult(name, number, mapped.standard, mapped.kind, 0.0, 0.0, {}, None, str(exc)), None
    available = compute_available_metrics(dvh, tuple(metrics), prescription_gy)  # e.g. no D2cc below 2 cc
    values = {metric: round(value, 4) for metric, value in available.values.items()}
    note = f"{dvh.uncovered_volume_cc:.3g} cc lies outside the dose grid" if dvh.uncovered_volume_cc > 0 else ""
    return RoiResult(name, number, mapped.standard, mapped.kind, round(dvh.total_volume_cc, 4),
                     round(dvh.uncovered_volume_cc, 4), values, compute_curve(dvh), note, available.not_evaluable), dvh


def compute_curve(dvh: DVH) -> dict[str, list[float]]:
    """The cumulative DVH at even dose steps from 0 Gy to just above its maximum (<= MAX_CURVE_POINTS + 2 points)."""
    step = next((s for s in _CURVE_STEPS_GY if dvh.max_gy / s <= MAX_CURVE_POINTS), _CURVE_STEPS_GY[-1])
    doses = step * np.arange(int(np.floor(dvh.max_gy / step + 1e-9)) + 2)  # the last step is above the maximum: 0 cc
    volumes = np.array([dvh.compute_volume_at_dose_cc(float(d)) for d in doses])
    percent = 100.0 * volumes / dvh.volume_cc if dvh.volume_cc > 0 else np.zeros_like(volumes)
    return {"dose_gy": [round(float(d), 4) for d in doses], "volume_cc": [round(float(v), 4) for v in volumes],
            "volume_percent": [round(float(p), 4) for p in percent]}


def _goal_metrics(template: GoalTemplate | None, structures: StructureSet) -> dict[str, tuple[str, ...]]:
    """{ROI name: metrics the template asks of it} (goals matched over every ROI name, as when evaluated)."""
    if template is None:
        return {}
    wanted: dict[str, list[str]] = {}
    for goal in template.goals:
        found = _safe_find(goal, structures.roi_names)
        if found:
            wanted.setdefault(found, []).append(goal.metric)
    return {name: tuple(items) for name, items in wanted.items()}


def _unavailable_reason(roi: RoiResult) -> str:
    """Why a ROI of the structure set has no DVH, as the end of "ROI 'X' ..."."""
    if roi.note == _OUTSIDE_NOTE:
        return f"lies entirely outside the dose grid ({roi.volume_cc:.4g} cc): not evaluable"
    if roi.note == _EMPTY_NOTE:
        return "has no closed planar contour: not evaluable"
    return f"has no DVH: {roi.note}"


def _evaluate_goals(choice: TemplateChoice, dvhs: dict[str, DVH], unavailable: dict[str, str],
                    prescription: Prescription, dose: DoseGrid, role: DoseRole) -> dict[str, Any]:
    head = {"template": choice.template.name if choice.template else None, "choice": choice.reason,
            "prescription_gy": prescription.dose_gy, "prescription": prescription.to_dict(),
            "dose_unit": dose.dose_unit, "dose_summation_type": dose.dose_summation_type,
            "summation_note": role.note, "dose_problem": role.problem}
    if choice.template is None:
        return {**head, "goals": [], "counts": {}}
    results = evaluate_goals(choice.template, dvhs, prescription.dose_gy, unavailable=unavailable,
                             dose_unit=dose.dose_unit, dose_problem=role.problem)
    goals = [result.to_dict() for result in results]
    counts: dict[str, int] = {}
    for item in goals:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    return {**head, "goals": goals, "counts": counts}
