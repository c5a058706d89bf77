"""Errors the RT core raises on purpose.

``rt`` may not import :mod:`oncopacs.errors`, which re-exports the shared names.
"""

from __future__ import annotations


class RTError(Exception):
    """Base for every error the ``rt`` package raises on purpose."""


class DicomInputError(RTError):
    """A dataset lacks, or has an invalid, attribute we rely on (the one definition, used by the archive too)."""

    def __init__(self, keyword: str, problem: str = "missing", sop_instance_uid: str | None = None) -> None:
        where = f" in {sop_instance_uid}" if sop_instance_uid else ""
        super().__init__(f"{keyword} {problem}{where}")
        self.keyword, self.problem, self.sop_instance_uid = keyword, problem, sop_instance_uid


class GeometryError(RTError):
    """Grids, orientations or frames of reference that cannot be used together."""


class MetricError(RTError, ValueError):
    """A DVH metric name that does not parse, or that cannot be evaluated on this DVH."""


class OutsideDoseGridError(GeometryError):
    """A ROI has no volume inside the dose grid at all."""

    def __init__(self, roi_name: str, volume_cc: float) -> None:
        super().__init__(f"ROI {roi_name!r} lies entirely outside the dose grid ({volume_cc:.4g} cc)")
        self.roi_name, self.volume_cc = roi_name, volume_cc


class UnknownROIError(RTError, KeyError):
    """The structure set has no ROI of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
