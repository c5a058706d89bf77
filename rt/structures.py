"""RT Structure Sets: reading ROIs and rasterising their planar contours onto voxel grids.

Conventions (coordinates LPS, mm; volumes cc):

- A ROI's CLOSED_PLANAR contours are grouped by plane: contours whose heights (mean z) lie within
  0.02 mm of the next lower one share a plane, whose height is their mean z (to 1 nm). All polygons of a
  plane are combined with the **even-odd rule**: a point is inside when it lies inside an odd
  number of them, so a polygon drawn inside another is a hole and disjoint polygons add.
- **Slab convention between planes.** Each contour plane stands for a slab of thickness ``t``
  centred on it, ``t`` being the ROI's contour-plane spacing (the median gap between its
  planes; the grid's dz for a single-plane ROI). A point at height z takes the contour of the
  nearest plane if that plane is within ``t / 2``; otherwise it is outside. No shape
  interpolation between planes is done: this is where a point lies (masks, dose sampling).
- **Volume between planes (Cavalieri).** How much volume each plane stands for comes from its
  section area interpolated quadratically through its neighbours' areas, and at each end of
  a run of evenly spaced planes from that quadratic extrapolated to where the area vanishes,
  within one spacing (the next, uncontoured plane); an end whose area does not fall to zero
  within one spacing ends ``t / 2`` beyond its plane, as a slab. A plane's volume divided by
  its area is its *effective thickness* (:func:`compute_plane_thickness_mm`), which the ROI
  volume and DVHs use. Smooth organs and lesions (A(z) locally quadratic, as on a sphere)
  get their solid volume instead of the slab model's error at their tapering ends; prisms
  and cylinders get exactly the slab volume.
- **Interpolated sections.** :func:`compute_sections` cuts each plane's z-range into parts
  whose sections are the plane's polygons scaled about their centroid to the fitted area (and
  moved towards the neighbour's centroid): a shape interpolation, exact for spheres and
  ellipsoids, that DVHs of small ROIs sample instead of slabs.
- **Sub-voxel weights.** :func:`compute_mask` integrates each plane's polygons exactly along x
  on ``supersampling`` scanlines per voxel row, takes each voxel's exact overlap with the
  planes' slabs in z, and returns the inside fraction (0..1) per voxel.
- POINT and OPEN_PLANAR / OPEN_NONPLANAR contours are kept on the ROI but never rasterised.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from rt.decimal_strings import parse_decimal_strings
from rt.errors import DicomInputError, GeometryError, UnknownROIError
from rt.grid import MM3_PER_CC, VoxelGrid
from rt.polygons import (
    compute_covered_length_mm,
    compute_even_odd_area_mm2,
    compute_polygon_areas_mm2,
    compute_polygon_centroids_mm,
    compute_row_intervals,
    even_odd_signs,
)
from rt.raw_contours import read_raw_roi_contours

#: Contours whose heights differ by at most this (mm) from the next lower one lie on one plane: float
#: noise, or one slice's z written with two decimals and rounded either way, never splits a plane
#: (rounding heights to a key would, across a boundary). Far below any slice spacing (>= 0.5 mm).
_PLANE_TOLERANCE_MM = 0.02
#: A plane's height is its contours' mean z rounded to this many decimals (mm): the sum's float noise goes.
_Z_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Contour:
    """One contour: ContourGeometricType and its points, an (N, 3) array of (x, y, z) in mm."""

    geometric_type: str
    points_mm: npt.NDArray[np.float64] = field(repr=False)

    @property
    def z_mm(self) -> float:
        """Height of the contour's first point, mm."""
        return float(self.points_mm[0, 2])

    def to_dict(self) -> dict[str, Any]:
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
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def planar_contours(self) -> tuple[Contour, ...]:
        """The CLOSED_PLANAR contours (the ones that enclose volume)."""
        if "planar" not in self._cache:
            self._cache["planar"] = tuple(
                c for c in self.contours if c.geometric_type == "CLOSED_PLANAR" and len(c.points_mm) >= 3
            )
        return cast("tuple[Contour, ...]", self._cache["planar"])

    def planes(self) -> dict[float, tuple[npt.NDArray[np.float64], ...]]:
        """Closed polygons grouped per plane: {z_mm: ((N, 2) x/y arrays, ...)}, sorted by z (computed once per ROI)."""
        if "planes" not in self._cache:
            grouped: dict[float, tuple[npt.NDArray[np.float64], ...]] = {}
            planar = self.planar_contours
            if planar:  # each contour's mean z, all at once; runs of heights within the tolerance form a plane
                counts = np.array([len(c.points_mm) for c in planar])
                sums = np.add.reduceat(np.concatenate([c.points_mm[:, 2] for c in planar]), np.cumsum(counts) - counts)
                heights = sums / counts
                order = np.argsort(heights, kind="stable")
                ordered = heights[order]
                apart = ~(np.diff(ordered) <= _PLANE_TOLERANCE_MM)  # NaN heights: apart
                starts = np.concatenate([[0], np.nonzero(apart)[0] + 1])
                sizes = np.diff(np.append(starts, ordered.size))
                means = (np.add.reduceat(ordered, starts) / sizes).tolist()
                members = order.tolist()
                for start, size, mean in zip(starts.tolist(), sizes.tolist(), means, strict=True):
                    plane = sorted(members[start:start + size])  # in file order
                    grouped[round(mean, _Z_DECIMALS)] = tuple(planar[k].points_mm[:, :2] for k in plane)
            self._cache["planes"] = grouped
        return dict(self._cache["planes"])

    @property
    def is_empty(self) -> bool:
        """True when the ROI has no closed planar contour (nothing to rasterise)."""
        return not self.planar_contours

    def compute_plane_spacing_mm(self, default_mm: float | None = None) -> float:
        """Contour-plane spacing t, mm: the median gap between planes (``default_mm`` for one plane)."""
        if "spacing" not in self._cache:
            gaps = np.diff(np.array(list(self.planes()), dtype=np.float64))
            gaps = gaps[gaps > 1e-3]
            self._cache["spacing"] = float(np.median(gaps)) if gaps.size else None
        if self._cache["spacing"] is not None:
            return cast(float, self._cache["spacing"])
        if default_mm is None:
            raise GeometryError(f"ROI {self.name!r} has a single contour plane; its thickness is unknown")
        return float(default_mm)

    def compute_bounds_mm(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(min, max) corners (x, y, z) of the closed contours' points, mm; z widened by t / 2."""
        if self.is_empty:
            raise GeometryError(f"ROI {self.name!r} has no closed planar contour")
        if "extent" not in self._cache:
            points = np.concatenate([c.points_mm for c in self.planar_contours])
            self._cache["extent"] = points.min(axis=0), points.max(axis=0)
        lo, hi = (corner.copy() for corner in self._cache["extent"])
        half = self.compute_plane_spacing_mm(default_mm=0.0) / 2.0
        lo[2] -= half
        hi[2] += half
        return lo, hi

    def compute_plane_areas_mm2(self) -> npt.NDArray[np.float64]:
        """Even-odd area of each plane of :meth:`planes`, mm^2, in z order (computed once per ROI)."""
        if "areas" not in self._cache:
            planes = list(self.planes().values())
            areas = compute_polygon_areas_mm2([polygon for plane in planes for polygon in plane])
            starts = np.cumsum([0] + [len(plane) for plane in planes])
            self._cache["areas"] = np.array([
                areas[first] if len(plane) == 1 else compute_even_odd_area_mm2(plane, areas[first:first + len(plane)])
                for plane, first in zip(planes, starts[:-1].tolist(), strict=True)
            ])
        return cast("npt.NDArray[np.float64]", self._cache["areas"]).copy()

    def compute_plane_thickness_mm(self, default_mm: float | None = None) -> npt.NDArray[np.float64]:
        """Effective thickness of each plane (volume it stands for / its area), mm (module docstring)."""
        z = np.array(list(self.planes()), dtype=np.float64)
        return compute_plane_thickness_mm(z, self.compute_plane_areas_mm2(),
                                          self.compute_plane_spacing_mm(default_mm=default_mm))

    def compute_plane_centroids_mm(self) -> npt.NDArray[np.float64]:
        """Area centroid (x, y) of each plane's even-odd region, mm, shape (planes, 2), in z order."""
        rows = []
        for plane in self.planes().values():
            signed = even_odd_signs(plane) * compute_polygon_areas_mm2(list(plane))
            centroids = compute_polygon_centroids_mm(list(plane))
            total = signed.sum()
            rows.append(signed @ centroids / total if total > 0.0 else centroids.mean(axis=0))
        return np.array(rows).reshape(-1, 2)

    def compute_sections(self, per_plane: int, default_mm: float | None = None) -> SectionStack:
        """The ROI as ``per_plane`` interpolated sections per contour plane (:func:`compute_sections`)."""
        z = np.array(list(self.planes()), dtype=np.float64)
        return compute_sections(list(self.planes().values()), z, self.compute_plane_areas_mm2(),
                                self.compute_plane_centroids_mm(),
                                self.compute_plane_spacing_mm(default_mm=default_mm), per_plane)

    def compute_volume_cc(self) -> float:
        """Volume of the contour stack, cc: each plane's even-odd area times its effective thickness."""
        if self.is_empty:
            return 0.0
        return float(self.compute_plane_areas_mm2() @ self.compute_plane_thickness_mm()) / MM3_PER_CC

    def to_dict(self) -> dict[str, Any]:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "label": self.label,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "rois": [r.to_dict() for r in self.rois],
        }


#: (3006,0050) ContourData.
_CONTOUR_DATA = 0x30060050


def _raw_contour_text(item: Dataset) -> bytes | None:
    """ContourData's raw DS bytes, stripped, while pydicom has not converted them yet (else None)."""
    raw = item.get_item(_CONTOUR_DATA) if _CONTOUR_DATA in item else None
    if raw is None or not isinstance(raw.value, bytes):
        return None
    return raw.value.strip(b" \x00")


def _contour_values(item: Dataset) -> npt.NDArray[np.float64] | None:
    """ContourData as float64, from the raw DS bytes when pydicom has not converted them yet."""
    text = _raw_contour_text(item)
    if text is not None:
        if not text:
            return None
        try:
            return np.array(text.decode("ascii", errors="replace").split("\\"), dtype=np.float64)
        except ValueError:
            pass  # let pydicom report or repair malformed values
    data = item.get("ContourData")
    if not data:
        return None
    return np.asarray([float(v) for v in data], dtype=np.float64)


def _read_contours(items: list[Dataset]) -> list[Contour | None]:
    """The contours of ContourSequence items (None for an item without data), all raw values parsed at once.

    The raw ContourData strings of every item are joined and parsed in one pass
    (:mod:`rt.decimal_strings`); items in another form take the per-item path.
    """
    texts = [_raw_contour_text(item) for item in items]
    parsed: list[npt.NDArray[np.float64] | None] = [None] * len(items)
    batch = [(k, text) for k, text in enumerate(texts) if text]
    # strict=False: _parse_all gives None ([] here) when any text is not plain numbers.
    for (k, _), part in zip(batch, _parse_all([text for _, text in batch]) or [], strict=False):
        parsed[k] = part
    contours: list[Contour | None] = []
    for item, values in zip(items, parsed, strict=True):
        if values is None:
            values = _contour_values(item)
        geometric_type = str(item.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
        contours.append(None if values is None else _make_contour(geometric_type, values))
    return contours


_ROIContours = dict[int, tuple["tuple[int, ...] | None", tuple[Contour, ...]]]


def _read_roi_contours(ds: Dataset) -> _ROIContours:
    """{ReferencedROINumber: (colour or None, contours)} from ROIContourSequence.

    The encoded sequence is walked directly and every ContourData parsed in one pass
    (:mod:`rt.raw_contours`, :mod:`rt.decimal_strings`) when it is in the usual form; otherwise
    pydicom reads it item by item.
    """
    raw = read_raw_roi_contours(ds)
    if raw is not None:
        parsed = _parse_all([c.data for roi in raw.values() for c in roi.contours if c.data])
        if parsed is not None:
            parts = iter(parsed)
            return {
                number: (roi.colour,
                         tuple(_make_contour(c.geometric_type, next(parts)) for c in roi.contours if c.data))
                for number, roi in raw.items()
            }
    result: _ROIContours = {}
    for item in ds.get("ROIContourSequence", []):
        if "ReferencedROINumber" in item:
            colour = tuple(int(v) for v in item.ROIDisplayColor)[:3] if item.get("ROIDisplayColor") else None
            contours = tuple(c for c in _read_contours(list(item.get("ContourSequence", []))) if c is not None)
            result[int(item.ReferencedROINumber)] = (colour, contours)
    return result


def _parse_all(texts: list[bytes]) -> list[npt.NDArray[np.float64]] | None:
    """The values of each raw ContourData text, all parsed in one pass; None if any is not a plain number."""
    if not texts:
        return []
    values = parse_decimal_strings(b"\\".join(texts))
    if values is None:
        return None
    return np.split(values, np.cumsum([text.count(b"\\") + 1 for text in texts])[:-1])


def _make_contour(geometric_type: str, values: npt.NDArray[np.float64]) -> Contour:
    if values.size % 3:
        raise DicomInputError("ContourData", f"has {values.size} values, not a multiple of 3")
    return Contour(geometric_type, values.reshape(-1, 3))


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
    roi_contours = _read_roi_contours(ds)
    frames = ds.get("ReferencedFrameOfReferenceSequence", [])
    default_for = str(frames[0].get("FrameOfReferenceUID", "")) if frames else ""

    rois = []
    for roi_item in ds.StructureSetROISequence:
        if "ROINumber" not in roi_item:
            raise DicomInputError("ROINumber", "missing in a StructureSetROISequence item")
        number = int(roi_item.ROINumber)
        colour, contours = roi_contours.get(number, (None, ()))
        rois.append(ROI(  # colour (R, G, B): a malformed ROIDisplayColor with fewer values is kept as read
            number=number, name=str(roi_item.get("ROIName", "")), interpreted_type=types.get(number, ""),
            colour=cast("tuple[int, int, int] | None", colour),
            frame_of_reference_uid=str(roi_item.get("ReferencedFrameOfReferenceUID", default_for) or default_for),
            contours=contours,
        ))
    return StructureSet(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        label=str(ds.get("StructureSetLabel", "")),
        frame_of_reference_uid=default_for,
        rois=tuple(rois),
    )


def compute_slab_bounds_mm(
    plane_z_mm: npt.NDArray[np.floating[Any]], half_thickness_mm: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(below, above) z (mm) of each plane's slab: [z - t/2, z + t/2] cut at the midpoints to its neighbours."""
    z = np.asarray(plane_z_mm, dtype=np.float64)
    mids = (z[1:] + z[:-1]) / 2.0
    below = np.maximum(z - half_thickness_mm, np.concatenate([[-np.inf], mids]))
    above = np.minimum(z + half_thickness_mm, np.concatenate([mids, [np.inf]]))
    return below, above


#: Planes whose gap is within this fraction of the ROI's plane spacing form one evenly spaced run.
_EVEN_GAP_TOLERANCE = 0.01
#: An effective thickness is kept within these multiples of the plane spacing, so that a plane
#: of near-zero area between large neighbours (an irregular contour) cannot carry their volume.
#: An end plane whose fitted area closes within one spacing (a cap) has no upper bound: near a
#: pole its area tends to zero while the cap and the half gap inwards keep their volume.
_THICKNESS_BOUNDS = (0.5, 1.5)


def compute_plane_thickness_mm(
    plane_z_mm: npt.NDArray[np.floating[Any]], area_mm2: npt.NDArray[np.floating[Any]], spacing_mm: float
) -> npt.NDArray[np.float64]:
    """Effective thickness (mm) of each contour plane: the volume it stands for divided by its area.

    Planes are split into runs of evenly spaced planes (gap = ``spacing_mm`` h within 1 %). In a
    run of three or more, the section area A(z) about each plane is the quadratic through it and
    its two neighbours (the two inward ones at an end), and the plane stands for the integral
    of that quadratic over [z - h/2, z + h/2] (a negative integral counts as zero); beyond each
    end plane the quadratic is integrated outwards to its first zero if that lies within h (the
    next plane holds no contour, so the structure ends before it; :data:`_TANGENT_SLACK` allows
    for a structure tangent to that plane), else the plane's own area over h/2, as a slab. A
    sphere's A(z) is quadratic, so its volume comes out exact; a prism's or cylinder's is the
    slab volume. Other planes (shorter runs, uneven gaps) keep their slab thickness
    (:func:`compute_slab_bounds_mm`). Results stay within :data:`_THICKNESS_BOUNDS` x h, but for a
    capped end plane, which may lie arbitrarily close to the structure's pole.
    """
    area = np.asarray(area_mm2, dtype=np.float64)
    fit = _fit_section_areas(np.asarray(plane_z_mm, dtype=np.float64), area, float(spacing_mm))
    return fit.thickness_mm(area)


@dataclass(frozen=True, slots=True)
class _SectionAreaFit:
    """Per plane, the section area A(t) at t = z - z_plane (mm) over the z-range [lo - flat_lo, hi + flat_hi]
    it stands for: area + b t + c t^2 on [lo, hi], the plane's own area on the flat ends beyond."""

    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    flat_lo: npt.NDArray[np.float64]
    flat_hi: npt.NDArray[np.float64]
    b: npt.NDArray[np.float64]
    c: npt.NDArray[np.float64]
    spacing_mm: float
    capped: npt.NDArray[np.bool_]  # end planes whose fitted area reaches zero within one spacing outwards

    def integrate_mm3(
        self, area: npt.NDArray[np.float64], t0: npt.NDArray[np.float64], t1: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Integral of each plane's A(t) from t0 to t1 (within its range), mm^3; t0, t1 are (planes,) or (planes, k)."""
        extra = (1,) * (np.ndim(t0) - 1)
        area, lo, hi, b, c = (np.reshape(v, np.shape(v) + extra) for v in (area, self.lo, self.hi, self.b, self.c))
        flat_lo, flat_hi = (np.reshape(v, np.shape(v) + extra) for v in (self.flat_lo, self.flat_hi))

        def antiderivative(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return area * t + b * t * t / 2.0 + c * t ** 3 / 3.0

        q0, q1 = np.maximum(t0, lo), np.minimum(t1, hi)
        quadratic = np.where(q1 > q0, antiderivative(q1) - antiderivative(q0), 0.0)
        below = np.clip(np.minimum(t1, lo) - np.maximum(t0, lo - flat_lo), 0.0, None)
        above = np.clip(np.minimum(t1, hi + flat_hi) - np.maximum(t0, hi), 0.0, None)
        integral: npt.NDArray[np.float64] = quadratic + area * (below + above)
        return integral

    def thickness_mm(self, area: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Each plane's volume over its area, mm (fitted planes kept within :data:`_THICKNESS_BOUNDS` x h,
        capped end planes only above the lower bound)."""
        h = self.spacing_mm
        volume = np.maximum(self.integrate_mm3(area, self.lo - self.flat_lo, self.hi + self.flat_hi), 0.0)
        fitted = (self.b != 0.0) | (self.c != 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            thickness = np.where(fitted & (area > 0.0), volume / area, self.hi - self.lo + self.flat_lo + self.flat_hi)
        upper = np.where(self.capped, np.inf, _THICKNESS_BOUNDS[1] * h)
        return np.where(fitted, np.clip(thickness, _THICKNESS_BOUNDS[0] * h, upper), thickness)


def _fit_section_areas(z: npt.NDArray[np.float64], area: npt.NDArray[np.float64], h: float) -> _SectionAreaFit:
    """The quadratic section-area model of :func:`compute_plane_thickness_mm`, plane by plane."""
    below, above = compute_slab_bounds_mm(z, h / 2.0)
    lo, hi = below - z, above - z
    flat_lo, flat_hi = np.zeros(z.size), np.zeros(z.size)
    b, c = np.zeros(z.size), np.zeros(z.size)
    capped = np.zeros(z.size, dtype=bool)
    if z.size >= 3 and h > 0.0:
        even = np.abs(np.diff(z) - h) <= _EVEN_GAP_TOLERANCE * h
        breaks = np.concatenate([[0], np.nonzero(~even)[0] + 1, [z.size]])
        for first, stop in itertools.pairwise(breaks.tolist()):
            if stop - first < 3:
                continue
            a = area[first:stop]
            inner = slice(first + 1, stop - 1)
            b[inner] = (a[2:] - a[:-2]) / (2.0 * h)  # through (-h, a[i-1]), (0, a[i]), (h, a[i+1])
            c[inner] = (a[2:] - 2.0 * a[1:-1] + a[:-2]) / (2.0 * h * h)
            lo[first:stop], hi[first:stop] = -h / 2.0, h / 2.0
            # Ends: through the end plane and its two inward neighbours, s = outward distance.
            for end, step in ((first, -1), (stop - 1, 1)):
                a_end, a_next, a_after = area[end], area[end - step], area[end - 2 * step]
                c_out = (a_after - 2.0 * a_next + a_end) / (2.0 * h * h)
                b_out = (a_end - a_next) / h + c_out * h
                b[end], c[end] = b_out * step, c_out  # in t = z - z_end
                cap = _first_zero_mm(a_end, b_out, c_out, h)
                capped[end] = cap is not None
                if step > 0:
                    hi[end], flat_hi[end] = (cap, 0.0) if cap is not None else (0.0, h / 2.0)
                else:
                    lo[end], flat_lo[end] = (-cap, 0.0) if cap is not None else (0.0, h / 2.0)
    return _SectionAreaFit(lo, hi, flat_lo, flat_hi, b, c, h, capped)


@dataclass(frozen=True, slots=True)
class SectionStack:
    """A ROI as sections: each with its polygons, its height, the z-range it samples dose for
    (``below_mm`` + ``thickness_mm``) and its effective thickness (volume it stands for / its area), mm."""

    polygons: tuple[tuple[npt.NDArray[np.float64], ...], ...]
    z_mm: npt.NDArray[np.float64]
    below_mm: npt.NDArray[np.float64]
    thickness_mm: npt.NDArray[np.float64]
    weight_mm: npt.NDArray[np.float64]


def compute_sections(
    planes: list[tuple[npt.NDArray[np.float64], ...]],
    plane_z_mm: npt.NDArray[np.floating[Any]],
    area_mm2: npt.NDArray[np.floating[Any]],
    centroid_mm: npt.NDArray[np.float64],
    spacing_mm: float,
    per_plane: int,
) -> SectionStack:
    """Shape-interpolated sections between contour planes: ``per_plane`` per plane.

    Each plane's z-range (its slab, or the Cavalieri range of :func:`compute_plane_thickness_mm`
    with its end cap) is cut into ``per_plane`` equal parts. The section at the middle of each
    part is the plane's polygons scaled about their centroid to the fitted section area there
    and moved along the line between the centroids of the plane and its neighbour on that side
    (not beyond an end plane), so a sphere's or ellipsoid's sections are exact. Each part
    stands for its integral of the fitted area (the parts of a plane sum to the plane's
    volume). With ``per_plane`` 1 the sections are the planes themselves on their slabs.
    """
    z = np.asarray(plane_z_mm, dtype=np.float64)
    area = np.asarray(area_mm2, dtype=np.float64)
    h = float(spacing_mm)
    fit = _fit_section_areas(z, area, h)
    plane_thickness = fit.thickness_mm(area)
    if per_plane <= 1:
        below, above = compute_slab_bounds_mm(z, h / 2.0)
        return SectionStack(tuple(planes), z, below, above - below, plane_thickness)
    plane_volume = plane_thickness * area
    start, stop = fit.lo - fit.flat_lo, fit.hi + fit.flat_hi
    edges = start[:, None] + (stop - start)[:, None] * np.linspace(0.0, 1.0, per_plane + 1)  # (planes, k + 1)
    t0, t1 = edges[:, :-1], edges[:, 1:]
    mid = (t0 + t1) / 2.0
    volume = np.maximum(fit.integrate_mm3(area, t0, t1), 0.0)
    totals = volume.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume = np.where(totals > 0.0, volume * (plane_volume[:, None] / totals), 0.0)
    in_quadratic = (mid >= fit.lo[:, None]) & (mid <= fit.hi[:, None])
    mid_area = np.where(in_quadratic, area[:, None] + fit.b[:, None] * mid + fit.c[:, None] * mid * mid, area[:, None])
    adjacent_up = np.append(np.abs(np.diff(z) - h) <= _EVEN_GAP_TOLERANCE * h, False)
    adjacent_down = np.insert(np.abs(np.diff(z) - h) <= _EVEN_GAP_TOLERANCE * h, 0, False)
    polygons, zs, belows, thicknesses, weights = [], [], [], [], []
    for i, plane in enumerate(planes):
        for k in range(per_plane):
            a_mid, m = float(mid_area[i, k]), float(mid[i, k])
            if a_mid <= 0.0 or area[i] <= 0.0 or volume[i, k] <= 0.0:
                continue
            centre = centroid_mm[i]
            if m > 0.0 and adjacent_up[i]:
                centre = centre + (m / h) * (centroid_mm[i + 1] - centroid_mm[i])
            elif m < 0.0 and adjacent_down[i]:
                centre = centre + (-m / h) * (centroid_mm[i - 1] - centroid_mm[i])
            scale = np.sqrt(a_mid / area[i])
            polygons.append(tuple(centre + scale * (p[:, :2] - centroid_mm[i]) for p in plane))
            zs.append(z[i] + m)
            belows.append(z[i] + t0[i, k])
            thicknesses.append(t1[i, k] - t0[i, k])
            weights.append(volume[i, k] / a_mid)
    return SectionStack(tuple(polygons), np.array(zs), np.array(belows), np.array(thicknesses), np.array(weights))


#: A fitted section area reaching zero this fraction beyond the next plane still closes the cap there:
#: a structure tangent to the next plane (no contour on it) ends at it, whatever the area's rounding.
_TANGENT_SLACK = 0.05


def _first_zero_mm(a: float, b: float, c: float, h: float) -> float | None:
    """Where a + b s + c s^2 first reaches zero for s in (0, h], mm (None if it does not)."""
    if c != 0.0:
        disc = b * b - 4.0 * c * a
        roots = [] if disc < 0.0 else [(-b - np.sqrt(disc)) / (2.0 * c), (-b + np.sqrt(disc)) / (2.0 * c)]
    else:
        roots = [-a / b] if b != 0.0 else []
    ends = [r for r in roots if 0.0 < r <= h * (1.0 + _TANGENT_SLACK)]
    return min(float(min(ends)), h) if ends else None


@dataclass(frozen=True, slots=True)
class StackIntervals:
    """Even-odd inside intervals of a stack of planes on shared horizontal scanlines (x in mm).

    Interval n lies on plane ``plane[n]``, scanline ``row[n]``, from ``start[n]`` to ``end[n]``;
    intervals are sorted by (plane, row, x) and never overlap within a row.
    """

    plane: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]
    start: npt.NDArray[np.float64]
    end: npt.NDArray[np.float64]

    def to_dense(self, plane_count: int, row_count: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(start, end) as (plane_count * row_count, K) arrays, row-major by (plane, row); unused slots empty (0, 0)."""
        key = self.plane * row_count + self.row
        if key.size == 0:
            return np.zeros((plane_count * row_count, 0)), np.zeros((plane_count * row_count, 0))
        first = np.concatenate([[True], key[1:] != key[:-1]])
        group_start = np.nonzero(first)[0]
        slot = np.arange(key.size) - group_start[np.cumsum(first) - 1]
        start = np.zeros((plane_count * row_count, int(slot.max()) + 1))
        end = np.zeros_like(start)
        start[key, slot], end[key, slot] = self.start, self.end
        return start, end


def compute_stack_intervals(
    planes: list[tuple[npt.NDArray[np.float64], ...]], ys: npt.NDArray[np.floating[Any]]
) -> StackIntervals:
    """Even-odd inside intervals of each plane's polygons on the scanlines y = ys (mm, increasing), all planes at once.

    Crossings use the half-open rule (an edge spans min(y0, y1) <= y < max(y0, y1)), so each
    closed polygon crosses a scanline an even number of times and, sorted by x, consecutive
    crossings pair into inside intervals (the even-odd rule across all polygons of a plane).
    """
    ys = np.asarray(ys, dtype=np.float64)
    polygons = [p for polys in planes for p in polys]
    if not polygons or ys.size == 0:
        empty = np.zeros(0)
        return StackIntervals(empty.astype(np.int64), empty.astype(np.int64), empty, empty)
    counts = np.array([len(p) for p in polygons])
    points = np.concatenate(polygons)[:, :2]
    following = np.arange(1, points.shape[0] + 1)
    ends = np.cumsum(counts)
    following[ends - 1] = ends - counts  # each polygon closes on its first vertex
    plane_of_polygon = np.repeat(np.arange(len(planes)), [len(polys) for polys in planes])
    plane_of_edge = np.repeat(plane_of_polygon, counts)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = x0[following], y0[following]
    keep = y0 != y1  # horizontal edges never cross a scanline under the half-open rule
    x0, y0, x1, y1, plane_of_edge = x0[keep], y0[keep], x1[keep], y1[keep], plane_of_edge[keep]
    first = np.searchsorted(ys, np.minimum(y0, y1), side="left")
    crossed = np.searchsorted(ys, np.maximum(y0, y1), side="left") - first
    edge = np.repeat(np.arange(x0.size), crossed)
    offset = np.cumsum(crossed) - crossed
    row = first[edge] + np.arange(edge.size) - offset[edge]
    x = x0[edge] + (ys[row] - y0[edge]) * ((x1 - x0) / (y1 - y0))[edge]
    plane = plane_of_edge[edge]
    if x.size == 0:  # no polygon reaches a scanline (all between two, or without height)
        empty = np.zeros(0)
        return StackIntervals(empty.astype(np.int64), empty.astype(np.int64), empty, empty)
    # One float key sorts by (plane, row) first and x within a scanline (x - x_min < span).
    x_min = float(x.min())
    span = float(x.max()) - x_min + 1.0
    order = np.argsort((plane * ys.size + row) * span + (x - x_min))
    x, row, plane = x[order], row[order], plane[order]
    return StackIntervals(plane[0::2], row[0::2], x[0::2], x[1::2])


def compute_slab_overlaps_mm(
    plane_z_mm: npt.NDArray[np.floating[Any]],
    half_thickness_mm: float,
    lo_mm: npt.NDArray[np.floating[Any]],
    hi_mm: npt.NDArray[np.floating[Any]],
) -> npt.NDArray[np.float64]:
    """Length (mm) of each interval [lo, hi] inside each plane's slab, shape (len(lo), len(planes)).

    A plane's slab is the part of [z - t/2, z + t/2] nearer to it than to its neighbours
    (module docstring: the nearest plane within t/2 owns a point).
    """
    below, above = compute_slab_bounds_mm(plane_z_mm, half_thickness_mm)
    lo, hi = np.asarray(lo_mm, dtype=np.float64)[:, None], np.asarray(hi_mm, dtype=np.float64)[:, None]
    overlaps: npt.NDArray[np.float64] = np.clip(np.minimum(hi, above) - np.maximum(lo, below), 0.0, None)
    return overlaps


def compute_mask(roi: ROI, grid: VoxelGrid, *, supersampling: int = 8) -> npt.NDArray[np.float64]:
    """Fractional occupancy (0..1, float64, shape grid.shape) of ``roi`` on ``grid``.

    Per contour plane the even-odd polygon union is integrated exactly along x on
    ``supersampling`` lines per voxel row (midpoint rule in y); in z each voxel takes the exact
    length of its overlap with each plane's slab (module docstring). ``weights.sum() *
    grid.voxel_volume_cc`` is the ROI volume within the grid, cc. Only the ROI's bounding box is
    computed.
    """
    if supersampling < 1:
        raise ValueError("supersampling must be >= 1")
    weights = np.zeros(grid.shape, dtype=np.float64)
    planes = roi.planes()
    if not planes:
        return weights
    dx, dy, dz = grid.spacing_mm
    s = supersampling
    x, y, z = grid.x_mm(), grid.y_mm(), grid.z_mm()
    points = np.concatenate([p for polys in planes.values() for p in polys])
    lo, hi = points.min(axis=0), points.max(axis=0)
    i0, i1 = np.searchsorted(x + dx / 2.0, lo[0]), np.searchsorted(x - dx / 2.0, hi[0])
    j0, j1 = np.searchsorted(y + dy / 2.0, lo[1]), np.searchsorted(y - dy / 2.0, hi[1])
    if i0 >= i1 or j0 >= j1:
        return weights
    plane_z = np.array(list(planes), dtype=np.float64)
    half = roi.compute_plane_spacing_mm(default_mm=dz) / 2.0
    overlaps = compute_slab_overlaps_mm(plane_z, half, z - dz / 2.0, z + dz / 2.0) / dz  # (nz, planes)
    rows = (y[j0:j1, None] + ((np.arange(s) + 0.5) / s - 0.5) * dy).ravel()
    x_edges = np.concatenate([x[i0:i1] - dx / 2.0, [x[i1 - 1] + dx / 2.0]])
    for p, polys in enumerate(planes.values()):
        slices = np.nonzero(overlaps[:, p] > 0.0)[0]
        if not slices.size:
            continue
        start, end = compute_row_intervals(polys, rows)
        lengths = np.diff(compute_covered_length_mm(start, end, x_edges), axis=1)
        cover = lengths.reshape(j1 - j0, s, i1 - i0).sum(axis=1) / (s * dx)
        weights[slices, j0:j1, i0:i1] += overlaps[slices, p, None, None] * cover
    np.clip(weights, 0.0, 1.0, out=weights)
    return weights
