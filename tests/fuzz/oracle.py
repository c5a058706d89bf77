"""What the fuzzers expect of every mutant, the tally they report, and the time bound on each case."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: The run is reproducible from these: ``ONCOPACS_FUZZ_SEED=7 ONCOPACS_FUZZ_CASES=20000 pytest tests/fuzz``.
FUZZ_SEED = int(os.environ.get("ONCOPACS_FUZZ_SEED", "18"))
CASE_TIME_LIMIT_S = 20.0  # a hang guard (a case takes milliseconds), not a performance assertion

#: Refusal reasons, by the problem they name (the archive's reasons are "<element> <problem>").
_REASON_CLASSES = (
    ("not DICOM", re.compile(r"is not DICOM|is empty or not DICOM")),
    ("unparseable", re.compile(r"cannot be parsed")),
    ("truncated", re.compile(r"is truncated")),
    ("missing element", re.compile(r" missing\b")),
    ("wrong VR", re.compile(r"malformed \([0-9A-F,]+\): VR ")),
    ("malformed value", re.compile(r"malformed")),
    ("File Meta mismatch", re.compile(r"does not match")),
    ("conflict", re.compile(r"already stored|another patient|another study|another series")),
)


def reason_class(reason: str) -> str:
    """The class of a refusal reason (``"unexpected"`` flags the ingest safety net: a reader bug)."""
    if "unexpected" in reason:
        return "UNEXPECTED"
    return next((name for name, pattern in _REASON_CLASSES if pattern.search(reason)), "other: " + reason[:60])


class CaseTimeout(Exception):
    """One fuzz case ran past :data:`CASE_TIME_LIMIT_S`."""


@contextmanager
def time_limit(seconds: float = CASE_TIME_LIMIT_S) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in the main thread if the block runs longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"the case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Tally:
    """Counts of outcomes and the failures found, reported at the end of a run."""

    title: str
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def fail(self, case: int, seed_name: str, description: str, problem: str) -> None:
        self.failures.append(f"case {case} ({seed_name}; {description}): {problem}")

    def report(self) -> str:
        lines = [f"{self.title}: {self.cases} cases, {len(self.failures)} failures"]
        lines += [f"  {count:5d}  {outcome}" for outcome, count in sorted(self.outcomes.items())]
        lines.append("  statuses: " + ", ".join(f"{code} x{count}" for code, count in sorted(self.statuses.items())))
        lines.append("  mutations: " + ", ".join(f"{kind} x{count}" for kind, count in sorted(self.kinds.items())))
        lines += [f"  FAIL {failure}" for failure in self.failures[:30]]
        return "\n".join(lines)
