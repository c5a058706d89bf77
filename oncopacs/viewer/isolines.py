"""Iso-lines of a sampled 2D field (marching squares), joined into polylines: isodose lines, contour outlines.

:func:`compute_isolines` takes a field sampled on a rectilinear grid (row and column coordinates in mm,
increasing, not necessarily even) and returns the lines where it crosses a level, each an (N, 2) array of
(column coordinate, row coordinate) in mm, the crossing on every cell edge placed by linear interpolation.
The field is padded with a value below the level, so every line closes (a region touching the border is
closed along it). Saddle cells are resolved by the cell's mean value. Pure numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Polyline = npt.NDArray[np.float64]  # (N, 2): (column coordinate, row coordinate), mm

# Cell corners: a (top-left), b (top-right), c (bottom-right), d (bottom-left); case = 8a + 4b + 2c + d (above the
# level). Cell edges: 0 top (a-b), 1 right (b-c), 2 bottom (d-c), 3 left (a-d). Each case's segments as edge pairs;
# the saddles 5 and 10 have two variants, chosen by the cell's mean (index 0: mean below the level, 1: above).
_SEGMENTS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((3, 2),), 2: ((2, 1),), 3: ((3, 1),), 4: ((0, 1),), 6: ((0, 2),), 7: ((3, 0),), 8: ((3, 0),),
    9: ((0, 2),), 11: ((0, 1),), 12: ((3, 1),), 13: ((2, 1),), 14: ((3, 2),),
}
_SADDLES: dict[int, tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]] = {
    5: (((0, 1), (3, 2)), ((3, 0), (2, 1))),  # b and d above: apart when the middle is below
    10: (((3, 0), (2, 1)), ((0, 1), (3, 2))),  # a and c above
}


def compute_isolines(field: npt.ArrayLike, rows_mm: npt.ArrayLike, cols_mm: npt.ArrayLike, level: float,
                     *, decimals: int = 2) -> tuple[Polyline, ...]:
    """The closed lines where ``field`` (R, C) crosses ``level``; ``rows_mm`` (R) and ``cols_mm`` (C) increasing.

    Points are (column, row) coordinates rounded to ``decimals``; each line repeats its first point at its end.
    NaN counts as below the level.
    """
    values = np.asarray(field, dtype=np.float64)
    rows, cols = np.asarray(rows_mm, dtype=np.float64), np.asarray(cols_mm, dtype=np.float64)
    if values.ndim != 2 or values.shape != (rows.size, cols.size):
        raise ValueError(f"field {values.shape} does not match {rows.size} rows x {cols.size} columns")
    if values.size == 0 or not np.isfinite(level):
        return ()
    below = level - 1.0
    padded = np.full((rows.size + 2, cols.size + 2), below)
    padded[1:-1, 1:-1] = np.where(np.isnan(values), below, values)
    rows, cols = _pad_coordinates(rows), _pad_coordinates(cols)
    above = padded > level
    case = (above[:-1, :-1] * 8 + above[:-1, 1:] * 4 + above[1:, 1:] * 2 + above[1:, :-1]).astype(np.int8)
    cell_r, cell_c = np.nonzero((case != 0) & (case != 15))
    if cell_r.size == 0:
        return ()
    n_cols = cols.size
    horizontal = (rows.size) * (n_cols - 1)  # edge ids: horizontal edges first, then vertical ones

    def edge_id(edge: int, r: npt.NDArray[np.intp], c: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        if edge == 0:
            return r * (n_cols - 1) + c
        if edge == 2:
            return (r + 1) * (n_cols - 1) + c
        return horizontal + r * n_cols + c + (1 if edge == 1 else 0)

    starts: list[npt.NDArray[np.intp]] = []
    ends: list[npt.NDArray[np.intp]] = []
    cell_case = case[cell_r, cell_c]
    for code, pairs in _SEGMENTS.items():
        pick = cell_case == code
        for first, second in pairs:
            starts.append(edge_id(first, cell_r[pick], cell_c[pick]))
            ends.append(edge_id(second, cell_r[pick], cell_c[pick]))
    for code, variants in _SADDLES.items():
        pick = np.nonzero(cell_case == code)[0]
        if pick.size == 0:
            continue
        r, c = cell_r[pick], cell_c[pick]
        middle = (padded[r, c] + padded[r, c + 1] + padded[r + 1, c] + padded[r + 1, c + 1]) / 4.0 > level
        for variant, chosen in enumerate((~middle, middle)):
            for first, second in variants[variant]:
                starts.append(edge_id(first, r[chosen], c[chosen]))
                ends.append(edge_id(second, r[chosen], c[chosen]))
    segment_start, segment_end = np.concatenate(starts), np.concatenate(ends)
    points = _edge_points(np.unique(np.concatenate([segment_start, segment_end])), padded, rows, cols, level,
                          horizontal)
    return tuple(np.round(np.array([points[e] for e in chain]), decimals)
                 for chain in _chains(segment_start.tolist(), segment_end.tolist()))


def _pad_coordinates(axis: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    step = float(axis[1] - axis[0]) if axis.size > 1 else 1.0
    return np.concatenate([[axis[0] - step], axis, [axis[-1] + (float(axis[-1] - axis[-2]) if axis.size > 1
                                                                 else 1.0)]])


def _edge_points(edges: npt.NDArray[np.intp], padded: npt.NDArray[np.float64], rows: npt.NDArray[np.float64],
                 cols: npt.NDArray[np.float64], level: float, horizontal: int) -> dict[int, tuple[float, float]]:
    """{edge id: (column mm, row mm)} of the level's crossing on each edge, linearly interpolated."""
    n_cols = cols.size
    is_h = edges < horizontal
    h, v = edges[is_h], edges[~is_h] - horizontal
    hr, hc = h // (n_cols - 1), h % (n_cols - 1)
    vr, vc = v // n_cols, v % n_cols
    t_h = _fraction(padded[hr, hc], padded[hr, hc + 1], level)
    t_v = _fraction(padded[vr, vc], padded[vr + 1, vc], level)
    x = np.concatenate([cols[hc] + t_h * (cols[hc + 1] - cols[hc]), cols[vc]])
    y = np.concatenate([rows[hr], rows[vr] + t_v * (rows[vr + 1] - rows[vr])])
    ids = np.concatenate([h, v + horizontal])
    return dict(zip(ids.tolist(), zip(x.tolist(), y.tolist(), strict=True), strict=True))


def _fraction(first: npt.NDArray[np.float64], second: npt.NDArray[np.float64], level: float) -> npt.NDArray[np.float64]:
    span = second - first
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.where(span != 0.0, (level - first) / span, 0.5), 0.0, 1.0)


def _chains(starts: list[int], ends: list[int]) -> list[list[int]]:
    """Segments (edge pairs) joined into closed chains of edge ids (each edge joins at most two segments)."""
    touching: dict[int, list[int]] = {}
    for n, (a, b) in enumerate(zip(starts, ends, strict=True)):
        touching.setdefault(a, []).append(n)
        touching.setdefault(b, []).append(n)
    used = [False] * len(starts)
    chains: list[list[int]] = []
    for first in range(len(starts)):
        if used[first]:
            continue
        used[first] = True
        chain = [starts[first], ends[first]]
        while True:
            following = next((n for n in touching[chain[-1]] if not used[n]), None)
            if following is None:
                break
            used[following] = True
            chain.append(ends[following] if starts[following] == chain[-1] else starts[following])
        if chain[-1] != chain[0]:  # open at a degenerate edge: extend backwards too
            while True:
                previous = next((n for n in touching[chain[0]] if not used[n]), None)
                if previous is None:
                    break
                used[previous] = True
                chain.insert(0, ends[previous] if starts[previous] == chain[0] else starts[previous])
        chains.append(chain)
    return chains


__all__ = ["Polyline", "compute_isolines"]
