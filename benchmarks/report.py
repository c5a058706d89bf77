"""What every benchmark script shares: progress lines, machine facts, ratios, notes and output."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable


def log(message: str) -> None:
    """A progress line on standard error."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine_info() -> dict:
    """CPU count, Python version and platform of this run."""
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.release()} {platform.machine()}"}


def machine_line(title: str, machine: dict) -> str:
    return f"{title}  ({machine['nproc']} CPUs, Python {machine['python']}, {machine['platform']})"


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def notes_lines(notes: list[str]) -> list[str]:
    return ["Notes:", *(f"  * {note}" for note in notes)]


def emit(report: dict, as_json: bool, render: Callable[[dict], str]) -> int:
    """Print the report as one JSON document or as the table; the exit status."""
    report["argv"] = sys.argv[1:]
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(report))
    return 0
