"""Time-based one-time passwords (RFC 6238, 30-second steps, 6 digits) as the optional second factor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyotp

ISSUER = "OncoPACS"
ACCEPTED_STEPS = 1  # also accept the code of the step before and after (clock drift up to 30 s)


@dataclass(frozen=True, slots=True)
class TotpEnrollment:
    """What a user needs to set up an authenticator app: the secret and the otpauth:// URI (for a QR code)."""

    secret: str
    provisioning_uri: str


def new_enrollment(username: str) -> TotpEnrollment:
    """A fresh random 160-bit secret for ``username``."""
    secret = pyotp.random_base32()
    return TotpEnrollment(secret, pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER))


def verify_code(secret: str, code: str, at: datetime) -> bool:
    """Whether ``code`` is the one-time code of ``secret`` at time ``at`` (± one step)."""
    code = "".join(code.split())
    if not code.isdigit():
        return False
    return pyotp.TOTP(secret).verify(code, for_time=at, valid_window=ACCEPTED_STEPS)
