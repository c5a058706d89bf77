"""Roles, permissions and the permission matrix (documented in the README).

A role is a fixed bundle of permissions; routes and DIMSE handlers ask for a permission, never for
a role, so the matrix below is the one place that says who may do what.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(str, enum.Enum):
    ADMIN = "admin"
    PHYSICIST = "physicist"
    ONCOLOGIST = "oncologist"
    TUMOUR_BOARD = "tumour_board"
    REFERRER = "referrer"

    @property
    def label(self) -> str:
        """The role as a page shows it (``Tumour board``)."""
        return self.value.replace("_", " ").capitalize()


class Permission(str, enum.Enum):
    ARCHIVE_READ = "archive.read"  # browse and retrieve: QIDO, WADO, /api patients/studies/series
    ARCHIVE_WRITE = "archive.write"  # store: STOW-RS, uploads
    ANALYSIS_RUN = "analysis.run"  # start jobs (DVH, registration, SUV, verify)
    DASHBOARDS_VIEW = "dashboards.view"  # plan, PET, response and tumour-board dashboards
    REPORTS_READ = "reports.read"  # read and export PDF reports of patients
    REPORTS_WRITE = "reports.write"  # create, sign and send reports
    USERS_MANAGE = "users.manage"  # users, roles, tokens of others
    PEERS_MANAGE = "peers.manage"  # DICOM peers and other configuration
    AUDIT_READ = "audit.read"  # read, verify and export the audit trail


_EVERYTHING = frozenset(Permission)

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: _EVERYTHING,
    Role.PHYSICIST: frozenset(
        {
            Permission.ARCHIVE_READ,
            Permission.ARCHIVE_WRITE,
            Permission.ANALYSIS_RUN,
            Permission.DASHBOARDS_VIEW,
            Permission.REPORTS_READ,
            Permission.REPORTS_WRITE,
        }
    ),
    Role.ONCOLOGIST: frozenset(
        {
            Permission.ARCHIVE_READ,
            Permission.ANALYSIS_RUN,
            Permission.DASHBOARDS_VIEW,
            Permission.REPORTS_READ,
            Permission.REPORTS_WRITE,
        }
    ),
    Role.TUMOUR_BOARD: frozenset({Permission.ARCHIVE_READ, Permission.DASHBOARDS_VIEW, Permission.REPORTS_READ}),
    Role.REFERRER: frozenset({Permission.REPORTS_READ}),
}


def parse_role(text: str) -> Role:
    """The role named ``text``; ValueError naming the valid roles otherwise."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        valid = ", ".join(role.value for role in Role)
        raise ValueError(f"unknown role {text!r} (valid roles: {valid})") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a signed-in user, a token or Basic-auth client, or a DICOM AE."""

    name: str
    role: Role
    via: str  # "session", "basic", "token"

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]
