"""Turning C-FIND identifiers into query keys, and index matches into response identifiers.

Responses are built from pre-encoded elements (pydicom's raw elements) in the transfer syntax of
the query's presentation context, so pydicom writes them without converting or validating each
value again: a study-level C-FIND over 500 studies spent most of its time there.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag, Tag

from oncopacs.index.query import ATTRIBUTES, COMPUTED, QueryLevel

RESPONSE_CHARACTER_SET = "ISO_IR 192"  # UTF-8: values come back as they were stored
_ENCODINGS = convert_encodings(RESPONSE_CHARACTER_SET)
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
    tag: BaseTag
    vr: str
    keyword: str
    known: bool  # an attribute the index holds (else returned empty)


class ResponseBuilder:
    """Builds the response identifier of each match for one C-FIND request."""

    def __init__(
        self, identifier: Dataset, level: QueryLevel, retrieve_ae_title: str, *, implicit_vr: bool, little_endian: bool
    ):
        self.level = level
        self.implicit_vr, self.little_endian = implicit_vr, little_endian
        self.keys = [
            _ReturnKey(element.tag, element.VR, element.keyword, element.keyword in ATTRIBUTES or element.keyword in COMPUTED)
            for element in identifier
            if element.keyword not in _SKIPPED
        ]
        self._fixed = [
            self._raw(Tag(0x0008, 0x0005), "CS", RESPONSE_CHARACTER_SET),
            self._raw(Tag(0x0008, 0x0052), "CS", level.value),
            self._raw(Tag(0x0008, 0x0054), "AE", retrieve_ae_title),
        ]

    def build(self, values: Mapping[str, Any]) -> Dataset:
        """The response identifier: each requested key with its value (empty when unknown)."""
        response = Dataset()
        response.set_original_encoding(self.implicit_vr, self.little_endian, _ENCODINGS)
        for raw in self._fixed:
            response[raw.tag] = raw
        for key in self.keys:
            if key.vr == "SQ":
                response.add_new(key.tag, "SQ", [])
                continue
            value = values.get(key.keyword) if key.known else None
            response[key.tag] = self._raw(key.tag, key.vr, value)
        return response

    def _raw(self, tag: BaseTag, vr: str, value: Any) -> RawDataElement:
        encoded = self._encode(vr, value)
        return RawDataElement(tag, vr, len(encoded), encoded, 0, self.implicit_vr, self.little_endian)

    def _encode(self, vr: str, value: Any) -> bytes:
        if value is None or value == "" or value == []:
            return b""
        if vr in _BINARY:
            values = value if isinstance(value, list) else [value]
            order = "<" if self.little_endian else ">"
            return struct.pack(f"{order}{len(values)}{_BINARY[vr]}", *(int(v) for v in values))
        text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
        encoded = text.encode("utf-8")
        if len(encoded) % 2:
            encoded += b"\x00" if vr == "UI" else b" "
        return encoded


def build_response(
    identifier: Dataset, level: QueryLevel, values: Mapping[str, Any], retrieve_ae_title: str
) -> Dataset:
    """One response identifier in explicit VR little endian (see :class:`ResponseBuilder`)."""
    return ResponseBuilder(identifier, level, retrieve_ae_title, implicit_vr=False, little_endian=True).build(values)
