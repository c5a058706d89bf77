"""Map structure names to AAPM TG-263 standard names (compact table of common targets and OARs).

The original name is always kept; ``standard`` is None when no confident match exists (e.g.
optimisation structures such as ``optBladder``, rings, or unknown names).

Matching: case and separators (space, ``_``, ``-``, ``.``) are ignored; laterality is taken from
a leading or trailing ``L``/``Lt``/``Left`` or ``R``/``Rt``/``Right`` (separate word or glued on,
as in ``FemoralHeadLt``) and written as TG-263's ``_L``/``_R`` suffix. The body outline is
TG-263's ``External`` (kind "other").

Targets (GTV, CTV, ITV, PTV, optionally followed by a classifier ``p``/``n``/``sb`` or
``High``/``Mid``/``Low``) follow TG-263's ``Type[classifier][_dose]`` with the dose in cGy:
``PTV_6000``, ``PTV60``, ``PTV 60Gy`` and ``PTV_50.4`` -> ``PTV_6000``/``PTV_5040``. A bare
number is read as Gy when it is below 100 and not a small index (< 20), as cGy from 100 on; an
index (``PTV1``, ``PTV2``) is ambiguous and gives kind "target" with no standard name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: alias (lower case, no separators) -> (TG-263 name, lateral?). Lateral names get _L / _R.
_OAR_ALIASES: dict[str, tuple[str, bool]] = {}


def _add(standard: str, lateral: bool, *aliases: str) -> None:
    for alias in (standard, *aliases):
        _OAR_ALIASES[re.sub(r"[^a-z0-9]", "", alias.lower())] = (standard, lateral)


_add("Bladder", False, "urinary bladder")
_add("Rectum", False)
_add("Prostate", False, "pros", "prost")
_add("SeminalVes", False, "seminal vesicles", "seminal vesicle", "semves")
_add("PenileBulb", False, "penile bulb", "bulb of penis")
_add("Femur_Head", True, "femoral head", "femoralhead", "femur head", "fem head", "head of femur")
_add("Bowel", False, "bowel bag", "bowelbag")
_add("Bowel_Small", False, "small bowel", "smallbowel", "small intestine")
_add("Bowel_Large", False, "large bowel", "largebowel")
_add("Colon", False)
_add("Duodenum", False)
_add("Stomach", False)
_add("Liver", False)
_add("Pancreas", False)
_add("Spleen", False)
_add("Kidney", True)
_add("Kidneys", False, "kidneys bilateral", "both kidneys")
_add("Heart", False)
_add("Esophagus", False, "oesophagus", "esophag", "oesophag")
_add("Trachea", False)
_add("Lung", True)
_add("Lungs", False, "lung total", "total lung", "both lungs", "lungs bilateral")
_add("SpinalCord", False, "spinal cord", "cord", "spinalcanal cord", "myelon")
_add("SpinalCanal", False, "spinal canal")
_add("CaudaEquina", False, "cauda equina")
_add("Brainstem", False, "brain stem")
_add("Brain", False)
_add("OpticChiasm", False, "chiasm", "chiasma", "optic chiasm")
_add("OpticNrv", True, "optic nerve", "opticnerve", "optic nrv")
_add("Eye", True, "globe")
_add("Lens", True)
_add("Cochlea", True)
_add("Parotid", True, "parotid gland")
_add("Parotids", False, "parotids bilateral", "both parotids")
_add("Glnd_Submand", True, "submandibular", "submandibular gland", "submand")
_add("Glnd_Thyroid", False, "thyroid", "thyroid gland")
_add("Larynx", False)
_add("Bone_Mandible", False, "mandible")
_add("Cavity_Oral", False, "oral cavity", "oralcavity", "cavity oral")
_add("BrachialPlex", True, "brachial plexus", "brachialplexus", "brachial plex")
_add("Breast", True)

_EXTERNAL_ALIASES = {"external", "body", "bodyoutline", "outline", "externalcontour", "patient", "patientoutline"}

_LEFT = ("left", "lt", "l")
_RIGHT = ("right", "rt", "r")

_TARGET = re.compile(
    r"^(?P<type>GTV|CTV|ITV|PTV)(?P<cls>p|n|sb)?(?:[ _\-.]*(?P<level>high|mid|low))?"
    r"(?:[ _\-.]*(?P<dose>\d+(?:[.,]\d+)?)[ _]*(?P<unit>c?gy)?)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class TG263Name:
    """A structure name and its TG-263 standard name (None when unmatched).

    kind: "target" (GTV/CTV/ITV/PTV), "oar" (a normal-tissue organ) or "other" (External,
    optimisation/support structures, unknown names).
    """

    original: str
    standard: str | None
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {"original": self.original, "standard": self.standard, "kind": self.kind}


def _map_target(name: str) -> TG263Name | None:
    match = _TARGET.match(name.strip())
    if match is None:
        return None
    base = match["type"].upper() + (match["cls"] or "").lower()
    if match["level"]:
        base += "_" + match["level"].capitalize()
    if match["dose"] is None:
        return TG263Name(name, base, "target")
    value = float(match["dose"].replace(",", "."))
    unit = (match["unit"] or "").lower()
    if unit == "gy" or (not unit and "." not in match["dose"] and "," not in match["dose"] and 20 <= value < 100) \
            or (not unit and ("." in match["dose"] or "," in match["dose"]) and value < 100):
        cgy = value * 100.0
    elif unit == "cgy" or (not unit and value >= 100):
        cgy = value
    else:  # a small index such as PTV1: no obvious dose
        return TG263Name(name, None, "target")
    return TG263Name(name, f"{base}_{round(cgy):d}", "target")


def _split_side(key: str, words: list[str]) -> tuple[str, str]:
    """(side "L"/"R"/"", key without the side) from separate or glued-on laterality."""
    for side, tags in (("L", _LEFT), ("R", _RIGHT)):
        if len(words) > 1 and words[-1] in tags:
            return side, "".join(words[:-1])
        if len(words) > 1 and words[0] in tags:
            return side, "".join(words[1:])
    for side, tags in (("L", _LEFT), ("R", _RIGHT)):
        for tag in tags:
            if key.endswith(tag) and _OAR_ALIASES.get(key[: -len(tag)], ("", False))[1]:
                return side, key[: -len(tag)]
            if key.startswith(tag) and _OAR_ALIASES.get(key[len(tag):], ("", False))[1]:
                return side, key[len(tag):]
    return "", key


def map_to_tg263(name: str) -> TG263Name:
    """The TG-263 standard name of structure ``name`` (see the module docstring for the rules)."""
    target = _map_target(name)
    if target is not None:
        return target
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    key = "".join(words)
    if key in _EXTERNAL_ALIASES:
        return TG263Name(name, "External", "other")
    if key in _OAR_ALIASES and not _OAR_ALIASES[key][1]:
        return TG263Name(name, _OAR_ALIASES[key][0], "oar")
    side, base = _split_side(key, words)
    entry = _OAR_ALIASES.get(base)
    if entry is not None and entry[1] and side:
        return TG263Name(name, f"{entry[0]}_{side}", "oar")
    return TG263Name(name, None, "other")


def map_structure_names(names: list[str] | tuple[str, ...]) -> tuple[TG263Name, ...]:
    """:func:`map_to_tg263` for each name, in order."""
    return tuple(map_to_tg263(n) for n in names)
