"""What the plan review page draws, as pure functions of the study view: plane figures, DVH, legend, tables.

Figures are plain Plotly dicts (no ``go.Figure`` validation on every slice change). A plane figure stacks, in
display millimetres (:mod:`oncopacs.viewer.layers`): the windowed CT image (trace 0), the dose wash (trace 1,
an empty placeholder without dose), then the isodose lines hot to cold and the ROI outlines from the contour
points; the crosshair is the layout's first two shapes (the browser moves them without redrawing the data:
:data:`dashboards.plan_scripts.CROSSHAIRS`; lines measured by the user follow them). The images are the pixels;
everything else is vector.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import dash_mantine_components as dmc
from dash import html

from oncopacs.viewer.isodose import (
    WASH_BOTTOM_PERCENT,
    IsodoseLevel,
    colour_bar_stops,
    format_number,
)
from oncopacs.viewer.layers import Layer, Outline, PlaneFrame
from oncopacs.viewer.plan_text import (
    STATUS_TEXT,
    beam_rows,
    colour_on_white,
    count_statuses,
    describe_counts,
    goal_rows,
)

PANE_BACKGROUND = "#000000"
CROSSHAIR_COLOUR = "rgba(255, 255, 255, 0.55)"
MEASURE_COLOUR = "#00e5ff"
ROI_LINE_WIDTH = 2.2
ISODOSE_LINE_WIDTH = 1.6
#: Row colours of the goals table: pass, within tolerance, fail, not evaluated.
STATUS_COLOURS = {"pass": ("#e6f4ea", "#1e6b34"), "within_tolerance": ("#fff4d6", "#8a5a00"),
                  "fail": ("#fde2e1", "#b42318"), "not_evaluated": ("#f1f3f5", "#495057")}
PLANE_TITLES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}
#: Patient directions at the (left, right, top, bottom) edges of each plane, radiological convention.
ORIENTATION = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _joined(lines: Sequence[Any]) -> tuple[list[float | None], list[float | None]]:
    """Polylines as one x and one y list, separated by None (one Plotly trace draws them all)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for line in lines:
        if xs:
            xs.append(None)
            ys.append(None)
        xs.extend(line[:, 0].tolist())
        ys.extend(line[:, 1].tolist())
    return xs, ys


def _line_trace(name: str, lines: Sequence[Any], colour: str, width: float, dash: str = "solid") -> dict[str, Any]:
    xs, ys = _joined(lines)
    return {"type": "scatter", "mode": "lines", "name": name, "x": xs, "y": ys, "hoverinfo": "skip",
            "showlegend": False, "line": {"color": colour, "width": width, "dash": dash}}


def crosshair_shapes(frame: PlaneFrame, crosshair: tuple[float, float] | None) -> list[dict[str, Any]]:
    """The vertical (u) and horizontal (v) crosshair lines through ``crosshair`` (display mm), across the image."""
    if crosshair is None:
        return []
    u_min, u_max, v_min, v_max = frame.extent_mm
    u, v = crosshair
    style = {"type": "line", "name": "crosshair", "xref": "x", "yref": "y", "layer": "above", "editable": False,
             "line": {"color": CROSSHAIR_COLOUR, "width": 1, "dash": "dot"}}
    return [{**style, "x0": u, "x1": u, "y0": v_min, "y1": v_max},
            {**style, "x0": u_min, "x1": u_max, "y0": v, "y1": v}]


def _annotations(plane: str, title: str) -> list[dict[str, Any]]:
    left, right, top, bottom = ORIENTATION[plane]
    font = {"color": "#d0d4d9", "size": 12}
    marks = [(0.005, 0.5, left, "left", "middle", 0), (0.995, 0.5, right, "right", "middle", 0),
             (0.5, 0.995, top, "center", "top", -18), (0.5, 0.005, bottom, "center", "bottom", 0)]  # under the title
    notes = [{"text": text, "x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": xa, "yanchor": ya,
              "yshift": shift, "showarrow": False, "font": {**font, "size": 11}} for x, y, text, xa, ya, shift in marks]
    notes.append({"text": title, "x": 0.005, "y": 0.995, "xref": "paper", "yref": "paper", "xanchor": "left",
                  "yanchor": "top", "showarrow": False, "font": font, "bgcolor": "rgba(0, 0, 0, 0.45)"})
    return notes


def plane_figure(plane: str, *, ct: Layer, wash: Layer | None, outlines: Sequence[Outline],
                 isodose: Sequence[tuple[IsodoseLevel, Sequence[Any]]], crosshair: tuple[float, float] | None,
                 title: str, dragmode: str | bool, revision: str) -> dict[str, Any]:
    """One plane: CT and wash images, isodose lines (hottest on top), ROI outlines (on top of all), crosshair."""
    frame = ct.frame
    image = {"x0": frame.u0_mm, "y0": frame.v0_mm, "dx": frame.du_mm, "dy": frame.dv_mm, "zsmooth": "fast"}
    data: list[dict[str, Any]] = [{"type": "image", "name": "CT", "source": png_uri(ct.png), "hoverinfo": "none",
                                   **image}]
    if wash is not None:
        data.append({"type": "image", "name": "dose", "source": png_uri(wash.png), "hoverinfo": "skip", **image})
    else:
        data.append({"type": "scatter", "name": "no dose", "x": [], "y": [], "hoverinfo": "skip",
                     "showlegend": False})
    for level, lines in reversed(isodose):  # coldest first: the hotter lines lie on top
        if lines:
            data.append(_line_trace(f"{format_number(level.percent)} %", lines, level.css_colour, ISODOSE_LINE_WIDTH))
    for outline in outlines:
        data.append(_line_trace(outline.name, outline.lines, "rgb({}, {}, {})".format(*outline.colour),
                                ROI_LINE_WIDTH))
    u_min, u_max, v_min, v_max = frame.extent_mm
    layout = {
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "paper_bgcolor": PANE_BACKGROUND, "plot_bgcolor": PANE_BACKGROUND,
        "xaxis": {"visible": False, "range": [u_min, u_max], "constrain": "domain", "showgrid": False},
        "yaxis": {"visible": False, "range": [v_max, v_min], "scaleanchor": "x", "scaleratio": 1,
                  "constrain": "domain", "showgrid": False},
        "showlegend": False, "autosize": True, "dragmode": dragmode, "hovermode": "closest",
        "uirevision": revision, "annotations": _annotations(plane, title), "shapes": crosshair_shapes(frame, crosshair),
        "newshape": {"line": {"color": MEASURE_COLOUR, "width": 2},
                     "label": {"texttemplate": "%{length:.1f} mm", "font": {"color": MEASURE_COLOUR, "size": 13},
                               "textposition": "end"}},
    }
    return {"data": data, "layout": layout}


def empty_figure(message: str = "", background: str = PANE_BACKGROUND) -> dict[str, Any]:
    """An empty pane (dark unless told) with an optional message (no data yet, or no dose)."""
    notes = [{"text": message, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper", "showarrow": False,
              "font": {"color": "#adb5bd", "size": 13}}] if message else []
    return {"data": [], "layout": {"paper_bgcolor": background, "plot_bgcolor": background,
                                   "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "annotations": notes,
                                   "xaxis": {"visible": False}, "yaxis": {"visible": False}}}


def dvh_figure(dvh: Mapping[str, Any] | None, colours: Mapping[str, Sequence[int]], *,
               rois: Sequence[str] | None = None, dose_unit: str = "Gy", prescription_gy: float | None = None,
               compare: Mapping[str, Any] | None = None, compare_label: str = "") -> dict[str, Any]:
    """Cumulative DVHs (volume % against dose) in the ROI colours; a compared dose's curves dashed."""
    data: list[dict[str, Any]] = []
    for document, dash, suffix in ((dvh, "solid", ""), (compare, "dash", f" · {compare_label}" if compare_label
                                                          else " · compared")):
        for roi in (document or {}).get("rois", []):
            curve = roi.get("curve")
            if not curve or (rois is not None and roi["name"] not in rois):
                continue
            colour = colour_on_white(tuple(colours.get(roi["name"], (90, 90, 90))))
            data.append({"type": "scatter", "mode": "lines", "name": f"{roi['name']}{suffix}",
                         "x": curve["dose_gy"], "y": curve["volume_percent"],
                         "line": {"color": "rgb({}, {}, {})".format(*colour), "width": 2, "dash": dash},
                         "hovertemplate": f"{roi['name']}{suffix}<br>%{{x:.2f}} {dose_unit}, %{{y:.1f}} %"
                                          "<extra></extra>"})
    shapes, notes = [], []
    if prescription_gy:
        shapes.append({"type": "line", "x0": prescription_gy, "x1": prescription_gy, "y0": 0, "y1": 1, "yref": "paper",
                       "line": {"color": "#868e96", "width": 1, "dash": "dot"}})
        notes.append({"x": prescription_gy, "y": 1, "yref": "paper", "yanchor": "bottom", "showarrow": False,
                      "text": f"Rx {format_number(prescription_gy)} {dose_unit}", "font": {"size": 10,
                                                                                          "color": "#495057"}})
    layout = {
        "margin": {"l": 46, "r": 8, "t": 18, "b": 36}, "autosize": True, "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff", "font": {"size": 11},
        "xaxis": {"title": {"text": f"Dose ({dose_unit})", "standoff": 4}, "rangemode": "tozero",
                  "gridcolor": "#e9ecef", "zeroline": False},
        "yaxis": {"title": {"text": "Volume (%)", "standoff": 2}, "range": [0, 102], "gridcolor": "#e9ecef",
                  "zeroline": False},
        "showlegend": False, "hovermode": "closest", "shapes": shapes, "annotations": notes,
    }
    return {"data": data, "layout": layout}


def isodose_legend(levels: Sequence[IsodoseLevel], dose_unit: str) -> list[Any]:
    """One line per level, hottest first: a line swatch in its colour, ``95 %`` and ``57 Gy(RBE)``."""
    items = []
    for level in levels:
        items.append(html.Li([
            html.Span(className="op-iso-swatch", style={"display": "inline-block", "width": "22px", "height": "0",
                                                        "borderTop": f"3px solid {level.css_colour}",
                                                        "verticalAlign": "middle", "marginRight": "8px"}),
            html.Span(f"{format_number(level.percent)} %", style={"display": "inline-block", "width": "4.2em"}),
            html.Span(f"{format_number(level.dose_gy)} {dose_unit}", style={"color": "#495057"}),
        ], style={"listStyle": "none", "fontSize": "13px", "lineHeight": "19px", "whiteSpace": "nowrap"}))
    rows = -(-len(items) // 2)  # two columns, read down: hottest first
    return [html.Ul(items, id="isodose-legend-list", style={
        "margin": 0, "padding": 0, "display": "grid", "gridAutoFlow": "column", "gridAutoColumns": "minmax(0, 1fr)",
        "gridTemplateRows": f"repeat({max(rows, 1)}, auto)", "columnGap": "8px"})]


def colour_bar(reference_gy: float, top_percent: float, dose_unit: str) -> html.Div:
    """The dose wash's colour scale from its lowest level to ``top_percent`` (> 100 %), in % and the dose unit."""
    stops = colour_bar_stops(top_percent)
    gradient = ", ".join(f"{colour} {position * 100:.1f}%" for position, colour in stops)
    ticks = [p for p in (WASH_BOTTOM_PERCENT, 50.0, 80.0, 100.0) if p < top_percent]
    if top_percent - 100.0 >= 0.15 * (top_percent - WASH_BOTTOM_PERCENT):
        ticks.append(top_percent)
    span = top_percent - WASH_BOTTOM_PERCENT
    labels = [html.Span(f"{format_number(p)} %", title=f"{format_number(p * reference_gy / 100)} {dose_unit}",
                        style={"position": "absolute", "left": f"{(p - WASH_BOTTOM_PERCENT) / span * 100:.1f}%",
                               "transform": "translateX(-50%)" if 0 < p - WASH_BOTTOM_PERCENT < span else (
                                   "translateX(-100%)" if p > WASH_BOTTOM_PERCENT else "translateX(-2px)"),
                               "fontSize": "11px", "color": "#495057", "whiteSpace": "nowrap"}) for p in ticks]
    return html.Div([
        html.Div(id="dose-colour-bar", style={"height": "10px", "borderRadius": "2px",
                                              "background": f"linear-gradient(to right, {gradient})"}),
        html.Div(labels, style={"position": "relative", "height": "15px"}),
        html.Div(f"wash {format_number(WASH_BOTTOM_PERCENT)}–{format_number(top_percent)} % = "
                 f"{format_number(WASH_BOTTOM_PERCENT * reference_gy / 100)}–"
                 f"{format_number(top_percent * reference_gy / 100)} {dose_unit}",
                 style={"fontSize": "11px", "color": "#868e96"}),
    ])


def roi_options(rois: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checklist options: a colour swatch, the ROI name and its volume (cc)."""
    options = []
    for roi in rois:
        volume = roi.get("volume_cc")
        options.append({"value": roi["name"], "label": html.Span([
            html.Span(className="op-roi-swatch", style={
                "display": "inline-block", "width": "12px", "height": "12px", "borderRadius": "2px",
                "background": "rgb({}, {}, {})".format(*roi["colour"]), "margin": "0 6px 0 4px",
                "verticalAlign": "-1px", "border": "1px solid rgba(0, 0, 0, 0.25)"}),
            html.Span(roi["name"]),
            html.Span(f" {volume:.1f} cc" if isinstance(volume, int | float) else "",
                      style={"color": "#868e96", "marginLeft": "4px"}),
        ])})
    return options


Column = tuple[str, str]  # (field of the row dicts, header shown)


def _table(table_id: str, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]],
           row_style: Mapping[str, Mapping[str, str]] | None = None,
           cell_style: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> dmc.Table:
    """A Mantine table of ``rows``: one cell per column, each cell's class ``col-<field>``.

    ``row_style`` maps a row's ``status`` to its style, ``cell_style`` (field, status) to a cell's. (A plain table,
    not AG Grid: a dozen rows need no grid, and AG Grid's 1.3 MB cost this page 0.3-0.4 s of every load.)
    """
    head = dmc.TableThead(dmc.TableTr([dmc.TableTh(header, className=f"col-{field}") for field, header in columns]))
    body = []
    for row in rows:
        status = str(row.get("status", ""))
        cells = [dmc.TableTd(str(row.get(field, "") or ""), className=f"col-{field}",
                             style=dict((cell_style or {}).get((field, status), {})))
                 for field, _header in columns]
        body.append(dmc.TableTr(cells, className=f"op-row-{status}" if status else None,
                                style=dict((row_style or {}).get(status, {}))))
    return dmc.Table([head, dmc.TableTbody(body)], id=table_id, withTableBorder=True, verticalSpacing=4,
                     horizontalSpacing="sm", fz="sm", highlightOnHover=True)


def table_rows(table: dmc.Table) -> list[dict[str, str]]:
    """The body of a :func:`_table` as {field: text} per row (for tests and reports)."""
    _head, body = table.children
    return [{str(cell.className).removeprefix("col-"): cell.children for cell in row.children}
            for row in body.children]


def goals_table(goals: Mapping[str, Any] | None, dose_unit: str) -> list[Any]:
    """The clinical goals, one row per goal coloured by its status, with the result and why."""
    rows = goal_rows(goals, dose_unit)
    if not rows:
        return [html.P((goals or {}).get("choice") or "No clinical goals for this plan.", className="op-dimmed")]
    columns = [("roi", "Structure"), ("goal", "Goal"), ("tolerance", "Tolerance"), ("measured", "Measured"),
               ("status_text", "Result"), ("reason", "Why / note")]
    row_style = {status: {"backgroundColor": back} for status, (back, _text) in STATUS_COLOURS.items()}
    result_style = {("status_text", status): {"color": text, "fontWeight": "700"}
                    for status, (_back, text) in STATUS_COLOURS.items()}
    counts = count_statuses(rows)
    order = {s: n for n, s in enumerate(("fail", "within_tolerance", "not_evaluated", "pass"))}
    data = [r.to_dict() for r in sorted(rows, key=lambda r: (order.get(r.status, 9), r.priority or 9))]
    return [html.P(describe_counts(counts), id="goals-counts", style={"margin": "0 0 6px", "fontSize": "14px"}),
            _table("goals-table", columns, data, row_style, result_style)]


def goals_summary(goals: Mapping[str, Any] | None, dose_unit: str) -> list[Any]:
    """The goal counts as coloured badges (the side panel's at-a-glance line)."""
    rows = goal_rows(goals, dose_unit)
    if not rows:
        return []
    counts = count_statuses(rows)
    badges = []
    for status, (back, text) in STATUS_COLOURS.items():
        badges.append(html.Span(f"{counts[status]} {STATUS_TEXT[status].lower()}", className=f"op-goal-{status}",
                                style={"background": back, "color": text, "borderRadius": "10px", "padding": "1px 8px",
                                       "fontSize": "12px", "fontWeight": 600, "whiteSpace": "nowrap"}))
    return [html.A("Clinical goals", href="#goals-section", style={"fontSize": "12px", "fontWeight": 700}),
            *badges]


def beams_table(plan: Mapping[str, Any] | None, dose_unit: str) -> list[Any]:
    """The beams: gantry, couch, MU, energies, spots, snout and range shifters (ions), dose per fraction."""
    rows = [r.to_dict() for r in beam_rows(plan, dose_unit)]
    if not rows:
        return [html.P("The plan has no beams.", className="op-dimmed")]
    ion = any(r["spots"] or r["range_shifter"] for r in rows)
    columns = [("name", "Beam"), ("gantry_deg", "Gantry"), ("couch_deg", "Couch"), ("meterset", "MU"),
               ("energy", "Energy")]
    if ion:
        columns.append(("spots", "Spots"))
        if any(r["snout"] for r in rows):
            columns.append(("snout", "Snout"))
        columns.append(("range_shifter", "Range shifter"))
    columns += [("beam_dose", "Dose / fraction"), ("machine", "Machine")]
    return [_table("beams-table", columns, rows)]


__all__ = ["beams_table", "colour_bar", "crosshair_shapes", "dvh_figure", "empty_figure",
           "goals_summary", "goals_table", "isodose_legend", "plane_figure", "png_uri", "roi_options", "table_rows"]
