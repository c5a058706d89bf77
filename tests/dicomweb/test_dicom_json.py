"""DICOM JSON (PS3.18 F.2): bulk data URIs by tag path, round trips through pydicom, QIDO result objects."""

from __future__ import annotations

import copy

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from oncopacs.dicomweb.dicom_json import (
    BULK_DATA_THRESHOLD_BYTES,
    build_instance_json,
    build_qido_result,
    parse_tag_path,
    read_bulk_element,
    read_metadata_dataset,
)
from oncopacs.errors import NotFoundError
from oncopacs.phantom import build_ct_instances
from tests.factories import part10_bytes

URI = "http://pacs/bulk/"


def uri_for(tag_path: str) -> str:
    return URI + tag_path


@pytest.fixture(scope="module")
def ct() -> Dataset:
    """A 32x32 CT slice (2 KiB of pixels) with a small inline binary and a large binary inside a sequence."""
    ds = build_ct_instances(1, rows=32, cols=32, prefix="JSON")[0]
    ds.add_new(0x00091010, "LO", "OncoPACS test")  # private creator
    ds.add_new(0x00091011, "OB", b"\x01\x02\x03\x04")  # small: inline
    item = Dataset()
    item.CodeValue = "X"
    item.add_new(0x00420011, "OB", bytes(range(256)) * 8)  # 2 KiB EncapsulatedDocument inside an item
    ds.ReferencedImageSequence = Sequence([Dataset(), item])
    return ds


def from_json(document: dict, stored: Dataset) -> Dataset:
    """pydicom's reading of ``document``, fetching each BulkDataURI from ``stored``."""

    def fetch(_tag: str, _vr: str, uri: str) -> bytes:
        assert uri.startswith(URI)
        (value,) = read_bulk_element(stored, uri.removeprefix(URI)).parts
        return value

    return Dataset.from_json(document, bulk_data_uri_handler=fetch)


def without_meta_and_syntax(document: dict) -> dict:
    document = dict(document)
    document.pop("00083002")
    return document


def test_pixel_data_and_large_binaries_become_bulk_data_uris(ct: Dataset) -> None:
    document = build_instance_json(read_metadata_dataset(part10_bytes(ct)), uri_for)
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": URI + "7FE00010"}
    nested = document["00081140"]["Value"][1]["00420011"]
    assert nested == {"vr": "OB", "BulkDataURI": URI + "00081140/1/00420011"}
    assert document["00091011"]["InlineBinary"] == "AQIDBA=="
    assert document["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": str(ct.PatientName)}]}
    assert document["00280010"] == {"vr": "US", "Value": [32]}
    assert document["00083002"] == {"vr": "UI", "Value": [ct.file_meta.TransferSyntaxUID]}
    assert not any(key.startswith("0002") for key in document), "File Meta is not metadata"
    assert list(document) == sorted(document)


def test_metadata_round_trips_to_the_stored_dataset(ct: Dataset) -> None:
    stored = read_metadata_dataset(part10_bytes(ct))
    document = build_instance_json(stored, uri_for)
    assert from_json(without_meta_and_syntax(document), stored) == ct


def test_pixel_data_is_not_read_for_metadata(ct: Dataset) -> None:
    stored = read_metadata_dataset(part10_bytes(ct))
    build_instance_json(stored, uri_for)
    raw = stored.get_item(0x7FE00010, keep_deferred=True)
    assert isinstance(raw, RawDataElement) and raw.value is None


def test_implicit_vr_file_gives_ow_pixel_data(ct: Dataset) -> None:
    implicit = copy.deepcopy(ct)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    del implicit[0x00091011]  # a private element would be UN in implicit VR
    del implicit[0x00091010]
    stored = read_metadata_dataset(part10_bytes(implicit))
    document = build_instance_json(stored, uri_for)
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": URI + "7FE00010"}
    assert from_json(without_meta_and_syntax(document), stored).PixelData == ct.PixelData


def test_small_binaries_stay_inline() -> None:
    ds = Dataset()
    ds.add_new(0x00420011, "OB", b"\x00" * BULK_DATA_THRESHOLD_BYTES)
    assert "InlineBinary" in build_instance_json(ds, uri_for)["00420011"]
    ds.add_new(0x00420011, "OB", b"\x00" * (BULK_DATA_THRESHOLD_BYTES + 2))
    assert "BulkDataURI" in build_instance_json(ds, uri_for)["00420011"]


def test_tag_paths() -> None:
    assert parse_tag_path("7FE00010") == [0x7FE00010]
    assert parse_tag_path("00081140/1/00420011") == [0x00081140, 1, 0x00420011]
    for bad in ("7FE0001", "00081140/1", "00081140/x/00420011", "../etc", ""):
        with pytest.raises(ValueError):
            parse_tag_path(bad)


def test_bulk_element_lookup_failures(ct: Dataset) -> None:
    with pytest.raises(NotFoundError):
        read_bulk_element(ct, "00081140/5/00420011")  # no such item
    with pytest.raises(NotFoundError):
        read_bulk_element(ct, "00100010")  # PatientName is not binary
    with pytest.raises(NotFoundError):
        read_bulk_element(ct, "00420011")  # absent at the top level


def test_qido_result_types_and_empty_values() -> None:
    values = {
        "PatientName": "Doe^Jane", "PatientID": "P1", "PatientBirthDate": "", "StudyDate": "20240115",
        "SeriesNumber": "3", "Rows": 512, "NumberOfFrames": None, "ModalitiesInStudy": ["CT", "RTDOSE"],
        "NumberOfStudyRelatedInstances": 12, "StudyInstanceUID": "1.2.3",
    }
    result = build_qido_result(values, list(values), "http://pacs/dicom-web/studies/1.2.3")
    assert result["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert result["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert result["00100030"] == {"vr": "DA"}
    assert result["00080020"] == {"vr": "DA", "Value": ["20240115"]}
    assert result["00200011"] == {"vr": "IS", "Value": [3]}
    assert result["00280010"] == {"vr": "US", "Value": [512]}
    assert result["00280008"] == {"vr": "IS"}
    assert result["00080061"] == {"vr": "CS", "Value": ["CT", "RTDOSE"]}
    assert result["00201208"] == {"vr": "IS", "Value": [12]}
    assert result["0020000D"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert result["00081190"] == {"vr": "UR", "Value": ["http://pacs/dicom-web/studies/1.2.3"]}
    assert list(result) == sorted(result)
    parsed = Dataset.from_json(result)
    assert (
        parsed.SeriesNumber == 3 and parsed.PatientName == "Doe^Jane" and parsed.ModalitiesInStudy == ["CT", "RTDOSE"]
    )
