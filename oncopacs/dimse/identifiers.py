"""Turning C-FIND identifiers into query keys, and index matches into response identifiers.

Responses are encoded here directly in the transfer syntax of the query's presentation context
(see :class:`ResponseBuilder`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag

from oncopacs.index.query import ATTRIBUTES, COMPUTED, QueryLevel

RESPONSE_CHARACTER_SET = "ISO_IR 192"  # UTF-8: values come back as they were stored
_SKIPPED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"}
_BINARY = {"US": "H", "UL": "I", "SS": "h", "SL": "i"}


def read_query_keys(identifier: Dataset) -> dict[str, str]:
    """Keyword -> matching value (DICOM string form) for every element of a C-FIND identifier."""
    keys: dict[str, str] = {}
    for element in identifier:
        keyword = element.keyword or keyword_for_tag(element.tag)
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or element.VR == "SQ":
            continue
        value = element.value
        if value is None:
            keys[keyword] = ""
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            keys[keyword] = "\\".join(str(v) for v in value)
        else:
            keys[keyword] = str(value)
    return keys


@dataclass(frozen=True, slots=True)
class _ReturnKey:
    tag: int
    vr: str
    keyword: str
    known: bool  # an attribute the index holds (else returned empty)


_LONG_LENGTH_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


class EncodedIdentifier(Dataset):
    """A response identifier already encoded in its context's transfer syntax.

    It travels through pynetdicom as a Dataset; :func:`oncopacs.dimse.responses.install_encoder`
    makes pynetdicom send ``encoded`` instead of encoding it again.
    """

    def __init__(self, encoded: bytes):
        super().__init__()
        self.__dict__["encoded"] = encoded


class ResponseBuilder:
    """Encodes the response identifier of each match of one C-FIND request.

    The identifier is packed directly in the transfer syntax of the query's presentation
    context: building and writing a pydicom Dataset per match was most of the time a
    500-study C-FIND took.
    """

    def __init__(
        self, identifier: Dataset, level: QueryLevel, retrieve_ae_title: str, *, implicit_vr: bool, little_endian: bool
    ):
        self.level = level
        self.implicit_vr, self.little_endian = implicit_vr, little_endian
        self._order = "<" if little_endian else ">"
        requested = [
            _ReturnKey(
                int(element.tag), element.VR, element.keyword,
                element.keyword in ATTRIBUTES or element.keyword in COMPUTED,
            )
            for element in identifier
            if element.keyword not in _SKIPPED
        ]
        fixed = {
            0x00080005: self._element(0x00080005, "CS", RESPONSE_CHARACTER_SET),
            0x00080052: self._element(0x00080052, "CS", level.value),
            0x00080054: self._element(0x00080054, "AE", retrieve_ae_title),
        }
        self._plan: list[tuple[int, _ReturnKey | bytes]] = sorted(
            [*fixed.items(), *((key.tag, key) for key in requested)], key=lambda item: item[0]
        )

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The encoded response identifier: each requested key with its value (empty when unknown)."""
        parts = []
        for tag, item in self._plan:
            if isinstance(item, bytes):
                parts.append(item)
            else:
                value = values.get(item.keyword) if item.known and item.vr != "SQ" else None
                parts.append(self._element(tag, item.vr, value))
        return b"".join(parts)

    def build(self, values: Mapping[str, Any]) -> EncodedIdentifier:
        return EncodedIdentifier(self.encode(values))

    def _element(self, tag: int, vr: str, value: Any) -> bytes:
        data = self._value(vr, value)
        order = self._order
        header = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
        if self.implicit_vr:
            return header + struct.pack(f"{order}I", len(data)) + data
        if vr in _LONG_LENGTH_VRS:
            return header + vr.encode() + b"\x00\x00" + struct.pack(f"{order}I", len(data)) + data
        return header + vr.encode() + struct.pack(f"{order}H", len(data)) + data

    def _value(self, vr: str, value: Any) -> bytes:
        if value is None or value == "" or value == []:
            return b""
        if vr in _BINARY:
            values = value if isinstance(value, list) else [value]
            return struct.pack(f"{self._order}{len(values)}{_BINARY[vr]}", *(int(v) for v in values))
        text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
        encoded = text.encode("utf-8")
        if len(encoded) % 2:
            encoded += b"\x00" if vr == "UI" else b" "
        return encoded
