"""ROIContourSequence read straight from its encoded bytes, without building a pydicom Dataset per contour.

A clinical structure set holds thousands of contour items; pydicom builds a Dataset and
several element objects for each, which costs more than computing the DVHs of most ROIs.
When pydicom has left ROIContourSequence unparsed (a little-endian RawDataElement, the usual
case after ``dcmread``), :func:`read_raw_roi_contours` walks its items itself and returns each
ROI's colour and each contour's geometric type and raw ContourData text. Explicit and implicit
VR, defined and undefined lengths, and nested sequences it does not need (skipped by length or
by their delimiters) are handled; anything else, or bytes that do not parse, returns None and
the caller reads the sequence through pydicom instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_ROI_CONTOUR_SEQUENCE = 0x30060039
_REFERENCED_ROI_NUMBER = 0x30060084
_ROI_DISPLAY_COLOR = 0x3006002A
_CONTOUR_SEQUENCE = 0x30060040
_CONTOUR_GEOMETRIC_TYPE = 0x30060042
_CONTOUR_DATA = 0x30060050
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_TAG_LENGTH = struct.Struct("<HHL")
_TAG_VR_SHORT = struct.Struct("<HH2sH")


@dataclass(frozen=True, slots=True)
class RawContour:
    """One ContourSequence item: its geometric type and ContourData as raw DS text (stripped)."""

    geometric_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RawROIContour:
    """One ROIContourSequence item: its colour (R, G, B) or None, and its contours in file order."""

    colour: tuple[int, ...] | None
    contours: tuple[RawContour, ...]


class _Malformed(Exception):
    """The bytes do not parse as the sequence this reader expects."""


# An item's elements: tag -> (start, stop) of the value in the buffer, or a list of items for an
# undefined-length sequence (already walked to find its end).
_Item = dict[int, "tuple[int, int] | list[_Item]"]


def read_raw_roi_contours(ds: Dataset) -> dict[int, RawROIContour] | None:
    """{ReferencedROINumber: RawROIContour} from ds's unparsed ROIContourSequence, or None to use pydicom."""
    if _ROI_CONTOUR_SEQUENCE not in ds:
        return None
    raw = ds.get_item(_ROI_CONTOUR_SEQUENCE)
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes) or not raw.is_little_endian:
        return None
    buffer = raw.value
    try:
        items, _ = _read_sequence(buffer, 0, len(buffer), raw.is_implicit_VR)
        result: dict[int, RawROIContour] = {}
        for item in items:
            if _REFERENCED_ROI_NUMBER not in item:
                continue
            number = int(_text(buffer, item[_REFERENCED_ROI_NUMBER]))
            colour_text = _text(buffer, item.get(_ROI_DISPLAY_COLOR))
            colour = tuple(int(v) for v in colour_text.split("\\"))[:3] if colour_text else None
            contours = tuple(
                RawContour(_text(buffer, c.get(_CONTOUR_GEOMETRIC_TYPE)).upper() or "CLOSED_PLANAR",
                           _value(buffer, c.get(_CONTOUR_DATA)).strip(b" \x00"))
                for c in _items(buffer, item.get(_CONTOUR_SEQUENCE), raw.is_implicit_VR)
            )
            result[number] = RawROIContour(colour, contours)
        return result
    except (_Malformed, struct.error, ValueError, UnicodeDecodeError):
        return None


def _items(buffer: bytes, value: tuple[int, int] | list[_Item] | None, implicit: bool) -> list[_Item]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return _read_sequence(buffer, value[0], value[1], implicit)[0]


def _value(buffer: bytes, value: tuple[int, int] | list[_Item] | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, list):
        raise _Malformed("a sequence where a value was expected")
    return buffer[value[0]:value[1]]


def _text(buffer: bytes, value: tuple[int, int] | list[_Item] | None) -> str:
    return _value(buffer, value).decode("ascii").strip(" \x00")


def _read_sequence(buffer: bytes, pos: int, end: int, implicit: bool) -> tuple[list[_Item], int]:
    """The items of a sequence value from pos up to end or its delimiter; returns (items, position after)."""
    items: list[_Item] = []
    while pos < end:
        group, element, length = _TAG_LENGTH.unpack_from(buffer, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return items, pos
        if tag != _ITEM:
            raise _Malformed(f"({group:04X},{element:04X}) where a sequence item was expected")
        if length == _UNDEFINED:
            item, pos = _read_item(buffer, pos, len(buffer), implicit)
        else:
            if pos + length > end:
                raise _Malformed("an item runs past its sequence")
            item, _ = _read_item(buffer, pos, pos + length, implicit)
            pos += length
        items.append(item)
    return items, pos


def _read_item(buffer: bytes, pos: int, end: int, implicit: bool) -> tuple[_Item, int]:
    """An item's elements from pos up to end or its delimiter; returns (elements, position after)."""
    elements: _Item = {}
    while pos < end:
        if implicit:
            group, element, length = _TAG_LENGTH.unpack_from(buffer, pos)
            pos += 8
        else:
            group, element, vr, length = _TAG_VR_SHORT.unpack_from(buffer, pos)
            if group == 0xFFFE:  # delimiters carry no VR
                length = _TAG_LENGTH.unpack_from(buffer, pos)[2]
                pos += 8
            elif vr in _LONG_VRS:
                length = _TAG_LENGTH.unpack_from(buffer, pos + 4)[2]
                pos += 12
            else:
                pos += 8
        tag = group << 16 | element
        if tag == _ITEM_END:
            return elements, pos
        if length == _UNDEFINED:  # only a sequence (or encapsulated data) has an undefined length
            elements[tag], pos = _read_sequence(buffer, pos, len(buffer), implicit)
        else:
            if pos + length > end:
                raise _Malformed(f"({group:04X},{element:04X}) runs past its item")
            elements[tag] = (pos, pos + length)
            pos += length
    return elements, pos
