"""DICOM JSON (PS3.18 Annex F): stored instances as metadata, and index rows as QIDO-RS results.

Binary values larger than :data:`BULK_DATA_THRESHOLD_BYTES` (pixel data and other OB/OW/OF/OD/OL/OV/UN
elements) are not inlined: their JSON carries a ``BulkDataURI`` built from the element's *tag path*
(``7FE00010``, or ``300A03A2/0/300A0116`` for an element inside item 0 of a sequence), which the
WADO-RS bulk data route resolves with :func:`read_bulk_element`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import BYTES_VR

from oncopacs.errors import DicomInputError, NotFoundError
from oncopacs.index.query import ATTRIBUTES, COMPUTED_VR

log = logging.getLogger(__name__)

#: Binary values longer than this (bytes) are sent as a BulkDataURI instead of InlineBinary.
BULK_DATA_THRESHOLD_BYTES = 1024

PIXEL_DATA = Tag("PixelData")
_TAG_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*$")

#: A function giving the BulkDataURI of the element at a tag path.
BulkDataUri = Callable[[str], str]


# -- stored instances -> metadata ------------------------------------------------------------------


def read_metadata_dataset(data: bytes) -> Dataset:
    """The dataset of a Part 10 file, with values above the bulk data threshold left unread."""
    return dcmread(BytesIO(data), force=True, defer_size=BULK_DATA_THRESHOLD_BYTES)


def build_instance_json(dataset: Dataset, bulk_data_uri: BulkDataUri) -> dict[str, Any]:
    """The DICOM JSON object of ``dataset`` (without File Meta; AvailableTransferSyntaxUID added).

    Binary values above the threshold become ``{"vr": ..., "BulkDataURI": bulk_data_uri(tag_path)}``.
    Deferred values (see :func:`read_metadata_dataset`) of binary VRs are never read.
    """
    result = _dataset_json(dataset, "", bulk_data_uri)
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax and "00083002" not in result:
        result["00083002"] = {"vr": "UI", "Value": [str(syntax)]}
        result = dict(sorted(result.items()))
    return result


def _dataset_json(dataset: Dataset, prefix: str, bulk_data_uri: BulkDataUri) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for tag in sorted(dataset.keys()):
        if tag.group == 0x0002 or tag.element == 0x0000:
            continue  # File Meta and group lengths are encoding details, not metadata
        path = f"{prefix}{int(tag):08X}"
        raw = dataset.get_item(tag, keep_deferred=True)
        deferred_vr = _deferred_binary_vr(tag, raw)
        if deferred_vr is not None:
            result[path[-8:]] = {"vr": deferred_vr, "BulkDataURI": bulk_data_uri(path)}
            continue
        try:
            element = dataset[tag]
            if element.VR == "SQ":
                items = [_dataset_json(item, f"{path}/{i}/", bulk_data_uri) for i, item in enumerate(element.value)]
                result[path[-8:]] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            elif element.VR in BYTES_VR and not element.is_empty and len(element.value) > BULK_DATA_THRESHOLD_BYTES:
                result[path[-8:]] = {"vr": element.VR, "BulkDataURI": bulk_data_uri(path)}
            else:
                result[path[-8:]] = element.to_json_dict(None, 0)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a damaged value (BytesLengthException...)
            log.warning("attribute %s of %s cannot be encoded as DICOM JSON: %s",
                        path, dataset.get("SOPInstanceUID", "?"), type(exc).__name__)
    return result


def _deferred_binary_vr(tag: BaseTag, raw: object) -> str | None:
    """The VR of a not-yet-read element with a binary VR (sent as bulk data unread), else None."""
    if not isinstance(raw, RawDataElement) or raw.value is not None:
        return None
    vr = raw.VR
    if vr is None or vr not in BYTES_VR:
        if tag == PIXEL_DATA:  # implicit VR ("OB or OW"): pixel data is OW there (PS3.5 A.1)
            return "OW"
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return "UN"
    return vr if vr in BYTES_VR else None


def parse_tag_path(tag_path: str) -> list[BaseTag | int]:
    """``"300A03A2/0/300A0116"`` -> [tag, item index, tag]; ValueError when malformed."""
    if not _TAG_PATH.match(tag_path):
        raise ValueError(f"bulk data path {tag_path!r} must be TAG or TAG/ITEM/TAG... with 8-hex-digit tags")
    parts = tag_path.split("/")
    return [Tag(int(p, 16)) if i % 2 == 0 else int(p) for i, p in enumerate(parts)]


@dataclass(frozen=True, slots=True)
class BulkElement:
    """The value of one binary element as stored: one part, or one part per frame of compressed pixel data."""

    tag_path: str
    vr: str
    parts: tuple[bytes, ...]
    transfer_syntax_uid: str | None = None  # set when ``parts`` are compressed frames in this syntax


def read_bulk_element(dataset: Dataset, tag_path: str) -> BulkElement:
    """The binary element at ``tag_path`` in ``dataset``; NotFoundError if absent or not binary."""
    steps = parse_tag_path(tag_path)
    current: Dataset = dataset
    for i in range(0, len(steps) - 1, 2):
        element = current.get(steps[i])
        index = steps[i + 1]
        if element is None or element.VR != "SQ" or index >= len(element.value):
            raise NotFoundError(f"no sequence item at {tag_path}")
        current = element.value[index]
    element = current.get(steps[-1])
    if element is None:
        raise NotFoundError(f"no attribute at {tag_path}")
    if element.VR not in BYTES_VR:
        raise NotFoundError(f"the attribute at {tag_path} has no bulk data (VR {element.VR})")
    value = element.value
    if not isinstance(value, bytes):
        raise DicomInputError(tag_path, "has no binary value", sop_instance_uid=dataset.get("SOPInstanceUID"))
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if len(steps) == 1 and steps[0] == PIXEL_DATA and syntax is not None and UID(syntax).is_encapsulated:
        try:
            frames = tuple(generate_frames(
                value, number_of_frames=int(dataset.get("NumberOfFrames") or 1),
                extended_offsets=_extended_offsets(dataset),
            ))
        except ValueError:
            raise DicomInputError(
                "PixelData", "has unreadable frame boundaries", sop_instance_uid=dataset.get("SOPInstanceUID")
            ) from None
        return BulkElement(tag_path, element.VR, frames, str(syntax))
    return BulkElement(tag_path, element.VR, (value,))


def _extended_offsets(dataset: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        return dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths
    return None


# -- index rows -> QIDO-RS results -----------------------------------------------------------------

_COUNT_VR = "IS"
_NUMERIC_VRS = ("IS", "US", "UL", "SS", "SL", "DS", "FL", "FD")


def attribute_vr(keyword: str) -> str:
    """The VR of a returnable QIDO attribute (index columns, computed counts and lists)."""
    if keyword in ATTRIBUTES:
        return ATTRIBUTES[keyword].vr
    if keyword in COMPUTED_VR:
        return COMPUTED_VR[keyword]
    if keyword.startswith("NumberOf"):
        return _COUNT_VR
    raise KeyError(keyword)


def build_qido_result(values: Mapping[str, Any], keywords: Iterable[str], retrieve_url: str) -> dict[str, Any]:
    """One QIDO-RS result object: ``keywords`` from an index row (``Match.values``) plus RetrieveURL.

    PN values become ``{"Alphabetic": ...}``, IS/US numbers become JSON numbers, lists stay lists, and an
    empty value leaves the attribute with its VR and no ``Value`` (PS3.18 F.2.5).
    """
    result: dict[str, Any] = {}
    for keyword in keywords:
        tag, vr = _tag_and_vr(keyword)
        element: dict[str, Any] = {"vr": vr}
        json_values = _json_values(vr, values.get(keyword))
        if json_values:
            element["Value"] = json_values
        result[tag] = element
    result["00081190"] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(result.items()))


@functools.lru_cache(maxsize=1024)
def _tag_and_vr(keyword: str) -> tuple[str, str]:
    """The JSON tag key and VR of a returnable keyword, looked up once (a QIDO page builds thousands)."""
    return f"{int(Tag(keyword)):08X}", attribute_vr(keyword)


def _json_values(vr: str, value: Any) -> list[Any]:
    items = value if isinstance(value, list | tuple) else [value]
    out: list[Any] = []
    for item in items:
        if item is None or item == "":
            continue
        if vr == "PN":
            out.append({"Alphabetic": str(item)})
        elif vr in _NUMERIC_VRS:
            number = _as_number(item)
            if number is not None:
                out.append(number)
        else:
            out.append(str(item))
    return out


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            log.warning("an index value of a numeric attribute is not a number (value not logged)")
            return None
