"""``benchmarks/hl7_listener.py --quick`` runs end to end: messages/s through the listener and the echo ceiling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hl7_listener.py"


def test_the_quick_benchmark_runs_and_reports_both_modes(tmp_path: Path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--cache-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=SCRIPT.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["messages"] == 50 and "oncopacs.ehr.adt" in report["handler"]
    assert set(report["modes"]) == {"one connection", "4 connections"}
    for sides in report["modes"].values():
        assert sides["oncopacs"]["median"] > 0 and sides["echo"]["median"] > 0
