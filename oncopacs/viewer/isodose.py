"""Isodose levels and dose colours, hot to cold: what the plan view draws and its legend and colour bar say.

Colours follow the percentage of the reference dose (the prescription, or the maximum dose when the plan
gives none), as treatment planning systems draw them: above 100 % crimson to magenta, 100 % red, 95 % orange,
90 % yellow, 80 % yellow-green, 70 % green, 60 % cyan, 50 % blue, lower levels dark blue to violet. The same
map colours the dose wash, up to :data:`WASH_TOP_PERCENT` or the hottest dose (a hot spot shows).

An isodose line must never be mistaken for a contour: when a level's colour is close to a ROI display colour
of the scene, :func:`plan_isodose_levels` takes the map's colour a few percent hotter or colder, else a
lighter (or darker) shade of it.
Levels are typed in the page as text, in % of the reference or in Gy: :func:`parse_levels`,
:func:`convert_levels` (the % ↔ Gy switch converts the numbers in the box).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PERCENT, GY = "percent", "gy"
UNITS = (PERCENT, GY)
DEFAULT_LEVELS_PERCENT = (100.0, 95.0, 80.0, 50.0, 20.0)
MAX_LEVELS = 12
#: The dose wash and its colour bar run from WASH_BOTTOM_PERCENT to at least WASH_TOP_PERCENT of the reference.
WASH_BOTTOM_PERCENT = 10.0
WASH_TOP_PERCENT = 110.0

#: (percent of the reference dose, RGB) anchors of the hot-to-cold map, increasing percent.
COLOUR_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (10.0, (110, 60, 200)),
    (30.0, (40, 70, 230)),
    (50.0, (0, 120, 255)),
    (60.0, (0, 205, 220)),
    (70.0, (0, 200, 90)),
    (80.0, (150, 220, 0)),
    (90.0, (255, 225, 0)),
    (95.0, (255, 140, 0)),
    (100.0, (255, 0, 0)),
    (105.0, (255, 0, 110)),
    (110.0, (255, 0, 255)),
    (125.0, (255, 160, 255)),
)
#: Two colours closer than this (RGB distance) are "the same colour" on screen.
MIN_COLOUR_DISTANCE = 100.0
_SHIFTS_PERCENT = (6.0, -6.0)  # where on the map a level's colour may move to keep apart from a contour
_NUMBER = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)$")
_STOP_PERCENT = np.array([p for p, _ in COLOUR_STOPS])
_STOP_RGB = np.array([rgb for _, rgb in COLOUR_STOPS], dtype=np.float64)


class LevelsError(ValueError):
    """Isodose levels that cannot be read or converted (the message says why, for the page)."""


@dataclass(frozen=True, slots=True)
class IsodoseLevel:
    """One isodose line: its dose (Gy), its percentage of the reference dose, and its colour."""

    dose_gy: float
    percent: float
    colour: tuple[int, int, int]

    @property
    def css_colour(self) -> str:
        return "rgb({}, {}, {})".format(*self.colour)

    def label(self, dose_unit: str = "Gy") -> str:
        """``95 % · 57 Gy(RBE)``."""
        return f"{format_number(self.percent)} % · {format_number(self.dose_gy)} {dose_unit}"


def format_number(value: float) -> str:
    """A dose or percentage for people: at most two decimals, no trailing zeros (57, 57.5, 1.25)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def compute_dose_colours(percent: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """RGB (…, 3), 0..255, of doses given in % of the reference (clamped to the map's ends)."""
    values = np.asarray(percent, dtype=np.float64)
    return np.stack([np.interp(values, _STOP_PERCENT, _STOP_RGB[:, c]) for c in range(3)], axis=-1)


def dose_colour(percent: float) -> tuple[int, int, int]:
    """The hot-to-cold colour of one dose level in % of the reference."""
    r, g, b = (round(float(v)) for v in compute_dose_colours(percent))
    return r, g, b


def parse_levels(text: str | None) -> tuple[float, ...]:
    """Levels typed as ``"100, 95, 80"`` (commas, semicolons or spaces), as numbers; LevelsError when malformed."""
    parts = [p for p in re.split(r"[,;\s]+", (text or "").strip()) if p]
    bad = [p for p in parts if not _NUMBER.match(p)]
    if bad:
        raise LevelsError(f"isodose levels must be positive numbers, not {', '.join(repr(b) for b in bad[:3])}")
    if len(parts) > MAX_LEVELS:
        raise LevelsError(f"at most {MAX_LEVELS} isodose levels")
    return tuple(float(p) for p in parts)


def to_gy(values: Iterable[float], unit: str, reference_gy: float | None) -> tuple[float, ...]:
    """Levels in ``unit`` (``percent`` of the reference dose or ``gy``) as Gy."""
    if unit == GY:
        return tuple(float(v) for v in values)
    if unit != PERCENT:
        raise LevelsError(f"unknown isodose unit {unit!r} (gy or percent)")
    if not reference_gy:
        raise LevelsError("isodose levels in % need a prescription or a dose")
    return tuple(float(v) * reference_gy / 100.0 for v in values)


def convert_levels(text: str | None, from_unit: str, to_unit: str, reference_gy: float | None) -> str:
    """The typed levels converted between % of the reference and Gy (``"100, 95"`` % of 60 Gy -> ``"60, 57"``)."""
    values = parse_levels(text)
    if from_unit == to_unit or not values:
        return ", ".join(format_number(v) for v in values)
    gy = to_gy(values, from_unit, reference_gy)
    if to_unit == GY:
        return ", ".join(format_number(v) for v in gy)
    if to_unit != PERCENT:
        raise LevelsError(f"unknown isodose unit {to_unit!r} (gy or percent)")
    if not reference_gy:
        raise LevelsError("isodose levels in % need a prescription or a dose")
    return ", ".join(format_number(v / reference_gy * 100.0) for v in gy)


def plan_isodose_levels(doses_gy: Sequence[float], reference_gy: float,
                        avoid: Iterable[tuple[int, int, int]] = ()) -> tuple[IsodoseLevel, ...]:
    """The levels, hottest first, coloured hot to cold and kept apart from the ``avoid`` (ROI) colours."""
    if reference_gy <= 0:
        raise LevelsError("the reference dose must be positive")
    taken = [np.array(c, dtype=np.float64) for c in avoid]
    levels = []
    for dose in sorted({round(float(d), 6) for d in doses_gy if d > 0}, reverse=True):
        percent = dose / reference_gy * 100.0
        levels.append(IsodoseLevel(dose, percent, _apart(percent, taken)))
    return tuple(levels)


def _apart(percent: float, taken: list[npt.NDArray[np.float64]]) -> tuple[int, int, int]:
    """The level's colour, or the nearest on the map (then a shade of it) far enough from every ``taken`` one."""
    colour = dose_colour(percent)
    base = np.array(colour, dtype=np.float64)

    def distance(candidate: npt.NDArray[np.float64]) -> float:
        return min((float(np.linalg.norm(candidate - t)) for t in taken), default=np.inf)

    if distance(base) >= MIN_COLOUR_DISTANCE:
        return colour
    shifted = [compute_dose_colours(percent + step) for step in _SHIFTS_PERCENT]
    shades = [base + (255.0 - base) * f for f in (0.4, 0.55, 0.7)] + [base * f for f in (0.6, 0.45)]
    best = next((c for c in shifted if distance(c) >= MIN_COLOUR_DISTANCE), None)
    if best is None:
        best = next((c for c in shades if distance(c) >= MIN_COLOUR_DISTANCE), max(shades, key=distance))
    r, g, b = (round(float(v)) for v in best)
    return r, g, b


def wash_top_percent(max_dose_gy: float | None, reference_gy: float) -> float:
    """Where the wash's colour map ends (% of the reference): WASH_TOP_PERCENT, or the hottest dose above it."""
    hottest = (max_dose_gy or 0.0) / reference_gy * 100.0 if reference_gy > 0 else 0.0
    return max(WASH_TOP_PERCENT, float(np.ceil(hottest / 5.0) * 5.0))


def colour_bar_stops(top_percent: float) -> tuple[tuple[float, str], ...]:
    """(position 0..1, CSS colour) stops of the wash's colour bar from WASH_BOTTOM_PERCENT to ``top_percent``."""
    span = top_percent - WASH_BOTTOM_PERCENT
    points = [WASH_BOTTOM_PERCENT, *(p for p, _ in COLOUR_STOPS if WASH_BOTTOM_PERCENT < p < top_percent), top_percent]
    return tuple(((p - WASH_BOTTOM_PERCENT) / span, "rgb({}, {}, {})".format(*dose_colour(p))) for p in points)


__all__ = ["COLOUR_STOPS", "DEFAULT_LEVELS_PERCENT", "GY", "PERCENT", "UNITS", "WASH_BOTTOM_PERCENT",
           "WASH_TOP_PERCENT", "IsodoseLevel", "LevelsError", "colour_bar_stops", "compute_dose_colours",
           "convert_levels", "dose_colour", "format_number", "parse_levels", "plan_isodose_levels", "to_gy",
           "wash_top_percent"]
