"""Rendered images and thumbnails of CT, MR, PET and RT Dose frames (WADO-RS ``rendered``/``thumbnail``).

Stored values go through the modality transformation first (Rescale Slope/Intercept, or Dose Grid
Scaling for RT Dose), so a window is given in modality units: HU for CT, Gy for RT Dose, the
rescaled unit (Bq/ml ...) otherwise. The window is the ``window=centre,width[,function]`` parameter,
else the dataset's own Window Center/Width, else the frame's minimum to maximum. The VOI functions
are those of PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID) onto 0..255.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

from oncopacs.dicomweb.frames import read_number_of_frames
from oncopacs.dicomweb.multipart import MediaType
from oncopacs.errors import OncopacsError

#: Rendered media types and the Pillow format that writes them.
RENDERED_FORMATS: dict[str, str] = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
DEFAULT_MEDIA_TYPE = "image/jpeg"
DEFAULT_QUALITY = 90
THUMBNAIL_SIZE_PX = 128
MAX_VIEWPORT_PX = 4096
_WILDCARDS = {"*/*", "*", "image/*"}


class RenderError(OncopacsError):
    """A rendering parameter is malformed, or the frame cannot be rendered (HTTP 400)."""


class WindowFunction(str, enum.Enum):
    """VOI LUT Function (0028,1056)."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window in modality units (HU, Gy, ...)."""

    centre: float
    width: float
    function: WindowFunction = WindowFunction.LINEAR


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """What the client asked for: media type, window (None: the dataset's own), viewport, JPEG quality."""

    media_type: str = DEFAULT_MEDIA_TYPE
    window: Window | None = None
    viewport_px: tuple[int, int] | None = None  # (width, height) the image is scaled to fit in
    quality: int = DEFAULT_QUALITY


@dataclass(frozen=True, slots=True)
class RenderedImage:
    """An encoded image and how it was made."""

    media_type: str
    data: bytes
    width_px: int
    height_px: int
    frame_number: int  # 1-based
    window: Window | None  # None for colour images


# -- parameters ---------------------------------------------------------------------------------


def choose_rendered_type(accept: list[MediaType]) -> str | None:
    """The first rendered media type the Accept entries allow (JPEG for none or a wildcard); None: 406."""
    if not accept:
        return DEFAULT_MEDIA_TYPE
    for entry in accept:
        if entry.essence in RENDERED_FORMATS:
            return entry.essence
        if entry.essence in _WILDCARDS:
            return DEFAULT_MEDIA_TYPE
    return None


def parse_window(text: str) -> Window:
    """``"40,400"`` or ``"40,400,SIGMOID"`` (centre, width in modality units, function)."""
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 3):
        raise RenderError("window is centre,width[,function]")
    try:
        centre, width = float(pieces[0]), float(pieces[1])
    except ValueError:
        raise RenderError(f"window centre and width must be numbers, got {text!r}") from None
    if not np.isfinite(centre):
        raise RenderError(f"window centre must be a finite number, got {pieces[0]!r}")
    try:
        function = WindowFunction(pieces[2].upper()) if len(pieces) == 3 else WindowFunction.LINEAR
    except ValueError:
        raise RenderError(f"window function must be one of {', '.join(f.value for f in WindowFunction)}") from None
    _check_width(width, function)
    return Window(centre, width, function)


def _check_width(width: float, function: WindowFunction) -> None:
    if not np.isfinite(width) or width < (1.0 if function == WindowFunction.LINEAR else 0.0) or width == 0:
        raise RenderError(f"window width {width} is too small for {function.value}")


def parse_viewport(text: str) -> tuple[int, int]:
    """``"512,512"`` -> (width, height) in pixels."""
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) != 2 or not all(_is_small_whole_number(piece) for piece in pieces):
        raise RenderError("viewport is width,height in pixels")
    width, height = int(pieces[0]), int(pieces[1])
    if not (0 < width <= MAX_VIEWPORT_PX and 0 < height <= MAX_VIEWPORT_PX):
        raise RenderError(f"viewport sides must be 1..{MAX_VIEWPORT_PX} pixels")
    return width, height


def _is_small_whole_number(text: str) -> bool:
    """ASCII digits (``str.isdigit`` also takes "²", which ``int`` refuses), few enough for ``int`` to take."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def parse_render_spec(
    parameters: Mapping[str, str], media_type: str, *, viewport_px: tuple[int, int] | None = None
) -> RenderSpec:
    """The RenderSpec of the query parameters ``window``, ``viewport`` and ``quality``."""
    window = parse_window(parameters["window"]) if parameters.get("window") else None
    if parameters.get("viewport"):
        viewport_px = parse_viewport(parameters["viewport"])
    quality = DEFAULT_QUALITY
    if parameters.get("quality"):
        text = parameters["quality"].strip()
        if not _is_small_whole_number(text) or not 1 <= int(text) <= 100:
            raise RenderError("quality is an integer from 1 to 100")
        quality = int(text)
    return RenderSpec(media_type, window, viewport_px, quality)


# -- pixel values -------------------------------------------------------------------------------


def read_modality_values(dataset: Dataset, frame_number: int) -> np.ndarray:
    """Frame ``frame_number`` (1-based) in modality units: HU for CT, Gy for RT Dose, rescaled otherwise."""
    count = read_number_of_frames(dataset)
    if count == 0:
        raise RenderError(f"instance {dataset.get('SOPInstanceUID', '')} has no pixel data to render")
    if not 1 <= frame_number <= count:
        raise RenderError(f"frame {frame_number} does not exist: the instance has {count} frame(s)")
    try:
        stored = pixel_array(dataset, index=frame_number - 1) if count > 1 else pixel_array(dataset)
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds of error
        raise RenderError(f"the pixel data cannot be decoded: {type(exc).__name__}") from None
    if dataset.get("Modality") == "RTDOSE" or "DoseGridScaling" in dataset:
        return stored.astype(np.float64) * float(dataset.get("DoseGridScaling") or 1.0)
    return np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)


def read_dataset_window(dataset: Dataset, values: np.ndarray) -> Window:
    """The dataset's first Window Center/Width, else the minimum to maximum of ``values``."""
    centre, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    function_text = str(dataset.get("VOILUTFunction") or "LINEAR").upper()
    function = WindowFunction(function_text) if function_text in WindowFunction.__members__ else WindowFunction.LINEAR
    if centre is not None and width is not None:
        centre = centre[0] if isinstance(centre, MultiValue) else centre
        width = width[0] if isinstance(width, MultiValue) else width
        try:
            window = Window(float(centre), float(width), function)
            _check_width(window.width, function)
            return window
        except (TypeError, ValueError, RenderError):
            pass
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    return Window((low + high) / 2, max(high - low, 1e-6), WindowFunction.LINEAR_EXACT)


def compute_windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """``values`` through the VOI window onto 0..255 (PS3.3 C.11.2.1.2), as uint8."""
    c, w = window.centre, window.width
    if window.function == WindowFunction.LINEAR:
        scaled = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0 if w > 1 else np.where(values > c - 0.5, 255.0, 0.0)
    elif window.function == WindowFunction.LINEAR_EXACT:
        scaled = ((values - c) / w + 0.5) * 255.0
    else:
        scaled = 255.0 / (1.0 + np.exp(np.clip(-4.0 * (values - c) / w, -700, 700)))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# -- rendering ----------------------------------------------------------------------------------


def render_frame(dataset: Dataset, frame_number: int, spec: RenderSpec) -> RenderedImage:
    """Frame ``frame_number`` (1-based) of ``dataset`` rendered as ``spec`` asks.

    RenderError when it cannot be, also when the stored header is damaged (an instance is stored as received).
    """
    if spec.media_type not in RENDERED_FORMATS:
        raise RenderError(f"cannot render as {spec.media_type}")
    try:
        with np.errstate(all="ignore"):  # out-of-range values are clipped onto 0..255
            return _render_frame(dataset, frame_number, spec)
    except RenderError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pixel module; pydicom's text may quote values
        raise RenderError(f"frame {frame_number} cannot be rendered from the stored header and pixel data "
                          f"({type(exc).__name__})") from None


def _render_frame(dataset: Dataset, frame_number: int, spec: RenderSpec) -> RenderedImage:
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    window: Window | None = None
    if photometric.startswith("MONOCHROME"):
        values = read_modality_values(dataset, frame_number)
        window = spec.window or read_dataset_window(dataset, values)
        pixels = compute_windowed(values, window)
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
    else:
        pixels = _read_colour(dataset, frame_number)
    image = Image.fromarray(pixels)
    if spec.viewport_px is not None:
        image = _fit(image, spec.viewport_px)
    return RenderedImage(spec.media_type, _encode(image, spec), image.width, image.height, frame_number, window)


def render_thumbnail(
    dataset: Dataset,
    media_type: str = DEFAULT_MEDIA_TYPE,
    *,
    viewport_px: tuple[int, int] | None = None,
    frame_number: int | None = None,
) -> RenderedImage:
    """A small image (fitting THUMBNAIL_SIZE_PX square) of a frame, by default the middle one, in the dataset's own
    window."""
    count = read_number_of_frames(dataset)
    spec = RenderSpec(media_type, None, viewport_px or (THUMBNAIL_SIZE_PX, THUMBNAIL_SIZE_PX), DEFAULT_QUALITY)
    return render_frame(dataset, frame_number or max(1, (count + 1) // 2), spec)


def _read_colour(dataset: Dataset, frame_number: int) -> np.ndarray:
    count = read_number_of_frames(dataset)
    if count == 0 or not 1 <= frame_number <= count:
        raise RenderError(f"frame {frame_number} does not exist: the instance has {count} frame(s)")
    try:
        pixels = pixel_array(dataset, index=frame_number - 1) if count > 1 else pixel_array(dataset)
        if str(dataset.PhotometricInterpretation).upper() == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, dataset)
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds of error
        raise RenderError(f"the pixel data cannot be decoded: {type(exc).__name__}") from None
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise RenderError(f"cannot render photometric interpretation {dataset.PhotometricInterpretation}")
    if pixels.dtype != np.uint8:
        top = float(pixels.max()) or 1.0
        pixels = np.rint(pixels.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    return pixels


def _fit(image: Image.Image, viewport_px: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to fit the viewport, keeping its aspect ratio."""
    scale = min(viewport_px[0] / image.width, viewport_px[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, spec: RenderSpec) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": spec.quality} if spec.media_type == "image/jpeg" else {}
    image.save(buffer, format=RENDERED_FORMATS[spec.media_type], **options)
    return buffer.getvalue()
