"""UID helpers: the OncoPACS root and deterministic UIDs for derived and synthetic objects."""

from __future__ import annotations

import re

from pydicom.uid import UID, generate_uid

#: pydicom's registered prefix is used so generated UIDs are globally unique without our own root.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def uid_for(*parts: str) -> UID:
    """A UID that is the same for the same inputs (for phantoms and derived objects)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=list(parts))


def is_valid_uid(value: str) -> bool:
    """True when ``value`` is a well-formed DICOM UID (PS3.5 9.1): digits and dots, ≤ 64 chars."""
    return 0 < len(value) <= 64 and _UID_PATTERN.match(value) is not None
