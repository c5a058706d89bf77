"""DICOM dates (DA, ``YYYYMMDD``) as people read them: ISO 8601 ``YYYY-MM-DD``."""

from __future__ import annotations

from typing import Any


def format_iso_date(value: Any) -> str:
    """A DA value as ``YYYY-MM-DD``; anything that is not eight digits comes back as text, unchanged."""
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text
