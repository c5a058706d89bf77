"""PET-CT fusion dashboard at ``/dashboards/pet/<StudyInstanceUID>``.

The study's first PET series as SUVbw (g/mL), loaded by :mod:`oncopacs.viewer.pet`: when a CT shares
the PET's frame of reference, the SUV resampled onto the CT grid is drawn over the CT (mediastinum window,
W 400 / L 40 HU) as a colour overlay with an opacity slider, an SUV window (threshold … top, g/mL; below the
threshold the PET is transparent so the CT detail shows) and an SUV colour bar. The page opens on the slice of
the hottest voxel, whose SUVmax and position are shown whether or not the study has contours. ROI statistics
come from an RTSTRUCT on the PET's frame of reference (EXTERNAL ROIs skipped), and those ROIs' contours are
drawn on the fused slice; image panes are dark, without axes or grid lines. The MIP is the coronal
maximum-intensity projection of the SUV volume on the PET grid. Each panel appears when its data exists;
otherwise the page says what is missing. Fused volumes are cached by the app's
:class:`~oncopacs.viewer.pet.PetViewer` (a few studies, keyed by the instances' SHA-256) and contours per
cached fusion, so scrolling does not re-read the files.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

import dash
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from flask import Flask, current_app, g

from dashboards.page_app import PageDash, plotly_early
from dashboards.shell import STYLESHEET, Subject, install_shell
from fusion.pet.stats import RoiStats
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.errors import NotFoundError
from oncopacs.index.display import format_person_name
from oncopacs.viewer.pet import PetFusion, PetViewer, find_fusion_inputs
from oncopacs.web.access import audit_access
from rt.errors import RTError
from rt.structures import read_structure_set

BASE_PATH = "/dashboards/pet/"
VIEWER_EXTENSION = "oncopacs.pet_viewer"  # the app's PetViewer in Flask's app.extensions
CT_WINDOW_HU = (-160.0, 240.0)  # mediastinum: W 400 / L 40
MAX_DISPLAY_PIXELS = 256  # larger slices are shown with a stride
# hot metal without the white top (white reads as bone on CT): dark red at the threshold … yellow at the top
SUV_COLOURS = [[0.0, "rgb(128,0,0)"], [0.35, "rgb(230,30,0)"], [0.7, "rgb(255,150,0)"], [1.0, "rgb(255,255,60)"]]
DEFAULT_THRESHOLD_SUV = 2.5  # g/mL: PET below it is left transparent so the CT shows (background uptake ~1)
DEFAULT_OPACITY = 0.6
CONTOURS_EXTENSION = "oncopacs.pet_contours"  # study UID -> drawn contours, in Flask's app.extensions
PANE = "#111"  # image panes are dark
_MAX_CACHED_CONTOURS = 8


@dataclass(frozen=True)
class RoiOutline:
    """One ROI's closed planar contours (x, y in mm) at their height z (mm), and its display colour."""

    name: str
    colour: str  # CSS rgb()
    contours: tuple[tuple[float, np.ndarray, np.ndarray], ...]  # (z_mm, x_mm, y_mm)


@dataclass(frozen=True)
class Hotspot:
    """The hottest voxel of the displayed SUV: its SUVbw (g/mL), position (mm) and axial slice index."""

    suv_max: float
    x_mm: float
    y_mm: float
    z_mm: float
    slice_index: int


# -- figures -------------------------------------------------------------------------------------


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, int(np.ceil(max(shape) / MAX_DISPLAY_PIXELS)))


def default_window(fusion: PetFusion) -> tuple[float, float]:
    """(threshold, top) SUVbw in g/mL: :data:`DEFAULT_THRESHOLD_SUV` (at most half the maximum) to the maximum
    rounded up to 0.1 g/mL."""
    top = float(np.ceil(float(fusion.suv_max or 1.0) * 10) / 10)  # to 0.1 g/mL, as the controls show it
    return min(DEFAULT_THRESHOLD_SUV, top / 2), top


def load_outlines(archive, study_uid: str) -> tuple[RoiOutline, ...]:
    """The closed planar contours of the RTSTRUCTs on the PET's frame of reference (EXTERNAL skipped, as for the
    statistics); unreadable structure sets are skipped (the page's notes already say why)."""
    inputs = find_fusion_inputs(archive, study_uid)
    if isinstance(inputs, str):
        return ()
    outlines: list[RoiOutline] = []
    for _sop_uid, stored in inputs.structure_sets:
        try:
            structure_set = read_structure_set(archive.read_dataset(stored[0].file_path, stored[0].sha256))
        except (RTError, ValueError, KeyError, AttributeError, NotFoundError):
            continue
        for roi in structure_set.rois:
            if roi.is_empty or roi.interpreted_type.upper() == "EXTERNAL":
                continue
            contours = tuple((c.z_mm, c.points_mm[:, 0].copy(), c.points_mm[:, 1].copy()) for c in roi.contours
                             if c.geometric_type == "CLOSED_PLANAR" and len(c.points_mm) >= 3)
            r, g_, b = roi.colour or (0, 200, 255)
            outlines.append(RoiOutline(roi.name, f"rgb({r},{g_},{b})", contours))
    return tuple(outlines)


def find_hotspot(fusion: PetFusion) -> Hotspot:
    """The hottest voxel of the displayed SUV (on the CT grid when fused), whatever the contours."""
    k, j, i = np.unravel_index(int(np.nanargmax(fusion.suv_display)), fusion.suv_display.shape)
    return Hotspot(float(fusion.suv_display[k, j, i]), float(fusion.x_mm[i]), float(fusion.y_mm[j]),
                   float(fusion.z_mm[k]), int(k))


def _hide_axes(figure: go.Figure) -> None:
    figure.update_xaxes(visible=False, showgrid=False, zeroline=False)
    figure.update_yaxes(visible=False, showgrid=False, zeroline=False)
    figure.update_layout(plot_bgcolor=PANE, paper_bgcolor=PANE, font={"color": "#ddd"})


def _outline_traces(outlines: tuple[RoiOutline, ...], z_mm: float, half_thickness_mm: float) -> list[go.Scatter]:
    traces: list[go.Scatter] = []
    for outline in outlines:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for z, x, y in outline.contours:
            if abs(z - z_mm) <= half_thickness_mm:
                xs += [*x.tolist(), float(x[0]), None]
                ys += [*y.tolist(), float(y[0]), None]
        if xs:
            traces.append(go.Scatter(x=xs, y=ys, mode="lines", name=outline.name, hoverinfo="name",
                                     line={"color": outline.colour, "width": 2}))
    return traces


def build_fusion_figure(fusion: PetFusion, slice_index: int, opacity: float,
                        window: tuple[float, float] | None = None,
                        outlines: tuple[RoiOutline, ...] = ()) -> go.Figure:
    """The axial slice ``slice_index``: CT in grey, SUV (g/mL) over it with ``opacity`` (0..1) and its colour bar.

    ``window``: (threshold, top) SUVbw in g/mL: below the threshold the PET is transparent (the CT shows), the
    colour scale saturates at the top. ``outlines``: ROI contours drawn where they lie on this slice.
    """
    k = int(np.clip(slice_index, 0, len(fusion.z_mm) - 1))
    s = _stride(fusion.suv_display.shape[1:])
    x, y = fusion.x_mm[::s], fusion.y_mm[::s]
    low, high = window if window is not None else default_window(fusion)
    high = max(float(high), float(low) + 1e-3)
    suv = fusion.suv_display[k, ::s, ::s].astype(np.float64)
    suv = np.where(suv >= low, suv, np.nan)
    figure = go.Figure()
    if fusion.ct_hu is not None:
        figure.add_trace(go.Heatmap(z=fusion.ct_hu[k, ::s, ::s], x=x, y=y, colorscale="gray", zmin=CT_WINDOW_HU[0],
                                    zmax=CT_WINDOW_HU[1], showscale=False, name="CT", hoverinfo="skip"))
    figure.add_trace(go.Heatmap(z=suv, x=x, y=y, colorscale=SUV_COLOURS, zmin=float(low), zmax=high, opacity=opacity,
                                name="SUVbw", colorbar={"title": {"text": "SUVbw (g/mL)"}},
                                hovertemplate="x %{x:.1f} mm, y %{y:.1f} mm<br>SUVbw %{z:.2f} g/mL<extra></extra>"))
    half = float(abs(fusion.z_mm[1] - fusion.z_mm[0])) / 2 if len(fusion.z_mm) > 1 else 1.0
    for trace in _outline_traces(outlines, float(fusion.z_mm[k]), half):
        figure.add_trace(trace)
    _hide_axes(figure)
    figure.update_yaxes(autorange="reversed", scaleanchor="x")
    figure.update_xaxes(range=[float(fusion.x_mm[0]), float(fusion.x_mm[-1])])
    figure.update_layout(title=f"Axial z = {fusion.z_mm[k]:.1f} mm (slice {k + 1} of {len(fusion.z_mm)})",
                         height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.02, "bgcolor": "rgba(0,0,0,0)"})
    return figure


def build_mip_figure(fusion: PetFusion) -> go.Figure:
    """Coronal maximum-intensity projection of SUVbw (g/mL) on the PET grid, head up."""
    grid = fusion.suv.grid
    mip = fusion.suv.values.max(axis=1)  # (z, x): project along anterior-posterior
    figure = go.Figure(go.Heatmap(z=mip, x=grid.x_mm(), y=grid.z_mm(), colorscale="gray_r", zmin=0.0,
                                  zmax=fusion.suv_max or 1.0, colorbar={"title": {"text": "SUVbw (g/mL)"}},
                                  hovertemplate="x %{x:.1f} mm, z %{y:.1f} mm<br>SUVbw %{z:.2f} g/mL<extra></extra>"))
    _hide_axes(figure)
    figure.update_yaxes(scaleanchor="x")
    figure.update_layout(title="Coronal MIP", height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def _stats_table(stats: tuple[RoiStats, ...]) -> html.Table:
    header = ["ROI", "Volume (cc)", "SUVmax", "SUVmean", "SUVpeak", "SULpeak", "MTV41 (cc)", "TLG41 (g)"]

    def cell(value: float | None, digits: int = 2) -> html.Td:
        return html.Td("—" if value is None else f"{value:.{digits}f}")

    rows = [html.Tr([html.Td(s.name), cell(s.volume_cc, 1), cell(s.suv_max), cell(s.suv_mean), cell(s.suv_peak),
                     cell(s.sul_peak), cell(s.mtv41_cc, 1), cell(s.tlg41, 1)]) for s in stats]
    return html.Table([html.Caption("SUV in g/mL (SUVbw; SULpeak lean body mass)"),
                       html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)], className="roi-stats")


def study_uid_from_path(pathname: str | None) -> str:
    if not pathname or not pathname.startswith(BASE_PATH):
        return ""
    return unquote(pathname[len(BASE_PATH):].strip("/"))


def _may_view() -> bool:
    principal = g.get("principal")
    return principal is not None and principal.can(Permission.DASHBOARDS_VIEW)


def _viewer() -> PetViewer:
    return current_app.extensions[VIEWER_EXTENSION]


def _outlines(fusion: PetFusion) -> tuple[RoiOutline, ...]:
    """The fusion's contours, read once per cached fusion (bounded per app)."""
    cache: OrderedDict = current_app.extensions.setdefault(CONTOURS_EXTENSION, OrderedDict())
    hit = cache.get(fusion.study_uid)
    if hit is not None and hit[0] is fusion:
        cache.move_to_end(fusion.study_uid)
        return hit[1]
    outlines = load_outlines(current_app.extensions["oncopacs.archive"], fusion.study_uid)
    cache[fusion.study_uid] = (fusion, outlines)
    while len(cache) > _MAX_CACHED_CONTOURS:
        cache.popitem(last=False)
    return outlines


def hotspot_line(spot: Hotspot) -> html.P:
    """The hottest voxel in words (shown whether or not the study has contours)."""
    return html.P([html.Strong(f"SUVmax {spot.suv_max:.2f} g/mL"),
                   f" (hottest voxel) at x {spot.x_mm:.1f}, y {spot.y_mm:.1f}, z {spot.z_mm:.1f} mm, "
                   f"axial slice {spot.slice_index + 1}"], className="hotspot")


def render_pet_page(pathname: str | None):
    """Callback: (title, content) for the study in the URL; the fused view opens on the hottest voxel's slice."""
    if not _may_view():
        return "PET-CT fusion", html.P("Your role may not view dashboards.", className="error")
    study_uid = study_uid_from_path(pathname)
    if not study_uid:
        return "PET-CT fusion", html.P("Give a study: /dashboards/pet/<StudyInstanceUID>.", className="error")
    fusion = _viewer().fusion(study_uid)
    if isinstance(fusion, str):
        return "PET-CT fusion", html.P(fusion, className="error")
    audit_access(AuditAction.READ, patient_ids=[fusion.patient_id], study_uids=[study_uid])
    spot = find_hotspot(fusion)
    last = len(fusion.z_mm) - 1
    low, high = default_window(fusion)
    top = float(np.ceil(fusion.suv_max or 1.0))
    outlines = _outlines(fusion)
    fused = html.Div([
        dcc.Graph(id="fusion", figure=build_fusion_figure(fusion, spot.slice_index, DEFAULT_OPACITY, (low, high),
                                                          outlines),
                  config={"displaylogo": False}),
        html.Label(["Slice", dcc.Slider(id="slice", min=1, max=last + 1, step=1, value=spot.slice_index + 1,
                                        marks={1: f"{fusion.z_mm[0]:.0f} mm", last + 1: f"{fusion.z_mm[-1]:.0f} mm",
                                               spot.slice_index + 1: "SUVmax"})]),
        html.Label(["SUV window: threshold … top (g/mL)",
                    dcc.RangeSlider(id="suv-window", min=0.0, max=top, step=0.1, value=[low, high],
                                    marks={0: "0", top: f"{top:g}"}, tooltip={"placement": "bottom"})]),
        html.Label(["PET opacity", dcc.Slider(id="opacity", min=0.0, max=1.0, step=0.05, value=DEFAULT_OPACITY,
                                              marks={0: "0", 0.5: "0.5", 1: "1"})]),
    ], className="panel fusion", style={"flex": "2"})
    mip = html.Div([dcc.Graph(id="mip", figure=build_mip_figure(fusion), config={"displaylogo": False})],
                   className="panel mip", style={"flex": "1"})
    stats = (html.Div([html.H3("ROI statistics"), _stats_table(fusion.roi_stats)], className="panel stats")
             if fusion.roi_stats else
             html.P("No ROI statistics: no RTSTRUCT with contours on the PET's frame of reference.", className="empty"))
    notes = html.Ul([html.Li(n) for n in fusion.notes], className="notes") if fusion.notes else None
    title = f"PET-CT fusion: {format_person_name(fusion.patient_name)} ({fusion.patient_id})"
    return title, html.Div([hotspot_line(spot), html.Div([fused, mip], style={"display": "flex", "gap": "1em"}),
                            stats, notes])


def update_fusion(slice_number, opacity, window, pathname):
    """Callback: the fused slice for the slider positions (``slice_number`` 1-based, as the title counts; audited:
    it shows patient images)."""
    if not _may_view():
        return dash.no_update
    fusion = _viewer().fusion(study_uid_from_path(pathname))
    if isinstance(fusion, str):
        return dash.no_update
    audit_access(AuditAction.RETRIEVE, patient_ids=[fusion.patient_id], study_uids=[fusion.study_uid])
    chosen = (float(window[0]), float(window[1])) if window and len(window) == 2 else default_window(fusion)
    alpha = float(DEFAULT_OPACITY if opacity is None else opacity)
    return build_fusion_figure(fusion, int(slice_number or 1) - 1, alpha, chosen, _outlines(fusion))


def create_pet_app(server: Flask) -> dash.Dash:
    """The PET-CT fusion dashboard, mounted on ``server`` at :data:`BASE_PATH`."""
    app = PageDash(__name__, server=server,
                   url_base_pathname=BASE_PATH, title="PET-CT fusion · OncoPACS", suppress_callback_exceptions=True,
                   external_stylesheets=[STYLESHEET])
    server.extensions.setdefault(VIEWER_EXTENSION, PetViewer(server.extensions["oncopacs.archive"]))
    install_shell(app, html.Div([dcc.Location(id="url"), html.H2(id="title"), dcc.Loading(html.Div(id="content")),
                                 plotly_early()]),
                  page_title="PET-CT", subject=Subject.STUDY)
    app.callback(Output("title", "children"), Output("content", "children"), Input("url", "pathname"))(
        render_pet_page)
    app.callback(Output("fusion", "figure"), Input("slice", "value"), Input("opacity", "value"),
                 Input("suv-window", "value"), State("url", "pathname"), prevent_initial_call=True)(update_fusion)
    return app
