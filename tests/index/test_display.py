"""DICOM values as people read them: names, dates, times, sex and age (oncopacs.index.display)."""

from __future__ import annotations

from datetime import date

import pytest
from pydicom.valuerep import PersonName

from oncopacs.index.display import (
    compute_age_years,
    format_birth_date,
    format_date,
    format_iso_date,
    format_person_name,
    format_sex,
    format_time,
    parse_date,
)


@pytest.mark.parametrize(("pn", "shown"), [
    ("Smith^John", "SMITH, John"),
    ("Phantom^Proton", "PHANTOM, Proton"),
    ("Smith^John^Andrew", "SMITH, John Andrew"),
    ("Smith^John^Andrew^Dr.^Jr.", "SMITH, Dr. John Andrew, Jr."),
    ("Smith^^^Prof.", "SMITH, Prof."),
    ("Smith", "SMITH"),
    ("Smith^", "SMITH"),
    ("^John", "John"),
    ("^^^^Jr.", "Jr."),
    ("", ""),
    (None, ""),
    ("^^^^", ""),
    ("  de la Cruz ^ Ana María ", "DE LA CRUZ, Ana María"),
    ("Müller^Jürgen", "MÜLLER, Jürgen"),
    ("Ødegård^Åse", "ØDEGÅRD, Åse"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "YAMADA, Tarou"),
    ("=山田^太郎=やまだ^たろう", "山田, 太郎"),  # no alphabetic group: the ideographic one
    ("Wang^Xiaodong=王^小東", "WANG, Xiaodong"),
    (PersonName("Doe^Jane"), "DOE, Jane"),
    ("<script>^Evil", "<SCRIPT>, Evil"),  # formatting never escapes: the page does
])
def test_person_names(pn, shown):
    assert format_person_name(pn) == shown


@pytest.mark.parametrize(("da", "shown"), [
    ("19600115", "15 Jan 1960"),
    ("20241231", "31 Dec 2024"),
    ("2024.02.29", "29 Feb 2024"),  # ACR-NEMA style
    ("20230229", "20230229"),  # no such day: shown as stored
    ("20241301", "20241301"),
    ("2024", "2024"),
    ("", ""),
    (None, ""),
    (" 19580312 ", "12 Mar 1958"),
])
def test_dates(da, shown):
    assert format_date(da) == shown


def test_iso_dates_keep_their_format():
    assert format_iso_date("20240115") == "2024-01-15"
    assert format_iso_date("2024") == "2024" and format_iso_date(None) == ""


@pytest.mark.parametrize(("tm", "shown"), [
    ("143005.123456", "14:30"),
    ("1430", "14:30"),
    ("14", "14:00"),
    ("14:30:05", "14:30"),
    ("000000", "00:00"),
    ("2561", "2561"),  # not a time: shown as stored
    ("noon", "noon"),
    ("", ""),
])
def test_times(tm, shown):
    assert format_time(tm) == shown


@pytest.mark.parametrize(("cs", "shown"), [("F", "Female"), ("M", "Male"), ("O", "Other"), ("f", "Female"),
                                            ("", ""), (None, ""), ("U", "U")])
def test_sex(cs, shown):
    assert format_sex(cs) == shown


def test_age_counts_completed_years():
    assert compute_age_years("19600115", date(2024, 1, 14)) == 63
    assert compute_age_years("19600115", date(2024, 1, 15)) == 64
    assert compute_age_years("20000229", date(2023, 2, 28)) == 22  # a leap-day birthday in a common year
    assert compute_age_years("20000229", date(2023, 3, 1)) == 23
    assert compute_age_years("20250101", date(2024, 1, 1)) is None  # born after the day asked about
    assert compute_age_years("", date(2024, 1, 1)) is None and compute_age_years("1960", date(2024, 1, 1)) is None


def test_birth_date_with_age():
    assert format_birth_date("19600115", date(2024, 6, 1)) == "15 Jan 1960 (64 y)"
    assert format_birth_date("", date(2024, 6, 1)) == ""
    assert format_birth_date("1960", date(2024, 6, 1)) == "1960"


def test_parse_date():
    assert parse_date("19600115") == date(1960, 1, 15)
    assert parse_date("19601315") is None and parse_date(None) is None
