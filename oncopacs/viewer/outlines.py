"""ROI outlines on a plane, drawn from the RT Structure Set's contour points (never from voxel masks).

- **Axial**: the polygons of the contour plane nearest to the slice, within half the ROI's plane spacing (the
  slab convention of :mod:`rt.structures`), as the structure set holds them.
- **Coronal and sagittal**: the intersections of the contour stack with the plane. Each contour plane meets
  the line y = y0 (coronal) or x = x0 (sagittal) in exact even-odd intervals
  (:func:`rt.structures.compute_stack_intervals`); across planes the outline is the zero line of the signed
  distance to those interval ends, limited to ± the plane spacing t, with one empty plane beyond each end of
  the stack and in every gap (:func:`~oncopacs.viewer.isolines.compute_isolines`). On a contour plane the
  outline passes exactly through the crossings; between planes it runs straight from one to the next; past
  the last plane it closes at most t / 2 beyond it, as the slab convention does.

Outlines are (N, 2) arrays of display coordinates in mm: (x, y) on axial planes, (x, -z) on coronal and
(y, -z) on sagittal ones (rows run downwards, superior at the top).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from oncopacs.viewer.isolines import Polyline, compute_isolines
from rt.structures import ROI, compute_stack_intervals

#: At most this many samples along the plane's horizontal axis when tracing a coronal or sagittal outline.
MAX_SAMPLES = 768
_GAP_FACTOR = 1.5  # planes further apart than this many spacings leave a gap in the stack


def compute_roi_outlines(roi: ROI, plane: str, position_mm: float, *, default_spacing_mm: float,
                         sample_mm: float = 0.5) -> tuple[Polyline, ...]:
    """The ROI's outline on ``plane`` at ``position_mm`` (z for axial, y for coronal, x for sagittal)."""
    if roi.is_empty:
        return ()
    planes = roi.planes()
    heights = np.array(list(planes), dtype=np.float64)
    spacing = roi.compute_plane_spacing_mm(default_mm=default_spacing_mm)
    if plane == "axial":
        nearest = int(np.argmin(np.abs(heights - position_mm)))
        if abs(heights[nearest] - position_mm) > spacing / 2.0 + 1e-6:
            return ()
        closed: list[Polyline] = [np.vstack([p[:, :2], p[:1, :2]]).round(2) for p in planes[float(heights[nearest])]]
        return tuple(closed)
    if plane not in ("coronal", "sagittal"):
        raise ValueError(f"unknown plane {plane!r} (axial, coronal or sagittal)")
    polygons = list(planes.values())
    if plane == "sagittal":  # scan along y at x = x0: swap the axes
        polygons = [tuple(p[:, 1::-1] for p in polys) for polys in polygons]
    intervals = compute_stack_intervals(polygons, np.array([position_mm]))
    if intervals.start.size == 0:
        return ()
    start, end = intervals.to_dense(len(polygons), 1)
    lo, hi = float(intervals.start.min()), float(intervals.end.max())
    step = max(sample_mm, (hi - lo + 4.0 * spacing) / MAX_SAMPLES)
    samples = np.arange(lo - 2.0 * step, hi + 2.0 * step + step / 2.0, step)
    distance = _signed_distance(start, end, samples, spacing)
    rows_z, field = _with_gaps(heights, distance, spacing)
    lines = compute_isolines(field, rows_z, samples, 0.0)
    return tuple(np.column_stack([line[:, 0], -line[:, 1]]) for line in lines)


def _signed_distance(start: npt.NDArray[np.float64], end: npt.NDArray[np.float64], samples: npt.NDArray[np.float64],
                     limit: float) -> npt.NDArray[np.float64]:
    """(planes, samples): distance to the nearest interval end, positive inside, within ± ``limit``."""
    used = end > start
    u = samples[None, :, None]
    inside = ((u >= start[:, None, :]) & (u <= end[:, None, :]) & used[:, None, :]).any(axis=2)
    ends = np.concatenate([np.where(used, start, np.inf), np.where(used, end, np.inf)], axis=1)
    nearest = np.abs(u - ends[:, None, :]).min(axis=2) if ends.shape[1] else np.full((start.shape[0], samples.size),
                                                                                       np.inf)
    return np.clip(np.where(inside, nearest, -nearest), -limit, limit)


def _with_gaps(heights: npt.NDArray[np.float64], distance: npt.NDArray[np.float64],
               spacing: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Rows of the stack (z increasing) with an empty (outside) row beyond each end and in each gap."""
    outside = np.full(distance.shape[1], -spacing)
    rows_z: list[float] = [float(heights[0] - spacing)]
    rows: list[npt.NDArray[np.float64]] = [outside]
    for n, z in enumerate(heights.tolist()):
        gap = z - float(heights[n - 1]) if n else 0.0
        if gap > 2.0 * spacing:  # empty planes one spacing beyond each side of the gap
            rows_z.extend((float(heights[n - 1]) + spacing, z - spacing))
            rows.extend((outside, outside))
        elif gap > _GAP_FACTOR * spacing:
            rows_z.append(z - gap / 2.0)
            rows.append(outside)
        rows_z.append(z)
        rows.append(distance[n])
    rows_z.append(float(heights[-1] + spacing))
    rows.append(outside)
    return np.array(rows_z), np.vstack(rows)


__all__ = ["MAX_SAMPLES", "compute_roi_outlines"]
