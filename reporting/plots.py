"""Vector plots for reports, written as SVG by hand (no plotting library): DVH curves and the
response timeline (the same series the response dashboard draws, with the RT course as a shaded band).

The SVG is inlined in the report's HTML, so WeasyPrint draws it as vector paths and its labels as
PDF text. Colours come from a fixed palette in series order (deterministic output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

from oncopacs.index.display import format_date

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")

WIDTH, HEIGHT = 640.0, 300.0
LEFT, RIGHT, TOP, BOTTOM = 56.0, 150.0, 14.0, 40.0  # margins (px): axes labels left/bottom, legend right


@dataclass(frozen=True, slots=True)
class Curve:
    """One named series of (x, y) points; ``dashed`` draws it as a dashed line; ``colour`` overrides the palette."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False
    colour: str = ""


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded span of the x axis (from ``x0`` to ``x1``) with a label at its top left."""

    x0: float
    x1: float
    label: str


@dataclass(frozen=True, slots=True)
class Label:
    """A text placed above the point (x, y)."""

    x: float
    y: float
    text: str


BAND_FILL, BAND_TEXT = "#efe6f4", "#7b3294"


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
                    Sequence[tuple[float, str]] | None = None, bands: Sequence[Band] = (),
                    labels: Sequence[Label] = ()) -> str:
    """An SVG line plot of ``curves`` with axes, grid, tick labels and a legend; ``bands`` shaded beneath them,
    ``labels`` written above their points."""
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
    band_labels = []
    for band in bands:
        left, right = max(px(band.x0), LEFT), min(px(band.x1), LEFT + plot_w)
        if right > left:
            parts.append(f'<rect x="{left:.2f}" y="{TOP}" width="{right - left:.2f}" height="{plot_h}" '
                         f'fill="{BAND_FILL}" stroke="none"/>')
            band_labels.append(f'<text x="{left + 3:.2f}" y="{TOP + 11}" fill="{BAND_TEXT}">'
                               f'{escape(band.label)}</text>')
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
    parts.extend(band_labels)  # over the grid lines, under the curves
    for i, curve in enumerate(curves):
        colour = curve.colour or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if curve.dashed else ""
        points = " ".join(f"{px(x):.2f},{py(y):.2f}" for x, y in zip(curve.x, curve.y, strict=False))
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.4"{dash}/>')
        if markers:
            parts.extend(f'<circle cx="{px(x):.2f}" cy="{py(y):.2f}" r="2.6" fill="{colour}"/>'
                         for x, y in zip(curve.x, curve.y, strict=False))
        legend_y = TOP + 10 + i * 15
        parts.append(f'<line x1="{LEFT + plot_w + 10}" y1="{legend_y - 3}" x2="{LEFT + plot_w + 28}" '
                     f'y2="{legend_y - 3}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{LEFT + plot_w + 32}" y="{legend_y}">{escape(curve.label[:22])}</text>')
    for label in labels:
        parts.append(f'<text x="{px(label.x):.2f}" y="{py(label.y) - 6:.2f}" text-anchor="middle" '
                     f'font-weight="bold">{escape(label.text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def build_dvh_plot(rois: Sequence[dict], *, dose_unit: str = "Gy") -> str:
    """Cumulative DVHs (volume % against dose, in ``dose_unit``) of ROIs as ``{"name", "curve": {"dose_gy",
    "volume_pct"}}``, each in its ``colour`` (the ROI's display colour) when given."""
    curves = [Curve(r["name"], r["curve"]["dose_gy"], r["curve"]["volume_pct"], colour=r.get("colour") or "")
              for r in rois if r.get("curve")]
    top = max((max(c.x) for c in curves if c.x), default=1.0)
    return build_line_plot(curves, x_label=f"Dose [{dose_unit}]", y_label="Volume [%]", x_range=(0.0, top * 1.02),
                           y_range=(0.0, 100.0))


def build_timeline_plot(points: Sequence[dict], plans: Sequence[dict]) -> str:
    """The response timeline as the dashboard draws it: the hottest lesion's SUVmax, SUVpeak and SULpeak (g/mL) and
    the PERCIST measurability threshold over the dates, each time point's category above it and each plan's
    treatment days as a band.

    ``points`` are :meth:`oncopacs.analysis.timeline.TimelinePoint.to_dict` documents (``date`` ISO), ``plans``
    :meth:`oncopacs.analysis.course.CoursePlan.to_dict` documents; "" when there is no point.
    """
    days = [date.fromisoformat(p["date"]) for p in points if p.get("date")]
    if not days:
        return ""
    spans = [(date.fromisoformat(d["start"]), date.fromisoformat(d["end"]), plan)
             for plan in plans for d in [plan.get("dates") or {}] if d.get("start") and d.get("end")]
    start = min([*days, *(s for s, _, _ in spans)])

    def x(day: date) -> float:
        return float((day - start).days)

    curves = []
    for key, label, colour, dashed in (("SUVmax", "SUVmax", "#1f77b4", False), ("SUVpeak", "SUVpeak", "#6baed6", False),
                                       ("SULpeak", "SULpeak", "#d62728", False),
                                       ("measurability_threshold", "PERCIST threshold", "#8c564b", True)):
        known = [(x(day), float(p[key])) for day, p in zip(days, points, strict=False) if p.get(key) is not None]
        if known:
            curves.append(Curve(label, [k for k, _ in known], [v for _, v in known], dashed=dashed, colour=colour))
    tops = [max([float(p[k]) for k in ("SUVmax", "SUVpeak", "SULpeak") if p.get(k) is not None], default=0.0)
            for p in points]
    labels = [Label(x(day), top, str(p.get("category") or "")) for day, top, p in zip(days, tops, points, strict=False)]
    bands = [Band(x(s), x(e), f"RT {plan.get('label') or ''}: {plan.get('prescription') or ''}"
                  + (" (planned)" if (plan.get("dates") or {}).get("basis", "").startswith("estimated") else ""))
             for s, e, plan in spans]
    right = max([x(d) for d in days] + [b.x1 for b in bands])
    top = max(tops + [v for c in curves for v in c.y], default=1.0)
    ticks = [(x(day), format_date(day.strftime("%Y%m%d"))) for day in days]
    return build_line_plot(curves, x_label="Date", y_label="g/mL", markers=True, x_tick_labels=ticks,
                           x_range=(-0.05 * max(right, 1.0), right * 1.05 + 1.0), y_range=(0.0, top * 1.3),
                           bands=bands, labels=labels)
