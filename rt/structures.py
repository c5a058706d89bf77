"""RT Structure Sets: reading ROIs and rasterising their planar contours onto voxel grids.

Conventions (coordinates LPS, mm; volumes cc):

- A ROI's CLOSED_PLANAR contours are grouped by plane (z, rounded to 1 µm). All polygons of a
  plane are combined with the **even-odd rule**: a point is inside when it lies inside an odd
  number of them, so a polygon drawn inside another is a hole and disjoint polygons add.
- **Slab convention between planes.** Each contour plane stands for a slab of thickness ``t``
  centred on it, ``t`` being the ROI's contour-plane spacing (the median gap between its
  planes; the grid's dz for a single-plane ROI). A point at height z takes the contour of the
  nearest plane if that plane is within ``t / 2``; otherwise it is outside. No shape
  interpolation between planes is done, and the ROI ends ``t / 2`` beyond its last planes.
- **Sub-voxel weights.** :func:`compute_mask` samples each voxel on a regular
  ``supersampling x supersampling`` in-plane lattice of sub-points and on ``supersampling``
  sub-planes in z, and returns the inside fraction (0..1) per voxel.
- POINT and OPEN_PLANAR / OPEN_NONPLANAR contours are kept on the ROI but never rasterised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from rt.errors import DicomInputError, GeometryError, UnknownROIError
from rt.grid import MM3_PER_CC, VoxelGrid

#: Plane keys are z rounded to this many decimals (mm) so that float noise does not split a plane.
_Z_DECIMALS = 3


@dataclass(frozen=True, slots=True)
class Contour:
    """One contour: ContourGeometricType and its points, an (N, 3) array of (x, y, z) in mm."""

    geometric_type: str
    points_mm: np.ndarray = field(repr=False)

    @property
    def z_mm(self) -> float:
        """Height of the contour's first point, mm."""
        return float(self.points_mm[0, 2])

    def to_dict(self) -> dict:
        return {"geometric_type": self.geometric_type, "points_mm": self.points_mm.tolist()}


@dataclass(frozen=True, slots=True)
class ROI:
    """One region of interest of a structure set (number, name, type, colour, contours)."""

    number: int
    name: str
    interpreted_type: str
    colour: tuple[int, int, int] | None
    frame_of_reference_uid: str
    contours: tuple[Contour, ...]

    @property
    def planar_contours(self) -> tuple[Contour, ...]:
        """The CLOSED_PLANAR contours (the ones that enclose volume)."""
        return tuple(c for c in self.contours if c.geometric_type == "CLOSED_PLANAR" and len(c.points_mm) >= 3)

    def planes(self) -> dict[float, tuple[np.ndarray, ...]]:
        """Closed polygons grouped per plane: {z_mm: ((N, 2) x/y arrays, ...)}, sorted by z."""
        grouped: dict[float, list[np.ndarray]] = {}
        for c in self.planar_contours:
            z = round(float(np.mean(c.points_mm[:, 2])), _Z_DECIMALS)
            grouped.setdefault(z, []).append(c.points_mm[:, :2])
        return {z: tuple(grouped[z]) for z in sorted(grouped)}

    @property
    def is_empty(self) -> bool:
        """True when the ROI has no closed planar contour (nothing to rasterise)."""
        return not self.planar_contours

    def compute_plane_spacing_mm(self, default_mm: float | None = None) -> float:
        """Contour-plane spacing t, mm: the median gap between planes (``default_mm`` for one plane)."""
        z = np.array(list(self.planes()), dtype=np.float64)
        gaps = np.diff(z)
        gaps = gaps[gaps > 1e-3]
        if gaps.size:
            return float(np.median(gaps))
        if default_mm is None:
            raise GeometryError(f"ROI {self.name!r} has a single contour plane; its thickness is unknown")
        return float(default_mm)

    def compute_bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners (x, y, z) of the closed contours' points, mm; z widened by t / 2."""
        if self.is_empty:
            raise GeometryError(f"ROI {self.name!r} has no closed planar contour")
        points = np.concatenate([c.points_mm for c in self.planar_contours])
        lo, hi = points.min(axis=0), points.max(axis=0)
        half = self.compute_plane_spacing_mm(default_mm=0.0) / 2.0
        lo[2] -= half
        hi[2] += half
        return lo, hi

    def compute_volume_cc(self, plane_spacing_mm: float | None = None) -> float:
        """Volume of the contour stack, cc: sum over planes of the even-odd area times t."""
        if self.is_empty:
            return 0.0
        t = plane_spacing_mm if plane_spacing_mm is not None else self.compute_plane_spacing_mm()
        area = sum(compute_even_odd_area_mm2(polys) for polys in self.planes().values())
        return area * t / MM3_PER_CC

    def to_dict(self) -> dict:
        return {
            "number": self.number,
            "name": self.name,
            "interpreted_type": self.interpreted_type,
            "colour": list(self.colour) if self.colour else None,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "contour_count": len(self.contours),
            "plane_count": len(self.planes()),
        }


@dataclass(frozen=True, slots=True)
class StructureSet:
    """An RT Structure Set: label, frame of reference and its ROIs in StructureSetROISequence order."""

    sop_instance_uid: str
    label: str
    frame_of_reference_uid: str
    rois: tuple[ROI, ...]

    @property
    def roi_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rois)

    def roi(self, name: str) -> ROI:
        """The ROI called ``name`` (exact match first, then case-insensitive); KeyError if absent."""
        for r in self.rois:
            if r.name == name:
                return r
        matches = [r for r in self.rois if r.name.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
        raise UnknownROIError(f"no ROI {name!r}; the structure set has {', '.join(self.roi_names)}")

    def to_dict(self) -> dict:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "label": self.label,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "rois": [r.to_dict() for r in self.rois],
        }


def _read_contour(item: Dataset) -> Contour | None:
    data = item.get("ContourData")
    if not data:
        return None
    values = np.asarray([float(v) for v in data], dtype=np.float64)
    if values.size % 3:
        raise DicomInputError("ContourData", f"has {values.size} values, not a multiple of 3")
    return Contour(str(item.get("ContourGeometricType", "CLOSED_PLANAR")).upper(), values.reshape(-1, 3))


def read_structure_set(ds: Dataset) -> StructureSet:
    """Read an RT Structure Set dataset into a :class:`StructureSet` (coordinates in mm).

    ROI types come from RTROIObservationsSequence (RTROIInterpretedType, "" when absent),
    colours from ROIContourSequence's ROIDisplayColor. ContourImageSequence is not needed.
    """
    if "StructureSetROISequence" not in ds:
        raise DicomInputError("StructureSetROISequence")
    types: dict[int, str] = {}
    for obs in ds.get("RTROIObservationsSequence", []):
        if "ReferencedROINumber" in obs:
            types.setdefault(int(obs.ReferencedROINumber), str(obs.get("RTROIInterpretedType", "") or ""))
    contour_items: dict[int, Dataset] = {}
    for item in ds.get("ROIContourSequence", []):
        if "ReferencedROINumber" in item:
            contour_items[int(item.ReferencedROINumber)] = item
    frames = ds.get("ReferencedFrameOfReferenceSequence", [])
    default_for = str(frames[0].get("FrameOfReferenceUID", "")) if frames else ""

    rois = []
    for roi_item in ds.StructureSetROISequence:
        if "ROINumber" not in roi_item:
            raise DicomInputError("ROINumber", "missing in a StructureSetROISequence item")
        number = int(roi_item.ROINumber)
        contour_item = contour_items.get(number)
        contours: list[Contour] = []
        colour = None
        if contour_item is not None:
            if contour_item.get("ROIDisplayColor"):
                colour = tuple(int(v) for v in contour_item.ROIDisplayColor)[:3]
            for c in contour_item.get("ContourSequence", []):
                contour = _read_contour(c)
                if contour is not None:
                    contours.append(contour)
        rois.append(
            ROI(
                number=number,
                name=str(roi_item.get("ROIName", "")),
                interpreted_type=types.get(number, ""),
                colour=colour,  # type: ignore[arg-type]
                frame_of_reference_uid=str(roi_item.get("ReferencedFrameOfReferenceUID", default_for) or default_for),
                contours=tuple(contours),
            )
        )
    return StructureSet(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        label=str(ds.get("StructureSetLabel", "")),
        frame_of_reference_uid=default_for,
        rois=tuple(rois),
    )


def compute_polygon_area_mm2(polygon_xy: np.ndarray) -> float:
    """Unsigned area (mm^2) of a simple polygon given as (N, 2) x/y vertices (shoelace)."""
    x, y = polygon_xy[:, 0], polygon_xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _count_crossings(polygons: tuple[np.ndarray, ...], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Number of polygon edges crossed by the ray from each point (x, y) towards +x."""
    counts = np.zeros(np.shape(x), dtype=np.int64)
    for poly in polygons:
        x0, y0 = poly[:, 0], poly[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        for a, b, c, d in zip(x0, y0, x1, y1):
            straddles = (b <= y) != (d <= y)
            if b != d:
                xi = a + (y - b) * (c - a) / (d - b)
                counts += straddles & (x < xi)
    return counts


def compute_even_odd_area_mm2(polygons: tuple[np.ndarray, ...]) -> float:
    """Area (mm^2) of the even-odd union of non-crossing polygons on one plane.

    Each polygon adds its area if it lies inside an even number of the others and subtracts
    it otherwise (a hole); the depth is tested with the polygon's first vertex.
    """
    total = 0.0
    for i, poly in enumerate(polygons):
        others = tuple(p for j, p in enumerate(polygons) if j != i)
        depth = int(_count_crossings(others, np.array([poly[0, 0]]), np.array([poly[0, 1]]))[0]) if others else 0
        total += compute_polygon_area_mm2(poly) * (-1.0 if depth % 2 else 1.0)
    return total


def _rasterise_plane(polygons: tuple[np.ndarray, ...], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd inside test of the sample lattice xs (columns) x ys (rows), scanline-vectorised.

    Returns a bool array (len(ys), len(xs)). ``xs`` must be increasing and uniformly spaced.
    """
    x0 = np.concatenate([p[:, 0] for p in polygons])
    y0 = np.concatenate([p[:, 1] for p in polygons])
    x1 = np.concatenate([np.roll(p[:, 0], -1) for p in polygons])
    y1 = np.concatenate([np.roll(p[:, 1], -1) for p in polygons])
    keep = y0 != y1  # horizontal edges never cross a horizontal scanline in the half-open test
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    inside = np.zeros((ys.size, xs.size), dtype=bool)
    rows = np.nonzero((ys >= min(y0.min(), y1.min())) & (ys <= max(y0.max(), y1.max())))[0] if x0.size else []
    if not len(rows):
        return inside
    yr = ys[rows][:, None]
    straddles = (y0[None, :] <= yr) != (y1[None, :] <= yr)  # half-open: vertices counted once
    xi = x0 + (yr - y0) * (x1 - x0) / (y1 - y0)
    # Column index of the first sample strictly right of each crossing; a sample is inside
    # when an odd number of crossings lie to its left.
    step = xs[1] - xs[0] if xs.size > 1 else 1.0
    col = np.ceil((xi - xs[0]) / step + 1e-12).astype(np.int64)
    col = np.clip(col, 0, xs.size)
    row_index = np.broadcast_to(np.arange(rows.size)[:, None], col.shape)
    toggles = np.zeros((rows.size, xs.size + 1), dtype=np.int64)
    np.add.at(toggles, (row_index[straddles], col[straddles]), 1)
    inside[rows] = (np.cumsum(toggles[:, :-1], axis=1) % 2).astype(bool)
    return inside


def _sub_positions(centres: np.ndarray, spacing: float, n: int) -> np.ndarray:
    """Sub-sample positions of ``n`` evenly spaced points inside each voxel, flattened per voxel."""
    offsets = ((np.arange(n) + 0.5) / n - 0.5) * spacing
    return (centres[:, None] + offsets[None, :]).ravel()


def compute_mask(roi: ROI, grid: VoxelGrid, *, supersampling: int = 4) -> np.ndarray:
    """Fractional occupancy (0..1, float64, shape grid.shape) of ``roi`` on ``grid``.

    Each voxel is sampled at supersampling^3 sub-points (in-plane lattice times sub-planes in
    z); a sub-point is inside when it is inside the even-odd union of the polygons of the
    nearest contour plane and that plane is within half the ROI's plane spacing (module
    docstring). ``weights.sum() * grid.voxel_volume_cc`` is the ROI volume within the grid, cc.
    """
    if supersampling < 1:
        raise ValueError("supersampling must be >= 1")
    weights = np.zeros(grid.shape, dtype=np.float64)
    planes = roi.planes()
    if not planes:
        return weights
    nz, ny, nx = grid.shape
    dx, dy, dz = grid.spacing_mm
    s = supersampling
    xs = _sub_positions(grid.x_mm(), dx, s)
    ys = _sub_positions(grid.y_mm(), dy, s)
    plane_z = np.array(list(planes), dtype=np.float64)
    polys = list(planes.values())
    half = roi.compute_plane_spacing_mm(default_mm=dz) / 2.0
    tolerance = 1e-6
    cache: dict[int, np.ndarray] = {}
    zs = _sub_positions(grid.z_mm(), dz, s).reshape(nz, s)
    for k in range(nz):
        for z in zs[k]:
            i = int(np.searchsorted(plane_z, z))
            candidates = [c for c in (i - 1, i) if 0 <= c < plane_z.size]
            nearest = min(candidates, key=lambda c: abs(plane_z[c] - z))
            if abs(plane_z[nearest] - z) > half + tolerance:
                continue
            if nearest not in cache:
                fine = _rasterise_plane(polys[nearest], xs, ys)
                cache[nearest] = fine.reshape(ny, s, nx, s).mean(axis=(1, 3))
            weights[k] += cache[nearest]
    weights /= s
    return weights
