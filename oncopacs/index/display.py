"""DICOM values as people read them: names (PN), dates (DA), times (TM), sex (CS) and age.

``Smith^John`` → ``SMITH, John``; ``19600115`` → ``15 Jan 1960``; ``143005.12`` → ``14:30``; ``F`` → ``Female``.
A value that does not parse comes back as its text, unchanged (never an exception: what the archive holds is
shown, not hidden); an empty value is ``""`` (the page decides what to write for "none").
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from rt.course import parse_da

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SEX = {"M": "Male", "F": "Female", "O": "Other"}
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")


def format_person_name(value: Any) -> str:
    """A PN as ``FAMILY, Prefix Given Middle, Suffix`` (family name in capitals, as clinical banners show it).

    The alphabetic component group is used, the ideographic one when that is empty. Components are
    family^given^middle^prefix^suffix; any may be missing. ``"Smith"`` → ``SMITH``; ``"^John"`` → ``John``.
    """
    groups = str(value or "").split("=")
    group = next((g for g in groups if g.replace("^", "").strip()), "")
    family, given, middle, prefix, suffix = ([p.strip() for p in group.split("^")] + [""] * 5)[:5]
    first = " ".join(p for p in (prefix, given, middle) if p)
    name = ", ".join(p for p in (family.upper(), first) if p)
    return f"{name}, {suffix}" if suffix and name else (name or suffix)


def parse_date(value: Any) -> date | None:
    """A DA value (``YYYYMMDD``, or the ACR-NEMA ``YYYY.MM.DD``) as a date; None when it is not one."""
    return parse_da(value)


def format_date(value: Any) -> str:
    """A DA value as ``15 Jan 1960`` (day, month name, year: no day/month order to misread)."""
    day = parse_date(value)
    if day is None:
        return str(value or "").strip()
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def format_iso_date(value: Any) -> str:
    """A DA value as ISO 8601 ``YYYY-MM-DD`` (tables, CSV); anything that is not eight digits comes back as text."""
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def format_time(value: Any) -> str:
    """A TM value (``HHMMSS.FFFFFF``, any trailing part optional; ``HH:MM:SS`` accepted) as ``14:30``."""
    text = str(value or "").strip().replace(":", "")
    match = _TIME.match(text)
    if match is None or int(match.group(1)) > 23 or int(match.group(2) or 0) > 59:
        return str(value or "").strip()
    return f"{match.group(1)}:{match.group(2) or '00'}"


def format_sex(value: Any) -> str:
    """PatientSex (``M``, ``F``, ``O``) as ``Male``, ``Female``, ``Other``; another value as its text."""
    text = str(value or "").strip()
    return _SEX.get(text.upper(), text)


def compute_age_years(birth_date: Any, on: date) -> int | None:
    """Completed years from a DA birth date to ``on``; None when the birth date is not a date or lies after ``on``."""
    born = parse_date(birth_date)
    if born is None or born > on:
        return None
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def format_birth_date(value: Any, on: date) -> str:
    """A DA birth date with the age on ``on``: ``15 Jan 1960 (64 y)`` (no age when it cannot be computed)."""
    shown = format_date(value)
    age = compute_age_years(value, on)
    return f"{shown} ({age} y)" if age is not None else shown


__all__ = ["compute_age_years", "format_birth_date", "format_date", "format_iso_date", "format_person_name",
           "format_sex", "format_time", "parse_date"]
