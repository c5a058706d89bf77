"""Isodose colours run hot to cold and keep apart from contours; levels are read and converted % <-> Gy."""

from __future__ import annotations

import numpy as np
import pytest

from oncopacs.viewer.isodose import (
    MIN_COLOUR_DISTANCE,
    WASH_TOP_PERCENT,
    LevelsError,
    colour_bar_stops,
    compute_dose_colours,
    convert_levels,
    dose_colour,
    format_number,
    parse_levels,
    plan_isodose_levels,
    to_gy,
    wash_top_percent,
)

PTV_RED, BODY_GREEN, BLADDER_YELLOW, CORD_BLUE = (255, 0, 0), (0, 255, 0), (255, 255, 0), (0, 128, 255)


def _hue(rgb) -> float:
    r, g, b = (c / 255.0 for c in rgb)
    high, low = max(r, g, b), min(r, g, b)
    if high == low:
        return 0.0
    if high == r:
        return (60.0 * (g - b) / (high - low)) % 360.0
    if high == g:
        return 60.0 * (b - r) / (high - low) + 120.0
    return 60.0 * (r - g) / (high - low) + 240.0


def test_prescription_red_then_orange_yellow_green_blue_down_the_doses():
    assert dose_colour(100.0) == (255, 0, 0)
    assert _hue(dose_colour(95.0)) == pytest.approx(33.0, abs=5)  # orange
    assert 60.0 <= _hue(dose_colour(80.0)) <= 120.0  # yellow-green
    assert 195.0 <= _hue(dose_colour(50.0)) <= 240.0  # blue
    assert 220.0 <= _hue(dose_colour(20.0)) <= 270.0  # low: blue to violet
    hues = [_hue(dose_colour(p)) for p in (100.0, 95.0, 90.0, 80.0, 70.0, 60.0, 50.0, 30.0)]
    assert hues == sorted(hues)  # hot to cold: red -> orange -> yellow -> green -> cyan -> blue
    above = dose_colour(110.0)
    assert above[2] > 200 and above[0] == 255  # above the prescription: magenta, not red


def test_levels_are_listed_hottest_first_in_gy_and_percent():
    levels = plan_isodose_levels([30.0, 60.0, 57.0, 48.0], 60.0)
    assert [lv.percent for lv in levels] == [100.0, 95.0, 80.0, 50.0]
    assert [lv.dose_gy for lv in levels] == [60.0, 57.0, 48.0, 30.0]
    assert levels[0].colour == (255, 0, 0) and levels[0].label("Gy(RBE)") == "100 % · 60 Gy(RBE)"
    assert levels[1].label() == "95 % · 57 Gy"


def test_no_isodose_line_takes_a_contour_colour():
    rois = [PTV_RED, BODY_GREEN, BLADDER_YELLOW, CORD_BLUE]
    levels = plan_isodose_levels([66.0, 60.0, 57.0, 48.0, 42.0, 30.0, 12.0], 60.0, avoid=rois)
    for level in levels:
        nearest = min(float(np.linalg.norm(np.subtract(level.colour, roi))) for roi in rois)
        assert nearest >= MIN_COLOUR_DISTANCE, (level, nearest)
    hundred = next(lv for lv in levels if lv.percent == 100.0)
    assert hundred.colour != PTV_RED and hundred.colour[0] == 255 and hundred.colour[1] < 60  # still a red


def test_levels_typed_in_the_box():
    assert parse_levels("100, 95;80  50") == (100.0, 95.0, 80.0, 50.0)
    assert parse_levels("") == ()
    with pytest.raises(LevelsError, match="positive numbers"):
        parse_levels("100, abc")
    with pytest.raises(LevelsError, match="positive numbers"):
        parse_levels("-5")
    with pytest.raises(LevelsError, match="at most"):
        parse_levels(", ".join(["10"] * 13))


def test_switching_percent_and_gy_converts_the_numbers():
    assert convert_levels("100, 95, 80, 50", "percent", "gy", 60.0) == "60, 57, 48, 30"
    assert convert_levels("60, 57, 48, 30", "gy", "percent", 60.0) == "100, 95, 80, 50"
    assert convert_levels("107", "percent", "gy", 54.0) == "57.78"
    assert convert_levels(convert_levels("33.3", "percent", "gy", 70.0), "gy", "percent", 70.0) == "33.3"
    assert convert_levels("95", "percent", "percent", 60.0) == "95"
    with pytest.raises(LevelsError, match="prescription"):
        convert_levels("95", "percent", "gy", None)
    assert to_gy((50.0,), "percent", 70.0) == (35.0,)
    with pytest.raises(LevelsError, match="unit"):
        to_gy((50.0,), "rad", 70.0)


def test_the_wash_and_its_colour_bar_reach_above_the_prescription():
    assert wash_top_percent(63.6, 60.0) == WASH_TOP_PERCENT  # 106 %: the usual top
    assert wash_top_percent(72.0, 60.0) == 120.0  # a 120 % hot spot is on the bar
    stops = colour_bar_stops(120.0)
    assert stops[0][0] == 0.0 and stops[-1][0] == 1.0
    positions = [p for p, _ in stops]
    assert positions == sorted(positions)
    at_100 = next(colour for p, colour in stops if p == pytest.approx((100.0 - 10.0) / 110.0))
    assert at_100 == "rgb(255, 0, 0)"
    assert (compute_dose_colours([100.0, 50.0]) == np.array([dose_colour(100.0), dose_colour(50.0)])).all()


def test_numbers_for_people():
    assert [format_number(v) for v in (60.0, 57.5, 1.25, 0.004, 33.333)] == ["60", "57.5", "1.25", "0", "33.33"]
