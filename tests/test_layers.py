"""The layers point one way: rt/ and fusion/ import nothing of the platform or the web."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pure_packages_import_bare():
    for package in ("rt", "fusion"):
        code = (
            f"import sys, {package}; "
            "bad = [m for m in ('flask', 'sqlalchemy', 'dash', 'oncopacs') if m in sys.modules]; sys.exit(bool(bad))"
        )
        assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
