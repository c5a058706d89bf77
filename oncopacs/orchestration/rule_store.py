"""Rules administrators add through ``/api/rules``, kept in the index database (table ``managed_rules``).

The configuration file's rules stay in the file: they are read-only here. A stored rule keeps the TOML table it
was given (as JSON), checked by :func:`oncopacs.orchestration.rules.parse_rule` on the way in and out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from oncopacs.errors import ConfigError
from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import ManagedRule
from oncopacs.orchestration.rules import Rule, parse_rule


@dataclass(frozen=True, slots=True)
class StoredRules:
    """The stored rules that parse, and the names of those that do not with the reason."""

    rules: tuple[Rule, ...]
    unreadable: Mapping[str, str] = field(default_factory=dict)


class ManagedRules:
    """The administrators' rules, in the order they were added."""

    def __init__(self, index: IndexDatabase) -> None:
        self.index = index

    def load(self) -> StoredRules:
        """Every stored rule, parsed; one that no longer parses (stricter checks since it was stored) is reported
        by name with the reason, never raised: a stored rule must not stop the platform from opening."""
        with self.index.reading() as session:
            rows = session.execute(select(ManagedRule.name, ManagedRule.definition)
                                   .order_by(ManagedRule.updated_at, ManagedRule.name)).all()
        rules, unreadable = [], {}
        for name, definition in rows:
            try:
                rules.append(parse_rule(json.loads(definition)))
            except (ConfigError, ValueError) as exc:
                unreadable[str(name)] = str(exc)
        return StoredRules(tuple(rules), unreadable)

    def names(self) -> set[str]:
        with self.index.reading() as session:
            return set(session.scalars(select(ManagedRule.name)))

    def put(self, table: Mapping[str, Any], actor: str) -> Rule:
        """Store (add or replace) the rule of ``table``; ConfigError when it is not a valid rule."""
        rule = parse_rule(table)
        definition = json.dumps(dict(table), sort_keys=True)
        with self.index.writing() as session:
            row = session.get(ManagedRule, rule.name)
            if row is None:
                session.add(ManagedRule(name=rule.name, definition=definition, created_by=actor[:128],
                                        updated_at=datetime.now(UTC)))
            else:
                row.definition = definition
                row.created_by = actor[:128]
                row.updated_at = datetime.now(UTC)
        return rule

    def remove(self, name: str) -> bool:
        """Delete a stored rule; whether there was one."""
        with self.index.write_connection() as connection:
            return bool(connection.execute(delete(ManagedRule).where(ManagedRule.name == name)).rowcount)


__all__ = ["ManagedRules", "StoredRules"]
