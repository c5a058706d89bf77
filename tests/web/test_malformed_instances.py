"""Malformed instances over real HTTP: STOW-RS refuses them with a DICOM status (never a 500), and what the
archive did store, damage and all, is served by WADO-RS or refused with a JSON reason.

The cases the fuzzers found first: a SOP Instance UID with an unknown VR (stored, with a response
echoing bytes as its UID), Rows with the wrong VR or an odd length (a 500), a File Meta transfer syntax
with the wrong VR, and, for stored instances, elements pydicom cannot decode in metadata, frames,
rendering and transcoding (each a 500).
"""

from __future__ import annotations

import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from tests.factories import part10_bytes, small_ct_series
from tests.fuzz.mutation import walk, with_vr

FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
FAILURE_REASON, SOP_INSTANCE_UID, RETRIEVE_URL = "00081197", "00081155", "00081190"
SOP_INSTANCE_UID_TAG, ROWS, BITS_ALLOCATED, TRANSFER_SYNTAX = 0x00080018, 0x00280010, 0x00280100, 0x00020010


def ct(syntax: str = ExplicitVRLittleEndian) -> bytes:
    dataset = small_ct_series(1, prefix="MAL")[0]
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return part10_bytes(dataset)


def stow(base_url: str, headers: dict, data: bytes) -> requests.Response:
    body = b"--mal\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--mal--\r\n"
    content_type = 'multipart/related; type="application/dicom"; boundary=mal'
    return requests.post(f"{base_url}/dicom-web/studies", data=body, headers={**headers, "Content-Type": content_type},
                         timeout=30)


@pytest.fixture
def headers(headers_for) -> dict[str, str]:
    return headers_for("physicist")


def failures(reply: requests.Response) -> list[tuple[str | None, int]]:
    items = reply.json().get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    return [(item.get(SOP_INSTANCE_UID, {}).get("Value", [None])[0], item[FAILURE_REASON]["Value"][0])
            for item in items]


@pytest.mark.parametrize("vr", [b"XX", b"ZZ", b"OB", b"SQ", b"US", b"FD", b"AT", b"\x00\x00"])
def test_a_sop_instance_uid_with_a_foreign_vr_is_refused_0xc000(live_server: str, headers, vr: bytes) -> None:
    reply = stow(live_server, headers, with_vr(ct(), SOP_INSTANCE_UID_TAG, vr))
    assert reply.status_code == 409, reply.text
    [(echoed, reason)] = failures(reply)
    assert reason == 0xC000
    assert echoed is None or echoed.replace(".", "").isdigit()  # never the part's bytes as a "UID"


def test_a_sop_instance_uid_sent_as_un_is_stored(live_server: str, headers) -> None:
    """UN is how a sender that does not know an element's VR encodes it (PS3.5 6.2.2): the value is the UID."""
    assert stow(live_server, headers, with_vr(ct(), SOP_INSTANCE_UID_TAG, b"UN")).status_code == 200


@pytest.mark.parametrize(("syntax", "vr", "value"), [
    (ExplicitVRLittleEndian, b"DS", b"1\\2\\3 "),
    (ExplicitVRLittleEndian, b"LO", b"abc"),
    (ExplicitVRLittleEndian, b"UN", b"\x10"),
    (ExplicitVRLittleEndian, b"UN", b"\x10\x00\x00"),
    (ExplicitVRLittleEndian, b"XX", b"\x10\x00"),
    (ExplicitVRLittleEndian, b"SQ", b"\x10\x00"),
    (ExplicitVRLittleEndian, b"FL", b"abc"),
    (ExplicitVRLittleEndian, b"US", b"\xff" * 7),
    (ExplicitVRLittleEndian, b"SS", b"\xff\xff"),  # -1 rows
    (ImplicitVRLittleEndian, None, b"\x10"),
    (ImplicitVRLittleEndian, None, b"\x10\x00\x00"),
])
def test_rows_with_the_wrong_vr_or_length_is_refused_0xc000(live_server: str, headers, syntax: str,
                                                            vr: bytes | None, value: bytes) -> None:
    reply = stow(live_server, headers, with_vr(ct(syntax), ROWS, vr, value))
    assert reply.status_code == 409, reply.text
    assert [reason for _, reason in failures(reply)] == [0xC000]


def test_a_transfer_syntax_with_the_wrong_vr_is_refused(live_server: str, headers) -> None:
    data = ct()
    meta_syntax = next(e for e in walk(data) if e.meta and e.tag == TRANSFER_SYNTAX)
    value = data[meta_syntax.value_offset : meta_syntax.end]
    damaged = data[: meta_syntax.offset + 4] + b"DS" + data[meta_syntax.offset + 6 :]
    assert value.startswith(b"1.2.840.10008.1.2.1")
    reply = stow(live_server, headers, damaged)
    assert reply.status_code == 409 and [reason for _, reason in failures(reply)] == [0xC000]


def test_a_stored_instance_with_an_undecodable_pixel_module_is_served_or_refused_with_a_reason(live_server: str,
                                                                                              headers) -> None:
    """Bits Allocated of one byte (US needs two): stored as received; its metadata leaves that element out, its
    frames and rendering are a 400, re-encoding it is a 406, and as stored it comes back byte for byte."""
    data = with_vr(ct(ImplicitVRLittleEndian), BITS_ALLOCATED, None, b"\x10")
    reply = stow(live_server, headers, data)
    assert reply.status_code == 200, reply.text
    url = reply.json()[REFERENCED_SOP_SEQUENCE]["Value"][0][RETRIEVE_URL]["Value"][0]
    url = live_server + "/dicom-web" + url.split("/dicom-web", 1)[1]

    def get(suffix: str, accept: str) -> requests.Response:
        return requests.get(url + suffix, headers={**headers, "Accept": accept}, timeout=30)

    as_stored = get("", 'multipart/related; type="application/dicom"; transfer-syntax=*')
    assert as_stored.status_code == 200 and data in as_stored.content
    metadata = get("/metadata", "application/dicom+json")
    assert metadata.status_code == 200 and "00280100" not in metadata.json()[0] and "00280010" in metadata.json()[0]
    for suffix, accept, status in [
        ("", 'multipart/related; type="application/dicom"', 406),  # to explicit VR little endian
        ("/frames/1", 'multipart/related; type="application/octet-stream"', 400),
        ("/rendered", "image/png", 400),
        ("/thumbnail", "image/jpeg", 400),
    ]:
        answer = get(suffix, accept)
        assert answer.status_code == status and answer.headers["Content-Type"] == "application/json", suffix
        assert "pydicom" not in answer.text and "Expected total bytes" not in answer.text  # our words, not theirs
