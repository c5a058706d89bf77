"""rt.structures: RTSTRUCT parsing and sub-voxel rasterisation against closed-form volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncopacs.phantom import build_demo_patient, centred_grid
from rt.grid import VoxelGrid
from rt.polygons import compute_even_odd_area_mm2
from rt.structures import (
    compute_mask,
    compute_plane_thickness_mm,
    read_structure_set,
)
from tests.rt.helpers import (
    build_structure_set,
    contour_item,
    sphere_contours,
)

#: A fine planning CT (2 mm slices) so that the contour stack is close to the analytic solids.
FINE_CT = centred_grid((75, 100, 100), (2.0, 2.0, 2.0))


@pytest.fixture(scope="module")
def phantom():
    return build_demo_patient()


@pytest.fixture(scope="module")
def fine_phantom():
    return build_demo_patient(ct_grid=FINE_CT, dose_grid=centred_grid((61, 61, 61), (3.0, 3.0, 3.0)))


def square(x0: float, y0: float, side: float, z: float) -> np.ndarray:
    return np.array([[x0, y0, z], [x0 + side, y0, z], [x0 + side, y0 + side, z], [x0, y0 + side, z]])


def test_read_structure_set_phantom(phantom):
    ss = read_structure_set(phantom.rtstruct)
    assert ss.roi_names == ("BODY", "PTV", "Bladder", "Rectum", "SpinalCord")
    assert [r.interpreted_type for r in ss.rois] == ["EXTERNAL", "PTV", "ORGAN", "ORGAN", "ORGAN"]
    ptv = ss.roi("PTV")
    assert ptv.number == 2 and ptv.colour == (255, 0, 0)
    assert ptv.frame_of_reference_uid == phantom.planning_ct[0].FrameOfReferenceUID == ss.frame_of_reference_uid
    planes = ptv.planes()
    assert list(planes) == sorted(planes) and all(len(p) == 1 for p in planes.values())
    assert ptv.compute_plane_spacing_mm() == pytest.approx(5.0)
    assert ss.roi("ptv") is ptv
    with pytest.raises(KeyError):
        ss.roi("Heart")
    assert ss.to_dict()["rois"][1]["plane_count"] == len(planes)


@pytest.mark.parametrize("name", ["BODY", "PTV", "Bladder", "Rectum", "SpinalCord"])
def test_mask_volume_matches_analytic_volume(fine_phantom, name):
    """Rasterised on a 3 mm grid, every phantom ROI is within 2 % of its analytic volume."""
    roi = read_structure_set(fine_phantom.rtstruct).roi(name)
    grid = VoxelGrid((-120.0, -120.0, -80.0), (3.0, 3.0, 3.0), (55, 81, 81))
    weights = compute_mask(roi, grid)
    assert weights.dtype == np.float64 and weights.min() >= 0.0 and weights.max() <= 1.0
    truth = fine_phantom.truth.compute_volume_cc(name)
    tolerance = 0.03 if name == "SpinalCord" else 0.02
    assert weights.sum() * grid.voxel_volume_cc == pytest.approx(truth, rel=tolerance)
    # Cavalieri volume between planes: within 0.05 % of the solid, never farther than the slab-rule stack
    # (polygon sections of the cylinder vary by ~1e-6, which the quadratic sees).
    slab_cc = fine_phantom.truth.compute_contour_volume_cc(name)
    assert roi.compute_volume_cc() == pytest.approx(truth, rel=5e-4)
    assert abs(roi.compute_volume_cc() - truth) <= abs(slab_cc - truth) + 1e-5 * truth


def test_plane_thickness_sphere_is_exact_prism_is_slab():
    """Quadratic section areas (a sphere) integrate exactly, caps included; constant ones give slabs."""
    h, r = 2.0, 9.0
    z = np.arange(-8.0, 8.5, h)
    area = np.pi * (r * r - z * z)  # the sphere's exact sections; it ends 1 mm beyond the end planes
    thickness = compute_plane_thickness_mm(z, area, h)
    assert area @ thickness == pytest.approx(4.0 / 3.0 * np.pi * r**3, rel=1e-12)
    assert area @ np.full(z.size, h) != pytest.approx(4.0 / 3.0 * np.pi * r**3, rel=1e-3)  # the slab rule misses
    np.testing.assert_allclose(compute_plane_thickness_mm(z, np.full(z.size, 50.0), h), h)
    # Tapering beyond one spacing: the end stays a half slab (the next plane would hold a contour otherwise).
    cone = compute_plane_thickness_mm(z, np.linspace(100.0, 90.0, z.size), h)
    # Linear areas (1.25 mm^2 less per plane): the inner half slab holds h/2 (90 + 1.25 / 4), the cap h/2 x 90.
    assert cone[-1] == pytest.approx(h * (1.0 + 1.25 / (8.0 * 90.0)), rel=1e-12)


def test_sections_of_a_sphere_are_its_exact_sections():
    """Interpolated sections of a sphere's contour stack: circles of the sphere's own radius at their
    heights, centred on it, whose areas times weights sum to the Cavalieri volume."""
    centre, r = (1.3, -2.1, 0.7), 9.0
    roi = read_structure_set(build_structure_set({"S": sphere_contours(centre, r, 2.0)})).roi("S")
    sections = roi.compute_sections(4)
    assert len(sections.polygons) == 4 * len(roi.planes())
    areas = np.array([compute_even_odd_area_mm2(p) for p in sections.polygons])
    exact = np.pi * (r * r - (sections.z_mm - centre[2]) ** 2)  # (the helper's polygons keep the circles' areas)
    np.testing.assert_allclose(areas, exact, rtol=1e-6)
    np.testing.assert_allclose(sections.below_mm + sections.thickness_mm / 2.0, sections.z_mm)
    for section in sections.polygons:
        np.testing.assert_allclose(section[0][:, :2].mean(axis=0), centre[:2], atol=1e-9)
    assert areas @ sections.weight_mm / 1000.0 == pytest.approx(roi.compute_volume_cc(), rel=1e-12)
    assert roi.compute_volume_cc() == pytest.approx(4.0 / 3.0 * np.pi * r**3 / 1000.0, rel=1e-6)
    one = roi.compute_sections(1)  # the planes themselves on their slabs
    np.testing.assert_allclose(one.z_mm, list(roi.planes()))
    np.testing.assert_allclose(one.thickness_mm, 2.0)


def test_plane_thickness_uneven_gaps_and_short_runs_keep_slabs():
    """Runs of fewer than three evenly spaced planes, and planes beside uneven gaps, keep slab thickness."""
    z = np.array([0.0, 2.0, 10.0, 12.0, 14.0, 16.0])
    area = np.array([10.0, 40.0, 30.0, 20.0, 20.0, 1e-9])
    thickness = compute_plane_thickness_mm(z, area, 2.0)
    np.testing.assert_allclose(thickness[:2], 2.0)  # a two-plane run: slabs
    assert np.all((thickness[:-1] >= 1.0) & (thickness[:-1] <= 3.0))  # within 0.5 h .. 1.5 h
    # The vanishing end plane is capped (its area closes at once): it keeps the half gap inwards, the
    # integral over [0, h/2] of the quadratic through 0, 20, 20 mm^2 (15 s - 2.5 s^2), not 1.5 h x its area.
    assert thickness[-1] * area[-1] == pytest.approx(15.0 / 2.0 - 2.5 / 3.0, rel=1e-6)
    assert compute_plane_thickness_mm(np.array([0.0, 2.0]), np.array([5.0, 5.0]), 2.0).tolist() == [2.0, 2.0]


def test_mask_volume_on_default_ct_matches_contour_stack(phantom):
    """On the default 5 mm CT the mask reproduces the slab-rule contour volume to 0.5 %."""
    ss = read_structure_set(phantom.rtstruct)
    grid = VoxelGrid((-120.0, -120.0, -80.0), (3.0, 3.0, 3.0), (55, 81, 81))
    for name in ss.roi_names:
        volume = compute_mask(ss.roi(name), grid).sum() * grid.voxel_volume_cc
        assert volume == pytest.approx(phantom.truth.compute_contour_volume_cc(name), rel=0.005)


@pytest.mark.parametrize("spacing_mm", [1.0, 2.5])
def test_small_sphere_volume_within_3_percent(spacing_mm):
    """A 6 mm-radius sphere (no ContourImageSequence) on a 3 mm grid: volume within 3 %."""
    ds = build_structure_set({"Lesion": sphere_contours((1.3, -2.1, 0.7), 6.0, spacing_mm)})
    roi = read_structure_set(ds).roi("Lesion")
    grid = VoxelGrid((-15.0, -15.0, -15.0), (3.0, 3.0, 3.0), (11, 11, 11))
    volume_cc = compute_mask(roi, grid).sum() * grid.voxel_volume_cc
    assert volume_cc == pytest.approx(4.0 / 3.0 * math.pi * 6.0**3 / 1000.0, rel=0.03)


def test_even_odd_rule_holes_and_several_polygons():
    """Per plane: a 20 mm square with a 10 mm square hole, plus a disjoint 5 mm square."""
    contours = []
    for z in (0.0, 2.0, 4.0):
        contours += [
            contour_item(square(0, 0, 20, z)),
            contour_item(square(5, 5, 10, z)),
            contour_item(square(30, 0, 5, z)),
        ]
    contours.append(contour_item(np.array([[1.0, 1.0, 2.0]]), "POINT"))
    contours.append(contour_item(np.array([[0.0, 0.0, 2.0], [9.0, 9.0, 2.0]]), "OPEN_PLANAR"))
    roi = read_structure_set(build_structure_set({"Ring": contours})).roi("Ring")
    assert len(roi.contours) == 11 and len(roi.planar_contours) == 9
    planes = roi.planes()
    assert list(planes) == [0.0, 2.0, 4.0] and all(len(p) == 3 for p in planes.values())
    assert compute_even_odd_area_mm2(planes[2.0]) == pytest.approx(400 - 100 + 25)
    assert roi.compute_volume_cc() == pytest.approx(3 * 325 * 2.0 / 1000.0)
    grid = VoxelGrid((0.5, 0.5, 0.0), (1.0, 1.0, 2.0), (3, 40, 40))
    weights = compute_mask(roi, grid, supersampling=2)
    assert weights.sum() * grid.voxel_volume_cc == pytest.approx(3 * 325 * 2.0 / 1000.0, rel=1e-9)
    assert weights[1, 10, 10] == 0.0 and weights[1, 2, 2] == 1.0  # hole, solid part
    assert weights[1, 2, 32] == 1.0  # the separate square


def test_fractional_weights_and_slab_convention():
    """A 10 mm square on planes z = 0, 5: edge voxels get partial weights; slabs end 2.5 mm out."""
    contours = [contour_item(square(0.0, 0.0, 10.0, z)) for z in (0.0, 5.0)]
    roi = read_structure_set(build_structure_set({"Box": contours})).roi("Box")
    # 4 mm voxels centred at 0, 4, 8, 12: x coverage of [0, 10] is 0.5, 1, 1, 0.
    grid = VoxelGrid((0.0, 0.0, -5.0), (4.0, 4.0, 1.0), (16, 4, 4))
    weights = compute_mask(roi, grid, supersampling=8)
    np.testing.assert_allclose(weights[5, 0, :], [0.25, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(weights[5, 1, :], [0.5, 1.0, 1.0, 0.0])
    z = grid.z_mm()
    inside = (z > -2.5) & (z < 7.5)
    assert np.all(weights[~inside] == 0.0) and np.all(weights[inside].sum(axis=(1, 2)) > 0)
    assert weights.sum() * grid.voxel_volume_cc == pytest.approx(roi.compute_volume_cc(), rel=1e-9)


def test_empty_roi_gives_empty_mask():
    roi = read_structure_set(build_structure_set({"Empty": []})).roi("Empty")
    assert roi.is_empty and roi.compute_volume_cc() == 0.0
    assert not compute_mask(roi, VoxelGrid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (2, 2, 2))).any()


def test_row_intervals_even_odd_and_exact_coverage():
    """Scanline intervals of a 20 mm square with a 10 mm hole; exact inside lengths along x."""
    from rt.polygons import compute_covered_length_mm, compute_row_intervals

    polygons = (square(0, 0, 20, 0)[:, :2], square(5, 5, 10, 0)[:, :2])
    start, end = compute_row_intervals(polygons, np.array([-1.0, 2.0, 10.0, 25.0]))
    assert np.all(start[[0, 3]] == end[[0, 3]])  # rows outside: no inside interval
    assert (end[1] - start[1]).sum() == pytest.approx(20.0)
    assert (end[2] - start[2]).sum() == pytest.approx(10.0)  # the hole removes 10 mm
    lengths = np.diff(compute_covered_length_mm(start, end, np.array([0.0, 2.5, 7.5, 12.5, 20.0])), axis=1)
    np.testing.assert_allclose(lengths[2], [2.5, 2.5, 0.0, 5.0])  # [0, 5] and [15, 20] inside on y = 10


def test_slab_overlaps_follow_the_nearest_plane_rule():
    from rt.structures import compute_slab_overlaps_mm

    overlaps = compute_slab_overlaps_mm(np.array([0.0, 2.0, 6.0]), 1.0, np.array([-5.0, -0.5, 3.0]),
                                        np.array([5.0, 0.5, 4.0]))
    np.testing.assert_allclose(overlaps[0], [2.0, 2.0, 0.0])  # plane 6 owns [5, 7]: outside [-5, 5]
    np.testing.assert_allclose(overlaps[1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(overlaps[2], [0.0, 0.0, 0.0])  # the gap between 3 and 5 belongs to nobody


def test_exact_x_mask_matches_brute_force_sampling():
    """compute_mask (exact along x, scanlines in y) equals dense point sampling of the same contour stack."""
    ds = build_structure_set({"Lesion": sphere_contours((1.3, -2.1, 0.7), 6.0, 2.0)})
    roi = read_structure_set(ds).roi("Lesion")
    grid = VoxelGrid((-12.0, -12.0, -9.0), (3.0, 3.0, 3.0), (7, 9, 9))
    weights = compute_mask(roi, grid, supersampling=8)
    n = 24  # brute force: n^2 in-plane points per voxel, z exact (slabs), even-odd point tests
    from rt.structures import compute_row_intervals, compute_slab_overlaps_mm

    planes = roi.planes()
    z = grid.z_mm()
    overlaps = compute_slab_overlaps_mm(np.array(list(planes)), 1.0, z - 1.5, z + 1.5) / 3.0
    offsets = ((np.arange(n) + 0.5) / n - 0.5) * 3.0
    xs = (grid.x_mm()[:, None] + offsets).ravel()
    ys = (grid.y_mm()[:, None] + offsets).ravel()
    brute = np.zeros(grid.shape)
    for p, polys in enumerate(planes.values()):
        start, end = compute_row_intervals(polys, ys)
        inside = ((xs[None, None, :] > start[:, :, None]) & (xs[None, None, :] < end[:, :, None])).any(axis=1)
        cover = inside.reshape(9, n, 9, n).mean(axis=(1, 3))
        brute += overlaps[:, p, None, None] * cover
    np.testing.assert_allclose(weights, brute, atol=0.03)
    assert weights.sum() == pytest.approx(brute.sum(), rel=0.005)
