"""Slice rendering, checked pixel by pixel on an analytic phantom (a cylinder ROI and a spherical dose)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from oncopacs.viewer.isodose import dose_colour, plan_isodose_levels
from oncopacs.viewer.slices import (
    RenderOptions,
    SliceCache,
    SliceError,
    build_scene,
    isodose_levels_gy,
    render_slice,
)
from rt.dose import DoseGrid
from rt.grid import VoxelGrid
from rt.structures import ROI, Contour, StructureSet

RADIUS_MM = 20.0  # the ROI: a cylinder along z centred on the origin
DOSE_RADIUS_MM = 30.0  # the dose: 60 Gy inside this sphere, 0 outside
GRID = VoxelGrid((-63.0, -63.0, -19.0), (2.0, 2.0, 2.0), (20, 64, 64))  # voxel centres, mm
RED = (255, 0, 0)


def _cylinder() -> ROI:
    angles = np.linspace(0.0, 2 * np.pi, 90, endpoint=False)
    contours = tuple(Contour("CLOSED_PLANAR", np.column_stack([RADIUS_MM * np.cos(angles), RADIUS_MM * np.sin(angles),
                                                               np.full(angles.size, z)]))
                     for z in GRID.z_mm())
    return ROI(1, "GTV", "GTV", RED, "1.2.3", contours)


@pytest.fixture(scope="module")
def scene():
    z, y, x = np.meshgrid(GRID.z_mm(), GRID.y_mm(), GRID.x_mm(), indexing="ij")
    ct = np.where(x**2 + y**2 < 50.0**2, 0.0, -1000.0).astype(np.float32)
    dose = np.where(x**2 + y**2 + z**2 <= DOSE_RADIUS_MM**2, 60.0, 0.0)
    return build_scene("phantom", ct, GRID, structures=StructureSet("1.2.4", "S", "1.2.3", (_cylinder(),)),
                       dose=DoseGrid(dose, GRID, (1, 0, 0, 0, 1, 0)), prescription_gy=60.0)


def _radius_mm(shape: tuple[int, int], pixel_mm: float) -> np.ndarray:
    """Distance of each axial output pixel centre from the axis of the phantom, mm."""
    rows, cols = np.indices(shape)
    edge = GRID.origin_mm[0] - GRID.spacing_mm[0] / 2.0
    return np.hypot(edge + (cols + 0.5) * pixel_mm, edge + (rows + 0.5) * pixel_mm)


def test_contour_pixels_lie_on_the_roi_boundary(scene):
    rendered = render_slice(scene, "axial", 10, RenderOptions(colourwash=False))
    red = (rendered.rgb == RED).all(axis=2)
    radius = _radius_mm(red.shape, rendered.pixel_mm)
    assert red.sum() > 100
    assert np.abs(radius[red] - RADIUS_MM).max() <= GRID.spacing_mm[0] + rendered.pixel_mm
    # every direction around the circle has its outline pixel
    rows, cols = np.nonzero(red)
    centre = red.shape[0] / 2.0
    angles = np.degrees(np.arctan2(rows + 0.5 - centre, cols + 0.5 - centre)) // 30
    assert len(set(angles.tolist())) == 12


def test_the_colourwash_is_only_where_the_dose_exceeds_the_threshold(scene):
    rendered = render_slice(scene, "axial", 10, RenderOptions(rois=(), wash_min_gy=6.0))
    coloured = np.ptp(rendered.rgb.astype(int), axis=2) > 0
    radius = _radius_mm(coloured.shape, rendered.pixel_mm)
    z = GRID.z_mm()[10]
    in_plane_radius = np.sqrt(DOSE_RADIUS_MM**2 - z**2)
    assert coloured.any()
    assert radius[coloured].max() <= in_plane_radius + 2 * GRID.spacing_mm[0]  # trilinear edge: one voxel of blur
    assert coloured[radius < in_plane_radius - 2 * GRID.spacing_mm[0]].all()


def test_no_wash_and_no_rois_is_the_plain_windowed_ct(scene):
    rendered = render_slice(scene, "axial", 10, RenderOptions(window="lung", rois=(), colourwash=False))
    grey = rendered.rgb
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey[0, 0, 0] < grey[grey.shape[0] // 2, grey.shape[1] // 2, 0]  # air darker than water in the lung window


def test_isodose_lines_in_percent_of_the_prescription(scene):
    levels = isodose_levels_gy((50.0,), "percent", scene.prescription_gy)
    assert levels == (30.0,)
    rendered = render_slice(scene, "coronal", 32, RenderOptions(rois=(), colourwash=False, isodose_gy=levels))
    (level,) = plan_isodose_levels(levels, scene.prescription_gy, avoid=[RED])  # 50 %: blue, hot to cold
    assert level.colour == dose_colour(50.0) and level.colour[2] > level.colour[0]
    line = (rendered.rgb == level.colour).all(axis=2)
    assert line.sum() > 50
    hundred = render_slice(scene, "coronal", 32, RenderOptions(rois=(), colourwash=False, isodose_gy=(60.0,)))
    prescription_line = plan_isodose_levels((60.0,), 60.0, avoid=[RED])[0].colour  # red, kept apart from the GTV
    assert prescription_line != RED and (hundred.rgb == prescription_line).all(axis=2).sum() > 20
    with pytest.raises(SliceError):
        isodose_levels_gy((50.0,), "percent", None)


def test_sagittal_and_coronal_have_square_pixels_superior_at_the_top(scene):
    for plane in ("sagittal", "coronal"):
        rendered = render_slice(scene, plane, 32, RenderOptions(rois=(), colourwash=False))
        width, height = rendered.size
        assert height / width == pytest.approx(20 / 64, abs=0.01)
        assert Image.open(io.BytesIO(rendered.png)).size == (width, height)


def test_bad_requests_raise_slice_errors(scene):
    with pytest.raises(SliceError):
        render_slice(scene, "axial", 20)
    with pytest.raises(SliceError):
        render_slice(scene, "oblique", 0)
    with pytest.raises(SliceError):
        RenderOptions(window="abdomen")


def test_the_cache_returns_the_same_png_for_the_same_request(scene):
    cache = SliceCache(max_entries=2)
    first = cache.render(scene, "axial", 5)
    assert cache.render(scene, "axial", 5) is first and cache.hits == 1
    cache.render(scene, "axial", 6)
    cache.render(scene, "axial", 7)
    assert cache.render(scene, "axial", 5) is not first  # evicted (LRU of two)
