"""Errors the PET quantification code raises on purpose (``fusion`` may not import :mod:`oncopacs.errors`)."""

from __future__ import annotations

from fusion.errors import FusionError


class PetError(FusionError):
    """Base for every error the PET code (SUV, ROI statistics, response) raises on purpose."""


class SuvTagError(PetError):
    """A tag SUV needs is missing, invalid or contradicts another tag; ``keyword`` names it."""

    def __init__(self, keyword: str, problem: str = "missing", sop_instance_uid: str | None = None):
        where = f" in {sop_instance_uid}" if sop_instance_uid else ""
        super().__init__(f"SUV cannot be computed: {keyword} {problem}{where}")
        self.keyword, self.problem, self.sop_instance_uid = keyword, problem, sop_instance_uid


class PetGeometryError(PetError):
    """PET slices, ROIs or frames of reference that cannot be used together."""


class ResponseInputError(PetError, ValueError):
    """Time points or measurements that a response criterion cannot be evaluated on."""
