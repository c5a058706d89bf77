"""Rules: what happens to arriving data, declared by the hospital (``[[rules]]`` in the TOML configuration).

A rule names when it fires (``on``: each ``instance`` as it is stored, or a ``series`` / ``study`` once no new
instance of it has arrived for ``stable_seconds``), what it fires for (``match``: DICOM keywords to values with the
C-FIND matching rules, plus ``CallingAE``; see :mod:`oncopacs.orchestration.rule_match`) and what it does
(``forward`` to AE titles of ``remote_aes`` or DICOMweb base URLs, ``analyse`` with plug-ins by name, ``export`` a
de-identified copy to a folder, an AE title or a DICOMweb URL). For example::

    [[rules]]
    name = "forward-ct"
    on = "instance"
    match = { Modality = "CT" }
    forward = ["DEST"]

:func:`parse_rules` checks a configuration's rules and says what is wrong with one in a sentence naming it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oncopacs.errors import ConfigError
from oncopacs.orchestration.rule_match import Condition, parse_conditions

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ACTIONS = ("forward", "analyse", "export")
MAX_DESCRIPTION = 500
MAX_NAMES = 50  # destinations, plug-ins or export targets of one action
KEYS = frozenset({"name", "on", "match", "description", "enabled", *ACTIONS})


class Trigger(str, enum.Enum):
    """When a rule fires."""

    INSTANCE = "instance"  # each instance, as it is stored
    SERIES = "series"  # a series no instance has arrived for during stable_seconds
    STUDY = "study"  # a study no instance has arrived for during stable_seconds


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: when (``on``), for what (``conditions``), and its actions (destinations, plug-ins, exports)."""

    name: str
    on: Trigger
    conditions: tuple[Condition, ...]
    forward: tuple[str, ...] = ()
    analyse: tuple[str, ...] = ()
    export: tuple[str, ...] = ()
    description: str = ""
    enabled: bool = True

    def matches(self, values: Mapping[str, str]) -> bool:
        """Whether an instance with these keyword values (``CallingAE`` included) meets every condition."""
        return all(condition.matches(values.get(condition.keyword, "")) for condition in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "on": self.on.value, "description": self.description, "enabled": self.enabled,
                "match": {c.keyword: list(c.alternatives) for c in self.conditions},
                "forward": list(self.forward), "analyse": list(self.analyse), "export": list(self.export)}


def parse_rule(table: object) -> Rule:
    """One rule from its TOML table (ConfigError naming the rule and the problem)."""
    if not isinstance(table, Mapping):
        raise ConfigError("each [[rules]] entry must be a table (name, on, match and actions)")
    name = str(table.get("name", "")).strip()
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"a rule needs a name of letters, digits, '.', '_' or '-' (at most 64), not {name[:70]!r}")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"rule {name!r}: unknown keys {', '.join(unknown)} (a rule has {', '.join(sorted(KEYS))})")
    try:
        on = Trigger(str(table.get("on", "")).strip().lower())
    except ValueError:
        raise ConfigError(f"rule {name!r}: on must be instance, series or study, not {table.get('on')!r}") from None
    actions = {action: _names(name, action, table.get(action)) for action in ACTIONS}
    if not any(actions.values()):
        raise ConfigError(f"rule {name!r} does nothing: give it forward, analyse or export")
    description = table.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ConfigError(f"rule {name!r}: description must be a text of at most {MAX_DESCRIPTION} characters")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"rule {name!r}: enabled must be true or false")
    return Rule(name=name, on=on, conditions=parse_conditions(name, table.get("match")), **actions,
                description=description, enabled=enabled)


def parse_rules(tables: Iterable[object]) -> tuple[Rule, ...]:
    """Every rule of a configuration, in order; names are unique."""
    rules = tuple(parse_rule(table) for table in tables)
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(f"two rules are named {rule.name!r}: rule names must be unique")
        seen.add(rule.name)
    return rules


def _names(rule: str, action: str, raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(f"rule {rule!r}: {action} must be a list of names, e.g. {action} = [\"DEST\"]")
    if len(items) > MAX_NAMES:
        raise ConfigError(f"rule {rule!r}: {action} names at most {MAX_NAMES}")
    return tuple(dict.fromkeys(i.strip() for i in items))  # a name given twice acts once


__all__ = ["Rule", "Trigger", "parse_rule", "parse_rules"]
