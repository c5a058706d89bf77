"""The rule engine: which rules fire for what the archive stores, and when.

Two kinds of rule share it. **Built-in rules** are OncoPACS's own reactions (RT analysis when a planning set
completes, SUV statistics when a PET series meets its contours): each looks at every stored instance and queues
its job. **The hospital's rules** (:mod:`oncopacs.orchestration.rules`) match on DICOM keywords: an instance rule
fires as each matching instance is stored; a series (study) rule fires once for a series (study) that received a
matching instance, when no instance of it has arrived for ``stable_seconds``; another instance arriving later makes
it fire again (a late slice, a re-sent series). A series or study firing covers every instance the archive holds of
it when it fires.

The engine decides; the :class:`RuleActions` it is given act (the outbox forwards, the job system analyses, the
de-identified export exports), so an action never runs inside an association or a request. Series and study rules
waiting to fire are kept in a :class:`PendingStore` (the index database on the platform), so neither a restart nor
another process (``oncopacs import``) loses one. Times are seconds since the epoch from ``clock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from oncopacs.archive.decoding import value_free_traceback
from oncopacs.archive.extract import InstanceRecord
from oncopacs.orchestration.rule_match import CALLING_AE, MATCHABLE
from oncopacs.orchestration.rules import Rule, Trigger

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule firing for an instance, a series or a study (``uid`` at that level).

    ``sop_instance_uids`` names the instance of an instance firing; a series or study firing leaves it empty and
    covers every instance of ``uid`` the archive holds.
    """

    rule: Rule
    level: Trigger
    uid: str
    study_instance_uid: str
    sop_instance_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BuiltinRule:
    """One of OncoPACS's own rules: ``react`` sees every stored instance and queues the work it calls for."""

    name: str
    description: str
    react: Callable[[InstanceRecord], None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "on": Trigger.INSTANCE.value, "description": self.description, "enabled": True,
                "builtin": True, "source": "built-in"}


@dataclass(frozen=True, slots=True)
class PendingKey:
    """A series or study rule waiting for ``uid`` to become quiet."""

    rule: str
    level: Trigger
    uid: str
    study_instance_uid: str


class PendingStore(Protocol):
    """Where series and study rules wait to fire."""

    def note(self, key: PendingKey, due_at: float) -> None:
        """Make ``key`` due no earlier than ``due_at`` (added when absent)."""

    def take_due(self, now: float) -> list[PendingKey]:
        """Remove and return the keys due at ``now``; each key is taken by one caller only."""

    def count(self) -> int:
        """How many keys wait."""


class MemoryPendingStore:
    """Pending rules in this process only (tests, and an engine without an index)."""

    def __init__(self) -> None:
        self._due: dict[tuple[str, str], tuple[PendingKey, float]] = {}
        self._lock = threading.Lock()

    def note(self, key: PendingKey, due_at: float) -> None:
        with self._lock:
            _known, due = self._due.get((key.rule, key.uid), (key, 0.0))
            self._due[(key.rule, key.uid)] = (key, max(due, due_at))

    def take_due(self, now: float) -> list[PendingKey]:
        with self._lock:
            taken = [(name, key) for name, (key, due) in self._due.items() if due <= now]
            for name, _key in taken:
                del self._due[name]
        return [key for _name, key in taken]

    def count(self) -> int:
        with self._lock:
            return len(self._due)


class RuleActions(Protocol):
    """What a firing rule does; implemented by the platform (outbox, jobs, export)."""

    def run(self, firing: Firing) -> None: ...


def instance_values(record: InstanceRecord, source: str) -> dict[str, str]:
    """The keyword values rules match an arriving instance on (``CallingAE`` from a ``dimse:<AE>`` source)."""
    values = {keyword: str(getattr(record, attribute) or "") for keyword, (_vr, attribute) in MATCHABLE.items()}
    values[CALLING_AE] = source.removeprefix("dimse:") if source.startswith("dimse:") else ""
    return values


class RuleEngine:
    """Applies the built-in and the hospital's rules to arriving instances; call :meth:`fire_stable` regularly.

    A pending series or study is written to the store when it first matches and then at most once every
    ``write_slack_s`` seconds, each write making it due ``stable_seconds + write_slack_s`` after the instance that
    caused it: a rule never fires before its series has been quiet for ``stable_seconds``, and at most
    ``write_slack_s`` later.
    """

    def __init__(self, rules: Iterable[Rule], actions: RuleActions, *, builtins: Iterable[BuiltinRule] = (),
                 stable_seconds: float = 30.0, clock: Callable[[], float] = time.time,
                 store: PendingStore | None = None, write_slack_s: float | None = None) -> None:
        self.rules = tuple(rules)
        self.builtins = tuple(builtins)
        self.actions = actions
        self.stable_seconds = stable_seconds
        self.clock = clock
        self.store: PendingStore = store if store is not None else MemoryPendingStore()
        self.write_slack_s = min(5.0, stable_seconds / 4) if write_slack_s is None else write_slack_s
        self._written: dict[tuple[str, str], tuple[PendingKey, float]] = {}  # key -> when it was last written
        self._lock = threading.Lock()

    def replace_rules(self, rules: Iterable[Rule]) -> None:
        """Apply ``rules`` from now on (an administrator changed them); pending ones of removed rules lapse."""
        self.rules = tuple(rules)

    def rule(self, name: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.name == name), None)

    def arrived(self, record: InstanceRecord, source: str) -> list[Firing]:
        """Note an instance stored from ``source``: run the built-in rules and the instance rules it matches
        (their firings), and start or extend the wait of the series and study rules it matches."""
        self._react(record)
        values = instance_values(record, source)
        fired = []
        now = self.clock()
        for rule in self.rules:
            if not rule.enabled or not rule.matches(values):
                continue
            if rule.on is Trigger.INSTANCE:
                fired.append(Firing(rule, Trigger.INSTANCE, record.sop_instance_uid, record.study_instance_uid,
                                    (record.sop_instance_uid,)))
                continue
            uid = record.series_instance_uid if rule.on is Trigger.SERIES else record.study_instance_uid
            self._note(PendingKey(rule.name, rule.on, uid, record.study_instance_uid), now, force=True)
        self._extend_quiet_timers(record, now)
        for firing in fired:
            self.actions.run(firing)
        return fired

    def fire_stable(self) -> list[Firing]:
        """Fire the series and study rules whose series or study has been quiet for ``stable_seconds``."""
        now = self.clock()
        fired = []
        for key in self.store.take_due(now):
            with self._lock:
                self._written.pop((key.rule, key.uid), None)
            rule = self.rule(key.rule)
            if rule is None or not rule.enabled or rule.on is not key.level:
                continue  # removed, disabled or changed since: it lapses
            fired.append(Firing(rule, key.level, key.uid, key.study_instance_uid))
        for firing in fired:
            self.actions.run(firing)
        self._forget_stale(now)
        return fired

    def pending(self) -> int:
        """How many series and studies wait to become stable."""
        return self.store.count()

    def _react(self, record: InstanceRecord) -> None:
        for builtin in self.builtins:
            try:
                builtin.react(record)
            except Exception as exc:  # noqa: BLE001 -- one failing built-in rule must not stop the others
                # value-free: a database error's text quotes the instance's attributes
                log.error("built-in rule %s failed for an instance: %s%s", builtin.name, type(exc).__name__,
                          "\n" + value_free_traceback(exc))

    def _note(self, key: PendingKey, now: float, *, force: bool) -> None:
        """Push ``key``'s due time past ``now + stable_seconds``; written when new (``force``) or stale."""
        with self._lock:
            known = self._written.get((key.rule, key.uid))
            if known is not None and now - known[1] < self.write_slack_s:
                return
            if known is None and not force:
                return
            self._written[(key.rule, key.uid)] = (key, now)
        self.store.note(key, now + self.stable_seconds + self.write_slack_s)

    def _extend_quiet_timers(self, record: InstanceRecord, now: float) -> None:
        """Any instance of a pending series or study (matching or not) means it is not quiet yet."""
        with self._lock:
            keys = [key for key, _at in self._written.values()
                    if key.uid in (record.series_instance_uid, record.study_instance_uid)]
        for key in keys:
            self._note(key, now, force=False)

    def _forget_stale(self, now: float) -> None:
        """Drop what this process wrote long ago (another process may have fired it)."""
        horizon = now - 2 * (self.stable_seconds + self.write_slack_s) - 60
        with self._lock:
            for name in [name for name, (_key, at) in self._written.items() if at < horizon]:
                del self._written[name]


def rule_documents(engine: RuleEngine, sources: Mapping[str, str]) -> list[dict[str, Any]]:
    """The engine's rules for ``/api/rules``: the built-in ones, then the hospital's with where each is declared
    (``sources``: rule name -> "config" or "api")."""
    return [*(builtin.to_dict() for builtin in engine.builtins),
            *({**rule.to_dict(), "builtin": False, "source": sources.get(rule.name, "config")}
              for rule in engine.rules)]


__all__ = ["BuiltinRule", "Firing", "MemoryPendingStore", "PendingKey", "PendingStore", "RuleActions", "RuleEngine",
           "instance_values", "rule_documents"]
