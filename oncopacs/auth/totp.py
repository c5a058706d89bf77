"""Time-based one-time passwords (RFC 6238, 30-second steps, 6 digits) as the optional second factor.

A code is accepted at most once: :func:`matching_step` names the time step a code belongs to, and the
user store refuses a step at or before the last one accepted for that user (RFC 6238 §5.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyotp
from pyotp.utils import strings_equal

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


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """The RFC 6238 time step (30-second counter) whose code ``code`` is, within ± one step of ``at``; else None."""
    code = "".join(code.split())
    if not code.isdigit():
        return None
    generator = pyotp.TOTP(secret)
    now_step = generator.timecode(at)
    for step in range(now_step - ACCEPTED_STEPS, now_step + ACCEPTED_STEPS + 1):
        if strings_equal(code, generator.generate_otp(step)):
            return step
    return None

