"""Turning C-FIND identifiers into query keys, and index matches into response identifiers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag

from oncopacs.index.query import ATTRIBUTES, COMPUTED, COMPUTED_VR, QueryLevel


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


def build_response(
    identifier: Dataset, level: QueryLevel, values: Mapping[str, Any], retrieve_ae_title: str
) -> Dataset:
    """The response identifier: each requested key with its value (empty when unknown)."""
    response = Dataset()
    response.SpecificCharacterSet = "ISO_IR 192"
    response.QueryRetrieveLevel = level.value
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if keyword in values and (keyword in ATTRIBUTES or keyword in COMPUTED):
            setattr(response, keyword, _dicom_value(keyword, values[keyword]))
        elif element.VR == "SQ":
            response[element.tag] = element.__class__(element.tag, "SQ", [])
        else:
            response.add_new(element.tag, element.VR, None)
    response.RetrieveAETitle = retrieve_ae_title
    return response


def _dicom_value(keyword: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return value or None
    vr = COMPUTED_VR.get(keyword) or dictionary_VR(keyword)
    if vr in ("IS", "US", "UL"):
        return int(value)
    return value
