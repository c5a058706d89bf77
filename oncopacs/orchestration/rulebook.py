"""The hospital's rules as one book: the configuration file's (read-only) and those administrators add through
``/api/rules`` (stored in the index), checked together and applied to the rule engine.

Every change is checked as a whole (unique names, known destinations and plug-ins) before it is stored, so the
engine never holds a rule it cannot carry out. Other processes of the platform pick a change up at their next
:meth:`RuleBook.refresh` (the rule loop calls it every few seconds).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from oncopacs.errors import ConfigError, NotFoundError, OncopacsError
from oncopacs.orchestration.engine import RuleEngine, rule_documents
from oncopacs.orchestration.rule_store import ManagedRules, StoredRules
from oncopacs.orchestration.rules import Rule, parse_rule


class RuleConflictError(OncopacsError):
    """A rule name is taken, or the rule cannot be changed here (built-in, or declared in the configuration)."""


class RuleBook:
    """The configured and the managed rules of one engine."""

    def __init__(self, engine: RuleEngine, configured: Iterable[Rule], managed: ManagedRules,
                 check: Callable[[Iterable[Rule]], None]) -> None:
        self.engine = engine
        self.configured = tuple(configured)
        self.managed = managed
        self.check = check  # ConfigError for a rule the platform cannot carry out
        self._lock = threading.Lock()
        self._managed_rules: tuple[Rule, ...] = ()  # stored and usable
        self._stored: tuple[Rule, ...] = ()  # as stored and parsed, usable or not
        self._unreadable: Mapping[str, str] = {}  # stored rules that no longer parse -> why
        self.problems: dict[str, str] = {}  # stored rule name -> why it is not applied

    def load(self) -> None:
        """Read the managed rules and apply configured + managed to the engine.

        A stored rule the platform can no longer carry out (its destination or plug-in left the configuration,
        a configured rule took its name) is not applied and is listed with its problem, never fatal.
        """
        with self._lock:
            self._apply(self.managed.load())

    def refresh(self) -> None:
        """Pick up the changes another process stored."""
        stored = self.managed.load()
        if stored.rules != self._stored or stored.unreadable != self._unreadable:
            with self._lock:
                self._apply(stored)

    def documents(self) -> list[dict[str, Any]]:
        """Built-in, configured and managed rules for ``/api/rules`` (each with ``source``)."""
        sources = {rule.name: "api" for rule in self._managed_rules}
        unused = [{**rule.to_dict(), "builtin": False, "source": "api", "applied": False,
                   "problem": self.problems[rule.name]} for rule in self._stored if rule.name in self.problems]
        unreadable = [{"name": name, "builtin": False, "source": "api", "applied": False, "problem": problem}
                      for name, problem in self._unreadable.items()]
        return [*rule_documents(self.engine, sources), *unused, *unreadable]

    def add(self, table: Mapping[str, Any], actor: str) -> Rule:
        """A new managed rule (ConfigError when invalid, RuleConflictError when the name is taken)."""
        rule = parse_rule(table)
        with self._lock:
            self._refuse_fixed(rule.name)
            if any(existing.name == rule.name for existing in self._stored) or rule.name in self._unreadable:
                raise RuleConflictError(f"a rule named {rule.name!r} exists: change it with PUT /api/rules/{rule.name}")
            self._check_and_store(rule, table, actor)
        return rule

    def replace(self, name: str, table: Mapping[str, Any], actor: str) -> Rule:
        """Change a managed rule (NotFoundError, RuleConflictError for a built-in or configured one, ConfigError)."""
        self._refuse_fixed(name)
        rule = parse_rule({**table, "name": table.get("name", name)})
        if rule.name != name:
            raise ConfigError(f"the rule's name is {name!r} in the path and {rule.name!r} in the body")
        with self._lock:
            self._refuse_fixed(name)
            if not any(existing.name == name for existing in self._stored) and name not in self._unreadable:
                raise NotFoundError(f"no rule named {name!r}")
            self._check_and_store(rule, {**table, "name": name}, actor)
        return rule

    def remove(self, name: str) -> None:
        """Delete a managed rule (NotFoundError, RuleConflictError for a built-in or configured one)."""
        with self._lock:
            self._refuse_fixed(name)
            if not self.managed.remove(name):
                raise NotFoundError(f"no rule named {name!r}")
            self._apply(self.managed.load())

    def _refuse_fixed(self, name: str) -> None:
        """RuleConflictError for the name of a built-in or a configured rule."""
        if any(builtin.name == name for builtin in self.engine.builtins):
            raise RuleConflictError(f"rule {name!r} is built into OncoPACS and cannot be changed")
        if any(rule.name == name for rule in self.configured):
            raise RuleConflictError(f"rule {name!r} is declared in the configuration file: change it there")

    def _check_and_store(self, rule: Rule, table: Mapping[str, Any], actor: str) -> None:
        """Store ``rule`` when the platform can carry it out (ConfigError says why not)."""
        self.check([rule])
        self.managed.put(table, actor)
        self._apply(self.managed.load())

    def _apply(self, loaded: StoredRules) -> None:
        stored = loaded.rules
        fixed = {rule.name for rule in self.configured} | {builtin.name for builtin in self.engine.builtins}
        problems = {}
        for rule in stored:
            if rule.name in fixed:
                problems[rule.name] = "a built-in or configured rule has the same name"
                continue
            try:
                self.check([rule])
            except ConfigError as exc:
                problems[rule.name] = str(exc)
        self._stored = stored
        self._unreadable = dict(loaded.unreadable)
        self.problems = problems
        self._managed_rules = tuple(rule for rule in stored if rule.name not in problems)
        self.engine.replace_rules((*self.configured, *self._managed_rules))


__all__ = ["RuleBook", "RuleConflictError"]
