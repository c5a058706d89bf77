"""Vector plots for reports, written as SVG by hand (no plotting library): DVH curves and value trends.

The SVG is inlined in the report's HTML, so WeasyPrint draws it as vector paths and its labels as
PDF text. Colours come from a fixed palette in series order (deterministic output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")

WIDTH, HEIGHT = 640.0, 300.0
LEFT, RIGHT, TOP, BOTTOM = 56.0, 150.0, 14.0, 40.0  # margins (px): axes labels left/bottom, legend right


@dataclass(frozen=True, slots=True)
class Curve:
    """One named series of (x, y) points."""

    label: str
    x: Sequence[float]
    y: Sequence[float]


def _nice_step(span: float, ticks: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _ticks(low: float, high: float) -> list[float]:
    step = _nice_step(high - low)
    first = math.ceil(low / step - 1e-9) * step
    count = math.floor((high - first) / step + 1e-9) + 1
    return [round(first + i * step, 10) for i in range(max(count, 0))]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.3g}"


def build_line_plot(curves: Sequence[Curve], *, x_label: str, y_label: str, x_range: tuple[float, float] | None = None,
                    y_range: tuple[float, float] | None = None, markers: bool = False, x_tick_labels:
                    Sequence[tuple[float, str]] | None = None) -> str:
    """An SVG line plot of ``curves`` with axes, grid, tick labels and a legend."""
    xs = [v for c in curves for v in c.x]
    ys = [v for c in curves for v in c.y]
    x0, x1 = x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    y0, y1 = y_range or ((min(0.0, min(ys)), max(ys) * 1.05) if ys else (0.0, 1.0))
    if x1 <= x0:
        x0, x1 = x0 - 1.0, x1 + 1.0
    if y1 <= y0:
        y0, y1 = y0 - 1.0, y1 + 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" '
             f'width="{WIDTH:g}" height="{HEIGHT:g}" font-family="DejaVu Sans, sans-serif" font-size="10">')]
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333" '
                 f'stroke-width="0.8"/>')
    for y in _ticks(y0, y1):
        parts.append(f'<line x1="{LEFT}" y1="{py(y):.2f}" x2="{LEFT + plot_w}" y2="{py(y):.2f}" stroke="#ddd" '
                     f'stroke-width="0.5"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{py(y) + 3:.2f}" text-anchor="end">{_label(y)}</text>')
    x_ticks = x_tick_labels if x_tick_labels is not None else [(x, _label(x)) for x in _ticks(x0, x1)]
    for x, text in x_ticks:
        parts.append(f'<line x1="{px(x):.2f}" y1="{TOP}" x2="{px(x):.2f}" y2="{TOP + plot_h}" stroke="#ddd" '
                     f'stroke-width="0.5"/>')
        parts.append(f'<text x="{px(x):.2f}" y="{TOP + plot_h + 13}" text-anchor="middle">{escape(text)}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(13 {TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'{escape(y_label)}</text>')
    for i, curve in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{px(x):.2f},{py(y):.2f}" for x, y in zip(curve.x, curve.y, strict=False))
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.4"/>')
        if markers:
            parts.extend(f'<circle cx="{px(x):.2f}" cy="{py(y):.2f}" r="2.6" fill="{colour}"/>'
                         for x, y in zip(curve.x, curve.y, strict=False))
        legend_y = TOP + 10 + i * 15
        parts.append(f'<line x1="{LEFT + plot_w + 10}" y1="{legend_y - 3}" x2="{LEFT + plot_w + 28}" '
                     f'y2="{legend_y - 3}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{LEFT + plot_w + 32}" y="{legend_y}">{escape(curve.label[:22])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def build_dvh_plot(rois: Sequence[dict]) -> str:
    """Cumulative DVHs (volume % against dose Gy) of ROIs as ``{"name", "curve": {"dose_gy", "volume_pct"}}``."""
    curves = [Curve(r["name"], r["curve"]["dose_gy"], r["curve"]["volume_pct"]) for r in rois if r.get("curve")]
    top = max((max(c.x) for c in curves if c.x), default=1.0)
    return build_line_plot(curves, x_label="Dose [Gy]", y_label="Volume [%]", x_range=(0.0, top * 1.02),
                           y_range=(0.0, 100.0))


def build_trend_plot(series: dict[str, list[tuple[str, float]]], metric: str) -> str:
    """A value of each structure over time points (YYYYMMDD), days on the x axis from the first."""
    from datetime import date

    def day(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    stamps = sorted({t for points in series.values() for t, _ in points if len(t) == 8 and t.isdigit()})
    if not stamps:
        return ""
    start = day(stamps[0])
    curves = []
    for name, points in series.items():
        valid = sorted((t, v) for t, v in points if t in stamps)
        curves.append(Curve(name, [(day(t) - start).days for t, _ in valid], [v for _, v in valid]))
    ticks = [((day(t) - start).days, f"{t[:4]}-{t[4:6]}-{t[6:]}") for t in stamps]
    span = max(ticks[-1][0], 1)
    return build_line_plot(curves, x_label="Time point", y_label=metric, markers=True,
                           x_range=(-0.05 * span, span * 1.05), x_tick_labels=ticks)
