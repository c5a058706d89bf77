"""The plan view in layers: windowed CT and dose wash as images, contours and isodose lines as vectors.

Where :func:`oncopacs.viewer.slices.render_slice` burns everything into one PNG, the plan page stacks:

- the CT plane, windowed to (level, width) in HU, as a greyscale PNG (:func:`render_ct`);
- the dose wash as an RGBA PNG, transparent below :data:`~oncopacs.viewer.isodose.WASH_BOTTOM_PERCENT` of the
  reference dose, coloured hot to cold up to above 100 % (:func:`render_wash`);
- ROI outlines from the contour points (:mod:`oncopacs.viewer.outlines`) and isodose lines traced on the dose
  plane (:func:`compute_isodose_lines`), as polylines in display millimetres.

Both images have one pixel per voxel of the plane (the page lets the browser smooth them as it scales them up,
and they stay small: a slice change sends tens of kilobytes). Display coordinates
(u, v) in mm, v running downwards: axial (x, y), coronal (x, -z), sagittal (y, -z); :class:`PlaneFrame`
places an image in them and converts a point back to a voxel (:func:`probe`). Results are cached per scene
key in :class:`LayerCache` (LRU), so scrolling back and forth and re-windowing one plane are cheap.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from oncopacs.viewer.isodose import WASH_BOTTOM_PERCENT, compute_dose_colours
from oncopacs.viewer.isolines import Polyline, compute_isolines
from oncopacs.viewer.outlines import compute_roi_outlines
from oncopacs.viewer.slices import PLANES, Scene, SliceError
from rt.grid import VoxelGrid

#: Isodose lines are traced on at most this many samples per side of the dose plane.
MAX_TRACE_SAMPLES = 320
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PlaneFrame:
    """Where a plane's images lie in display mm: the first pixel's centre (u0, v0), pixel sizes, pixel counts.

    One image pixel is one voxel of the plane (the browser interpolates when it scales the image up).
    """

    plane: str
    u0_mm: float
    v0_mm: float
    du_mm: float
    dv_mm: float
    width: int
    height: int

    @property
    def extent_mm(self) -> tuple[float, float, float, float]:
        """(u_min, u_max, v_min, v_max) of the image's outer edges, mm."""
        u_min, v_min = self.u0_mm - self.du_mm / 2.0, self.v0_mm - self.dv_mm / 2.0
        return u_min, u_min + self.width * self.du_mm, v_min, v_min + self.height * self.dv_mm


@dataclass(frozen=True, slots=True)
class Layer:
    """One image layer of a plane: a PNG placed by ``frame``."""

    frame: PlaneFrame
    png: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Outline:
    """A ROI's outline on a plane: name, display colour and polylines (display mm)."""

    name: str
    colour: tuple[int, int, int]
    lines: tuple[Polyline, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ProbeValue:
    """What lies under the cursor: the voxel's patient position (mm), HU, and dose (Gy; None without dose)."""

    position_mm: tuple[float, float, float]
    hu: float
    dose_gy: float | None


# -- geometry ---------------------------------------------------------------------------------------------------


def _axes(plane: str) -> tuple[int, int]:
    """(horizontal, vertical) patient axes of a plane (0 x, 1 y, 2 z)."""
    if plane not in PLANES:
        raise SliceError(f"unknown plane {plane!r} (axial, coronal or sagittal)")
    return {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]


def _v_sign(plane: str) -> float:
    return 1.0 if plane == "axial" else -1.0  # coronal and sagittal: v = -z, superior at the top


def plane_position_mm(grid: VoxelGrid, plane: str, index: int) -> float:
    """The plane's position along its normal (z, y or x), mm."""
    normal = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    _axes(plane)
    return float(grid.origin_mm[normal] + index * grid.spacing_mm[normal])


def plane_frame(grid: VoxelGrid, plane: str) -> PlaneFrame:
    """The plane's image frame: one pixel per voxel, rows downwards in v (superior at the top off axial)."""
    h_axis, v_axis = _axes(plane)
    counts = (grid.shape[2], grid.shape[1], grid.shape[0])
    u0 = grid.origin_mm[h_axis]
    v_first = grid.origin_mm[v_axis]
    v0 = v_first if plane == "axial" else -(v_first + (counts[v_axis] - 1) * grid.spacing_mm[v_axis])
    return PlaneFrame(plane, u0, v0, grid.spacing_mm[h_axis], grid.spacing_mm[v_axis], counts[h_axis],
                      counts[v_axis])


def plane_array(volume: npt.NDArray[Any], plane: str, index: int) -> npt.NDArray[Any]:
    """The 2D array of ``plane`` at ``index``: rows along the vertical axis (y or z increasing), columns along u."""
    if plane == "axial":
        return volume[index]
    return volume[:, index, :] if plane == "coronal" else volume[:, :, index]


def _image_rows(array2d: npt.NDArray[Any], plane: str) -> npt.NDArray[Any]:
    """The plane's array in display order: top row first (coronal and sagittal: the highest slice)."""
    return array2d if plane == "axial" else array2d[::-1]


def _check_index(scene: Scene, plane: str, index: int) -> None:
    count = scene.plane_size(plane)
    if not 0 <= index < count:
        raise SliceError(f"{plane} slice {index + 1} is outside 1..{count}")


# -- layers -----------------------------------------------------------------------------------------------------


def render_ct(scene: Scene, plane: str, index: int, level_hu: float, width_hu: float) -> Layer:
    """The CT plane windowed to (level, width) HU as a greyscale PNG."""
    if not width_hu > 0:
        raise SliceError("the window width must be positive (HU)")
    _check_index(scene, plane, index)
    frame = plane_frame(scene.grid, plane)
    hu = _image_rows(plane_array(scene.ct_hu, plane, index), plane)
    grey = np.clip((hu - (level_hu - width_hu / 2.0)) * (255.0 / width_hu), 0.0, 255.0).astype(np.uint8)
    return Layer(frame, _png(Image.fromarray(grey, "L")))


def render_wash(scene: Scene, plane: str, index: int, reference_gy: float, *, opacity: float = 0.45,
                bottom_percent: float = WASH_BOTTOM_PERCENT) -> Layer | None:
    """The dose wash (RGBA PNG, transparent below ``bottom_percent`` of the reference); None without dose there."""
    if scene.dose_gy is None or reference_gy <= 0:
        return None
    if not 0.0 < opacity <= 1.0:
        raise SliceError("the wash opacity must be in (0, 1]")
    _check_index(scene, plane, index)
    frame = plane_frame(scene.grid, plane)
    source = plane_array(scene.dose_gy, plane, index)
    threshold = bottom_percent / 100.0 * reference_gy
    if not (source >= threshold).any():
        return None
    percent = _image_rows(source, plane) / reference_gy * 100.0
    rgba = np.zeros((frame.height, frame.width, 4), dtype=np.uint8)
    shown = percent >= bottom_percent
    rgba[shown, :3] = compute_dose_colours(percent[shown]).astype(np.uint8)
    rgba[shown, 3] = round(255 * opacity)
    return Layer(frame, _png(Image.fromarray(rgba, "RGBA")))


def compute_isodose_lines(scene: Scene, plane: str, index: int, level_gy: float) -> tuple[Polyline, ...]:
    """Where the dose on the plane crosses ``level_gy``, traced on the dose plane (display mm)."""
    if scene.dose_gy is None:
        return ()
    _check_index(scene, plane, index)
    h_axis, v_axis = _axes(plane)
    dose = plane_array(scene.dose_gy, plane, index)
    hot_rows, hot_cols = np.nonzero(dose > level_gy)
    if hot_rows.size == 0:
        return ()
    r0, r1 = max(int(hot_rows.min()) - 1, 0), min(int(hot_rows.max()) + 2, dose.shape[0])
    c0, c1 = max(int(hot_cols.min()) - 1, 0), min(int(hot_cols.max()) + 2, dose.shape[1])
    step = max(1, -(-max(r1 - r0, c1 - c0) // MAX_TRACE_SAMPLES))
    grid = scene.grid
    rows_mm = grid.origin_mm[v_axis] + grid.spacing_mm[v_axis] * np.arange(r0, r1, step)
    cols_mm = grid.origin_mm[h_axis] + grid.spacing_mm[h_axis] * np.arange(c0, c1, step)
    lines = compute_isolines(dose[r0:r1:step, c0:c1:step], rows_mm, cols_mm, level_gy)
    sign = _v_sign(plane)
    return tuple(np.column_stack([line[:, 0], sign * line[:, 1]]) for line in lines)


def compute_outlines(scene: Scene, plane: str, index: int, rois: tuple[str, ...] | None = None) -> tuple[Outline, ...]:
    """The outlines of the scene's ROIs (``rois`` None: all) on the plane, from their contour points."""
    _check_index(scene, plane, index)
    position = plane_position_mm(scene.grid, plane, index)
    dz = scene.grid.spacing_mm[2]
    sample = min(scene.grid.spacing_mm[:2]) / 4.0
    found = []
    for mask, roi in zip(scene.rois, scene.contours, strict=False):
        if rois is not None and roi.name not in rois:
            continue
        lines = compute_roi_outlines(roi, plane, position, default_spacing_mm=dz, sample_mm=sample)
        if lines:
            found.append(Outline(roi.name, mask.colour, lines))
    return tuple(found)


def probe(scene: Scene, plane: str, index: int, u_mm: float, v_mm: float) -> ProbeValue | None:
    """The voxel under display point (u, v) of the plane at ``index`` (None outside the CT)."""
    _check_index(scene, plane, index)
    h_axis, v_axis = _axes(plane)
    grid = scene.grid
    normal = 3 - h_axis - v_axis
    point = [0.0, 0.0, 0.0]
    point[h_axis], point[v_axis] = u_mm, _v_sign(plane) * v_mm
    point[normal] = plane_position_mm(grid, plane, index)
    voxel = [round((point[a] - grid.origin_mm[a]) / grid.spacing_mm[a]) for a in range(3)]
    nz, ny, nx = grid.shape
    if not (0 <= voxel[0] < nx and 0 <= voxel[1] < ny and 0 <= voxel[2] < nz):
        return None
    i, j, k = voxel
    dose = float(scene.dose_gy[k, j, i]) if scene.dose_gy is not None else None
    centre = tuple(float(grid.origin_mm[a] + voxel[a] * grid.spacing_mm[a]) for a in range(3))
    return ProbeValue((centre[0], centre[1], centre[2]), float(scene.ct_hu[k, j, i]), dose)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class LayerCache:
    """A thread-safe LRU of computed layers and overlays, keyed by (scene key, what, plane, index, parameters)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, compute: Callable[[], T]) -> T:
        """The cached value of ``key``, computed (outside the lock) when absent."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                found: T = self._entries[key]
                return found
        value = compute()
        with self._lock:
            self.misses += 1
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def ct(self, scene: Scene, plane: str, index: int, level_hu: float, width_hu: float) -> Layer:
        return self.get((scene.key, "ct", plane, index, level_hu, width_hu),
                        lambda: render_ct(scene, plane, index, level_hu, width_hu))

    def wash(self, scene: Scene, plane: str, index: int, reference_gy: float) -> Layer | None:
        return self.get((scene.key, "wash", plane, index, reference_gy),
                        lambda: render_wash(scene, plane, index, reference_gy))

    def isodose(self, scene: Scene, plane: str, index: int, level_gy: float) -> tuple[Polyline, ...]:
        return self.get((scene.key, "isodose", plane, index, round(level_gy, 6)),
                        lambda: compute_isodose_lines(scene, plane, index, level_gy))

    def outlines(self, scene: Scene, plane: str, index: int) -> tuple[Outline, ...]:
        return self.get((scene.key, "outlines", plane, index), lambda: compute_outlines(scene, plane, index))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


__all__ = ["Layer", "LayerCache", "Outline", "PlaneFrame", "ProbeValue", "compute_isodose_lines",
           "compute_outlines", "plane_array", "plane_frame", "plane_position_mm", "probe", "render_ct",
           "render_wash"]
