"""PET-CT fusion dashboard at ``/dashboards/pet/<StudyInstanceUID>``.

The study's first PET series as SUVbw (g/mL), loaded by :mod:`oncopacs.viewer.pet`: when a CT shares
the PET's frame of reference, the SUV resampled onto the CT grid is drawn over the CT (mediastinum window,
W 400 / L 40 HU) with an opacity slider and an SUV colour bar; SUV below 5 % of the maximum is left
transparent. ROI statistics come from an RTSTRUCT on the PET's frame of reference (EXTERNAL ROIs skipped);
the MIP is the coronal maximum-intensity projection of the SUV volume on the PET grid. Each panel
appears when its data exists; otherwise the page says what is missing. Fused volumes are cached by the
app's :class:`~oncopacs.viewer.pet.PetViewer` (a few studies, keyed by the instances' SHA-256) so
scrolling does not re-read the files.
"""

from __future__ import annotations

from urllib.parse import unquote

import dash
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from flask import Flask, current_app, g

from fusion.pet.stats import RoiStats
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.viewer.pet import PetFusion, PetViewer
from oncopacs.web.access import audit_access

BASE_PATH = "/dashboards/pet/"
VIEWER_EXTENSION = "oncopacs.pet_viewer"  # the app's PetViewer in Flask's app.extensions
CT_WINDOW_HU = (-160.0, 240.0)  # mediastinum: W 400 / L 40
TRANSPARENT_BELOW = 0.05  # fraction of the SUV display maximum left transparent over the CT
MAX_DISPLAY_PIXELS = 256  # larger slices are shown with a stride
SUV_COLOURS = "Hot"


# -- figures -------------------------------------------------------------------------------------


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, int(np.ceil(max(shape) / MAX_DISPLAY_PIXELS)))


def build_fusion_figure(fusion: PetFusion, slice_index: int, opacity: float) -> go.Figure:
    """The axial slice ``slice_index``: CT in grey, SUV (g/mL) over it with ``opacity`` (0..1) and its colour bar."""
    k = int(np.clip(slice_index, 0, len(fusion.z_mm) - 1))
    s = _stride(fusion.suv_display.shape[1:])
    x, y = fusion.x_mm[::s], fusion.y_mm[::s]
    top = fusion.suv_max or 1.0
    suv = fusion.suv_display[k, ::s, ::s].astype(np.float64)
    suv = np.where(suv >= TRANSPARENT_BELOW * top, suv, np.nan)
    figure = go.Figure()
    if fusion.ct_hu is not None:
        figure.add_trace(go.Heatmap(z=fusion.ct_hu[k, ::s, ::s], x=x, y=y, colorscale="gray", zmin=CT_WINDOW_HU[0],
                                    zmax=CT_WINDOW_HU[1], showscale=False, name="CT", hoverinfo="skip"))
    figure.add_trace(go.Heatmap(z=suv, x=x, y=y, colorscale=SUV_COLOURS, zmin=0.0, zmax=top, opacity=opacity,
                                name="SUVbw", colorbar={"title": {"text": "SUVbw (g/mL)"}},
                                hovertemplate="x %{x:.1f} mm, y %{y:.1f} mm<br>SUVbw %{z:.2f} g/mL<extra></extra>"))
    figure.update_yaxes(autorange="reversed", scaleanchor="x", title="y (mm)")
    figure.update_xaxes(title="x (mm)")
    figure.update_layout(title=f"Axial z = {fusion.z_mm[k]:.1f} mm", height=560,
                         margin={"l": 50, "r": 20, "t": 40, "b": 40}, plot_bgcolor="black")
    return figure


def build_mip_figure(fusion: PetFusion) -> go.Figure:
    """Coronal maximum-intensity projection of SUVbw (g/mL) on the PET grid, head up."""
    grid = fusion.suv.grid
    mip = fusion.suv.values.max(axis=1)  # (z, x): project along anterior-posterior
    figure = go.Figure(go.Heatmap(z=mip, x=grid.x_mm(), y=grid.z_mm(), colorscale="gray_r", zmin=0.0,
                                  zmax=fusion.suv_max or 1.0, colorbar={"title": {"text": "SUVbw (g/mL)"}},
                                  hovertemplate="x %{x:.1f} mm, z %{y:.1f} mm<br>SUVbw %{z:.2f} g/mL<extra></extra>"))
    figure.update_yaxes(scaleanchor="x", title="z (mm)")
    figure.update_xaxes(title="x (mm)")
    figure.update_layout(title="Coronal MIP", height=560, margin={"l": 50, "r": 20, "t": 40, "b": 40})
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


def render_pet_page(pathname: str | None):
    """Callback: (title, content) for the study in the URL."""
    if not _may_view():
        return "PET-CT fusion", html.P("Your role may not view dashboards.", className="error")
    study_uid = study_uid_from_path(pathname)
    if not study_uid:
        return "PET-CT fusion", html.P("Give a study: /dashboards/pet/<StudyInstanceUID>.", className="error")
    fusion = _viewer().fusion(study_uid)
    if isinstance(fusion, str):
        return "PET-CT fusion", html.P(fusion, className="error")
    audit_access(AuditAction.READ, patient_ids=[fusion.patient_id], study_uids=[study_uid])
    hottest = int(np.argmax(fusion.suv_display.reshape(len(fusion.z_mm), -1).max(axis=1)))
    last = len(fusion.z_mm) - 1
    fused = html.Div([
        dcc.Graph(id="fusion", figure=build_fusion_figure(fusion, hottest, 0.5)),
        html.Label(["Slice", dcc.Slider(id="slice", min=0, max=last, step=1, value=hottest,
                                        marks={0: f"{fusion.z_mm[0]:.0f} mm", last: f"{fusion.z_mm[-1]:.0f} mm"})]),
        html.Label(["PET opacity", dcc.Slider(id="opacity", min=0.0, max=1.0, step=0.05, value=0.5,
                                              marks={0: "0", 0.5: "0.5", 1: "1"})]),
    ], className="panel fusion", style={"flex": "2"})
    mip = html.Div([dcc.Graph(id="mip", figure=build_mip_figure(fusion))], className="panel mip", style={"flex": "1"})
    stats = (html.Div([html.H3("ROI statistics"), _stats_table(fusion.roi_stats)], className="panel stats")
             if fusion.roi_stats else
             html.P("No ROI statistics: no RTSTRUCT with contours on the PET's frame of reference.", className="empty"))
    notes = html.Ul([html.Li(n) for n in fusion.notes], className="notes") if fusion.notes else None
    title = f"PET-CT fusion: {fusion.patient_name} ({fusion.patient_id})"
    return title, html.Div([html.Div([fused, mip], style={"display": "flex", "gap": "1em"}), stats, notes])


def update_fusion(slice_index, opacity, pathname):
    """Callback: the fused slice for the slider positions (audited: it shows patient images)."""
    if not _may_view():
        return dash.no_update
    fusion = _viewer().fusion(study_uid_from_path(pathname))
    if isinstance(fusion, str):
        return dash.no_update
    audit_access(AuditAction.RETRIEVE, patient_ids=[fusion.patient_id], study_uids=[fusion.study_uid])
    return build_fusion_figure(fusion, int(slice_index or 0), float(0.5 if opacity is None else opacity))


def create_pet_app(server: Flask) -> dash.Dash:
    """The PET-CT fusion dashboard, mounted on ``server`` at :data:`BASE_PATH`."""
    app = dash.Dash(__name__, server=server,  # type: ignore[arg-type]  # Dash types it bool | Callable
                    url_base_pathname=BASE_PATH, title="PET-CT fusion · OncoPACS", suppress_callback_exceptions=True)
    server.extensions.setdefault(VIEWER_EXTENSION, PetViewer(server.extensions["oncopacs.archive"]))
    app.layout = html.Div([dcc.Location(id="url"), html.H2(id="title"), dcc.Loading(html.Div(id="content"))])
    app.callback(Output("title", "children"), Output("content", "children"), Input("url", "pathname"))(
        render_pet_page)
    app.callback(Output("fusion", "figure"), Input("slice", "value"), Input("opacity", "value"),
                 State("url", "pathname"), prevent_initial_call=True)(update_fusion)
    return app
