"""ROI outlines come from the contour points: axial polygons as drawn, coronal and sagittal through the stack."""

from __future__ import annotations

import numpy as np
import pytest

from oncopacs.viewer.outlines import compute_roi_outlines
from rt.structures import ROI, Contour

SPACING_MM = 5.0
RADIUS_MM = 30.0


HEIGHTS = np.arange(-25.0, 26.0, SPACING_MM)


def _sphere(heights=HEIGHTS, radius=RADIUS_MM, points=72) -> ROI:
    angles = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    contours = []
    for z in heights:
        r = np.sqrt(max(radius**2 - z**2, 0.0))
        contours.append(Contour("CLOSED_PLANAR", np.column_stack([r * np.cos(angles), r * np.sin(angles),
                                                                  np.full(points, z)])))
    return ROI(2, "PTV", "PTV", (255, 0, 0), "1.2.3", tuple(contours))


def test_the_axial_outline_is_the_contour_polygon_itself():
    roi = _sphere()
    lines = compute_roi_outlines(roi, "axial", 5.4, default_spacing_mm=SPACING_MM)  # nearest plane: z = 5
    assert len(lines) == 1
    polygon = roi.planes()[5.0][0]
    assert np.allclose(lines[0][:-1], polygon, atol=0.005) and (lines[0][0] == lines[0][-1]).all()
    assert compute_roi_outlines(roi, "axial", 28.0, default_spacing_mm=SPACING_MM) == ()  # beyond t/2 of the top


def test_the_coronal_outline_passes_through_each_plane_crossing():
    roi = _sphere()
    (line,) = compute_roi_outlines(roi, "coronal", 0.0, default_spacing_mm=SPACING_MM)
    for z in np.arange(-25.0, 26.0, SPACING_MM):
        polygon = roi.planes()[float(z)][0]
        crossing = np.abs(polygon[:, 0]).max()  # the polygon's half-width along y = 0 (a vertex lies there)
        on_plane = line[np.isclose(line[:, 1], -z)]  # display v = -z
        assert on_plane.size and np.isclose(np.abs(on_plane[:, 0]).max(), crossing, atol=0.01)
    assert -line[:, 1].max() == pytest.approx(-25.0 - SPACING_MM / 2.0, abs=0.01)  # the cap: at most t / 2 out
    assert -line[:, 1].min() == pytest.approx(25.0 + SPACING_MM / 2.0, abs=0.01)
    straight = np.abs(np.diff(line[:, 0]))  # no voxel staircase: between planes the outline runs diagonally
    assert straight.max() < 8.0


def test_the_sagittal_outline_cuts_at_x():
    roi = _sphere()
    (line,) = compute_roi_outlines(roi, "sagittal", 20.0, default_spacing_mm=SPACING_MM)
    middle = line[np.isclose(line[:, 1], 0.0)]
    assert np.abs(middle[:, 0]).max() == pytest.approx(np.sqrt(RADIUS_MM**2 - 20.0**2), abs=0.3)
    assert compute_roi_outlines(roi, "sagittal", 40.0, default_spacing_mm=SPACING_MM) == ()


def test_a_gap_in_the_stack_splits_the_outline_and_holes_stay_holes():
    roi = _sphere(heights=np.array([-20.0, -15.0, -10.0, 10.0, 15.0, 20.0]), radius=25.0)
    assert len(compute_roi_outlines(roi, "coronal", 0.0, default_spacing_mm=SPACING_MM)) == 2
    ring = []
    angles = np.linspace(0.0, 2 * np.pi, 60, endpoint=False)
    for z in (-5.0, 0.0, 5.0):
        for radius in (20.0, 10.0):  # even-odd: the inner polygon is a hole
            ring.append(Contour("CLOSED_PLANAR", np.column_stack([radius * np.cos(angles), radius * np.sin(angles),
                                                                  np.full(60, z)])))
    tube = ROI(3, "Ring", "ORGAN", (0, 0, 255), "1.2.3", tuple(ring))
    assert len(compute_roi_outlines(tube, "coronal", 0.0, default_spacing_mm=SPACING_MM)) == 2  # left and right wall


def test_an_empty_roi_and_a_bad_plane():
    empty = ROI(4, "Empty", "ORGAN", None, "1.2.3", ())
    assert compute_roi_outlines(empty, "coronal", 0.0, default_spacing_mm=SPACING_MM) == ()
    with pytest.raises(ValueError, match="plane"):
        compute_roi_outlines(_sphere(), "oblique", 0.0, default_spacing_mm=SPACING_MM)
