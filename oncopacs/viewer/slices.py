"""Server-side slice rendering: a CT plane with contours, dose colourwash and isodose lines, as PNG.

Pure numpy + Pillow over a :class:`Scene` (CT in HU and, on the same axis-aligned grid, the dose in
Gy and the ROI masks). Planes: ``axial`` (index along z; rows y, columns x), ``coronal`` (index along
y; rows z, superior at the top) and ``sagittal`` (index along x; rows z, columns y). The output is
resampled (nearest neighbour) to square pixels of :attr:`RenderedSlice.pixel_mm` mm, at least
:data:`MIN_OUTPUT_PIXELS` on the longer side. PNGs are cached in an LRU keyed by scene, plane, index
and options (:class:`SliceCache`). Dose colours (wash and isodose lines) run hot to cold
(:mod:`oncopacs.viewer.isodose`). The plan review page draws the same scene in layers instead (images plus
vector contours and isodose lines: :mod:`oncopacs.viewer.layers`).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from PIL import Image

from oncopacs.errors import OncopacsError
from oncopacs.viewer.isodose import compute_dose_colours, plan_isodose_levels
from rt.dose import DoseGrid, compute_dose_on_grid
from rt.grid import VoxelGrid
from rt.structures import ROI, StructureSet, compute_mask

PLANES = ("axial", "coronal", "sagittal")
#: Window presets: (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
MIN_OUTPUT_PIXELS = 384
DEFAULT_WASH_FRACTION = 0.1  # colourwash from 10 % of the reference dose
_ROI_FALLBACK_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 255, 64), (255, 200, 0), (255, 0, 255), (0, 255, 255))


class SliceError(OncopacsError, ValueError):
    """A plane, index or option the scene cannot render."""


@dataclass(frozen=True, slots=True)
class RoiMask:
    """An ROI rasterised on the scene grid: ``mask`` (bool, cropped) starts at voxel ``offset`` (k, j, i)."""

    name: str
    colour: tuple[int, int, int]
    offset: tuple[int, int, int]
    mask: np.ndarray = field(repr=False)

    def plane(self, plane: str, index: int, shape: tuple[int, int, int]) -> np.ndarray | None:
        """The ROI's 2D mask on ``plane`` at ``index`` in scene orientation (None: not on it)."""
        k0, j0, i0 = self.offset
        nz, ny, nx = self.mask.shape
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
        start, size = (k0, j0, i0)[axis], (nz, ny, nx)[axis]
        if not start <= index < start + size:
            return None
        local = index - start
        full_z, full_y, full_x = shape
        if plane == "axial":
            out = np.zeros((full_y, full_x), dtype=bool)
            out[j0:j0 + ny, i0:i0 + nx] = self.mask[local]
        elif plane == "coronal":
            out = np.zeros((full_z, full_x), dtype=bool)
            out[k0:k0 + nz, i0:i0 + nx] = self.mask[:, local, :]
        else:
            out = np.zeros((full_z, full_y), dtype=bool)
            out[k0:k0 + nz, j0:j0 + ny] = self.mask[:, :, local]
        return out


@dataclass(frozen=True, slots=True)
class Scene:
    """What one plan view shows, on the CT grid: ``ct_hu`` and ``dose_gy`` are (nz, ny, nx) float32."""

    key: str  # identity of the inputs (cache key)
    grid: VoxelGrid
    ct_hu: np.ndarray = field(repr=False)
    dose_gy: np.ndarray | None = field(default=None, repr=False)
    prescription_gy: float | None = None
    rois: tuple[RoiMask, ...] = ()
    contours: tuple[ROI, ...] = field(default=(), repr=False)  # the structure set's ROIs drawn (same order as rois)
    dose_unit: str = "Gy"  # label of dose values: Gy, or Gy(RBE) for an EFFECTIVE dose

    @property
    def max_dose_gy(self) -> float | None:
        """The hottest dose on the CT grid (None without dose)."""
        return float(np.max(self.dose_gy)) if self.dose_gy is not None and self.dose_gy.size else None

    @property
    def reference_dose_gy(self) -> float | None:
        """The prescription when known, else the maximum dose (None without dose)."""
        if self.dose_gy is None:
            return None
        return self.prescription_gy or float(np.nanmax(self.dose_gy)) or None

    def plane_size(self, plane: str) -> int:
        """Number of slices along ``plane``'s normal."""
        nz, ny, nx = self.grid.shape
        return {"axial": nz, "coronal": ny, "sagittal": nx}[_check_plane(plane)]


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """How to draw a slice. ``rois`` None: every ROI; ``isodose_gy``: line levels, Gy."""

    window: str = "mediastinum"
    rois: tuple[str, ...] | None = None
    isodose_gy: tuple[float, ...] = ()
    colourwash: bool = True
    wash_min_gy: float | None = None  # None: DEFAULT_WASH_FRACTION of the reference dose
    wash_opacity: float = 0.4

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise SliceError(f"unknown window {self.window!r} (presets: {', '.join(WINDOWS)})")
        if not 0.0 <= self.wash_opacity <= 1.0:
            raise SliceError("wash_opacity must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class RenderedSlice:
    """A rendered plane: RGB pixels (H, W, 3) uint8 with square pixels of ``pixel_mm`` mm, and its PNG."""

    plane: str
    index: int
    pixel_mm: float
    rgb: np.ndarray = field(repr=False)
    png: bytes = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]


def build_scene(key: str, ct_hu: np.ndarray, grid: VoxelGrid, *, structures: StructureSet | None = None,
                dose: DoseGrid | None = None, prescription_gy: float | None = None,
                supersampling: int = 2) -> Scene:
    """Rasterise the ROIs and resample the dose onto the CT ``grid`` (done once per scene)."""
    if tuple(ct_hu.shape) != tuple(grid.shape):
        raise SliceError(f"CT array {ct_hu.shape} does not match its grid {grid.shape}")
    dose_on_ct = None
    if dose is not None:
        dose_on_ct = np.nan_to_num(compute_dose_on_grid(dose, grid), nan=0.0).astype(np.float32)
    rois, contours = [], []
    for n, roi in enumerate(structures.rois if structures else ()):
        if roi.is_empty:
            continue
        occupancy = compute_mask(roi, grid, supersampling=supersampling) >= 0.5
        hit = [np.nonzero(occupancy.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1))]
        if any(h.size == 0 for h in hit):
            continue
        (k0, k1), (j0, j1), (i0, i1) = ((int(h[0]), int(h[-1]) + 1) for h in hit)
        colour = roi.colour or _ROI_FALLBACK_COLOURS[n % len(_ROI_FALLBACK_COLOURS)]
        rgb = cast("tuple[int, int, int]", tuple(int(c) for c in colour))  # as read: ROIDisplayColor has 3 values
        rois.append(RoiMask(roi.name, rgb, (k0, j0, i0),
                            occupancy[k0:k1, j0:j1, i0:i1].copy()))
        contours.append(roi)
    return Scene(key, grid, np.ascontiguousarray(ct_hu, dtype=np.float32), dose_on_ct, prescription_gy, tuple(rois),
                 tuple(contours), dose.dose_unit if dose is not None else "Gy")


def isodose_levels_gy(values: tuple[float, ...], unit: str, prescription_gy: float | None) -> tuple[float, ...]:
    """Isodose levels in Gy from ``values`` in ``unit`` "gy" or "percent" (of the prescription)."""
    if unit == "gy":
        return tuple(sorted(float(v) for v in values))
    if unit == "percent":
        if not prescription_gy:
            raise SliceError("isodose levels in % need a prescription dose")
        return tuple(sorted(float(v) * prescription_gy / 100.0 for v in values))
    raise SliceError(f"unknown isodose unit {unit!r} (gy or percent)")


def render_slice(scene: Scene, plane: str, index: int, options: RenderOptions = RenderOptions()) -> RenderedSlice:
    """Draw ``plane`` at ``index``: windowed CT, dose colourwash, isodose lines, then contours on top."""
    _check_plane(plane)
    count = scene.plane_size(plane)
    if not 0 <= index < count:
        raise SliceError(f"{plane} index {index} is outside 0..{count - 1}")
    rows_idx, cols_idx, pixel_mm = _output_sampling(scene.grid, plane)
    ct = _resample(_plane_of(scene.ct_hu, plane, index), rows_idx, cols_idx)
    level, width = WINDOWS[options.window]
    grey = np.clip((ct - (level - width / 2.0)) * (255.0 / width), 0.0, 255.0)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if scene.dose_gy is not None and (options.colourwash or options.isodose_gy):
        dose = _resample(_plane_of(scene.dose_gy, plane, index), rows_idx, cols_idx)
        reference = scene.reference_dose_gy or 1.0
        if options.colourwash:
            threshold = options.wash_min_gy if options.wash_min_gy is not None else DEFAULT_WASH_FRACTION * reference
            wash = dose > threshold
            if wash.any():
                colours = compute_dose_colours(dose[wash] / reference * 100.0)  # hot to cold, > 100 % too
                rgb[wash] = (1.0 - options.wash_opacity) * rgb[wash] + options.wash_opacity * colours
        lines = plan_isodose_levels(options.isodose_gy, reference, avoid=[r.colour for r in scene.rois])
        for line in reversed(lines):  # coldest first: hotter lines drawn over colder ones
            rgb[_boundary(dose >= line.dose_gy)] = line.colour
    shape = scene.grid.shape
    for roi in scene.rois:
        if options.rois is not None and roi.name not in options.rois:
            continue
        mask = roi.plane(plane, index, shape)
        if mask is None:
            continue
        rgb[_boundary(_resample(_orient(mask, plane), rows_idx, cols_idx))] = roi.colour
    pixels = np.ascontiguousarray(rgb.astype(np.uint8))
    return RenderedSlice(plane, index, pixel_mm, pixels, encode_png(pixels))


def encode_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def pixel_of(scene: Scene, plane: str, point_mm: tuple[float, float, float]) -> tuple[int, int]:
    """The output (row, column) of a patient point (x, y, z) mm on ``plane`` (for overlays and tests)."""
    _rows, _cols, pixel_mm = _output_sampling(scene.grid, plane)
    grid = scene.grid
    x, y, z = ((point_mm[a] - grid.origin_mm[a]) / grid.spacing_mm[a] for a in range(3))
    row_mm, col_mm = {"axial": (y * grid.spacing_mm[1], x * grid.spacing_mm[0]),
                      "coronal": ((grid.shape[0] - 1 - z) * grid.spacing_mm[2], x * grid.spacing_mm[0]),
                      "sagittal": ((grid.shape[0] - 1 - z) * grid.spacing_mm[2], y * grid.spacing_mm[1])}[plane]
    row_spacing, col_spacing = _plane_spacing(grid, plane)
    # voxel centre v sits at (v + 0.5) * spacing from the edge; output pixel r covers [r, r + 1) * pixel_mm
    return int((row_mm + row_spacing / 2) // pixel_mm), int((col_mm + col_spacing / 2) // pixel_mm)


class SliceCache:
    """A thread-safe LRU of rendered slices keyed by (scene key, plane, index, options)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._entries: OrderedDict[tuple, RenderedSlice] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def render(self, scene: Scene, plane: str, index: int, options: RenderOptions = RenderOptions()) -> RenderedSlice:
        key = (scene.key, plane, index, options)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        rendered = render_slice(scene, plane, index, options)
        with self._lock:
            self.misses += 1
            self._entries[key] = rendered
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return rendered

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# -- geometry helpers ---------------------------------------------------------------------------


def _check_plane(plane: str) -> str:
    if plane not in PLANES:
        raise SliceError(f"unknown plane {plane!r} (axial, coronal or sagittal)")
    return plane


def _plane_spacing(grid: VoxelGrid, plane: str) -> tuple[float, float]:
    dx, dy, dz = grid.spacing_mm
    return {"axial": (dy, dx), "coronal": (dz, dx), "sagittal": (dz, dy)}[plane]


def _orient(array2d: np.ndarray, plane: str) -> np.ndarray:
    """Rows of coronal and sagittal planes run from superior (high z) to inferior."""
    return array2d if plane == "axial" else array2d[::-1]


def _plane_of(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    if plane == "axial":
        return volume[index]
    return _orient(volume[:, index, :] if plane == "coronal" else volume[:, :, index], plane)


def _output_sampling(grid: VoxelGrid, plane: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Source row and column of each output pixel, and the output pixel size (mm)."""
    row_spacing, col_spacing = _plane_spacing(grid, plane)
    nz, ny, nx = grid.shape
    n_rows, n_cols = {"axial": (ny, nx), "coronal": (nz, nx), "sagittal": (nz, ny)}[plane]
    height_mm, width_mm = n_rows * row_spacing, n_cols * col_spacing
    pixel_mm = min(row_spacing, col_spacing, max(height_mm, width_mm) / MIN_OUTPUT_PIXELS)
    out_rows, out_cols = max(1, round(height_mm / pixel_mm)), max(1, round(width_mm / pixel_mm))
    rows_idx = np.minimum(((np.arange(out_rows) + 0.5) * pixel_mm / row_spacing).astype(np.intp), n_rows - 1)
    cols_idx = np.minimum(((np.arange(out_cols) + 0.5) * pixel_mm / col_spacing).astype(np.intp), n_cols - 1)
    return rows_idx, cols_idx, pixel_mm


def _resample(array2d: np.ndarray, rows_idx: np.ndarray, cols_idx: np.ndarray) -> np.ndarray:
    if len(rows_idx) == array2d.shape[0] and len(cols_idx) == array2d.shape[1]:
        return array2d
    return array2d[rows_idx[:, None], cols_idx[None, :]]


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the outline, one pixel wide)."""
    if not mask.any():
        return mask
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner
