"""Marching squares: lines where they belong (analytic fields), closed, one per region, saddles resolved."""

from __future__ import annotations

import numpy as np
import pytest

from oncopacs.viewer.isolines import compute_isolines

ROWS = np.linspace(-50.0, 50.0, 101)  # mm, 1 mm apart
COLS = np.linspace(-60.0, 60.0, 121)


def _radius_field(centre=(0.0, 0.0)) -> np.ndarray:
    y, x = np.meshgrid(ROWS, COLS, indexing="ij")
    return 100.0 - 2.0 * np.hypot(x - centre[0], y - centre[1])  # 40 at r = 30 mm


def test_a_circle_is_one_closed_line_at_its_radius():
    lines = compute_isolines(_radius_field(), ROWS, COLS, 40.0)
    assert len(lines) == 1
    line = lines[0]
    assert (line[0] == line[-1]).all() and len(line) > 100
    assert np.abs(np.hypot(line[:, 0], line[:, 1]) - 30.0).max() < 0.05  # linear interpolation of a cone: exact-ish


def test_points_are_column_then_row_coordinates():
    line = compute_isolines(_radius_field(centre=(20.0, -10.0)), ROWS, COLS, 40.0)[0]
    assert line[:, 0].mean() == pytest.approx(20.0, abs=0.5) and line[:, 1].mean() == pytest.approx(-10.0, abs=0.5)


def test_two_peaks_give_two_lines_and_a_low_level_one():
    y, x = np.meshgrid(ROWS, COLS, indexing="ij")
    field = np.exp(-((x - 20.0) ** 2 + y**2) / 100.0) + np.exp(-((x + 20.0) ** 2 + y**2) / 100.0)
    assert len(compute_isolines(field, ROWS, COLS, 0.5)) == 2
    assert len(compute_isolines(field, ROWS, COLS, 0.01)) == 1


def test_a_region_touching_the_border_is_closed_along_it():
    lines = compute_isolines(np.ones((5, 5)), np.arange(5.0), np.arange(5.0), 0.5)
    assert len(lines) == 1 and (lines[0][0] == lines[0][-1]).all()
    xs, ys = lines[0][:, 0], lines[0][:, 1]
    assert xs.min() < 0.0 and xs.max() > 4.0 and ys.min() < 0.0 and ys.max() > 4.0


def test_saddles_follow_the_mean_of_the_cell():
    checker = np.array([[1.0, 0.0], [0.0, 1.0]])  # a and c above: mean 0.5
    apart = compute_isolines(checker, np.arange(2.0), np.arange(2.0), 0.6)  # middle below: two corners cut off
    joined = compute_isolines(checker, np.arange(2.0), np.arange(2.0), 0.4)  # middle above: one region
    assert len(apart) == 2 and len(joined) == 1


def test_uneven_rows_and_nan_and_levels_out_of_range():
    rows = np.array([0.0, 1.0, 5.0])  # a wide last gap: the crossing is interpolated in mm
    field = np.array([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]])
    line = compute_isolines(field, rows, np.arange(3.0), 5.0)[0]
    assert line[:, 1].max() == pytest.approx(3.0)  # halfway between 1 mm (10) and 5 mm (0)
    with_nan = field.copy()
    with_nan[1, 1] = np.nan
    assert compute_isolines(with_nan, rows, np.arange(3.0), 5.0) == ()
    assert compute_isolines(field, rows, np.arange(3.0), 50.0) == ()
    with pytest.raises(ValueError, match="does not match"):
        compute_isolines(field, rows[:2], np.arange(3.0), 5.0)
