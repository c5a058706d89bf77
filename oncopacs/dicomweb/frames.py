"""Frames of an instance for WADO-RS: as stored, or decompressed to little endian octets.

A native (uncompressed) frame is sent as ``application/octet-stream`` in explicit VR little endian
byte order. An encapsulated frame is sent as stored, in its own media type (``image/jpeg``,
``image/jls``, ``image/jp2``, ``image/dicom-rle`` ...), when the Accept header allows it, or decoded
to octets when the client asks for ``transfer-syntax=1.2.840.10008.1.2.1``. Frame numbers are
1-based, as in the URL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder, pack_bits, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from oncopacs.dicomweb.multipart import MediaType
from oncopacs.errors import NotFoundError, OncopacsError

OCTET_STREAM = "application/octet-stream"

#: The media type of a frame kept in each compressed transfer syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}

_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
_ANY = {"*/*", "*", "application/*", "image/*"}
MAX_FRAMES_PER_REQUEST = 10_000
MAX_FRAME_NUMBER = 2**31 - 1  # Number of Frames is an IS: at most 2^31 - 1


class FrameRequestError(OncopacsError):
    """The frame list is malformed (HTTP 400) or the instance has no frames to give."""


@dataclass(frozen=True, slots=True)
class FrameEncoding:
    """How frames are sent: the part media type, the transfer syntax, and whether to decode them."""

    media_type: str
    transfer_syntax_uid: str
    decompress: bool

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax_uid}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame's bytes as they are to be sent."""

    number: int  # 1-based
    data: bytes
    encoding: FrameEncoding


def parse_frame_list(text: str) -> tuple[int, ...]:
    """``"1,3,5"`` -> ``(1, 3, 5)``; :class:`FrameRequestError` for anything but positive integers."""
    items = text.split(",")
    if len(items) > MAX_FRAMES_PER_REQUEST:
        raise FrameRequestError(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return tuple(parse_frame_number(item) for item in items)


def parse_frame_number(text: str) -> int:
    """One 1-based frame number in ASCII digits (not "²" or "١", which ``str.isdigit`` accepts), at most
    :data:`MAX_FRAME_NUMBER`; :class:`FrameRequestError` otherwise."""
    item = text.strip()
    if not (item.isascii() and item.isdigit() and len(item) <= 10 and 1 <= int(item) <= MAX_FRAME_NUMBER):
        raise FrameRequestError(f"frame numbers are whole numbers from 1 to {MAX_FRAME_NUMBER} separated by "
                                f"commas, got {item[:20]!r}")
    return int(item)


def read_number_of_frames(dataset: Dataset) -> int:
    """How many frames the instance has (0 without pixel data)."""
    if "PixelData" not in dataset:
        return 0
    try:
        return max(int(dataset.get("NumberOfFrames") or 1), 1)
    except Exception:  # noqa: BLE001 - a damaged value (wrong VR or length) reads as one frame
        return 1


def choose_frame_encoding(accept: list[MediaType], stored_syntax: str) -> FrameEncoding | None:
    """The first encoding the Accept entries allow for frames stored in ``stored_syntax`` (None: 406).

    No Accept entry at all means "as stored". ``transfer-syntax=*`` means as stored; a missing
    transfer-syntax means the media type's default (little endian octets for octet-stream).
    """
    stored = UID(stored_syntax)
    as_stored = _as_stored(stored)
    if as_stored is None:
        return None
    if not accept:
        return as_stored
    decoded = FrameEncoding(OCTET_STREAM, ExplicitVRLittleEndian, decompress=stored not in _NATIVE)
    for entry in accept:
        if entry.essence in _ANY:
            return as_stored
        if entry.essence != "multipart/related":
            continue
        part_type = entry.parameters.get("type", OCTET_STREAM).lower()
        syntax = entry.parameters.get("transfer-syntax")
        if syntax == "*" and (part_type in _ANY or part_type in (OCTET_STREAM, as_stored.media_type)):
            return as_stored
        if part_type == as_stored.media_type and syntax in (None, stored):
            return as_stored
        wants_octets = part_type in (OCTET_STREAM, *_ANY) and syntax in (None, ExplicitVRLittleEndian)
        if wants_octets and (not decoded.decompress or _can_decode(stored)):
            return decoded
    return None


def _as_stored(stored: UID) -> FrameEncoding | None:
    if stored in _NATIVE:
        return FrameEncoding(OCTET_STREAM, ExplicitVRLittleEndian, decompress=False)
    media_type = FRAME_MEDIA_TYPES.get(str(stored))
    return FrameEncoding(media_type, stored, decompress=False) if media_type else None


def _can_decode(syntax: UID) -> bool:
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def read_frames(dataset: Dataset, numbers: tuple[int, ...], encoding: FrameEncoding) -> list[Frame]:
    """Frames ``numbers`` of ``dataset`` in ``encoding``; NotFoundError for a frame it does not have."""
    count = read_number_of_frames(dataset)
    if count == 0:
        raise FrameRequestError(f"instance {dataset.get('SOPInstanceUID', '')} has no pixel data")
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFoundError(f"frame {missing[0]} does not exist: the instance has {count} frame(s)")
    return [Frame(n, _readable_frame(dataset, n, count, encoding), encoding) for n in numbers]


def _readable_frame(dataset: Dataset, number: int, count: int, encoding: FrameEncoding) -> bytes:
    """:func:`_frame_bytes`, with a damaged pixel module or pixel data (stored as received) a FrameRequestError."""
    try:
        return _frame_bytes(dataset, number, count, encoding)
    except OncopacsError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on damaged pixel data; its text may quote values
        raise FrameRequestError(f"frame {number} cannot be read from the stored pixel data ({type(exc).__name__})"
                                ) from None


def _frame_bytes(dataset: Dataset, number: int, count: int, encoding: FrameEncoding) -> bytes:
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    if encoding.decompress or syntax == ExplicitVRBigEndian or int(dataset.get("BitsAllocated", 8)) % 8:
        return _decoded_octets(dataset, number, count)
    if syntax in _NATIVE:
        length = get_expected_length(dataset, "bytes") // count
        pixel_bytes = dataset.PixelData
        return bytes(pixel_bytes[(number - 1) * length : number * length])
    return get_frame(dataset.PixelData, number - 1, number_of_frames=count)


def _decoded_octets(dataset: Dataset, number: int, count: int) -> bytes:
    """The frame decoded to little endian samples, colour-by-pixel (RGB for YBR JPEG)."""
    try:
        array = pixel_array(dataset, index=number - 1) if count > 1 else pixel_array(dataset)
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds of error
        raise FrameRequestError(f"frame {number} cannot be decoded: {type(exc).__name__}") from None
    if int(dataset.get("BitsAllocated", 8)) == 1:
        return pack_bits(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()
