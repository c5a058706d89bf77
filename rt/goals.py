"""Clinical goals: templates of DVH constraints shipped as JSON data, and their evaluation.

A template (``rt/goal_templates/<name>.json``) is an object::

    {"name": "prostate", "description": "...", "site": "...", "modality": "photon",
     "nominal_prescription_gy": 78.0, "nominal_fractions": 39, "source": "...",
     "goals": [{"roi": "Rectum", "aliases": ["RECTUM_WALL"], "metric": "V70Gy[%]",
                "comparator": "<=", "value": 20, "tolerance": 25, "priority": 1,
                "description": "...", "source": "QUANTEC"}, ...]}

- ``roi`` is the TG-263 structure name; ``aliases`` are other names it is matched under. A
  structure set's names are matched by :func:`rt.roi_names.match_roi_name` (exact, then case,
  TG-263, alias, spelling and trailing-number rules; helper structures such as ``zPTV_opt`` only
  by name), and every result says which name matched by which rule.
- ``metric`` is a TG-263 DVH metric understood by :func:`rt.dvh.compute_metric`
  (``Mean[Gy]``, ``D95%[%]``, ``V20Gy[%]``, ...); its bracketed unit is the unit of ``value``
  and ``tolerance``. Metrics in ``[%]`` of dose, or ``V<d>%``, are relative to the
  prescription passed to :func:`evaluate_goals`.
- ``comparator`` is one of ``<=``, ``>=``, ``<``, ``>``. ``tolerance`` (optional) is a looser
  limit of the same kind: a value that misses ``value`` but meets ``tolerance`` is
  ``within_tolerance``. For ``<=``/``<`` it must be >= ``value``; for ``>=``/``>`` <= ``value``.
- ``priority`` is an integer, 1 the most important.

The nominal prescription of a template is informational: absolute-dose goals (``V70Gy[%]``)
assume that fractionation; goals relative to the prescription scale with the one given.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from rt.dvh import DVH, METRIC_PATTERN, compute_metric
from rt.errors import MetricError, RTError
from rt.roi_names import ROIMatch, match_roi_name

#: Comparators a goal may use.
COMPARATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}

#: Goal statuses.
PASS = "pass"
WITHIN_TOLERANCE = "within_tolerance"
FAIL = "fail"
NOT_EVALUATED = "not_evaluated"

_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_TEMPLATE_DIR = "goal_templates"


@dataclass(frozen=True, slots=True)
class ClinicalGoal:
    """One DVH constraint: ``metric`` of ``roi`` ``comparator`` ``value`` (in the metric's unit)."""

    roi: str
    metric: str
    comparator: str
    value: float
    tolerance: float | None = None
    priority: int = 1
    aliases: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    @property
    def unit(self) -> str:
        """The metric's unit (``Gy``, ``%`` or ``cc``), also the unit of value and tolerance."""
        return self.metric[self.metric.rindex("[") + 1 : -1]

    @property
    def roi_names(self) -> tuple[str, ...]:
        """The TG-263 name followed by the aliases."""
        return (self.roi, *self.aliases)

    def matches(self, roi_name: str) -> bool:
        """Whether ``roi_name`` is this goal's ROI by any rule of :func:`rt.roi_names.match_roi_name`."""
        try:
            return match_roi_name(self.roi, self.aliases, (roi_name,)) is not None
        except RTError:
            return False

    def compute_status(self, measured: float) -> str:
        """pass, within_tolerance or fail for a measured value in the metric's unit."""
        compare = COMPARATORS[self.comparator]
        if compare(measured, self.value):
            return PASS
        if self.tolerance is not None and compare(measured, self.tolerance):
            return WITHIN_TOLERANCE
        return FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "roi": self.roi,
            "aliases": list(self.aliases),
            "metric": self.metric,
            "comparator": self.comparator,
            "value": self.value,
            "tolerance": self.tolerance,
            "unit": self.unit,
            "priority": self.priority,
            "description": self.description,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class GoalTemplate:
    """A named set of clinical goals; ``origin`` names the file it was read from."""

    name: str
    goals: tuple[ClinicalGoal, ...]
    description: str = ""
    site: str = ""
    modality: str = ""
    nominal_prescription_gy: float | None = None
    nominal_fractions: int | None = None
    source: str = ""
    origin: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "site": self.site,
            "modality": self.modality,
            "nominal_prescription_gy": self.nominal_prescription_gy,
            "nominal_fractions": self.nominal_fractions,
            "source": self.source,
            "goals": [g.to_dict() for g in self.goals],
        }


@dataclass(frozen=True, slots=True)
class GoalResult:
    """The outcome of one goal: status, measured value (in ``unit``) and, when needed, a reason.

    ``unit`` is the goal's unit, a dose unit labelled as the RT Dose is (``Gy``, or ``Gy(RBE)`` for
    an EFFECTIVE dose). ``roi_name`` is the structure-set ROI the goal's template ROI
    (``goal.roi``) was matched to (None when not found), ``match_rule`` and ``matched_spelling``
    how (:mod:`rt.roi_names`); ``reason`` explains a not_evaluated status; ``note`` carries caveats
    (e.g. ROI volume outside the dose grid).
    """

    goal: ClinicalGoal
    status: str
    measured_value: float | None
    unit: str
    roi_name: str | None = None
    reason: str = ""
    note: str = ""
    match_rule: str = ""
    matched_spelling: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def template_roi(self) -> str:
        """The ROI name the template asks for (TG-263)."""
        return self.goal.roi

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal.to_dict(),
            "status": self.status,
            "measured_value": self.measured_value,
            "unit": self.unit,
            "template_roi": self.template_roi,
            "roi_name": self.roi_name,
            "match_rule": self.match_rule,
            "matched_spelling": self.matched_spelling,
            "reason": self.reason,
            "note": self.note,
        }


# -- parsing and validation -------------------------------------------------------------------------


def _number(raw: Any, what: str, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise RTError(f"{where}: {what} must be a finite number, got {raw!r}")
    return float(raw)


def _validate_metric(metric: Any, where: str) -> str:
    if not isinstance(metric, str):
        raise RTError(f"{where}: metric must be a string, got {metric!r}")
    match = METRIC_PATTERN.match(metric.strip())
    if match is None:
        raise RTError(f"{where}: malformed metric {metric!r} (expected TG-263 forms like D95%[Gy], V20Gy[%], Mean[Gy])")
    unit = match["unit"]
    is_volume_metric = bool(match["vdose"])
    if is_volume_metric and unit not in ("%", "cc"):
        raise RTError(f"{where}: metric {metric!r} is a volume, reported in [%] or [cc]")
    if not is_volume_metric and unit not in ("Gy", "%"):
        raise RTError(f"{where}: metric {metric!r} is a dose, reported in [Gy] or [%]")
    if match["dvol"] and match["dvol_unit"] == "%" and float(match["dvol"]) > 100.0:
        raise RTError(f"{where}: metric {metric!r} asks for a volume above 100 %")
    return metric.strip()


def parse_goal(data: Mapping[str, Any], where: str = "goal") -> ClinicalGoal:
    """A :class:`ClinicalGoal` from its JSON object; RTError naming ``where`` when malformed."""
    if not isinstance(data, Mapping):
        raise RTError(f"{where}: a goal must be an object, got {type(data).__name__}")
    roi = data.get("roi")
    if not isinstance(roi, str) or not roi.strip():
        raise RTError(f"{where}: roi must be a non-empty string, got {roi!r}")
    where = f"{where} ({roi} {data.get('metric', '?')})"
    unknown = set(data) - {"roi", "aliases", "metric", "comparator", "value", "tolerance", "priority", "description",
                           "source"}
    if unknown:
        raise RTError(f"{where}: unknown keys {sorted(unknown)}")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise RTError(f"{where}: aliases must be a list of non-empty strings")
    metric = _validate_metric(data.get("metric"), where)
    comparator = data.get("comparator")
    if comparator not in COMPARATORS:
        raise RTError(f"{where}: unknown comparator {comparator!r}; use one of {list(COMPARATORS)}")
    value = _number(data.get("value"), "value", where)
    tolerance = data.get("tolerance")
    if tolerance is not None:
        tolerance = _number(tolerance, "tolerance", where)
        looser = tolerance >= value if comparator in ("<=", "<") else tolerance <= value
        if not looser:
            raise RTError(f"{where}: tolerance {tolerance:g} is stricter than value {value:g} for {comparator}")
    priority = data.get("priority", 1)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
        raise RTError(f"{where}: priority must be an integer >= 1, got {priority!r}")
    for key in ("description", "source"):
        if not isinstance(data.get(key, ""), str):
            raise RTError(f"{where}: {key} must be a string")
    return ClinicalGoal(
        roi=roi.strip(),
        metric=metric,
        comparator=comparator,
        value=value,
        tolerance=tolerance,
        priority=priority,
        aliases=tuple(a.strip() for a in aliases),
        description=data.get("description", ""),
        source=data.get("source", ""),
    )


def parse_template(data: Mapping[str, Any], origin: str = "<template>") -> GoalTemplate:
    """A validated :class:`GoalTemplate` from its JSON object; RTError naming ``origin`` and the goal."""
    if not isinstance(data, Mapping):
        raise RTError(f"{origin}: a template must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RTError(f"{origin}: template name must be a non-empty string")
    goals = data.get("goals")
    if not isinstance(goals, list) or not goals:
        raise RTError(f"{origin}: goals must be a non-empty list")
    parsed = tuple(parse_goal(g, f"{origin} goal #{i + 1}") for i, g in enumerate(goals))
    rx = data.get("nominal_prescription_gy")
    if rx is not None:
        rx = _number(rx, "nominal_prescription_gy", origin)
    fractions = data.get("nominal_fractions")
    if fractions is not None and (isinstance(fractions, bool) or not isinstance(fractions, int) or fractions < 1):
        raise RTError(f"{origin}: nominal_fractions must be an integer >= 1, got {fractions!r}")
    return GoalTemplate(
        name=name.strip(),
        goals=parsed,
        description=str(data.get("description", "")),
        site=str(data.get("site", "")),
        modality=str(data.get("modality", "")),
        nominal_prescription_gy=rx,
        nominal_fractions=fractions,
        source=str(data.get("source", "")),
        origin=origin,
    )


def _parse_json(text: str, origin: str) -> GoalTemplate:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RTError(f"{origin}: not valid JSON: {exc}") from exc
    return parse_template(data, origin)


def read_template(path: str | Path) -> GoalTemplate:
    """A goal template from a JSON file anywhere on disk (validated)."""
    path = Path(path)
    return _parse_json(path.read_text(encoding="utf-8"), str(path))


def _template_dir() -> Traversable:
    return resources.files("rt").joinpath(_TEMPLATE_DIR)


def list_templates() -> tuple[str, ...]:
    """Names of the templates shipped in ``rt/goal_templates`` (file stems), sorted."""
    return tuple(sorted(p.name[:-5] for p in _template_dir().iterdir() if p.name.endswith(".json")))


def load_template(name: str) -> GoalTemplate:
    """The shipped template ``name`` (e.g. ``"prostate"``), validated; RTError if unknown."""
    if not isinstance(name, str) or not _TEMPLATE_NAME.match(name):
        raise RTError(f"invalid goal template name {name!r}")
    resource = _template_dir().joinpath(f"{name}.json")
    if not resource.is_file():
        raise RTError(f"no goal template {name!r}; have {list(list_templates())}")
    return _parse_json(resource.read_text(encoding="utf-8"), f"{_TEMPLATE_DIR}/{name}.json")


# -- evaluation -------------------------------------------------------------------------------------


def find_roi_match(goal: ClinicalGoal, roi_names: Sequence[str]) -> ROIMatch | None:
    """How the goal's ROI is found among ``roi_names`` (None: not found); RTError when ambiguous."""
    return match_roi_name(goal.roi, goal.aliases, roi_names)


def find_roi_name(goal: ClinicalGoal, roi_names: Sequence[str]) -> str | None:
    """The name in ``roi_names`` matching the goal (rules of :func:`rt.roi_names.match_roi_name`).

    RTError when two names match equally well.
    """
    match = find_roi_match(goal, roi_names)
    return match.roi_name if match is not None else None


def _goal_unit(goal: ClinicalGoal, dose_unit: str) -> str:
    return dose_unit if goal.unit == "Gy" else goal.unit


def evaluate_goal(
    goal: ClinicalGoal,
    dvhs: Mapping[str, DVH],
    prescription_gy: float | None = None,
    *,
    unavailable: Mapping[str, str] | None = None,
    dose_unit: str = "Gy",
    dose_problem: str = "",
    roi_names: Sequence[str] | None = None,
) -> GoalResult:
    """Evaluate one goal against DVHs keyed by structure-set ROI name (doses Gy, volumes cc).

    ``unavailable`` names ROIs of the structure set that have no DVH, with why (``lies entirely
    outside the dose grid``): a goal matched to one is not_evaluated with that reason, not "not
    found". ``dose_unit`` labels dose values (``Gy(RBE)`` for an EFFECTIVE dose); a non-empty
    ``dose_problem`` (``the RT Dose is one beam's dose``) leaves the goal not_evaluated, matched.
    ``roi_names`` (default: the DVHs' and unavailable names) are all the structure set's names, the
    goal is matched among them.
    """
    unit = _goal_unit(goal, dose_unit)
    missing = dict(unavailable or {})
    names = tuple(roi_names) if roi_names is not None else (*dvhs, *(n for n in missing if n not in dvhs))
    try:
        match = find_roi_match(goal, names)
    except RTError as exc:
        return GoalResult(goal, NOT_EVALUATED, None, unit, reason=str(exc))
    if match is None:
        reason = f"ROI {goal.roi!r} (or aliases {list(goal.aliases)}) not found"
        return GoalResult(goal, NOT_EVALUATED, None, unit, reason=reason)
    matched = {"roi_name": match.roi_name, "match_rule": match.rule, "matched_spelling": match.spelling}
    if match.roi_name not in dvhs:
        reason = f"ROI {match.roi_name!r} {missing.get(match.roi_name, 'has no DVH')}"
        return GoalResult(goal, NOT_EVALUATED, None, unit, reason=reason, **matched)
    if dose_problem:
        return GoalResult(goal, NOT_EVALUATED, None, unit, reason=dose_problem, **matched)
    dvh = dvhs[match.roi_name]
    try:
        measured = compute_metric(dvh, goal.metric, prescription_gy)
    except MetricError as exc:
        return GoalResult(goal, NOT_EVALUATED, None, unit, reason=str(exc), **matched)
    note = ""
    if dvh.uncovered_volume_cc > 0.0:
        note = f"{dvh.uncovered_volume_cc:.3g} cc of {match.roi_name} lies outside the dose grid"
    return GoalResult(goal, goal.compute_status(measured), measured, unit, note=note, **matched)


def evaluate_goals(
    template: GoalTemplate,
    dvhs: Mapping[str, DVH],
    prescription_gy: float | None = None,
    *,
    unavailable: Mapping[str, str] | None = None,
    dose_unit: str = "Gy",
    dose_problem: str = "",
    roi_names: Sequence[str] | None = None,
) -> list[GoalResult]:
    """Evaluate every goal of ``template`` (in template order) against DVHs keyed by ROI name.

    ``prescription_gy`` (Gy) is needed by goals relative to the prescription; without it those
    goals are not_evaluated, as are goals whose ROI is missing or unavailable (the reason says
    which). Keywords as :func:`evaluate_goal`.
    """
    return [
        evaluate_goal(goal, dvhs, prescription_gy, unavailable=unavailable, dose_unit=dose_unit,
                      dose_problem=dose_problem, roi_names=roi_names)
        for goal in template.goals
    ]
