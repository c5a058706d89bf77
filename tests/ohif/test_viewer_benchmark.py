"""``benchmarks/viewer.py --ohif --quick`` runs end to end: OHIF's time to first image, printed as a table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from oncopacs.ohif.bundle import VERSION, find_installed
from tests.conftest import dcmtk_tool, require
from tests.e2e.browsing import CHROMEDRIVER, CHROMIUM
from tests.ohif.builds import REAL_VIEWER_DIR

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "viewer.py"


def test_the_quick_ohif_benchmark_prints_its_table(tmp_path: Path):
    dcmtk_tool("storescu")
    require(CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian's chromium and chromium-driver are not installed")
    require(find_installed(REAL_VIEWER_DIR) is not None,
            f"OHIF {VERSION} is not installed in {REAL_VIEWER_DIR} (`.ci/run` installs it with npm)")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--ohif", "--quick", "--viewer-dir", str(REAL_VIEWER_DIR),
         "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=SCRIPT.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    header = next(line for line in lines if line.startswith("server"))
    assert "first image" in header and "all 20 frames" in header
    oncopacs = next(line for line in lines if line.startswith("OncoPACS "))
    assert re.search(r" \d+ \(\d+-\d+\) ", oncopacs), oncopacs
    assert any(line.startswith(("Orthanc ", "Orthanc: skipped")) for line in lines), run.stdout
    assert "first image OncoPACS/Orthanc (median):" in run.stdout
