"""Errors the RT core raises on purpose (``rt`` may not import :mod:`oncopacs.errors`)."""

from __future__ import annotations


class RTError(Exception):
    """Base for every error the ``rt`` package raises on purpose."""


class DicomInputError(RTError):
    """A dataset lacks, or has an invalid, attribute the RT core relies on."""

    def __init__(self, keyword: str, problem: str = "missing"):
        super().__init__(f"{keyword} {problem}")
        self.keyword = keyword


class GeometryError(RTError):
    """Grids, orientations or frames of reference that cannot be used together."""


class MetricError(RTError, ValueError):
    """A DVH metric name that does not parse, or that cannot be evaluated on this DVH."""
