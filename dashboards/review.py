"""4D and registration review at /dashboards/review/<StudyInstanceUID>.

* 4D CT: the study's CT series whose slices carry a respiratory-phase label are grouped into phases with
  :func:`fusion.ct4d.group_phases` (percent of the cycle, in order) and loaded on one grid
  (:func:`fusion.ct4d.load_phase_images`); a phase slider and a play/pause cine (``dcc.Interval``) show an
  axial or coronal slice, with the contours (GTV, ITV, ...) of an RTSTRUCT drawn on the phases when there is one.
  Below it, the motion analysis of ``oncopacs fusion 4d`` (:mod:`oncopacs.analysis.four_d_review`): amplitude per
  axis (mm), ITV and GTV volumes (cc), coronal MIP and AIP with the ITV outline; computed on the first request for
  the study in its own callback (after the first image) and cached per app.
* Registration: one of the study's REG objects (rigid or deformable, :func:`fusion.dicom_reg.read_registration`);
  the moving series is resampled onto the fixed grid through it (:func:`fusion.volume.resample_to`, -1000 HU
  outside) and both are shown in magenta (fixed) and green (moving), as a blend (alpha: 0 fixed, 1 moving) or a
  checkerboard (tile size, mm) in a chosen plane and slice, beside the series (description and date), the rigid
  correction's 6 DOF (mm, degrees; :func:`fusion.six_dof.compute_six_dof`) and the QA figures of its stored
  ``registration_qa`` result (:func:`oncopacs.analysis.registration.load_registration_qa`).

The volumes are loaded by :mod:`oncopacs.viewer.review` (every file read through the archive with its SHA-256
checked) and cached by the app's :class:`~oncopacs.viewer.review.ReviewViewer` (a few studies, keyed by the files'
SHA-256); slices are rendered on the server (:mod:`oncopacs.viewer.slices`, cached).
Slices are numbered from 1 for people, on the sliders as in the titles (``Coronal 33/64``); the callbacks turn a
slider value into the 0-based index of the functions below (:func:`slice_slider`, :func:`slice_index`).
Page loads are audited as READ, every image shown as RETRIEVE. Callback bodies are module functions
(:func:`review_view`, :func:`phase_figure`, :func:`registration_figure`, :func:`qa_panel`, ...) for tests.
"""

from __future__ import annotations

import base64
from typing import Any

import dash
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from flask import Flask, current_app

from dashboards.page_app import PageDash
from dashboards.shell import STYLESHEET, Subject, install_shell
from fusion.six_dof import SixDof
from oncopacs.analysis.four_d_review import MotionCache, MotionView, label_series, registration_dof
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.errors import NotFoundError
from oncopacs.index.display import format_person_name
from oncopacs.uids import is_valid_uid
from oncopacs.viewer.review import ReviewRegistration, ReviewViewer, find_pair_inputs
from oncopacs.viewer.slices import WINDOWS, RenderedSlice, RenderOptions, SliceError, encode_png
from oncopacs.web.access import audit_access

URL_BASE = "/dashboards/review/"
VIEWER_EXTENSION = "oncopacs.review_viewer"  # the app's ReviewViewer in Flask's app.extensions
CINE_PLANES = ("axial", "coronal")
REGISTRATION_PLANES = ("axial", "coronal", "sagittal")
MODES = ("magenta-green", "blend", "checkerboard")  # magenta-green: fixed magenta, moving green, grey where equal
MOTION_EXTENSION = "oncopacs.review_motion"  # the app's MotionCache in Flask's app.extensions
ITV_RGB = (255, 128, 0)
CINE_INTERVAL_MS = 400
DEFAULT_TILE_MM = 20.0
NO_DATA = "This study holds neither a 4D CT nor a registration."
_HIDDEN: dict[str, str] = {"display": "none"}
_SHOWN: dict[str, str] = {}


# -- what the callbacks do ----------------------------------------------------------------------


def _viewer() -> ReviewViewer:
    return current_app.extensions[VIEWER_EXTENSION]


def study_uid_from(pathname: str | None) -> str:
    """The StudyInstanceUID in ``/dashboards/review/<uid>`` (ValueError when absent or malformed)."""
    rest = (pathname or "")[len(URL_BASE):] if (pathname or "").startswith(URL_BASE) else ""
    uid = rest.strip("/").split("/")[0]
    if not uid or not is_valid_uid(uid):
        raise ValueError("open a study from the study browser: /dashboards/review/<StudyInstanceUID>")
    return uid


def _series_pair(study_uid: str, registration: ReviewRegistration) -> tuple[str, str] | None:
    """(fixed, moving) SeriesInstanceUIDs of a registration, from its REG file (None: unreadable)."""
    try:
        inputs = find_pair_inputs(_viewer().archive, study_uid, registration.sop_instance_uid)
    except (ValueError, NotFoundError):
        return None
    return inputs.registration.fixed.series_instance_uid, inputs.registration.moving.series_instance_uid


def _registration_label(study_uid: str, registration: ReviewRegistration) -> str:
    """``moving → fixed · kind · QA`` with each series named by its description and date."""
    pair = _series_pair(study_uid, registration)
    names = label_series(_viewer().archive, pair) if pair else {}
    series = f"{names.get(pair[1], 'moving series')} → {names.get(pair[0], 'fixed series')}" if pair else \
        "series not readable"
    verdict = registration.verdict
    if verdict is None:
        return f"{series} · no QA stored"
    return f"{series} · {verdict.kind} · {'QA FLAGGED' if verdict.flagged else 'QA passed'}"


def review_view(study_uid: str) -> dict[str, Any]:
    """What the page needs of a study (JSON-ready; audited READ): patient, 4D phases, registrations."""
    viewer = _viewer()
    try:
        study = viewer.study(study_uid)
        four_d = viewer.four_d(study_uid)
    except NotFoundError as exc:
        audit_access(AuditAction.READ, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
        raise ValueError(str(exc)) from None
    audit_access(AuditAction.READ, patient_ids=[study.patient_id], study_uids=[study_uid])
    view: dict[str, Any] = {"study_uid": study_uid, "patient_id": study.patient_id,
                            "patient_name": format_person_name(study.patient_name), "four_d": None,
                            "four_d_message": None,
                            "registrations": [{"uid": r.sop_instance_uid, "label": _registration_label(study_uid, r)}
                                              for r in study.registrations]}
    if isinstance(four_d, str):
        view["four_d_message"] = four_d
    elif four_d is not None:
        scene = four_d.scenes[0]
        view["four_d"] = {"phase_percent": list(four_d.phase_percent), "rois": list(four_d.roi_names),
                          "sizes": {p: scene.plane_size(p) for p in CINE_PLANES},
                          "structure_set_uid": four_d.structure_set_uid}
    return view


def _clamp(index, size: int) -> int:
    return min(max(int(index or 0), 0), size - 1)


def slice_slider(size: int) -> tuple[int, int]:
    """(max, value) of a slice slider over ``size`` slices: 1-based as the titles are, opening on the middle one."""
    return max(size, 1), size // 2 + 1


def slice_index(value: int | float | None) -> int:
    """The 0-based slice index of a 1-based slider value (the first slice when unset)."""
    return max(int(value or 1), 1) - 1


def phase_frame(study_uid: str, phase: int, plane: str, index: int, window: str = "lung") -> RenderedSlice:
    """Phase ``phase`` (0-based, in phase order) on ``plane`` at ``index``, with the contours (audited RETRIEVE)."""
    viewer = _viewer()
    four_d = viewer.four_d(study_uid)
    if four_d is None or isinstance(four_d, str):
        raise ValueError(four_d or "this study holds no 4D CT")
    if plane not in CINE_PLANES:
        raise ValueError(f"the cine shows {' or '.join(CINE_PLANES)} slices, not {plane!r}")
    scene = four_d.scenes[_clamp(phase, len(four_d.scenes))]
    try:
        rendered = viewer.slices.render(scene, plane, _clamp(index, scene.plane_size(plane)),
                                        RenderOptions(window=window))
    except SliceError as exc:
        raise ValueError(str(exc)) from None
    audit_access(AuditAction.RETRIEVE, patient_ids=four_d.patient_ids, study_uids=[study_uid])
    return rendered


def compose(fixed: np.ndarray, moving: np.ndarray, mode: str, *, alpha: float = 0.5, tile_px: int = 32) -> np.ndarray:
    """Fixed and moving RGB slices (same shape, uint8) composed for review.

    ``magenta-green``: the fixed image in magenta, the moving in green (grey where they agree); ``blend``:
    ``alpha`` 0 fixed … 1 moving; ``checkerboard``.

    Checkerboard tiles are ``tile_px`` pixels square; the top-left tile shows the fixed image.
    """
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} slices differ in size")
    if mode == "magenta-green":
        fixed_grey = fixed.astype(np.uint16).sum(axis=2) // 3
        moving_grey = moving.astype(np.uint16).sum(axis=2) // 3
        return np.stack([fixed_grey, moving_grey, fixed_grey], axis=2).astype(np.uint8)
    if mode == "blend":
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be between 0 and 1")
        mixed = (1.0 - alpha) * fixed.astype(np.float32) + alpha * moving.astype(np.float32)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if mode == "checkerboard":
        tile = max(1, int(tile_px))
        rows, cols = np.indices(fixed.shape[:2]) // tile
        out = fixed.copy()
        take = (rows + cols) % 2 == 1
        out[take] = moving[take]
        return out
    raise ValueError(f"unknown mode {mode!r} ({' or '.join(MODES)})")


def registration_frame(study_uid: str, registration_uid: str, plane: str, index: int, *, mode: str = "magenta-green",
                       alpha: float = 0.5, tile_mm: float = DEFAULT_TILE_MM,
                       window: str = "mediastinum") -> tuple[np.ndarray, float]:
    """The composed slice (RGB uint8) and its pixel size (mm) of a registration (audited RETRIEVE)."""
    viewer = _viewer()
    pair = viewer.pair(study_uid, registration_uid)
    if plane not in REGISTRATION_PLANES:
        raise ValueError(f"unknown plane {plane!r}")
    index = _clamp(index, pair.fixed.plane_size(plane))
    try:
        options = RenderOptions(window=window)
        fixed, moving = (viewer.slices.render(scene, plane, index, options) for scene in (pair.fixed, pair.moving))
    except SliceError as exc:
        raise ValueError(str(exc)) from None
    tile_px = max(1, round(float(tile_mm) / fixed.pixel_mm))
    composed = compose(fixed.rgb, moving.rgb, mode, alpha=float(alpha), tile_px=tile_px)
    audit_access(AuditAction.RETRIEVE, patient_ids=pair.patient_ids, study_uids=pair.study_uids)
    return composed, fixed.pixel_mm


def image_figure(rgb: np.ndarray, pixel_mm: float, title: str, revision: str) -> go.Figure:
    """An RGB slice as a Plotly image (zoom and pan with the mouse), PNG-encoded."""
    source = "data:image/png;base64," + base64.b64encode(encode_png(np.ascontiguousarray(rgb))).decode("ascii")
    height, width = rgb.shape[:2]
    figure = go.Figure(go.Image(source=source, dx=pixel_mm, dy=pixel_mm, hoverinfo="skip"))
    figure.update_layout(margin={"l": 0, "r": 0, "t": 24, "b": 0}, dragmode="pan", height=420, uirevision=revision,
                         title={"text": title, "font": {"size": 12}}, paper_bgcolor="#111", font={"color": "#ddd"})
    figure.update_xaxes(visible=False, range=[0, width * pixel_mm])
    figure.update_yaxes(visible=False, scaleanchor="x", range=[height * pixel_mm, 0])
    return figure


def phase_figure(study_uid: str, phase: int, plane: str, index: int, window: str = "lung",
                 phase_percent: list[float] | None = None) -> go.Figure:
    """Phase ``phase`` at 0-based slice ``index``, titled 1-based as its slider (``Coronal 33/64 · phase 40 %``)."""
    rendered = phase_frame(study_uid, phase, plane, index, window)
    four_d = _viewer().four_d(study_uid)  # cached: phase_frame has loaded it
    slices = four_d.scenes[0].plane_size(plane) if four_d is not None and not isinstance(four_d, str) else 0
    label = f" · phase {phase_percent[phase]:g} %" if phase_percent and 0 <= phase < len(phase_percent) else ""
    return image_figure(rendered.rgb, rendered.pixel_mm, f"{plane.capitalize()} {rendered.index + 1}/{slices}{label}",
                        f"4d-{study_uid}-{plane}")


def registration_figure(study_uid: str, registration_uid: str, plane: str, index: int, **options) -> go.Figure:
    """The composed slice at 0-based ``index``, titled 1-based as its slider (``Axial 13/40 · blend (…)``)."""
    rgb, pixel_mm = registration_frame(study_uid, registration_uid, plane, index, **options)
    slices = _viewer().pair(study_uid, registration_uid).fixed.plane_size(plane)  # cached: the frame loaded it
    mode = options.get("mode", "magenta-green")
    detail = {"blend": f"alpha {float(options.get('alpha', 0.5)):.2f}",
              "magenta-green": "fixed magenta, moving green"}.get(
        mode, f"tiles {float(options.get('tile_mm', DEFAULT_TILE_MM)):g} mm")
    title = f"{plane.capitalize()} {_clamp(index, slices) + 1}/{slices} · {mode} ({detail})"
    return image_figure(rgb, pixel_mm, title, f"reg-{registration_uid}-{plane}")


def _figure(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "not computed" if value is None else f"{value:.{digits}f}{unit}"


def qa_panel(document: dict[str, Any] | None) -> html.Div:
    """The stored QA figures of a registration: Jacobian, folding, inverse consistency, TRE and the verdict."""
    if not document:
        return html.Div(html.P("No QA is stored for this registration.", className="error"), className="qa")
    qa = document.get("qa") or {}
    passed = bool(qa.get("passed"))
    rows = [("Kind", str(document.get("kind", ""))),
            ("Jacobian determinant min", _figure(qa.get("jacobian_min"))),
            ("Jacobian determinant max", _figure(qa.get("jacobian_max"))),
            ("Folding (det J ≤ 0)", _figure(qa.get("folding_percent"), " %")),
            ("Inverse consistency mean", _figure(qa.get("inverse_consistency_mean_mm"), " mm", 2)),
            ("Inverse consistency max", _figure(qa.get("inverse_consistency_max_mm"), " mm", 2)),
            ("Inverse consistency method", str(qa.get("inverse_consistency_method", ""))),
            ("TRE mean", _figure(qa.get("tre_mean_mm"), " mm", 2)),
            ("TRE max", _figure(qa.get("tre_max_mm"), " mm", 2)),
            ("Landmarks", str(qa.get("landmark_count", 0))),
            ("Registration time", _figure(document.get("registration_seconds"), " s", 1))]
    table = html.Table([html.Tr([html.Th(name), html.Td(value)]) for name, value in rows], className="qa-figures")
    verdict = html.P("QA passed" if passed else "QA FLAGGED", className="qa-passed" if passed else "qa-flagged",
                     style={"fontWeight": "bold", "color": "#2a7" if passed else "#c33"})
    failures = html.Ul([html.Li(f) for f in qa.get("failures", [])], className="qa-failures") if not passed else None
    return html.Div([html.H3("Registration QA"), verdict, table, failures], className="qa")


def dof_panel(dof: SixDof | str, fixed: str, moving: str) -> html.Div:
    """The series registered and the rigid correction moving → fixed: translations (mm), rotations (degrees)."""
    named = html.P([html.Strong("Fixed: "), fixed, html.Br(), html.Strong("Moving: "), moving], className="series")
    if isinstance(dof, str):
        return html.Div([html.H3("Registration"), named, html.P(dof, className="muted")], className="dof")
    (tx, ty, tz), (rx, ry, rz) = dof.translation_mm, dof.rotation_deg
    header = html.Tr([html.Th(""), html.Th("LR (x)"), html.Th("AP (y)"), html.Th("SI (z)")])
    table = html.Table([header,
                        html.Tr([html.Th("Translation (mm)"),
                                 *(html.Td(f"{round(v, 1) + 0.0:+.1f}") for v in (tx, ty, tz))]),
                        html.Tr([html.Th("Rotation (°)"),
                                 *(html.Td(f"{round(v, 2) + 0.0:+.2f}") for v in (rx, ry, rz))])],
                       className="dof-figures")
    return html.Div([html.H3("Registration: 6 DOF (moving → fixed)"), named, table,
                     html.P(f"Total shift {dof.shift_mm:.1f} mm", className="muted")], className="dof")


def registration_view(study_uid: str, registration_uid: str) -> tuple[dict[str, int], html.Div]:
    """Plane sizes of the fixed grid and the 6 DOF and QA panels of a registration (audited READ)."""
    viewer = _viewer()
    pair = viewer.pair(study_uid, registration_uid)
    audit_access(AuditAction.READ, patient_ids=pair.patient_ids, study_uids=pair.study_uids)
    names = label_series(viewer.archive, (pair.fixed_series_uid, pair.moving_series_uid))
    dof = dof_panel(registration_dof(viewer.archive, study_uid, registration_uid),
                    names.get(pair.fixed_series_uid, "not in the archive"),
                    names.get(pair.moving_series_uid, "not in the archive"))
    return {p: pair.fixed.plane_size(p) for p in REGISTRATION_PLANES}, html.Div([dof, qa_panel(pair.qa)])


def _motion_image(hu: np.ndarray, itv: np.ndarray, pixel_mm: tuple[float, float], title: str) -> go.Figure:
    low, high = WINDOWS["lung"][0] - WINDOWS["lung"][1] / 2, WINDOWS["lung"][0] + WINDOWS["lung"][1] / 2
    grey = np.clip((hu - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    inner = itv.copy()
    inner[1:-1, 1:-1] &= itv[:-2, 1:-1] & itv[2:, 1:-1] & itv[1:-1, :-2] & itv[1:-1, 2:]
    rgb[itv & ~inner] = ITV_RGB  # the ITV outline
    source = "data:image/png;base64," + base64.b64encode(encode_png(np.ascontiguousarray(rgb))).decode("ascii")
    dz, dx = pixel_mm
    figure = go.Figure(go.Image(source=source, dx=dx, dy=dz, hoverinfo="skip"))
    figure.update_layout(margin={"l": 0, "r": 0, "t": 24, "b": 0}, height=300, dragmode="pan",
                         title={"text": title, "font": {"size": 12}}, paper_bgcolor="#111", font={"color": "#ddd"})
    figure.update_xaxes(visible=False, range=[0, rgb.shape[1] * dx])
    figure.update_yaxes(visible=False, scaleanchor="x", range=[rgb.shape[0] * dz, 0])
    return figure


def motion_panel(motion: MotionView | str | None) -> html.Div:
    """ITV volume, motion amplitude per axis (mm), GTV per phase and coronal MIP / AIP with the ITV outline."""
    if motion is None:
        return html.Div()
    if isinstance(motion, str):
        return html.Div([html.H3("Motion"), html.P(motion, className="muted")], className="motion")
    amplitude = motion.amplitude_mm
    rows = [html.Tr([html.Th(f"Amplitude {axis} (mm)"), html.Td(f"{amplitude[axis]:.1f}")]) for axis in
            ("LR", "AP", "SI")]
    rows += [html.Tr([html.Th("ITV (cc)"), html.Td(f"{motion.itv_cc:.1f}")]),
             html.Tr([html.Th(f"{motion.gtv_name} per phase (cc)"),
                      html.Td(f"{min(motion.gtv_cc):.1f} – {max(motion.gtv_cc):.1f}")])]
    caution = (html.P(f"Weak GTV match on phase(s) {', '.join(f'{p:g} %' for p in motion.weak_match_percent)}: "
                      "check them.", className="error") if motion.weak_match_percent else None)
    images = html.Div([
        html.Div(dcc.Graph(figure=_motion_image(motion.mip_hu, motion.itv_mask, motion.pixel_mm,
                                                "Coronal MIP · ITV (orange)"), config={"displaylogo": False}),
                 style={"flex": "1"}),
        html.Div(dcc.Graph(figure=_motion_image(motion.aip_hu, motion.itv_mask, motion.pixel_mm,
                                                "Coronal AIP · ITV (orange)"), config={"displaylogo": False}),
                 style={"flex": "1"}),
    ], style={"display": "flex", "gap": "0.5em"})
    return html.Div([html.H3(f"Motion of {motion.gtv_name} over {len(motion.phase_percent)} phases"),
                     html.Table(rows, className="motion-figures"), caution, images], className="motion")


def motion_view(study_uid: str) -> html.Div:
    """The motion panel of a study's 4D CT (computed once per study and cached; audited READ)."""
    motion = current_app.extensions[MOTION_EXTENSION].motion(study_uid)
    audit_access(AuditAction.READ, study_uids=[study_uid])
    return motion_panel(motion)


# -- the Dash app -------------------------------------------------------------------------------


def _radio(id_: str, options, value) -> dcc.RadioItems:
    return dcc.RadioItems(id=id_, options=list(options), value=value, inline=True)


def layout() -> html.Div:
    cine = html.Div([
        html.H2("4D CT"),
        html.Div(id="cine-info", className="muted"),
        html.Div([_radio("cine-plane", CINE_PLANES, "coronal"),
                  html.Button("Play", id="play", n_clicks=0),
                  dcc.Interval(id="cine-timer", interval=CINE_INTERVAL_MS, disabled=True)], className="controls"),
        dcc.Graph(id="cine-graph", config={"scrollZoom": True, "displaylogo": False}),
        html.Label(["Phase", dcc.Slider(id="phase", min=0, max=1, step=1, value=0)]),
        html.Label(["Slice", dcc.Slider(id="cine-slice", min=1, max=1, step=1, value=1, marks=None,
                                        tooltip={"placement": "bottom"})]),
        dcc.Loading(html.Div(id="motion", children=html.P("Computing the ITV and motion…", className="muted"))),
    ], id="four-d-panel", style=_HIDDEN, className="panel")
    registration = html.Div([
        html.H2("Registration"),
        dcc.Dropdown(id="registration", options=[], value=None, clearable=False),
        html.Div([_radio("reg-plane", REGISTRATION_PLANES, "axial"), _radio("reg-mode", MODES, "magenta-green")],
                 className="controls"),
        html.Div([
            html.Div([dcc.Graph(id="reg-graph", config={"scrollZoom": True, "displaylogo": False}),
                      html.Label(["Slice", dcc.Slider(id="reg-slice", min=1, max=1, step=1, value=1, marks=None,
                                                      tooltip={"placement": "bottom"})]),
                      html.Label(["Blend alpha (0 fixed, 1 moving)",
                                  dcc.Slider(id="alpha", min=0.0, max=1.0, step=0.05, value=0.5,
                                             marks={0: "fixed", 0.5: "0.5", 1: "moving"})]),
                      html.Label(["Checkerboard tile (mm)",
                                  dcc.Slider(id="tile", min=5, max=50, step=5, value=DEFAULT_TILE_MM)])],
                     style={"flex": "2"}),
            html.Div(id="reg-qa", style={"flex": "1"}),
        ], style={"display": "flex", "gap": "1em"}),
    ], id="registration-panel", style=_HIDDEN, className="panel")
    return html.Div([
        dcc.Location(id="url"),
        dcc.Store(id="review"),
        html.H1(id="title", children="4D and registration review"),
        html.Div(id="message", className="message"),
        html.Label(["Window ", _radio("window", WINDOWS, "lung")]),
        cine, registration,
    ])


def load_page(pathname: str | None) -> tuple:
    """Callback: (store, title, message, 4D panel style, phase max, phase marks, cine info, registration panel
    style, registration options, chosen registration) for the study in the URL."""
    empty: tuple[Any, ...] = (None, "4D and registration review", "", _HIDDEN, 1, {}, "", _HIDDEN, [], None)
    try:
        view = review_view(study_uid_from(pathname))
    except ValueError as exc:
        return (*empty[:2], str(exc), *empty[3:])
    four_d, registrations = view["four_d"], view["registrations"]
    notes = [m for m in (view["four_d_message"],) if m]
    if not four_d and not registrations and not notes:
        notes.append(NO_DATA)
    title = f"4D and registration review: {view['patient_name']} ({view['patient_id']})"
    phase_max, marks, info = 1, {}, ""
    if four_d:
        percents = four_d["phase_percent"]
        phase_max = len(percents) - 1
        marks = {i: f"{p:g}%" for i, p in enumerate(percents)}
        info = (f"{len(percents)} phases; contours: {', '.join(four_d['rois'])}" if four_d["rois"]
                else f"{len(percents)} phases; no RTSTRUCT on the phases")
    options = [{"label": r["label"], "value": r["uid"]} for r in registrations]
    return (view, title, " ".join(notes), _SHOWN if four_d else _HIDDEN, phase_max, marks, info,
            _SHOWN if registrations else _HIDDEN, options, registrations[0]["uid"] if registrations else None)


def create_review_app(server: Flask) -> dash.Dash:
    """The 4D and registration review dashboard, mounted on ``server`` at :data:`URL_BASE`."""
    app = PageDash(__name__, server=server,
                   url_base_pathname=URL_BASE, title="4D and registration review · OncoPACS",
                   suppress_callback_exceptions=True, external_stylesheets=[STYLESHEET])
    server.extensions.setdefault(VIEWER_EXTENSION, ReviewViewer(server.extensions["oncopacs.archive"]))
    server.extensions.setdefault(MOTION_EXTENSION, MotionCache(server.extensions["oncopacs.archive"]))
    install_shell(app, layout, page_title="4D / registration review", subject=Subject.STUDY)
    @app.callback(Output("review", "data"), Output("title", "children"), Output("message", "children"),
                  Output("four-d-panel", "style"), Output("phase", "max"), Output("phase", "marks"),
                  Output("cine-info", "children"), Output("registration-panel", "style"),
                  Output("registration", "options"), Output("registration", "value"),
                  Output("cine-graph", "figure"), Output("cine-slice", "max"), Output("cine-slice", "value"),
                  Input("url", "pathname"), State("cine-plane", "value"), State("window", "value"))
    def _load(pathname, plane, window):
        """The page and the cine's first frame in one answer (a second round trip, sharing the server with the
        motion and registration callbacks, cost 0.2-0.4 s before the page was usable)."""
        page = load_page(pathname)
        view = page[0]
        if not view or not view.get("four_d"):
            return (*page, dash.no_update, dash.no_update, dash.no_update)
        size, middle = slice_slider(view["four_d"]["sizes"][plane])
        figure = phase_figure(view["study_uid"], 0, plane, slice_index(middle), window,
                              view["four_d"]["phase_percent"])
        return (*page, figure, size, middle)

    @app.callback(Output("motion", "children"), Input("review", "data"))
    def _motion(view):
        if not view or not view.get("four_d"):
            raise dash.exceptions.PreventUpdate
        return motion_view(view["study_uid"])

    @app.callback(Output("cine-timer", "disabled"), Output("play", "children"), Input("play", "n_clicks"),
                  prevent_initial_call=True)
    def _play(clicks):
        playing = bool(clicks) and clicks % 2 == 1
        return not playing, "Pause" if playing else "Play"

    @app.callback(Output("phase", "value"), Input("cine-timer", "n_intervals"), State("phase", "value"),
                  State("review", "data"), prevent_initial_call=True)
    def _tick(_n, phase, view):
        if not view or not view.get("four_d"):
            raise dash.exceptions.PreventUpdate
        return next_phase(phase, len(view["four_d"]["phase_percent"]))

    @app.callback(Output("cine-graph", "figure", allow_duplicate=True),
                  Output("cine-slice", "max", allow_duplicate=True),
                  Output("cine-slice", "value", allow_duplicate=True),
                  Input("review", "data"), Input("phase", "value"), Input("cine-plane", "value"),
                  Input("cine-slice", "value"), Input("window", "value"), prevent_initial_call=True)
    def _cine(view, phase, plane, index, window):
        """The cine frame; a new plane also sets the slider (to the middle slice) in the same answer."""
        changed = {t["prop_id"] for t in dash.callback_context.triggered}
        if not view or not view.get("four_d") or "review.data" in changed:
            raise dash.exceptions.PreventUpdate  # the loader drew the study's first frame
        size, middle = dash.no_update, dash.no_update
        if "cine-plane.value" in changed:
            size, index = slice_slider(view["four_d"]["sizes"][plane])
            middle = index
        figure = phase_figure(view["study_uid"], int(phase or 0), plane, slice_index(index), window,
                              view["four_d"]["phase_percent"])
        return figure, size, middle

    @app.callback(Output("reg-slice", "max"), Output("reg-slice", "value"), Output("reg-qa", "children"),
                  Input("registration", "value"), Input("reg-plane", "value"), State("review", "data"))
    def _registration(uid, plane, view):
        if not view or not uid:
            raise dash.exceptions.PreventUpdate
        try:
            sizes, panel = registration_view(view["study_uid"], uid)
        except (ValueError, NotFoundError) as exc:
            return 1, 1, html.P(str(exc), className="error")
        return (*slice_slider(sizes[plane]), panel)

    @app.callback(Output("reg-graph", "figure"), Input("registration", "value"), Input("reg-plane", "value"),
                  Input("reg-slice", "value"), Input("reg-mode", "value"), Input("alpha", "value"),
                  Input("tile", "value"), Input("window", "value"), State("review", "data"))
    def _registration_image(uid, plane, index, mode, alpha, tile, window, view):
        if not view or not uid:
            raise dash.exceptions.PreventUpdate
        try:
            return registration_figure(view["study_uid"], uid, plane, slice_index(index), mode=mode,
                                       alpha=0.5 if alpha is None else alpha, tile_mm=tile or DEFAULT_TILE_MM,
                                       window=window)
        except (ValueError, NotFoundError):
            raise dash.exceptions.PreventUpdate from None

    return app


def next_phase(phase: int | None, count: int) -> int:
    """The cine's next phase index (wraps to the first after the last)."""
    return (int(phase or 0) + 1) % max(count, 1)


__all__ = [
    "URL_BASE",
    "compose",
    "create_review_app",
    "load_page",
    "motion_panel",
    "motion_view",
    "next_phase",
    "phase_figure",
    "phase_frame",
    "qa_panel",
    "registration_figure",
    "registration_frame",
    "registration_view",
    "review_view",
    "slice_index",
    "slice_slider",
]
