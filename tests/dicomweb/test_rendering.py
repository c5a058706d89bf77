"""Rendering of CT, RT Dose and colour frames: windows checked against the PS3.3 formulas by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from oncopacs.dicomweb.multipart import parse_accept
from oncopacs.dicomweb.rendering import (
    RenderError,
    RenderSpec,
    Window,
    WindowFunction,
    choose_rendered_type,
    compute_windowed,
    parse_render_spec,
    parse_window,
    read_modality_values,
    render_frame,
    render_thumbnail,
)
from oncopacs.phantom import build_demo_patient

HU = np.array([[-1000, -200, -160, 0], [39, 40, 41, 100], [200, 239, 240, 1000], [-1024, 3000, 60, 20]], dtype=np.int16)


def make_ct(hu: np.ndarray = HU, *, intercept: float = -1024.0, slope: float = 1.0,
            window: tuple[float, float] | None = None, photometric: str = "MONOCHROME2") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(entropy_srcs=["render-ct"]), "CT"
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = str(intercept), str(slope)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = str(window[0]), str(window[1])
    stored = np.rint((hu.astype(np.float64) - intercept) / slope).astype("<u2")
    ds.PixelData = stored.tobytes()
    return ds


def linear_by_hand(x: float, c: float, w: float) -> int:
    """PS3.3 C.11.2.1.2.1, written out value by value."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return int(np.rint(((x - (c - 0.5)) / (w - 1) + 0.5) * 255))


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image)


def test_ct_png_has_the_window_values_of_the_formula():
    rendered = render_frame(make_ct(), 1, RenderSpec("image/png", Window(40, 400)))
    pixels = decode_png(rendered.data)
    expected = np.array([[linear_by_hand(float(x), 40, 400) for x in row] for row in HU])
    assert pixels.shape == HU.shape and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, expected)
    assert pixels[0, 0] == 0 and pixels[2, 3] == 255 and pixels[1, 1] == 128  # air, bone, the centre


def test_rescale_slope_and_intercept_are_applied_before_windowing():
    ds = make_ct(intercept=-1024.0, slope=0.5)  # stored = 2 * (HU + 1024)
    np.testing.assert_allclose(read_modality_values(ds, 1), HU.astype(float))
    pixels = decode_png(render_frame(ds, 1, RenderSpec("image/png", Window(40, 400))).data)
    assert pixels[1, 1] == linear_by_hand(40, 40, 400)


def test_dataset_window_is_used_without_a_window_parameter():
    pixels = decode_png(render_frame(make_ct(window=(0, 100)), 1, RenderSpec("image/png")).data)
    expected = np.array([[linear_by_hand(float(x), 0, 100) for x in row] for row in HU])
    np.testing.assert_array_equal(pixels, expected)


def test_min_max_window_without_any_window():
    rendered = render_frame(make_ct(), 1, RenderSpec("image/png"))
    pixels = decode_png(rendered.data)
    assert pixels[3, 0] == 0 and pixels[3, 1] == 255  # -1024 HU and 3000 HU: the extremes
    assert rendered.window == Window(988.0, 4024.0, WindowFunction.LINEAR_EXACT)


def test_monochrome1_is_inverted():
    rendered = render_frame(make_ct(photometric="MONOCHROME1"), 1, RenderSpec("image/png", Window(40, 400)))
    pixels = decode_png(rendered.data)
    assert pixels[0, 0] == 255 and pixels[2, 3] == 0


def test_window_functions():
    values = np.array([-100.0, 0.0, 100.0])
    assert compute_windowed(values, Window(0, 200, WindowFunction.LINEAR_EXACT)).tolist() == [0, 128, 255]
    sigmoid = compute_windowed(values, Window(0, 200, WindowFunction.SIGMOID))
    assert sigmoid.tolist() == [int(np.rint(255 / (1 + np.exp(2)))), 128, int(np.rint(255 / (1 + np.exp(-2))))]


def test_rt_dose_frame_rendered_in_gy():
    dose = build_demo_patient().rt_dose
    frame = int(dose.NumberOfFrames) // 2 + 1
    stored = np.frombuffer(dose.PixelData, dtype="<u4").reshape(int(dose.NumberOfFrames), dose.Rows, dose.Columns)
    dose_gy = stored[frame - 1] * float(dose.DoseGridScaling)
    np.testing.assert_allclose(read_modality_values(dose, frame), dose_gy)
    max_gy = float(dose_gy.max())
    assert 1.0 < max_gy < 100.0  # a plausible prescription dose, so DoseGridScaling was applied
    spec = RenderSpec("image/png", Window(max_gy / 2, max_gy, WindowFunction.LINEAR_EXACT))
    pixels = decode_png(render_frame(dose, frame, spec).data)
    expected = np.clip(np.rint(((dose_gy - max_gy / 2) / max_gy + 0.5) * 255), 0, 255)
    np.testing.assert_array_equal(pixels, expected.astype(np.uint8))
    assert np.unravel_index(np.argmax(pixels), pixels.shape) == np.unravel_index(np.argmax(dose_gy), dose_gy.shape)


def test_viewport_keeps_the_aspect_ratio_and_jpeg_decodes():
    ds = make_ct(np.zeros((20, 40), dtype=np.int16))
    rendered = render_frame(ds, 1, RenderSpec("image/jpeg", Window(40, 400), viewport_px=(100, 100), quality=50))
    image = Image.open(io.BytesIO(rendered.data))
    assert image.format == "JPEG" and image.size == (100, 50) == (rendered.width_px, rendered.height_px)


def test_thumbnail_of_multiframe_dose_uses_the_middle_frame():
    dose = build_demo_patient().rt_dose
    thumbnail = render_thumbnail(dose, "image/png")
    assert thumbnail.frame_number == (int(dose.NumberOfFrames) + 1) // 2
    assert max(thumbnail.width_px, thumbnail.height_px) == 128
    assert Image.open(io.BytesIO(thumbnail.data)).size == (thumbnail.width_px, thumbnail.height_px)


def test_compressed_colour_image_renders_as_rgb():
    ds = dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    pixels = np.asarray(Image.open(io.BytesIO(render_frame(ds, 1, RenderSpec("image/png")).data)))
    assert pixels.shape == (ds.Rows, ds.Columns, 3)
    assert tuple(pixels[5, 50]) == (255, 0, 0)  # the top band of this test image is pure red


def test_parameters():
    spec = parse_render_spec({"window": "40,400,linear_exact", "viewport": "64,32", "quality": "70"}, "image/png")
    assert spec == RenderSpec("image/png", Window(40, 400, WindowFunction.LINEAR_EXACT), (64, 32), 70)
    for bad in ({"window": "40"}, {"window": "a,b"}, {"window": "40,0"}, {"window": "40,400,CUBIC"},
                {"viewport": "0,10"}, {"viewport": "10"}, {"quality": "101"}):
        with pytest.raises(RenderError):
            parse_render_spec(bad, "image/jpeg")
    assert parse_window("-600,1500") == Window(-600, 1500)


def test_rendered_media_type_from_accept():
    assert choose_rendered_type(parse_accept(None)) == "image/jpeg"
    assert choose_rendered_type(parse_accept("image/png")) == "image/png"
    assert choose_rendered_type(parse_accept("image/webp, */*;q=0.1")) == "image/jpeg"
    assert choose_rendered_type(parse_accept("application/pdf")) is None


def test_frame_out_of_range_and_no_pixels():
    with pytest.raises(RenderError, match="frame 2"):
        render_frame(make_ct(), 2, RenderSpec("image/png"))
    ds = make_ct()
    del ds.PixelData
    with pytest.raises(RenderError, match="no pixel data"):
        render_frame(ds, 1, RenderSpec("image/png"))
