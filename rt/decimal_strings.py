"""Fast parsing of DICOM Decimal String (DS) values: one vectorised pass instead of one ``float()`` per value.

A structure set holds hundreds of thousands of ContourData numbers as text; converting them one
by one costs more than the DVHs of most ROIs. :func:`parse_decimal_strings` handles the plain
fixed-point form that planning systems write (``-149.5``, ``0``, ``.25``, ``+3.``) and gives the
very float64 ``float()`` gives: each value is an exact integer mantissa divided by an exact power
of ten, a single correctly rounded operation. Anything else (exponents, spaces inside the
string, empty values, more than 15 digits) makes it return None, and the caller falls back to
the general parser.
"""

from __future__ import annotations

import numpy as np

_BACKSLASH, _DOT, _MINUS, _PLUS, _ZERO, _NINE = (ord(c) for c in "\\.-+09")
_MAX_DIGITS = 15  # mantissas stay below 2**53, so they and their sums are exact in float64
_POW10_INT = 10 ** np.arange(_MAX_DIGITS + 1, dtype=np.int64)
_POW10_FLOAT = 10.0 ** np.arange(_MAX_DIGITS + 1)


def parse_decimal_strings(text: bytes) -> np.ndarray | None:
    """The backslash-separated fixed-point numbers in ``text`` (ASCII) as float64, or None if any is another form."""
    chars = np.frombuffer(text, dtype=np.uint8)
    if chars.size == 0:
        return None
    is_sep = chars == _BACKSLASH
    is_digit = (chars >= _ZERO) & (chars <= _NINE)
    is_dot = chars == _DOT
    is_sign = (chars == _MINUS) | (chars == _PLUS)
    if not np.all(is_digit | is_dot | is_sign | is_sep):
        return None
    token = np.cumsum(is_sep)  # the value each character belongs to (a separator starts the next)
    count = int(token[-1]) + 1
    sign_at = np.flatnonzero(is_sign)
    if sign_at.size and not np.all((sign_at == 0) | is_sep[np.maximum(sign_at - 1, 0)]):
        return None  # a sign only opens a value
    dot_at = np.flatnonzero(is_dot)
    if np.bincount(token[dot_at], minlength=count).max(initial=0) > 1:
        return None
    digit_at = np.flatnonzero(is_digit)
    digit_token = token[digit_at]
    digits_per_value = np.bincount(digit_token, minlength=count)
    if digits_per_value.min() == 0 or digits_per_value.max() > _MAX_DIGITS:
        return None
    first_digit = np.concatenate(([0], np.cumsum(digits_per_value)[:-1]))
    rank = np.arange(digit_at.size) - first_digit[digit_token]  # 0 for a value's leading digit
    place = digits_per_value[digit_token] - 1 - rank
    mantissa = np.add.reduceat((chars[digit_at] - _ZERO).astype(np.int64) * _POW10_INT[place], first_digit)
    dot_position = np.full(count, chars.size, dtype=np.int64)
    dot_position[token[dot_at]] = dot_at
    decimals = np.bincount(digit_token, weights=digit_at > dot_position[digit_token], minlength=count).astype(np.int64)
    values = mantissa / _POW10_FLOAT[decimals]
    negative = sign_at[chars[sign_at] == _MINUS]
    values[token[negative]] *= -1.0
    return values
