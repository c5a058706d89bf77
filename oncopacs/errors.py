"""Every error OncoPACS raises on purpose: :class:`OncopacsError` and its kin from the pure packages.

``rt`` and ``fusion`` may not import this module, so the names they share with the platform
(:class:`DicomInputError`, :class:`GeometryError`) are defined once in :mod:`rt.errors` and
re-exported here. :data:`EXPECTED_ERRORS` is the one tuple the web and CLI boundaries catch: an
error in it is the caller's problem, reported with its message; anything else is a bug.
"""

from __future__ import annotations

from fusion.errors import FusionError
from rt.errors import DicomInputError, GeometryError, RTError


class OncopacsError(Exception):
    """Base for every error oncopacs raises on purpose."""


class ConfigError(OncopacsError):
    """A setting is missing or malformed."""


class ViewerInstallError(ConfigError):
    """The OHIF viewer could not be fetched or installed; the message says why and what to do."""



class ListenError(OncopacsError):
    """A listener (HTTP, DIMSE) could not be opened: port in use, no permission."""


class StorageError(OncopacsError):
    """The storage area could not make bytes durable (disk full, read-only, I/O error)."""


class IntegrityError(OncopacsError):
    """A stored file is missing or its bytes no longer match the recorded SHA-256."""


class SealedDataError(IntegrityError):
    """A sealed (encrypted) file fails authentication, is truncated, or was sealed with a key not configured."""


class RemoteNodeError(OncopacsError):
    """A DIMSE, DICOMweb or HL7 peer failed or is not configured."""


class NotFoundError(OncopacsError):
    """The requested patient, study, series or instance is not in the archive."""


class AuditError(OncopacsError):
    """The audit trail could not record an event; the operation it describes must fail (fail closed)."""


class AuthenticationError(OncopacsError):
    """Credentials are missing, wrong, expired or locked out."""


class PermissionDeniedError(OncopacsError):
    """The principal is known but its role lacks the permission asked for."""


class AccountLockedError(AuthenticationError):
    """Too many failed sign-ins: the account refuses every password until its lock-out ends."""


#: What the web and CLI boundaries catch and report with its message (never a traceback).
EXPECTED_ERRORS: tuple[type[Exception], ...] = (OncopacsError, RTError, FusionError)

__all__ = [
    "EXPECTED_ERRORS", "AccountLockedError", "AuditError", "AuthenticationError", "ConfigError", "DicomInputError",
    "FusionError", "GeometryError", "IntegrityError", "ListenError", "NotFoundError",
    "OncopacsError", "PermissionDeniedError", "RTError", "RemoteNodeError", "StorageError", "ViewerInstallError",
]
