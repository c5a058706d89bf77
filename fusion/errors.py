"""Errors the fusion package raises on purpose (``fusion`` may not import :mod:`oncopacs.errors`)."""

from __future__ import annotations


class FusionError(Exception):
    """Base for every error the ``fusion`` package raises on purpose."""


class VolumeError(FusionError):
    """A set of DICOM slices that does not make one regular 3D volume (missing, uneven, mixed slices)."""


class RegistrationError(FusionError):
    """A registration that cannot run, did not converge, or a registration object that cannot be read."""


class TrackingError(FusionError):
    """A target that cannot be followed through the phases of a 4D CT (empty, or nowhere to look for it)."""


class UnusableRegistrationError(RegistrationError):
    """A registration flagged by QA was to be used (e.g. for dose accumulation) without an explicit override."""
