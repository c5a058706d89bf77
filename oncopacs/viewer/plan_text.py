"""A plan's facts in words for people: clinical goals, their status and reasons, the prescription, the beams.

The plan page and the plan report (:mod:`reporting.plan_report`) both show the stored RT analysis
(:mod:`oncopacs.analysis.rt`) through these functions, so they say the same thing in the same words:
``Max ≤ 110 %`` for the metric ``Max[%]`` with comparator ``<=``, ``Not evaluated`` with "outside the dose
grid" rather than ``not_evaluated`` and the engine's message, and every dose in the dose's own unit
(``Gy(RBE)`` for an EFFECTIVE dose: the RT analysis records it as ``dose_unit``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from oncopacs.viewer.isodose import format_number

PASS, WITHIN_TOLERANCE, FAIL, NOT_EVALUATED = "pass", "within_tolerance", "fail", "not_evaluated"
STATUS_TEXT = {PASS: "Pass", WITHIN_TOLERANCE: "Within tolerance", FAIL: "Fail", NOT_EVALUATED: "Not evaluated"}
STATUS_ORDER = (FAIL, WITHIN_TOLERANCE, NOT_EVALUATED, PASS)
COMPARATOR_TEXT = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}
_METRIC = re.compile(r"^(?P<name>.+?)\[(?P<unit>[^\]]+)\]$")
_V_DOSE = re.compile(r"^V(?P<dose>\d+(?:\.\d+)?)Gy$")
_NOT_FOUND = re.compile(r"^ROI '(?P<roi>[^']*)' \(or aliases .*\) not found$")
_OUTSIDE = re.compile(r"lies entirely outside the dose grid")
_NO_CONTOUR = re.compile(r"has no closed planar contour")
_TOO_SMALL = re.compile(r"^(?P<cc>[\d.]+) cc exceeds the volume of ROI '(?P<roi>[^']*)' \((?P<volume>[^)]*)\)$")
_NEEDS_RX = re.compile(r"is relative to the prescription")
_PART_OUTSIDE = re.compile(r"^(?P<cc>[\d.e+-]+) cc of (?P<roi>.+) lies outside the dose grid$")
_AMBIGUOUS = re.compile(r"^ROI '(?P<roi>[^']*)' is ambiguous: (?P<names>\[.*\]) match")


@dataclass(frozen=True, slots=True)
class GoalRow:
    """One clinical goal as a person reads it (``status`` stays the machine value, for colours and counts)."""

    roi: str
    goal: str
    tolerance: str
    measured: str
    status: str
    status_text: str
    reason: str
    priority: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BeamRow:
    """One beam as the beam table shows it (text cells; empty when the plan does not say)."""

    number: str
    name: str
    machine: str
    gantry_deg: str
    couch_deg: str
    meterset: str
    energy: str
    spots: str
    snout: str
    range_shifter: str
    beam_dose: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unit_text(unit: str, dose_unit: str) -> str:
    """A metric unit for people: ``Gy`` becomes the dose's unit (``Gy(RBE)``); ``%`` and ``cc`` stay."""
    return dose_unit if unit == "Gy" else unit


def describe_metric(metric: str, dose_unit: str = "Gy") -> tuple[str, str]:
    """(name, unit) of a TG-263 metric for people: ``V20Gy[%]`` -> (``V20 Gy(RBE)``, ``%``), ``Max[%]`` -> (Max, %)."""
    match = _METRIC.match(metric.strip())
    if match is None:
        return metric, ""
    name, unit = match["name"], match["unit"]
    dose = _V_DOSE.match(name)
    if dose is not None:
        name = f"V{dose['dose']} {dose_unit}"
    return name, unit_text(unit, dose_unit)


def describe_goal(goal: Mapping[str, Any], dose_unit: str = "Gy") -> str:
    """``Max ≤ 110 %`` from ``{"metric": "Max[%]", "comparator": "<=", "value": 110}``."""
    name, unit = describe_metric(str(goal.get("metric", "")), dose_unit)
    comparator = COMPARATOR_TEXT.get(str(goal.get("comparator", "")), str(goal.get("comparator", "")))
    value = goal.get("value")
    amount = format_number(float(value)) if isinstance(value, int | float) else "?"
    return f"{name} {comparator} {amount} {unit}".rstrip()


def describe_tolerance(goal: Mapping[str, Any], dose_unit: str = "Gy") -> str:
    """``≤ 115 %`` (the goal's looser limit), or "" when it has none."""
    tolerance = goal.get("tolerance")
    if not isinstance(tolerance, int | float):
        return ""
    _name, unit = describe_metric(str(goal.get("metric", "")), dose_unit)
    comparator = COMPARATOR_TEXT.get(str(goal.get("comparator", "")), str(goal.get("comparator", "")))
    return f"{comparator} {format_number(float(tolerance))} {unit}".rstrip()


def describe_value(value: float | None, unit: str) -> str:
    """A measured value with its unit (``101.2 %``, ``57.31 Gy(RBE)``, ``12.4 cc``); ``—`` when missing."""
    if value is None:
        return "—"
    digits = 1 if unit in ("%", "cc") else 2
    return f"{value:.{digits}f} {unit}".rstrip()


def describe_reason(result: Mapping[str, Any]) -> str:
    """Why a goal has no result, for people (``outside the dose grid``), else its caveat note, else ""."""
    reason = str(result.get("reason") or "").strip()
    if not reason:
        note = str(result.get("note") or "")
        match = _PART_OUTSIDE.match(note)
        return f"{format_number(float(match['cc']))} cc of {match['roi']} outside the dose grid" if match else note
    goal = result.get("goal") or {}
    match = _NOT_FOUND.match(reason)
    if match is not None:
        return f"no structure {match['roi']} in the structure set"
    if _OUTSIDE.search(reason):
        return "outside the dose grid"
    if _NO_CONTOUR.search(reason):
        return "the structure has no closed contour"
    match = _TOO_SMALL.match(reason)
    if match is not None:
        return f"the structure ({match['volume']}) is smaller than {match['cc']} cc"
    if _NEEDS_RX.search(reason):
        return "needs a prescription dose"
    match = _AMBIGUOUS.match(reason)
    if match is not None:
        return f"several structures could be {goal.get('roi') or match['roi']}: {match['names']}"
    return reason.replace("not_evaluable", "not evaluable").replace("not_evaluated", "not evaluated")


def goal_rows(goals: Mapping[str, Any] | None, dose_unit: str | None = None) -> tuple[GoalRow, ...]:
    """The goals of a stored ``goals`` document (:func:`rt.analysis.compute_rt_analysis`) as people read them."""
    unit = dose_unit or str((goals or {}).get("dose_unit") or "Gy")
    rows = []
    for item in (goals or {}).get("goals") or []:
        goal = item.get("goal") or {}
        status = str(item.get("status") or NOT_EVALUATED)
        measured_unit = unit_text(str(item.get("unit") or goal.get("unit") or ""), unit)
        if measured_unit == "Gy":
            measured_unit = unit
        priority = goal.get("priority")
        rows.append(GoalRow(
            roi=str(item.get("roi_name") or goal.get("roi") or ""),
            goal=describe_goal(goal, unit),
            tolerance=describe_tolerance(goal, unit),
            measured=describe_value(item.get("measured_value"), measured_unit),
            status=status,
            status_text=STATUS_TEXT.get(status, status.replace("_", " ").capitalize()),
            reason=describe_reason(item) if status == NOT_EVALUATED or item.get("note") else "",
            priority=priority if isinstance(priority, int) else None,
        ))
    return tuple(rows)


def count_statuses(rows: Sequence[GoalRow]) -> dict[str, int]:
    """{status: how many} for every status (zeros included)."""
    return {status: sum(1 for r in rows if r.status == status) for status in STATUS_TEXT}


def describe_counts(counts: Mapping[str, int]) -> str:
    """``5 pass · 1 within tolerance · 0 fail · 2 not evaluated``."""
    return " · ".join(f"{counts.get(s, 0)} {STATUS_TEXT[s].lower()}" for s in (PASS, WITHIN_TOLERANCE, FAIL,
                                                                             NOT_EVALUATED))


def describe_prescription(prescription_gy: float | None, fractions: int | None, dose_unit: str = "Gy",
                          source: str = "") -> str:
    """``60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)``, with where it came from when given."""
    if not prescription_gy:
        return "no prescription recorded"
    text = f"{format_number(prescription_gy)} {dose_unit}"
    if fractions:
        text += (f" in {fractions} fraction{'s' if fractions != 1 else ''}"
                 f" ({format_number(prescription_gy / fractions)} {dose_unit} per fraction)")
    return f"{text}, from {source}" if source else text


def beam_rows(plan: Mapping[str, Any] | None, dose_unit: str = "Gy") -> tuple[BeamRow, ...]:
    """The plan's beams (``PlanSummary.to_dict()``) as the beam table shows them: MU, energies, snout, shifters."""
    rows = []
    for beam in (plan or {}).get("beams") or []:
        rows.append(BeamRow(
            number=_text(beam.get("number")),
            name=str(beam.get("name") or beam.get("description") or ""),
            machine=str(beam.get("treatment_machine") or ""),
            gantry_deg=_angle(beam.get("gantry_angle_deg")),
            couch_deg=_angle(beam.get("couch_angle_deg")),
            meterset=_meterset(beam),
            energy=_energy(beam),
            spots=_text(beam.get("spot_count")),
            snout=_snout(beam),
            range_shifter=", ".join(_shifter(r) for r in beam.get("range_shifters") or []) or (
                "none" if beam.get("energy_layers_mev") else ""),
            beam_dose=(f"{format_number(beam['beam_dose_gy'])} {dose_unit}"
                       if isinstance(beam.get("beam_dose_gy"), int | float) else ""),
        ))
    return tuple(rows)


def colour_on_white(colour: Sequence[int], max_luminance: float = 150.0) -> tuple[int, int, int]:
    """A ROI display colour darkened until it reads on white (yellow and light green curves on a DVH chart)."""
    r, g, b = (float(c) for c in colour[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    scale = min(1.0, max_luminance / luminance) if luminance > 0 else 1.0
    return round(r * scale), round(g * scale), round(b * scale)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _angle(value: Any) -> str:
    return f"{float(value):g}°" if isinstance(value, int | float) else ""


def _meterset(beam: Mapping[str, Any]) -> str:
    value = beam.get("meterset")
    if not isinstance(value, int | float):
        return ""
    return f"{value:.1f} {beam.get('meterset_unit') or 'MU'}"


def _energy(beam: Mapping[str, Any]) -> str:
    low, high = beam.get("min_energy_mev"), beam.get("max_energy_mev")
    if isinstance(low, int | float) and isinstance(high, int | float):
        count = beam.get("energy_layer_count") or len(beam.get("energy_layers_mev") or [])
        span = f"{low:.1f} MeV" if abs(high - low) < 0.05 else f"{low:.1f}–{high:.1f} MeV"
        return f"{span} ({count} layer{'s' if count != 1 else ''})" if count else span
    if isinstance(beam.get("nominal_energy_mv"), int | float):
        technique = f" {beam['technique']}" if beam.get("technique") else ""
        return f"{beam['nominal_energy_mv']:g} MV{technique}"
    if isinstance(beam.get("nominal_energy_mev"), int | float):
        return f"{beam['nominal_energy_mev']:g} MeV"
    return ""


def _snout(beam: Mapping[str, Any]) -> str:
    name, position = beam.get("snout_id"), beam.get("snout_position_mm")
    parts = [str(name)] if name else []
    if isinstance(position, int | float):
        parts.append(f"at {position:g} mm")
    return " ".join(parts)


def _shifter(shifter: Mapping[str, Any]) -> str:
    name = shifter.get("id") or shifter.get("type") or f"range shifter {shifter.get('number') or ''}".rstrip()
    wet = shifter.get("water_equivalent_thickness_mm")
    return f"{name} ({wet:g} mm WET)" if isinstance(wet, int | float) else str(name)


__all__ = ["STATUS_TEXT", "BeamRow", "GoalRow", "beam_rows", "colour_on_white", "count_statuses", "describe_counts",
           "describe_goal", "describe_metric", "describe_prescription", "describe_reason", "describe_tolerance",
           "describe_value", "goal_rows", "unit_text"]
