"""The rule engine: which of the hospital's rules fire for what the archive stores, and when.

An instance rule fires as each matching instance is stored. A series (study) rule fires once for a series (study)
that received a matching instance, when no instance of that series (study) has arrived for ``stable_seconds``;
another instance arriving later makes it fire again (a late slice, a re-sent series). The engine decides; the
:class:`RuleActions` it is given act (the outbox forwards, the job system analyses, the de-identified export
exports), so a rule's action never runs inside an association or a request.

Times are monotonic seconds from ``clock`` (a test passes its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from oncopacs.archive.extract import InstanceRecord
from oncopacs.orchestration.rule_match import CALLING_AE, MATCHABLE
from oncopacs.orchestration.rules import Rule, Trigger


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule firing: for an instance, a series or a study (``uid`` at that level) and the instances it covers."""

    rule: Rule
    level: Trigger
    uid: str
    study_instance_uid: str
    sop_instance_uids: tuple[str, ...]


class RuleActions(Protocol):
    """What a firing rule does; implemented by the platform (outbox, jobs, export)."""

    def run(self, firing: Firing) -> None: ...


@dataclass(slots=True)
class _Pending:
    """A series or study that received matching instances and has not been quiet long enough yet."""

    rule: Rule
    study_instance_uid: str
    last_arrival: float
    sop_instance_uids: list[str] = field(default_factory=list)


def instance_values(record: InstanceRecord, source: str) -> dict[str, str]:
    """The keyword values rules match an arriving instance on (``CallingAE`` from a ``dimse:<AE>`` source)."""
    values = {keyword: str(getattr(record, attribute) or "") for keyword, (_vr, attribute) in MATCHABLE.items()}
    values[CALLING_AE] = source.removeprefix("dimse:") if source.startswith("dimse:") else ""
    return values


class RuleEngine:
    """Applies ``rules`` to arriving instances; call :meth:`fire_stable` regularly for series and study rules."""

    def __init__(self, rules: Iterable[Rule], actions: RuleActions, *, stable_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = tuple(rules)
        self.actions = actions
        self.stable_seconds = stable_seconds
        self.clock = clock
        self._pending: dict[tuple[str, str], _Pending] = {}  # (rule name, series or study UID) -> pending
        self._lock = threading.Lock()

    def arrived(self, record: InstanceRecord, source: str) -> list[Firing]:
        """Note an instance stored from ``source``; run the instance rules it matches (their firings)."""
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
            with self._lock:
                pending = self._pending.setdefault((rule.name, uid), _Pending(rule, record.study_instance_uid, now))
                pending.last_arrival = now
                if record.sop_instance_uid not in pending.sop_instance_uids:
                    pending.sop_instance_uids.append(record.sop_instance_uid)
        self._touch_quiet_timers(record, now)
        for firing in fired:
            self.actions.run(firing)
        return fired

    def fire_stable(self) -> list[Firing]:
        """Fire the series and study rules whose series or study has been quiet for ``stable_seconds``."""
        now = self.clock()
        with self._lock:
            due = [(key, p) for key, p in self._pending.items() if now - p.last_arrival >= self.stable_seconds]
            for key, _pending in due:
                del self._pending[key]
        fired = [Firing(p.rule, p.rule.on, uid, p.study_instance_uid, tuple(p.sop_instance_uids))
                 for (_name, uid), p in due]
        for firing in fired:
            self.actions.run(firing)
        return fired

    def pending(self) -> int:
        """How many series and studies wait to become stable."""
        with self._lock:
            return len(self._pending)

    def _touch_quiet_timers(self, record: InstanceRecord, now: float) -> None:
        """Any instance of a pending series or study (matching or not) means it is not quiet yet."""
        with self._lock:
            for (_name, uid), pending in self._pending.items():
                if uid in (record.series_instance_uid, record.study_instance_uid):
                    pending.last_arrival = now


__all__ = ["Firing", "RuleActions", "RuleEngine", "instance_values"]
