"""PERCIST 1.0, EORTC 1999 and RECIST-style categories at and around every threshold."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from fusion.pet.errors import ResponseInputError
from fusion.pet.response import (
    EortcCategory,
    LesionMeasurement,
    PercistCategory,
    RecistCategory,
    TimePoint,
    assess_eortc,
    assess_percist,
    assess_recist,
    compute_lesion_changes,
    compute_longest_axial_diameter_mm,
    order_time_points,
)
from rt.structures import ROI, Contour

BASE = date(2024, 1, 10)
LATER = date(2024, 3, 10)


def _tp(when: date, sul: float | None = None, *, suv: float | None = None, tlg: float | None = None,
        liver: float | None = 1.0, liver_sd: float = 0.1, new: bool = False, uptake_s: float = 3600.0,
        diameter: float | None = None, reference: float | None = None) -> TimePoint:
    lesions = () if sul is None and suv is None and diameter is None else (
        LesionMeasurement("L1", sul_peak=sul, suv_max=suv, tlg=tlg, longest_diameter_mm=diameter),)
    return TimePoint(when, lesions, liver_sul_mean=liver, liver_sul_sd=liver_sd, new_lesions=new, uptake_s=uptake_s,
                     reference_suv_mean=reference)


# Baseline SULpeak 4.0: 30 % is 1.2 SUL (> 0.8), so the percentage decides; baseline 2.0: 30 % = 0.6, so 0.8 decides.
@pytest.mark.parametrize("baseline, followup, expected", [
    (4.0, 2.8, PercistCategory.PMR),        # exactly -30 % and -1.2 SUL
    (4.0, 2.81, PercistCategory.SMD),       # -29.75 %
    (4.0, 2.79, PercistCategory.PMR),
    (4.0, 5.2, PercistCategory.SMD),        # exactly +30 %: PMD needs more than 30 %
    (4.0, 5.21, PercistCategory.PMD),
    (4.0, 5.19, PercistCategory.SMD),
    (2.0, 1.2, PercistCategory.PMR),        # -40 % and exactly -0.8 SUL
    (2.0, 1.21, PercistCategory.SMD),       # -39.5 % but only -0.79 SUL
    (2.0, 2.8, PercistCategory.SMD),        # +40 % but exactly +0.8 SUL: PMD needs more than 0.8
    (2.0, 2.81, PercistCategory.PMD),
    (4.0, 1.0, PercistCategory.CMR),        # at the liver SULmean
    (4.0, 1.01, PercistCategory.PMR),       # just above the liver
    (4.0, None, PercistCategory.CMR),       # no lesion uptake left
])
def test_percist_thresholds(baseline: float, followup: float | None, expected: PercistCategory) -> None:
    result = assess_percist(_tp(BASE, baseline), _tp(LATER, followup))
    assert result.category is expected, result


def test_percist_new_lesion_and_tlg() -> None:
    assert assess_percist(_tp(BASE, 4.0), _tp(LATER, 1.5, new=True)).category is PercistCategory.PMD
    assert assess_percist(_tp(BASE, 4.0, tlg=100.0), _tp(LATER, 4.0, tlg=175.0)).category is PercistCategory.SMD
    assert assess_percist(_tp(BASE, 4.0, tlg=100.0), _tp(LATER, 4.0, tlg=175.1)).category is PercistCategory.PMD


def test_percist_measurability_and_comparability() -> None:
    # threshold 1.5 * 1.0 + 2 * 0.1 = 1.7
    assert assess_percist(_tp(BASE, 1.7), _tp(LATER, 1.7)).measurable_at_baseline is True
    assert assess_percist(_tp(BASE, 1.69), _tp(LATER, 1.69)).measurable_at_baseline is False
    ok = assess_percist(_tp(BASE, 4.0, liver=1.5), _tp(LATER, 4.0, liver=1.8))  # +20 %, +0.3: within limits
    assert ok.comparable
    liver = assess_percist(_tp(BASE, 4.0, liver=1.5), _tp(LATER, 4.0, liver=1.81))
    assert not liver.comparable and any("liver" in n for n in liver.notes)
    uptake = assess_percist(_tp(BASE, 4.0), _tp(LATER, 4.0, uptake_s=3600 + 16 * 60))
    assert not uptake.comparable
    assert assess_percist(_tp(BASE, 4.0), _tp(LATER, 4.0, uptake_s=3600 + 15 * 60)).comparable
    with pytest.raises(ResponseInputError):
        assess_percist(_tp(BASE, None), _tp(LATER, 2.0))


@pytest.mark.parametrize("cycles, baseline, followup, expected", [
    (1, 10.0, 8.5, EortcCategory.PMR),      # exactly -15 % after one cycle
    (1, 10.0, 8.51, EortcCategory.SMD),
    (2, 10.0, 7.5, EortcCategory.SMD),      # exactly -25 % after two: PMR needs more than 25 %
    (2, 10.0, 7.49, EortcCategory.PMR),
    (1, 10.0, 12.5, EortcCategory.SMD),     # exactly +25 %
    (1, 10.0, 12.51, EortcCategory.PMD),
    (1, 10.0, 2.0, EortcCategory.CMR),      # at the reference tissue
    (1, 10.0, None, EortcCategory.CMR),
])
def test_eortc_thresholds(cycles: int, baseline: float, followup: float | None, expected: EortcCategory) -> None:
    result = assess_eortc(_tp(BASE, suv=baseline), _tp(LATER, suv=followup, reference=2.0), cycles=cycles)
    assert result.category is expected, result


def test_eortc_extent_and_new_lesions() -> None:
    base = _tp(BASE, suv=10.0, diameter=30.0)
    assert assess_eortc(base, _tp(LATER, suv=10.0, diameter=36.0)).category is EortcCategory.PMD  # +20 %
    assert assess_eortc(base, _tp(LATER, suv=10.0, diameter=35.9)).category is EortcCategory.SMD
    assert assess_eortc(base, _tp(LATER, suv=10.0, new=True)).category is EortcCategory.PMD
    with pytest.raises(ResponseInputError):
        assess_eortc(base, base, cycles=0)


@pytest.mark.parametrize("history, new, expected", [
    ((50.0, 35.0), False, RecistCategory.PR),          # exactly -30 %
    ((50.0, 35.1), False, RecistCategory.SD),
    ((50.0, 40.0, 48.0), False, RecistCategory.PD),    # +20 % and +8 mm over the nadir 40
    ((50.0, 40.0, 47.9), False, RecistCategory.SD),
    ((20.0, 10.0, 12.0), False, RecistCategory.PR),    # +20 % over the nadir but only +2 mm; -40 % from baseline
    ((20.0, 10.0, 15.0), False, RecistCategory.PD),    # +50 % and exactly +5 mm
    ((20.0, 10.0, 14.9), False, RecistCategory.SD),    # +4.9 mm over the nadir, -25.5 % from baseline
    ((50.0, 0.0), False, RecistCategory.CR),
    ((50.0, 45.0), True, RecistCategory.PD),
])
def test_recist_thresholds(history: tuple[float, ...], new: bool, expected: RecistCategory) -> None:
    points = [_tp(date(2024, 1 + i, 1), diameter=d, new=new and i == len(history) - 1) for i, d in enumerate(history)]
    assert assess_recist(list(reversed(points))).category is expected


def test_time_points_ordered_by_date_and_duplicates_rejected() -> None:
    a, b, c = _tp(date(2024, 5, 1), 2.0), _tp(date(2024, 1, 1), 3.0), _tp(date(2024, 3, 1), 2.5)
    assert [t.date.month for t in order_time_points([a, b, c])] == [1, 3, 5]
    with pytest.raises(ResponseInputError, match="two time points"):
        order_time_points([a, _tp(date(2024, 5, 1), 1.0)])


def test_lesion_changes_and_longest_diameter() -> None:
    base = TimePoint(BASE, (LesionMeasurement("GTV", volume_cc=20.0, longest_diameter_mm=40.0),))
    later = TimePoint(LATER, (LesionMeasurement("GTV", volume_cc=10.0, longest_diameter_mm=30.0),))
    (change,) = compute_lesion_changes(base, later)
    assert change.volume_change_percent == pytest.approx(-50.0)
    assert change.diameter_change_percent == pytest.approx(-25.0)
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    ellipse = np.stack([30 * np.cos(t), 12 * np.sin(t), np.zeros_like(t)], axis=1)
    small = ellipse.copy() * [0.5, 0.5, 1]
    small[:, 2] = 3.0
    roi = ROI(1, "GTV", "GTV", None, "1.2", (Contour("CLOSED_PLANAR", ellipse), Contour("CLOSED_PLANAR", small)))
    assert compute_longest_axial_diameter_mm(roi) == pytest.approx(60.0)
