"""Where the workplace's shared folder is: ``../shared`` beside the repository, or ``ONCOPACS_SHARED_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared folder (peers in ``tools/``, planning-system files in ``data/``); callers say when it is absent."""
    return Path(os.environ.get("ONCOPACS_SHARED_DIR") or REPO.parent / "shared").resolve()


def shared_tool(name: str) -> Path:
    """A benchmark peer or its configuration under ``tools/`` of the shared folder."""
    return shared_dir() / "tools" / name
