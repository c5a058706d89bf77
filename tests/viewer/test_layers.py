"""The plan view's layers on an analytic phantom: CT window, dose wash, isodose lines, outlines, probe, frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from oncopacs.viewer.layers import (
    LayerCache,
    compute_isodose_lines,
    compute_outlines,
    plane_frame,
    plane_position_mm,
    probe,
    render_ct,
    render_wash,
)
from oncopacs.viewer.slices import SliceError, build_scene
from rt.dose import DoseGrid
from rt.grid import VoxelGrid
from rt.structures import ROI, Contour, StructureSet

GRID = VoxelGrid((-63.0, -63.0, -19.0), (2.0, 2.0, 2.0), (20, 64, 64))  # voxel centres, mm
RADIUS_MM, DOSE_PEAK_GY, RX_GY = 20.0, 72.0, 60.0


@pytest.fixture(scope="module")
def scene():
    angles = np.linspace(0.0, 2 * np.pi, 90, endpoint=False)
    contours = tuple(Contour("CLOSED_PLANAR", np.column_stack([RADIUS_MM * np.cos(angles), RADIUS_MM * np.sin(angles),
                                                               np.full(angles.size, z)])) for z in GRID.z_mm())
    roi = ROI(1, "PTV", "PTV", (255, 0, 0), "1.2.3", contours)
    z, y, x = np.meshgrid(GRID.z_mm(), GRID.y_mm(), GRID.x_mm(), indexing="ij")
    ct = np.where(x**2 + y**2 < 50.0**2, 0.0, -1000.0).astype(np.float32)
    ct[z > 10.0] += 500.0  # the top slices brighter: tells superior from inferior
    dose = DOSE_PEAK_GY * np.clip(1.0 - np.sqrt(x**2 + y**2 + z**2) / 60.0, 0.0, None)  # a cone: 60 Gy at 10 mm
    return build_scene("layers", ct, GRID, structures=StructureSet("1.2.4", "S", "1.2.3", (roi,)),
                       dose=DoseGrid(dose, GRID, (1, 0, 0, 0, 1, 0), dose_type="EFFECTIVE"), prescription_gy=RX_GY)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_frames_put_superior_at_the_top_and_span_the_voxels(scene):
    axial, coronal = plane_frame(GRID, "axial"), plane_frame(GRID, "coronal")
    assert (axial.width, axial.height, axial.du_mm, axial.dv_mm) == (64, 64, 2.0, 2.0)
    assert axial.extent_mm == (-64.0, 64.0, -64.0, 64.0)
    assert (coronal.width, coronal.height) == (64, 20)
    assert coronal.v0_mm == pytest.approx(-GRID.z_mm()[-1])  # the first row is the highest slice
    grey = _pixels(render_ct(scene, "coronal", 32, 0.0, 400.0).png)
    assert grey[0, 32] > grey[-1, 32]  # superior (brighter) slices on top
    assert plane_position_mm(GRID, "sagittal", 10) == pytest.approx(-43.0)


def test_the_ct_layer_is_windowed_grey(scene):
    layer = render_ct(scene, "axial", 10, 0.0, 400.0)
    grey = _pixels(layer.png)
    assert grey.ndim == 2 and grey.shape == (64, 64)
    assert grey[0, 0] == 0 and grey[32, 32] == pytest.approx(127, abs=1)  # air black, water mid-grey
    narrow = _pixels(render_ct(scene, "axial", 10, -1000.0, 100.0).png)
    assert narrow[0, 0] == pytest.approx(127, abs=1) and narrow[32, 32] == 255
    with pytest.raises(SliceError, match="width"):
        render_ct(scene, "axial", 10, 0.0, 0.0)
    with pytest.raises(SliceError, match="outside"):
        render_ct(scene, "axial", 20, 0.0, 400.0)


def test_the_wash_is_transparent_below_its_bottom_and_red_at_the_prescription(scene):
    rgba = _pixels(render_wash(scene, "axial", 10, RX_GY).png)
    assert rgba.shape == (64, 64, 4)
    dose = scene.dose_gy[10]
    assert (rgba[dose < 0.1 * RX_GY, 3] == 0).all() and (rgba[dose >= 0.1 * RX_GY, 3] > 0).all()
    at_rx = np.abs(dose - RX_GY) < 0.5
    assert at_rx.any() and (rgba[at_rx, 0] == 255).all() and (rgba[at_rx, 1] < 30).all()
    hot = dose > 1.08 * RX_GY
    assert hot.any() and (rgba[hot, 2] > 150).all()  # above 100 %: towards magenta, visibly not red
    assert render_wash(scene, "axial", 10, 10_000.0) is None  # nothing above 10 % of that


def test_isodose_lines_lie_on_the_dose_level(scene):
    (line,) = compute_isodose_lines(scene, "axial", 10, 0.5 * RX_GY)
    z = GRID.z_mm()[10]
    radius = 60.0 * (1.0 - 0.5 * RX_GY / DOSE_PEAK_GY)  # where the cone falls to 30 Gy
    in_plane = np.sqrt(radius**2 - z**2)
    assert np.abs(np.hypot(line[:, 0], line[:, 1]) - in_plane).max() < 0.6  # within a third of a voxel
    (coronal,) = compute_isodose_lines(scene, "coronal", 31, RX_GY)  # y = -1 mm
    widest = np.sqrt((60.0 * (1.0 - RX_GY / DOSE_PEAK_GY)) ** 2 - 1.0 - 1.0)  # at z = +-1 mm
    assert np.abs(coronal[:, 0]).max() == pytest.approx(widest, abs=0.6)
    assert coronal[:, 1].max() == pytest.approx(-coronal[:, 1].min(), abs=0.01)  # v = -z: symmetric about 0
    assert compute_isodose_lines(scene, "axial", 10, 1000.0) == ()


def test_outlines_are_the_contours_in_their_colour(scene):
    (outline,) = compute_outlines(scene, "axial", 10)
    assert outline.name == "PTV" and outline.colour == (255, 0, 0)
    assert np.abs(np.hypot(outline.lines[0][:, 0], outline.lines[0][:, 1]) - RADIUS_MM).max() < 0.01
    assert compute_outlines(scene, "axial", 10, rois=("BODY",)) == ()


def test_the_probe_reads_hu_and_dose_under_a_point(scene):
    found = probe(scene, "axial", 10, 0.4, -0.6)
    assert found is not None
    assert found.position_mm == pytest.approx((1.0, -1.0, GRID.z_mm()[10]))
    assert found.hu == 0.0 and found.dose_gy == pytest.approx(float(scene.dose_gy[10, 31, 32]))
    on_coronal = probe(scene, "coronal", 31, 0.0, -float(GRID.z_mm()[15]))  # v = -z
    assert on_coronal is not None and on_coronal.position_mm[2] == pytest.approx(GRID.z_mm()[15])
    assert probe(scene, "axial", 10, 500.0, 0.0) is None
    assert scene.dose_unit == "Gy(RBE)"


def test_the_cache_computes_each_layer_once(scene):
    cache = LayerCache(max_entries=4)
    first = cache.ct(scene, "axial", 3, 40.0, 400.0)
    assert cache.ct(scene, "axial", 3, 40.0, 400.0) is first and cache.hits == 1
    assert cache.ct(scene, "axial", 3, 40.0, 500.0) is not first
    cache.isodose(scene, "axial", 3, 30.0)
    cache.outlines(scene, "axial", 3)
    cache.wash(scene, "axial", 3, RX_GY)
    assert cache.ct(scene, "axial", 3, 40.0, 400.0) is not first  # evicted (LRU of four)
