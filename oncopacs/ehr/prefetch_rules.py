"""Which priors are relevant before an appointment: the ``[[prefetch]]`` tables, checked once, and the selection.

Each table names a kind of prior; a study is relevant when one of its series matches a rule, and each rule keeps
its ``newest`` matching studies (by StudyDate and StudyTime) within ``within_days`` of the appointment::

    [[prefetch]]
    name = "planning-ct"
    modality = ["CT"]                  # a series of one of these modalities (absent: any)
    study_has = ["RTSTRUCT", "RTPLAN"] # the study also holds one of these modalities (absent: no requirement)
    series_description = "*plan*"      # glob on the series description, case-insensitive (absent: any)
    body_part = "same"                 # "same": the appointment's body part when known, else any; or a term (CHEST)
    newest = 2                         # studies kept (default 1)
    within_days = 1825                 # age limit before the appointment (default 0: any age)

A study without a StudyDate counts as the oldest, and never passes a ``within_days`` limit. With no tables configured,
:data:`DEFAULT_RULES` apply: same body part, RT planning CTs (a CT with a structure set or plan), the last PET-CTs.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from oncopacs.errors import ConfigError

SAME = "same"
_KEYS = {"name", "modality", "study_has", "series_description", "body_part", "newest", "within_days"}


@dataclass(frozen=True, slots=True)
class RemoteSeries:
    """One series of a remote study as its C-FIND answered (SERIES level)."""

    series_instance_uid: str
    modality: str
    body_part: str  # BodyPartExamined, upper case; empty when not sent
    description: str
    instances: int  # NumberOfSeriesRelatedInstances (0 when not sent)


@dataclass(frozen=True, slots=True)
class RemoteStudy:
    """One study of the patient at the remote archive, with its series."""

    study_instance_uid: str
    study_date: str  # DA, empty when unknown
    study_time: str  # TM, empty when unknown
    instances: int  # NumberOfStudyRelatedInstances
    series: tuple[RemoteSeries, ...]

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(s.modality for s in self.series if s.modality)

    @property
    def sort_key(self) -> tuple[str, str]:
        return self.study_date, self.study_time


@dataclass(frozen=True, slots=True)
class PrefetchRule:
    """One checked ``[[prefetch]]`` table (see the module docstring)."""

    name: str
    modalities: frozenset[str] = frozenset()
    study_has: frozenset[str] = frozenset()
    series_description: str = ""
    body_part: str = ""  # "", "same" or a BodyPartExamined term (upper case)
    newest: int = 1
    within_days: int = 0

    def series_matches(self, series: RemoteSeries, appointment_body_part: str) -> bool:
        """Whether ``series`` is of this kind of prior (the study-wide ``study_has`` aside)."""
        if self.modalities and series.modality not in self.modalities:
            return False
        if self.series_description and not fnmatch.fnmatchcase(series.description.lower(),
                                                                self.series_description.lower()):
            return False
        wanted = appointment_body_part if self.body_part == SAME else self.body_part
        return not wanted or series.body_part == wanted

    def study_matches(self, study: RemoteStudy, appointment_body_part: str, since: date | None) -> bool:
        """Whether ``study`` is of this kind and recent enough (``since``: the earliest date; None: any age)."""
        if self.study_has and not self.study_has & study.modalities:
            return False
        if since is not None and (_parse_da(study.study_date) or date.min) < since:
            return False
        return any(self.series_matches(s, appointment_body_part) for s in study.series)


DEFAULT_RULES: tuple[PrefetchRule, ...] = (
    PrefetchRule("same-body-part", body_part=SAME, newest=2, within_days=1825),
    PrefetchRule("planning-ct", modalities=frozenset({"CT"}), study_has=frozenset({"RTSTRUCT", "RTPLAN"}), newest=2),
    PrefetchRule("pet-ct", modalities=frozenset({"PT"}), study_has=frozenset({"CT"}), newest=2),
)


def parse_prefetch_rules(tables: Sequence[Mapping[str, Any]]) -> tuple[PrefetchRule, ...]:
    """The rules of the ``[[prefetch]]`` tables (:data:`DEFAULT_RULES` when there are none); ConfigError naming the
    entry and the problem for a bad one."""
    if not tables:
        return DEFAULT_RULES
    rules: list[PrefetchRule] = []
    for position, table in enumerate(tables, 1):
        rule = _parse_rule(position, table)
        if any(r.name == rule.name for r in rules):
            raise ConfigError(f"[[prefetch]] entry {position}: the name {rule.name!r} is used twice")
        rules.append(rule)
    return tuple(rules)


def select_studies(studies: Iterable[RemoteStudy], rules: Sequence[PrefetchRule], *, body_part: str,
                   appointment: date) -> dict[str, tuple[str, ...]]:
    """Study Instance UID -> the names of the rules that chose it; each rule keeps its ``newest`` matches."""
    ordered = sorted(studies, key=lambda s: s.sort_key, reverse=True)
    chosen: dict[str, list[str]] = {}
    for rule in rules:
        since = appointment - timedelta(days=rule.within_days) if rule.within_days else None
        matching = [s for s in ordered if rule.study_matches(s, body_part.upper(), since)]
        for study in matching[: rule.newest]:
            chosen.setdefault(study.study_instance_uid, []).append(rule.name)
    return {uid: tuple(names) for uid, names in chosen.items()}


def _parse_rule(position: int, table: Mapping[str, Any]) -> PrefetchRule:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[[prefetch]] entry {position} is not a table")
    name = table.get("name")
    where = f"[[prefetch]] entry {position}" + (f" ({name!r})" if isinstance(name, str) and name else "")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string")
    description = table.get("series_description", "")
    body_part = table.get("body_part", "")
    if not isinstance(description, str) or not isinstance(body_part, str):
        raise ConfigError(f"{where}: series_description and body_part must be strings")
    body_part = body_part.strip()
    return PrefetchRule(
        name=name.strip(),
        modalities=_modalities(where, "modality", table.get("modality", [])),
        study_has=_modalities(where, "study_has", table.get("study_has", [])),
        series_description=description.strip(),
        body_part=SAME if body_part.lower() == SAME else body_part.upper(),
        newest=_count(where, "newest", table.get("newest", 1), minimum=1),
        within_days=_count(where, "within_days", table.get("within_days", 0), minimum=0),
    )


def _modalities(where: str, key: str, value: Any) -> frozenset[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and 0 < len(v.strip()) <= 16 for v in values):
        raise ConfigError(f"{where}: {key} must be a modality or a list of modalities (e.g. [\"CT\", \"PT\"])")
    return frozenset(v.strip().upper() for v in values)


def _count(where: str, key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {key} must be a whole number of at least {minimum}")
    return value


def _parse_da(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if len(value) >= 8 else None
    except ValueError:
        return None
