"""The 4D and registration review: phase cine, blend/checkerboard, QA figures, access, empty studies."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from flask import Flask, g
from sqlalchemy import select

from dashboards.review import (
    NO_DATA,
    VIEWER_EXTENSION,
    compose,
    load_page,
    motion_view,
    next_phase,
    phase_frame,
    registration_frame,
    registration_view,
    slice_index,
    slice_slider,
)
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Principal, Role
from oncopacs.cli.demo import load_review_demo
from oncopacs.phantom.review_demo import (
    PATIENT_ID,
    REPEAT_SHIFT_MM,
    ReviewDemo,
)
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.viewer.review import ReviewViewer, load_four_d, load_pair
from oncopacs.viewer.slices import RenderOptions, encode_png, pixel_of, render_slice
from oncopacs.web.app import create_app
from tests.dashboards.conftest import dash_update, texts


@pytest.fixture(scope="module")
def review_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, ReviewDemo]]:
    """The app over an archive holding only the review demo (4D CT, repeat CT, rigid registration + QA)."""
    folder = tmp_path_factory.mktemp("review")
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key="test-secret")
    with open_platform(settings) as platform:
        demo = load_review_demo(platform.archive)
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app, demo


@pytest.fixture(scope="module")
def app(review_app) -> Flask:
    return review_app[0]


@pytest.fixture(scope="module")
def demo(review_app) -> ReviewDemo:
    return review_app[1]


@pytest.fixture(scope="module")
def four_d_uid(demo) -> str:
    return str(demo.ct4d.phases[0][0].StudyInstanceUID)


@pytest.fixture(scope="module")
def repeat_uid(demo) -> str:
    return str(demo.repeat_ct[0].StudyInstanceUID)


@pytest.fixture
def as_oncologist(app: Flask):
    @contextmanager
    def context():
        with app.test_request_context("/dashboards/review/_dash-update-component", method="POST"):
            g.principal = Principal("test-oncologist", Role.ONCOLOGIST, "token")
            yield

    return context


def bearer(app: Flask, role: Role) -> dict[str, str]:
    users = app.extensions["oncopacs.users"]
    name = f"review-{role.value}"
    if not users.exists(name):
        users.add_user(name, role, "correct horse battery")
    return {"Authorization": f"Bearer {users.create_token(name)}"}


def test_the_page_lists_phases_in_order_and_the_registration(app, demo, four_d_uid, as_oncologist):
    with as_oncologist():
        store, title, message, four_d_style, phase_max, marks, info, reg_style, options, chosen = load_page(
            f"/dashboards/review/{four_d_uid}")
    assert PATIENT_ID in title and message == ""
    assert store["four_d"]["phase_percent"] == [10.0 * p for p in range(demo.ct4d.spec.phases)]
    assert phase_max == demo.ct4d.spec.phases - 1 and marks[5] == "50%"
    assert store["four_d"]["rois"] == ["GTV"] and "GTV" in info
    assert four_d_style == {} and reg_style == {}
    assert [o["value"] for o in options] == [demo.registration_uid] == [chosen]
    assert "QA passed" in options[0]["label"]
    assert next_phase(3, 10) == 4 and next_phase(9, 10) == 0


def test_phase_frames_differ_and_follow_the_phase_order(app, demo, four_d_uid, as_oncologist):
    archive = app.extensions["oncopacs.archive"]
    four_d = load_four_d(archive, four_d_uid)
    spec = demo.ct4d.spec
    scene = four_d.scenes[0]
    y_mm = scene.grid.origin_mm[1] + scene.grid.spacing_mm[1] * np.arange(scene.grid.shape[1])
    y_index = int(np.argmin(np.abs(y_mm)))
    frames, rows = [], []
    with as_oncologist():
        for phase in range(spec.phases):
            rendered = phase_frame(four_d_uid, phase, "coronal", y_index, "mediastinum")
            rgb = rendered.rgb.astype(int)
            frames.append(rgb)
            grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])  # contours are coloured
            _, centre_col = pixel_of(scene, "coronal", (0.0, 0.0, 0.0))
            band = slice(centre_col - int(20 / rendered.pixel_mm), centre_col + int(20 / rendered.pixel_mm))
            tumour = grey[:, band] & (rgb[:, band, 0] > 60)  # soft tissue inside the lung (-800 HU is black)
            found = np.nonzero(tumour)[0]
            rows.append(found.mean())
            expected_row, _ = pixel_of(scene, "coronal", spec.compute_tumour_centre_mm(phase))
            assert abs(found.mean() - expected_row) * rendered.pixel_mm < 1.5, phase
        red = (frames[0][..., 0] == 255) & (frames[0][..., 1] == 0) & (frames[0][..., 2] == 0)
    assert red.any()  # the GTV contour is drawn
    assert not np.array_equal(frames[0], frames[spec.phases // 2])
    assert np.ptp(rows) * rendered.pixel_mm > 0.8 * spec.amplitude_mm[2]  # superior-inferior motion is seen


def test_the_registration_resamples_the_moving_image_onto_the_fixed(app, four_d_uid, demo):
    pair = load_pair(app.extensions["oncopacs.archive"], four_d_uid, demo.registration_uid)
    assert pair.fixed.ct_hu.shape == pair.moving.ct_hu.shape and pair.patient_ids == (PATIENT_ID,)
    inside = pair.moving.ct_hu > -990  # where the moving image covers the fixed grid
    assert inside.mean() > 0.6
    # the repeat CT is the 0 % phase moved by REPEAT_SHIFT_MM: unregistered, the mean difference is ~175 HU
    assert np.abs(pair.fixed.ct_hu - pair.moving.ct_hu)[inside].mean() < 5.0
    first_slice_z = float(demo.repeat_ct[0].ImagePositionPatient[2])
    assert first_slice_z - pair.fixed.grid.origin_mm[2] == pytest.approx(REPEAT_SHIFT_MM[2])


def test_blend_at_alpha_0_and_1_is_fixed_and_moving(app, four_d_uid, demo, as_oncologist):
    pair = load_pair(app.extensions["oncopacs.archive"], four_d_uid, demo.registration_uid)
    options = RenderOptions(window="mediastinum")
    fixed = render_slice(pair.fixed, "axial", 3, options).rgb
    moving = render_slice(pair.moving, "axial", 3, options).rgb
    assert not np.array_equal(fixed, moving)  # slice 3 of the moving image is partly outside its field of view
    with as_oncologist():
        at0, _ = registration_frame(four_d_uid, demo.registration_uid, "axial", 3, mode="blend", alpha=0.0,
                                    window="mediastinum")
        at1, _ = registration_frame(four_d_uid, demo.registration_uid, "axial", 3, mode="blend", alpha=1.0,
                                    window="mediastinum")
        half, _ = registration_frame(four_d_uid, demo.registration_uid, "axial", 3, mode="blend", alpha=0.5,
                                     window="mediastinum")
    assert np.array_equal(at0, fixed) and np.array_equal(at1, moving)
    assert np.abs(half.astype(int) - (fixed.astype(int) + moving.astype(int)) / 2).max() <= 0.5


def test_checkerboard_alternates_tiles(app, four_d_uid, demo, as_oncologist):
    board = compose(np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8), "checkerboard", tile_px=2)
    assert board[0, 0, 0] == 0 and board[0, 2, 0] == 255 and board[2, 0, 0] == 255 and board[2, 2, 0] == 0
    assert board[1, 1, 0] == 0 and board[3, 1, 0] == 255
    pair = load_pair(app.extensions["oncopacs.archive"], four_d_uid, demo.registration_uid)
    options = RenderOptions(window="mediastinum")
    fixed = render_slice(pair.fixed, "coronal", 20, options)
    moving = render_slice(pair.moving, "coronal", 20, options).rgb
    with as_oncologist():
        out, pixel_mm = registration_frame(four_d_uid, demo.registration_uid, "coronal", 20, mode="checkerboard",
                                           tile_mm=10.0, window="mediastinum")
    tile = round(10.0 / pixel_mm)
    rows, cols = np.indices(out.shape[:2]) // tile
    from_moving = (rows + cols) % 2 == 1
    assert from_moving.any() and (~from_moving).any()
    assert np.array_equal(out[from_moving], moving[from_moving])
    assert np.array_equal(out[~from_moving], fixed.rgb[~from_moving])
    with pytest.raises(ValueError):
        compose(fixed.rgb, moving, "swipe")


def test_the_qa_figures_are_shown(app, four_d_uid, demo, as_oncologist):
    with as_oncologist():
        sizes, panel = registration_view(four_d_uid, demo.registration_uid)
    assert sizes == {"axial": 24, "coronal": 64, "sagittal": 64}
    shown = texts(panel)
    pair = load_pair(app.extensions["oncopacs.archive"], four_d_uid, demo.registration_uid)
    qa = pair.qa["qa"]
    assert "QA passed" in shown and qa["passed"]
    for label, value in [("Jacobian determinant min", f"{qa['jacobian_min']:.3f}"),
                         ("Jacobian determinant max", f"{qa['jacobian_max']:.3f}"),
                         ("Folding (det J ≤ 0)", f"{qa['folding_percent']:.3f} %"),
                         ("Inverse consistency mean", f"{qa['inverse_consistency_mean_mm']:.2f} mm"),
                         ("TRE mean", f"{qa['tre_mean_mm']:.2f} mm")]:
        assert shown[shown.index(label) + 1] == value, label
    assert qa["tre_mean_mm"] < 1.0  # the demo registration recovers the known shift


def test_views_are_audited(app, four_d_uid, demo, as_oncologist):
    with as_oncologist():
        phase_frame(four_d_uid, 2, "axial", 10)
    with app.extensions["oncopacs.archive"].index.reading() as session:
        actions = session.scalars(select(AuditRecord.action).where(AuditRecord.actor == "test-oncologist",
                                                                   AuditRecord.patient_ids == PATIENT_ID)).all()
    assert {"read", "retrieve"} <= set(actions)


def test_a_study_with_neither_says_so(app, repeat_uid, as_oncologist):
    with as_oncologist():
        store, _title, message, four_d_style, *_rest, reg_style, options, chosen = load_page(
            f"/dashboards/review/{repeat_uid}")
        assert message == NO_DATA and four_d_style == reg_style == {"display": "none"} and options == []
        assert store["four_d"] is None and chosen is None
        unknown = load_page("/dashboards/review/1.2.3.4")
    assert unknown[0] is None and "not in the archive" in unknown[2]


def test_access_over_http(app, four_d_uid, repeat_uid):
    client = app.test_client()
    page = f"/dashboards/review/{four_d_uid}"
    assert client.get(page, headers=bearer(app, Role.REFERRER)).status_code == 403
    refused = dash_update(client, "/dashboards/review/", [("title", "children")],
                          [("url", "pathname", page)], bearer(app, Role.REFERRER))
    assert refused.status_code == 403
    visit = client.get(page, headers={"Accept": "text/html"})
    assert visit.status_code == 302 and visit.headers["Location"].startswith("/login?next=")
    assert client.get(page).status_code == 401
    assert client.get(page, headers=bearer(app, Role.ONCOLOGIST)).status_code == 200
    browser = client.get(f"/studies?q={PATIENT_ID}", headers=bearer(app, Role.ONCOLOGIST)).get_data(as_text=True)
    assert f'href="/dashboards/review/{four_d_uid}"' in browser
    assert f'href="/dashboards/review/{repeat_uid}"' not in browser


def test_slice_sliders_count_from_one_as_the_titles_do():
    assert slice_slider(64) == (64, 33) and slice_slider(1) == (1, 1)  # max = the slice count; the middle slice
    assert slice_index(33) == 32 and slice_index(1) == 0 and slice_index(None) == 0 and slice_index(0) == 0
    assert slice_index(slice_slider(64)[0]) == 63  # the slider's last value is the last slice


def test_cine_and_blend_callbacks_over_http(app, four_d_uid, demo, as_oncologist):
    with as_oncologist():
        store = load_page(f"/dashboards/review/{four_d_uid}")[0]
        slice_32 = phase_frame(four_d_uid, 4, "coronal", 31, "lung")  # the slider's 32 is index 31
    client, headers = app.test_client(), bearer(app, Role.ONCOLOGIST)
    size = store["four_d"]["sizes"]["coronal"]
    cine = [("cine-graph", "figure"), ("cine-slice", "max"), ("cine-slice", "value")]
    page = [("review", "data"), ("title", "children"), ("message", "children"), ("four-d-panel", "style"),
            ("phase", "max"), ("phase", "marks"), ("cine-info", "children"), ("registration-panel", "style"),
            ("registration", "options"), ("registration", "value"), *cine]
    opened = dash_update(client, "/dashboards/review/", page,
                         [("url", "pathname", f"/dashboards/review/{four_d_uid}")], headers,
                         state=[("cine-plane", "value", "coronal"), ("window", "value", "lung")])
    shown_first = opened.json["response"]  # the study, its first frame and the slider in one answer
    assert shown_first["cine-slice"] == {"max": size, "value": size // 2 + 1}  # 1-based
    assert shown_first["cine-graph"]["figure"]["layout"]["title"]["text"].startswith(f"Coronal {size // 2 + 1}/")
    dependencies = client.get("/dashboards/review/_dash-dependencies", headers=headers).json
    key = next(d["output"] for d in dependencies if d["output"].startswith("..cine-graph.figure@"))  # the browser's
    cine = [(o.split(".")[0], ".".join(o.split(".")[1:])) for o in key.strip(".").split("...")]  # (id, prop@hash)
    again = dash_update(client, "/dashboards/review/", cine,
                        [("review", "data", store), ("phase", "value", 0), ("cine-plane", "value", "coronal"),
                         ("cine-slice", "value", size // 2 + 1), ("window", "value", "lung")], headers,
                        changed=["review.data", "cine-slice.value"])
    assert again.status_code == 204  # the loader drew that frame: the cine callback does not draw it twice
    axial = dash_update(client, "/dashboards/review/", cine,
                        [("review", "data", store), ("phase", "value", 0), ("cine-plane", "value", "axial"),
                         ("cine-slice", "value", 3), ("window", "value", "lung")], headers,
                        changed=["cine-plane.value"])
    axial_size = store["four_d"]["sizes"]["axial"]
    assert axial.json["response"]["cine-slice"] == {"max": axial_size, "value": axial_size // 2 + 1}  # re-centred
    frame = dash_update(client, "/dashboards/review/", cine,
                        [("review", "data", store), ("phase", "value", 4), ("cine-plane", "value", "coronal"),
                         ("cine-slice", "value", 32), ("window", "value", "lung")], headers,
                        changed=["cine-slice.value"])
    assert "cine-slice" not in frame.json["response"]  # a slice change leaves the slider alone
    figure = frame.json["response"]["cine-graph"]["figure"]
    assert frame.status_code == 200 and figure["data"][0]["source"].startswith("data:image/png;base64,")
    assert figure["layout"]["title"]["text"] == f"Coronal 32/{size} · phase 40 %"  # what the slider says
    shown = base64.b64decode(figure["data"][0]["source"].removeprefix("data:image/png;base64,"))
    assert shown == encode_png(np.ascontiguousarray(slice_32.rgb))  # and the slice it names
    play = dash_update(client, "/dashboards/review/", [("cine-timer", "disabled"), ("play", "children")],
                       [("play", "n_clicks", 1)], headers)
    assert play.status_code == 200 and play.json["response"]["cine-timer"]["disabled"] is False
    blend = dash_update(client, "/dashboards/review/", [("reg-graph", "figure")],
                        [("registration", "value", demo.registration_uid), ("reg-plane", "value", "axial"),
                         ("reg-slice", "value", 12), ("reg-mode", "value", "checkerboard"), ("alpha", "value", 0.5),
                         ("tile", "value", 20), ("window", "value", "mediastinum")], headers,
                        state=[("review", "data", store)])
    assert blend.status_code == 200
    title = blend.json["response"]["reg-graph"]["figure"]["layout"]["title"]["text"]
    assert title.startswith("Axial 12/") and "checkerboard (tiles 20 mm)" in title  # the slider's 12, 1-based
    with as_oncologist():
        sizes, _panel = registration_view(four_d_uid, demo.registration_uid)
    chosen = dash_update(client, "/dashboards/review/", [("reg-slice", "max"), ("reg-slice", "value"),
                                                         ("reg-qa", "children")],
                         [("registration", "value", demo.registration_uid), ("reg-plane", "value", "axial")], headers,
                         state=[("review", "data", store)])
    assert chosen.json["response"]["reg-slice"] == {"max": sizes["axial"], "value": sizes["axial"] // 2 + 1}
    assert title == f"Axial 12/{sizes['axial']} · checkerboard (tiles 20 mm)"


def test_volumes_are_cached_per_app(app, four_d_uid, demo):
    viewer = app.extensions[VIEWER_EXTENSION]
    assert isinstance(viewer, ReviewViewer)
    assert viewer.four_d(four_d_uid) is viewer.four_d(four_d_uid)
    assert viewer.pair(four_d_uid, demo.registration_uid) is viewer.pair(four_d_uid, demo.registration_uid)
    fresh = ReviewViewer(app.extensions["oncopacs.archive"])
    assert fresh.pair(four_d_uid, demo.registration_uid) is not viewer.pair(four_d_uid, demo.registration_uid)


def test_magenta_green_shows_fixed_magenta_and_moving_green():
    fixed = np.full((4, 4, 3), 100, np.uint8)
    moving = np.full((4, 4, 3), 200, np.uint8)
    out = compose(fixed, moving, "magenta-green")
    assert tuple(out[0, 0]) == (100, 200, 100)  # moving brighter: green
    same = compose(fixed, fixed, "magenta-green")
    assert np.array_equal(same, fixed)  # aligned anatomy stays grey


def test_registration_shows_six_dof_and_series_names(app, four_d_uid, demo, as_oncologist):
    with as_oncologist():
        _sizes, panel = registration_view(four_d_uid, demo.registration_uid)
        figure_title = registration_frame(four_d_uid, demo.registration_uid, "axial", 12)[0]
    shown = texts(panel)
    assert "Registration: 6 DOF (moving → fixed)" in shown
    translations = [float(v) for v in shown[shown.index("Translation (mm)") + 1:][:3]]
    rotations = [float(v) for v in shown[shown.index("Rotation (°)") + 1:][:3]]
    assert np.abs(translations) == pytest.approx(np.abs(REPEAT_SHIFT_MM), abs=1.0)
    assert np.abs(rotations).max() < 0.5
    assert not any(demo.registration_uid[-12:] in t for t in shown)
    fixed, moving = shown[shown.index("Fixed: ") + 1], shown[shown.index("Moving: ") + 1]
    assert fixed != moving and "." not in fixed.split(" · ")[0][-6:]  # a description, not a UID
    rgb = figure_title
    assert (rgb[..., 0] != rgb[..., 1]).any()  # magenta/green by default, not grey on grey
    with as_oncologist():
        options = load_page(f"/dashboards/review/{four_d_uid}")[8]
    assert "→" in options[0]["label"] and "…" not in options[0]["label"]


def test_motion_panel_shows_itv_and_amplitude_per_axis(app, four_d_uid, demo, as_oncologist):
    with as_oncologist():
        panel = motion_view(four_d_uid)
        again = app.extensions["oncopacs.review_motion"].motion(four_d_uid)
    assert again is app.extensions["oncopacs.review_motion"].motion(four_d_uid)  # cached per study
    shown = texts(panel)
    si = float(shown[shown.index("Amplitude SI (mm)") + 1])
    assert si == pytest.approx(demo.ct4d.spec.amplitude_mm[2], abs=2.0)
    assert {"Amplitude LR (mm)", "Amplitude AP (mm)", "ITV (cc)"} <= set(shown)
    itv_cc = float(shown[shown.index("ITV (cc)") + 1])
    assert itv_cc > max(again.gtv_cc) > 0  # the ITV covers the GTV's motion
    assert again.mip_hu.shape == again.aip_hu.shape == again.itv_mask.shape and again.itv_mask.any()
    assert (again.mip_hu >= again.aip_hu - 1e-3).all()
