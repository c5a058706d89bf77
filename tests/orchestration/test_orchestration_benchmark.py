"""``benchmarks/orchestration.py --quick`` runs end to end (ingest, forwarding to storescp, contouring latency)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import dcmtk_tool

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "orchestration.py"


def test_the_quick_benchmark_runs_and_reports_all_three_measures(tmp_path: Path):
    for tool in ("storescu", "storescp"):
        dcmtk_tool(tool)  # skips locally, fails in CI, without dcmtk
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--cache-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=SCRIPT.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["forwarding"]["instances"] == 50 and report["forwarding"]["ratio"] > 0
    assert min(report["forwarding"]["ingest"] + report["forwarding"]["forward"]) > 0
    [latency] = report["latency"]["runs"]
    assert 0 < latency["latency_s"] < 300
