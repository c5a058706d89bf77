"""Planar polygon geometry of contours (mm): areas, the even-odd rule, centroids and scanline intervals.

Polygons are (N, 2+) arrays of x/y(/z) vertices in mm, the last vertex closing onto the first. Several polygons of
one plane combine by the **even-odd rule**: a point is inside when it lies inside an odd number of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def compute_polygon_areas_mm2(polygons: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """Unsigned area (mm^2) of each simple polygon, given as (N, 2+) x/y(/z) vertices: one shoelace pass over all."""
    if not polygons:
        return np.zeros(0)
    counts = np.array([len(p) for p in polygons])
    starts = np.cumsum(counts) - counts
    xy = np.concatenate([p[:, :2] for p in polygons])
    following = np.arange(xy.shape[0]) + 1
    following[starts + counts - 1] = starts  # each polygon's last vertex closes onto its first
    cross = xy[:, 0] * xy[following, 1] - xy[:, 1] * xy[following, 0]
    return np.abs(np.add.reduceat(cross, starts)) / 2.0


def _count_crossings(
    polygons: tuple[npt.NDArray[np.float64], ...], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Number of polygon edges crossed by the ray from each point (x, y) towards +x."""
    count = np.zeros(x.size, dtype=np.int64)
    for poly in polygons:
        x0, y0 = poly[:, 0, None], poly[:, 1, None]
        x1, y1 = np.roll(x0, -1, axis=0), np.roll(y0, -1, axis=0)
        straddles = (y0 <= y) != (y1 <= y)  # never true for a horizontal edge
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        count += np.count_nonzero(straddles & (x < crossing_x), axis=0)
    return count


def compute_even_odd_area_mm2(
    polygons: tuple[npt.NDArray[np.float64], ...], areas_mm2: npt.NDArray[np.float64] | None = None
) -> float:
    """Area (mm^2) of the even-odd union of non-crossing polygons on one plane.

    Each polygon adds its area (``areas_mm2`` if already known) if it lies inside an even
    number of the others and subtracts it otherwise (a hole, :func:`even_odd_signs`).
    """
    areas = compute_polygon_areas_mm2(list(polygons)) if areas_mm2 is None else areas_mm2
    return float(even_odd_signs(polygons) @ areas)


#: Vertices of each polygon (spread along it, an odd number) that vote on whether it lies inside the others.
_SIGN_PROBES = 7


def even_odd_signs(polygons: tuple[npt.NDArray[np.float64], ...]) -> npt.NDArray[np.float64]:
    """+1 for each polygon inside an even number of the others, -1 (a hole) otherwise.

    Tested at up to :data:`_SIGN_PROBES` of its vertices, the majority deciding: one vertex alone
    misjudges a polygon that touches another there (a hole sharing a vertex with its outline).
    """
    signs = np.ones(len(polygons))
    if len(polygons) > 1:
        for i, poly in enumerate(polygons):
            others = tuple(p for j, p in enumerate(polygons) if j != i)
            count = min(len(poly), _SIGN_PROBES)
            probes = poly[np.linspace(0, len(poly) - 1, count - (1 - count % 2)).astype(np.int64)]
            inside = _count_crossings(others, probes[:, 0], probes[:, 1]) % 2
            if 2 * int(inside.sum()) > inside.size:
                signs[i] = -1.0
    return signs


def compute_polygon_centroids_mm(polygons: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """Area centroid (x, y) of each simple polygon, mm, shape (len(polygons), 2) (shoelace moments)."""
    centroids = np.empty((len(polygons), 2))
    for k, p in enumerate(polygons):
        x, y = p[:, 0], p[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        twice_area = cross.sum()
        if twice_area == 0.0:
            centroids[k] = x.mean(), y.mean()
        else:
            centroids[k] = ((x + x1) @ cross, (y + y1) @ cross)
            centroids[k] /= 3.0 * twice_area
    return centroids


def _edges(
    polygons: tuple[npt.NDArray[np.float64], ...],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(x0, y0, x1, y1) of every non-horizontal edge of the polygons, mm."""
    closed = [np.concatenate([p[:, :2], p[:1, :2]]) for p in polygons]
    start = np.concatenate([c[:-1] for c in closed]) if len(closed) > 1 else closed[0][:-1]
    end = np.concatenate([c[1:] for c in closed]) if len(closed) > 1 else closed[0][1:]
    keep = start[:, 1] != end[:, 1]  # horizontal edges never cross a horizontal scanline in the half-open test
    return start[keep, 0], start[keep, 1], end[keep, 0], end[keep, 1]


def compute_row_intervals(
    polygons: tuple[npt.NDArray[np.float64], ...], ys: npt.NDArray[np.floating[Any]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Even-odd inside intervals of the polygons along the horizontal lines y = ys (mm), scanline-vectorised.

    Returns (start, end), two (len(ys), K) arrays of x (mm): row r is inside on
    [start[r, k], end[r, k]] for each k; unused slots are empty (start == end == 0). Crossings
    use the half-open rule (an edge spans y0 <= y < y1), so each vertex is counted once.
    """
    x0, y0, x1, y1 = _edges(polygons)
    ys = np.asarray(ys, dtype=np.float64)
    if x0.size == 0 or ys.size == 0:
        return np.zeros((ys.size, 0)), np.zeros((ys.size, 0))
    start = np.zeros((ys.size, 0))
    rows = np.nonzero((ys >= min(y0.min(), y1.min())) & (ys < max(y0.max(), y1.max())))[0]
    if rows.size < ys.size:  # only scanlines within the polygons' y range can cross an edge
        if rows.size == 0:
            return start, start.copy()
        inner_start, inner_end = compute_row_intervals(polygons, ys[rows])
        full_start = np.zeros((ys.size, inner_start.shape[1]))
        full_end = np.zeros((ys.size, inner_start.shape[1]))
        full_start[rows], full_end[rows] = inner_start, inner_end
        return full_start, full_end
    yr = ys[:, None]
    straddles = (y0 <= yr) != (y1 <= yr)
    with np.errstate(invalid="ignore"):
        xi = np.where(straddles, x0 + (yr - y0) * ((x1 - x0) / (y1 - y0)), np.inf)
    counts = straddles.sum(axis=1)
    k = int(counts.max()) // 2
    if k == 0:
        return np.zeros((ys.size, 0)), np.zeros((ys.size, 0))
    xi.sort(axis=1)
    xi = xi[:, : 2 * k]
    start, end = xi[:, 0::2], xi[:, 1::2]
    unused = ~np.isfinite(end)
    start[unused] = 0.0
    end[unused] = 0.0
    return start, end


def compute_covered_length_mm(
    start: npt.NDArray[np.float64], end: npt.NDArray[np.float64], x_mm: npt.NDArray[np.floating[Any]]
) -> npt.NDArray[np.float64]:
    """Inside length (mm) left of each x of each row: sum over intervals of clip(x - start, 0, end - start).

    ``x_mm`` is (N,) shared by all rows, or (R, N) per row; the result is (R, N). Differences
    along the last axis give the exact inside length between consecutive x positions.
    """
    x = np.asarray(x_mm, dtype=np.float64)
    x = x[None, None, :] if x.ndim == 1 else x[:, None, :]
    lengths: npt.NDArray[np.float64] = np.clip(x - start[:, :, None], 0.0, (end - start)[:, :, None]).sum(axis=1)
    return lengths
