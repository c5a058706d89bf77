"""DICOM dates (DA) as ISO 8601 ``YYYY-MM-DD``, kept for its importers: see :mod:`oncopacs.index.display`."""

from __future__ import annotations

from oncopacs.index.display import format_iso_date

__all__ = ["format_iso_date"]
