"""A rule's ``match`` table, checked against an arriving instance with the C-FIND matching rules.

The keys are DICOM keywords of what the index records at ingest (:data:`MATCHABLE`) and ``CallingAE``; the values
follow DICOM query matching (PS3.4 C.2.2.2), as ``oncopacs.index.query`` applies them to the database:

- empty or ``*``: universal (always matches);
- ``*`` and ``?`` wildcards (``CT*``, ``PT?``); person names (PN) compare without regard to case;
- a list: a TOML array or values separated by a backslash (``"CT\\MR"``), any of which matches;
- a range for dates and times (DA, TM, DT): ``20240101-20241231``, ``-20241231`` or ``20240101-``; an empty value
  never falls inside a range;
- UIDs (UI) match exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from oncopacs.errors import ConfigError

CALLING_AE = "CallingAE"
MAX_ALTERNATIVES = 100
MAX_VALUE_LENGTH = 64  # the longest value of a matchable attribute (a UID, LO); a wildcard pattern likewise
TEMPORAL = {"DA": "date YYYYMMDD", "TM": "time HHMMSS", "DT": "date-time YYYYMMDDHHMMSS"}
TEMPORAL_VALUE = {"DA": re.compile(r"\d{8}"), "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
                  "DT": re.compile(r"\d{4}(\d{2}){0,5}(\.\d{1,6})?")}

#: DICOM keyword -> (VR, the field of :class:`oncopacs.archive.extract.InstanceRecord` that holds it).
MATCHABLE: dict[str, tuple[str, str]] = {
    "PatientID": ("LO", "patient_id"),
    "IssuerOfPatientID": ("LO", "issuer_of_patient_id"),
    "PatientName": ("PN", "patient_name"),
    "PatientBirthDate": ("DA", "patient_birth_date"),
    "PatientSex": ("CS", "patient_sex"),
    "StudyInstanceUID": ("UI", "study_instance_uid"),
    "StudyDate": ("DA", "study_date"),
    "StudyTime": ("TM", "study_time"),
    "AccessionNumber": ("SH", "accession_number"),
    "StudyID": ("SH", "study_id"),
    "StudyDescription": ("LO", "study_description"),
    "ReferringPhysicianName": ("PN", "referring_physician_name"),
    "SeriesInstanceUID": ("UI", "series_instance_uid"),
    "Modality": ("CS", "modality"),
    "SeriesNumber": ("IS", "series_number"),
    "SeriesDescription": ("LO", "series_description"),
    "SeriesDate": ("DA", "series_date"),
    "SeriesTime": ("TM", "series_time"),
    "BodyPartExamined": ("CS", "body_part_examined"),
    "SOPInstanceUID": ("UI", "sop_instance_uid"),
    "SOPClassUID": ("UI", "sop_class_uid"),
    "InstanceNumber": ("IS", "instance_number"),
    "ContentDate": ("DA", "content_date"),
    "ContentTime": ("TM", "content_time"),
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``keyword = value`` of a rule's match table; ``alternatives`` empty: universal."""

    keyword: str
    vr: str
    alternatives: tuple[str, ...]

    def matches(self, value: str) -> bool:
        """Whether the instance's ``value`` of the keyword satisfies the condition."""
        if not self.alternatives:
            return True
        return any(_matches_one(self.vr, alternative, value or "") for alternative in self.alternatives)


def parse_conditions(rule_name: str, table: object) -> tuple[Condition, ...]:
    """The conditions of a rule's ``match`` table (ConfigError naming the rule and the key on a bad one)."""
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise ConfigError(f"rule {rule_name!r}: match must be a table of DICOM keywords to values")
    conditions = []
    for keyword, raw in table.items():
        vr = "AE" if keyword == CALLING_AE else MATCHABLE.get(str(keyword), ("", ""))[0]
        if not vr:
            known = ", ".join(sorted([*MATCHABLE, CALLING_AE]))
            raise ConfigError(f"rule {rule_name!r}: match cannot use {keyword!r}; it can use {known}")
        conditions.append(Condition(str(keyword), vr, _alternatives(rule_name, str(keyword), vr, raw)))
    return tuple(conditions)


def _alternatives(rule_name: str, keyword: str, vr: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        values = [str(v).strip() for v in raw]
    elif isinstance(raw, str | int | float) and not isinstance(raw, bool):
        values = [v.strip() for v in str(raw).split("\\")]
    else:
        raise ConfigError(f"rule {rule_name!r}: match {keyword} must be a text, a number or a list of them")
    values = [v for v in values if v]
    if not values or "*" in values:
        return ()  # universal
    if len(values) > MAX_ALTERNATIVES or any(len(v) > MAX_VALUE_LENGTH for v in values):
        raise ConfigError(f"rule {rule_name!r}: match {keyword} takes at most {MAX_ALTERNATIVES} values of at most "
                          f"{MAX_VALUE_LENGTH} characters")
    for value in values:
        if vr in TEMPORAL and not _temporal(vr, value):
            raise ConfigError(f"rule {rule_name!r}: match {keyword} {value[:40]!r} is not a {TEMPORAL[vr]} or a range "
                              f"of them (A-B, -B or A-)")
    return tuple(values)


def _temporal(vr: str, value: str) -> bool:
    """Whether a DA, TM or DT match value is one value or a range (either bound may be empty, not both)."""
    bounds = value.split("-")
    if len(bounds) > 2 or not any(bounds):
        return False
    return all(not bound or TEMPORAL_VALUE[vr].fullmatch(bound.strip()) for bound in bounds)


def _matches_one(vr: str, wanted: str, value: str) -> bool:
    if vr == "UI":
        return value == wanted
    if vr in ("DA", "TM", "DT") and "-" in wanted:
        low, high = (part.strip() for part in wanted.split("-"))
        return bool(value) and (not low or value >= low) and (not high or value <= high.ljust(26, "9"))
    if vr in ("PN", "AE"):  # names compare without regard to case (as the index does); AE titles are trimmed
        wanted, value = wanted.lower(), value.strip().lower()
    if "*" in wanted or "?" in wanted:
        return wildcard_match(wanted, value)
    return value == wanted


def wildcard_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` (``*``: any run of characters, ``?``: one), in at most
    len(pattern) × len(value) steps: a rule never stalls the ingest thread, however many ``*`` it has (a regular
    expression backtracks exponentially on ``a*a*a*…z`` against a long value)."""
    p = v = 0
    star, resume = -1, 0  # the last '*' seen and where in the value its run would end next
    while v < len(value):
        if p < len(pattern) and pattern[p] in ("?", value[v]) and pattern[p] != "*":
            p, v = p + 1, v + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, v, p + 1
        elif star >= 0:
            resume += 1
            p, v = star + 1, resume
        else:
            return False
    return all(c == "*" for c in pattern[p:])


__all__ = ["CALLING_AE", "MATCHABLE", "Condition", "parse_conditions", "wildcard_match"]
