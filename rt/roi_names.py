"""ROI names: finding a goal template's ROI among the names a planning system exported.

A template names its ROI the TG-263 way (``Femur_Head_L``) with a few aliases; Eclipse exports
``Femoral Head Lt``, RayStation ``FemoralHead_L``, Pinnacle ``LT_FEMORAL_HEAD``, Monaco
``Femur Head Left``. :func:`match_roi_name` tries these rules, best first, and reports which one
matched (the structure set's own name is always kept):

1. ``exact``: the structure-set name is the template name.
2. ``case``: the same, ignoring case and surrounding blanks.
3. ``TG-263``: :func:`rt.tg263.map_to_tg263` maps the structure-set name to the template name, or
   to the TG-263 name of one of its aliases (``PTV 78Gy`` -> ``PTV_7800``).
4. ``alias``: the name is one of the template's aliases, ignoring case.
5. ``spelling``: the same words as the template name or an alias once case, blanks, ``_``, ``-``
   and ``.`` are ignored and a leading or trailing side is read as L or R (``L``/``Lt``/``Left``,
   ``R``/``Rt``/``Right``, separate or camel-cased: ``Lt_Parotid``, ``ParotidRight``).
6. ``trailing number``: as ``spelling`` after dropping a trailing number from an organ's name
   (``Rectum_1``, ``Bladder2``); target numbers (``PTV1``, ``PTV_7800``) are never dropped.

Within a rule the template name comes before its aliases, and the aliases keep their order. Two
structure-set names tied on the first rule that matches make the match ambiguous
(:class:`AmbiguousROIError`), never a guess. Helper structures (:func:`is_helper_structure`:
``zPTV_opt``, ``optBladder``, ``Ring_PTV``, ``_avoid``) are matched by rules 1 and 2 only, and a side
never matches the other side (``Femur_L`` is not ``Femur_R``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rt.errors import RTError
from rt.tg263 import map_to_tg263

EXACT = "exact"
CASE = "case"
TG263 = "TG-263"
ALIAS = "alias"
SPELLING = "spelling"
TRAILING_NUMBER = "trailing number"
#: The rules, best first.
RULES = (EXACT, CASE, TG263, ALIAS, SPELLING, TRAILING_NUMBER)

_LEFT = frozenset({"l", "lt", "lft", "left"})
_RIGHT = frozenset({"r", "rt", "rgt", "right"})
_TARGET_TYPES = ("gtv", "ctv", "itv", "ptv")
#: Words that mark an optimisation or helper structure (matched as whole words, any case).
_HELPER_WORDS = frozenset({"opt", "optim", "optimisation", "optimization", "ring", "rings", "avoid", "avoidance",
                           "help", "helper", "dummy", "tmp", "temp", "ctrl", "hotspot", "coldspot"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+(?:[.,]\d+)?")


@dataclass(frozen=True, slots=True)
class ROIMatch:
    """A template ROI found in a structure set: the structure set's ``roi_name``, the ``rule`` and the
    template ``spelling`` (template name, alias or TG-263 name) it matched."""

    template_roi: str
    roi_name: str
    rule: str
    spelling: str

    def describe(self) -> str:
        """``'Femoral Head Lt' (TG-263 Femur_Head_L)``-style text."""
        return f"{self.roi_name!r} ({self.rule} {self.spelling})"

    def to_dict(self) -> dict[str, Any]:
        return {"template_roi": self.template_roi, "roi_name": self.roi_name, "rule": self.rule,
                "spelling": self.spelling}


class AmbiguousROIError(RTError):
    """Two structure-set names match a template ROI equally well."""

    def __init__(self, template_roi: str, rule: str, names: Sequence[str]) -> None:
        super().__init__(f"ROI {template_roi!r} is ambiguous: {sorted(names)} match by {rule}")
        self.template_roi, self.rule, self.names = template_roi, rule, tuple(names)


def _words(name: str) -> list[str]:
    """Lower-case words of ``name``: split on anything not a letter or digit and on camel case."""
    return [w.lower() for part in re.split(r"[^A-Za-z0-9.,]+|[.,](?!\d)", name) for w in _WORD.findall(part)]


def is_helper_structure(name: str) -> bool:
    """Whether ``name`` looks like an optimisation or helper structure (TG-263: a leading ``z`` or ``_``;
    words such as opt, ring, avoid, help, dummy, tmp: ``zPTV_opt``, ``optBladder``, ``Ring_PTV``)."""
    stripped = name.strip()
    if stripped.startswith("_") or re.match(r"^(?:z[A-Z0-9_\-. ]|Z[0-9_\-. ]|zz)", stripped):
        return True
    return any(word in _HELPER_WORDS for word in _words(stripped))


def _is_target(words: list[str]) -> bool:
    return "".join(words).startswith(_TARGET_TYPES)


def compute_spelling_key(name: str, *, drop_number: bool = False) -> tuple[str, str] | None:
    """(words joined without separators, side ``L``/``R``/``""``) of ``name``; None when it has no words.

    ``drop_number`` drops one trailing number of a non-target name (``Rectum_1`` -> ``rectum``).
    """
    words = _words(name)
    if drop_number and len(words) > 1 and words[-1][0].isdigit() and not _is_target(words):
        words = words[:-1]
    side = ""
    if len(words) > 1:
        for tag, sides in (("L", _LEFT), ("R", _RIGHT)):
            if words[-1] in sides:
                side, words = tag, words[:-1]
                break
            if words[0] in sides:
                side, words = tag, words[1:]
                break
    return ("".join(words), side) if words else None


def _tg263_standard(name: str) -> str | None:
    standard = map_to_tg263(name).standard
    return standard.casefold() if standard else None


def _rule_hits(rule: str, spellings: Sequence[str], names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Per template spelling (in order): the structure-set names the rule matches."""
    hits: list[tuple[str, list[str]]] = []
    for index, spelling in enumerate(spellings):
        if rule == EXACT:
            found = [n for n in names if n.strip() == spelling] if index == 0 else []
        elif rule == CASE:
            found = [n for n in names if n.strip().casefold() == spelling.casefold()] if index == 0 else []
        elif rule == TG263:
            target = spelling.casefold() if index == 0 else _tg263_standard(spelling)
            found = [n for n in names if target and not is_helper_structure(n) and _tg263_standard(n) == target]
        elif rule == ALIAS:
            found = [n for n in names if n.strip().casefold() == spelling.casefold()] if index > 0 else []
        else:
            key = compute_spelling_key(spelling)
            drop = rule == TRAILING_NUMBER
            found = [n for n in names if key is not None and not is_helper_structure(n)
                     and compute_spelling_key(n, drop_number=drop) == key]
        hits.append((spelling, found))
    return hits


def match_roi_name(template_roi: str, aliases: Sequence[str], roi_names: Sequence[str]) -> ROIMatch | None:
    """The structure-set name (of ``roi_names``) for ``template_roi`` and its ``aliases``; None when none matches.

    Rules and their order in the module docstring; :class:`AmbiguousROIError` when two names tie.
    """
    names = list(dict.fromkeys(roi_names))
    spellings = [template_roi.strip(), *(a.strip() for a in aliases)]
    for rule in RULES:
        for spelling, found in _rule_hits(rule, spellings, names):
            if len(found) > 1:
                raise AmbiguousROIError(template_roi, rule, found)
            if found:
                shown = (map_to_tg263(spelling).standard or spelling) if rule == TG263 and spelling != spellings[0] \
                    else spelling
                return ROIMatch(template_roi, found[0], rule, shown)
    return None
