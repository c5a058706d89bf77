"""Every error OncoPACS raises on purpose derives from :class:`OncopacsError`."""

from __future__ import annotations


class OncopacsError(Exception):
    """Base for every error oncopacs raises on purpose."""


class ConfigError(OncopacsError):
    """A setting is missing or malformed."""


class DicomInputError(OncopacsError):
    """A dataset lacks, or has an invalid, attribute we rely on."""

    def __init__(self, keyword: str, sop_instance_uid: str | None, problem: str = "missing"):
        where = f" in {sop_instance_uid}" if sop_instance_uid else ""
        super().__init__(f"{keyword} {problem}{where}")
        self.keyword = keyword
        self.sop_instance_uid = sop_instance_uid
        self.problem = problem


class ListenError(OncopacsError):
    """A listener (HTTP, DIMSE) could not be opened: port in use, no permission."""


class StorageError(OncopacsError):
    """The storage area could not make bytes durable (disk full, read-only, I/O error)."""


class IntegrityError(OncopacsError):
    """A stored file is missing or its bytes no longer match the recorded SHA-256."""


class GeometryError(OncopacsError):
    """Grids or frames of reference disagree."""


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
