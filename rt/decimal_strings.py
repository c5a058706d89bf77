"""Fast parsing of DICOM Decimal String (DS) values: one numpy cast instead of one ``float()`` per value.

A structure set holds hundreds of thousands of ContourData numbers as text; converting them one
by one through pydicom costs more than the DVHs of most ROIs. :func:`parse_decimal_strings`
splits the backslash-separated text once and lets numpy convert every piece in C, giving the
very float64 ``float()`` gives (correctly rounded), exponent forms and surrounding spaces
included. Anything that is not a finite decimal number (empty values, ``nan``, ``inf``, digit
separators, stray characters) makes it return None, and the caller falls back to the general
parser, which reports the problem.
"""

from __future__ import annotations

import numpy as np


def parse_decimal_strings(text: bytes) -> np.ndarray | None:
    """The backslash-separated numbers in ``text`` (ASCII) as float64, or None if any is not a finite number."""
    if not text or b"_" in text:  # float() would read "1_000" as 1000; DS has no digit separators
        return None
    try:
        values = np.array(text.split(b"\\"), dtype=np.float64)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None
