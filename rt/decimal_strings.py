"""Fast parsing of DICOM Decimal String (DS) values: one C-level pass instead of one ``float()`` per value.

A structure set holds hundreds of thousands of ContourData numbers as text; converting them one
by one through pydicom costs more than the DVHs of most ROIs. :func:`parse_decimal_strings`
reads the whole backslash-separated text with numpy's text parser, which gives the very float64
``float()`` gives (correctly rounded), exponent forms and surrounding spaces included. Anything
that is not a finite decimal number (empty values, ``nan``, ``inf``, digit separators, stray
characters) makes it return None, and the caller falls back to the general parser, which
reports the problem.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt


def parse_decimal_strings(text: bytes) -> npt.NDArray[np.float64] | None:
    """The backslash-separated numbers in ``text`` (ASCII) as float64, or None if any is not a finite number."""
    if not text or b"_" in text:  # strtod would stop at "1_000"; DS has no digit separators
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, and stops, at a value it cannot read
        try:
            values = np.fromstring(text.decode("ascii"), sep="\\")
        except (ValueError, DeprecationWarning, UnicodeDecodeError):
            return None
    if values.size != text.count(b"\\") + 1 or not np.isfinite(values).all():  # "1\\" reads as one value
        return None
    return values
