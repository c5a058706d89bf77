"""multipart/related writing and reading, media type parameters and Accept headers."""

from __future__ import annotations

import io
import os

import pytest
import requests
from dicomweb_client import DICOMwebClient

from oncopacs.dicomweb import multipart
from oncopacs.dicomweb.multipart import (
    BodyPart,
    MediaTypeError,
    MultipartError,
    build_multipart_content_type,
    new_boundary,
    parse_accept,
    parse_media_type,
    read_multipart,
    write_multipart,
)

DICOM_TYPE = 'multipart/related; type="application/dicom"; boundary={}'


class _Response:
    """Just what dicomweb-client's multipart decoder reads of a requests.Response."""

    def __init__(self, body: bytes, content_type: str):
        self.headers = requests.structures.CaseInsensitiveDict({"content-type": content_type})
        self.content = body

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


def _decode_with_dicomweb_client(body: bytes, content_type: str) -> list[bytes]:
    client = DICOMwebClient("http://127.0.0.1:9")  # never contacted: only its decoder is used
    return list(client._decode_multipart_message(_Response(body, content_type), stream=False))


def _encode_with_dicomweb_client(parts: list[bytes], boundary: str) -> tuple[bytes, str]:
    content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    return DICOMwebClient._encode_multipart_message(parts, content_type), content_type


def test_parse_media_type_accepts_quoted_and_unquoted_parameters():
    quoted = parse_media_type('Multipart/Related; Type="application/dicom"; boundary="a b;c"')
    unquoted = parse_media_type("multipart/related; type=application/dicom; boundary=abc")
    assert quoted.essence == unquoted.essence == "multipart/related"
    assert quoted.parameters == {"type": "application/dicom", "boundary": "a b;c"}
    assert unquoted.parameters == {"type": "application/dicom", "boundary": "abc"}


def test_parse_accept_orders_by_quality_and_drops_q0():
    header = (
        'multipart/related; type="application/octet-stream"; q=0.5, '
        "multipart/related; type=application/dicom; transfer-syntax=*, image/png; q=0"
    )
    entries = parse_accept(header)
    assert [e.parameters.get("type") for e in entries] == ["application/dicom", "application/octet-stream"]
    assert entries[0].parameters["transfer-syntax"] == "*"
    assert parse_accept(None) == [] and parse_accept("  ") == []


def test_written_body_is_decoded_by_dicomweb_client_byte_for_byte():
    payloads = [os.urandom(5000) + b"\r\n--not-the-boundary\r\n", b"", b"\r\n\r\n", bytes(range(256)) * 40]
    boundary = new_boundary()
    parts = [BodyPart("application/dicom", p, f"http://x/{i}") for i, p in enumerate(payloads)]
    body = b"".join(write_multipart(parts, boundary))
    decoded = _decode_with_dicomweb_client(body, build_multipart_content_type("application/dicom", boundary))
    assert decoded == payloads
    assert body.startswith(f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Location: http://x/0\r\n\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())


def test_write_multipart_is_lazy():
    pulled = []

    def parts():
        for i in range(3):
            pulled.append(i)
            yield BodyPart("application/octet-stream", bytes([i]) * 10)

    body = write_multipart(parts(), "b")
    next(body)
    assert pulled == [0]
    rest = b"".join(body)
    assert pulled == [0, 1, 2] and rest.endswith(b"\r\n--b--\r\n")


def test_write_multipart_refuses_no_parts():
    with pytest.raises(MultipartError):
        b"".join(write_multipart([], "b"))


@pytest.mark.parametrize("quote", [True, False])
def test_reads_dicomweb_client_body_with_quoted_or_unquoted_parameters(quote: bool, monkeypatch):
    monkeypatch.setattr(multipart, "CHUNK_BYTES", 7)  # boundaries straddle the reads
    payloads = [os.urandom(3000), b"DICM" * 100, os.urandom(10) + b"\r\n--" + b"x" * 20]
    body, content_type = _encode_with_dicomweb_client(payloads, "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1")
    if not quote:
        content_type = content_type.replace('"', "")
    with read_multipart(io.BytesIO(body), content_type) as received:
        assert [part.read_bytes() for part in received.parts] == payloads
        assert [part.size_bytes for part in received.parts] == [len(p) for p in payloads]
        assert all(part.content_type == "application/dicom" for part in received.parts)


def test_reads_preamble_epilogue_padding_and_headerless_parts():
    body = (
        b"this is a preamble\r\n--XYZ  \r\nContent-Type: application/dicom\r\nContent-Location: a\r\n\r\nONE"
        b"\r\n--XYZ\r\n\r\nTWO\r\n--XYZ--\r\nepilogue that is ignored"
    )
    with read_multipart(io.BytesIO(body), DICOM_TYPE.format("XYZ")) as received:
        assert [p.read_bytes() for p in received.parts] == [b"ONE", b"TWO"]
        assert received.parts[0].content_location == "a" and received.parts[1].content_type is None


def test_large_part_is_spooled_to_disk(monkeypatch):
    monkeypatch.setattr(multipart, "SPOOL_IN_MEMORY_BYTES", 1000)
    payload = os.urandom(50_000)
    body = b"".join(write_multipart([BodyPart("application/dicom", payload)], "B"))
    with read_multipart(io.BytesIO(body), DICOM_TYPE.format("B")) as received:
        assert received.parts[0].spool._rolled
        assert received.parts[0].read_bytes() == payload


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"--B\r\nContent-Type: application/dicom\r\n\r\nDATA", "without the closing boundary"),
        (b"--B\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--B", "boundary line"),
        (b"--B\r\nContent-Type: application/dicom\r\nDATA", "inside the headers"),
        (b"no boundary at all", "does not contain its boundary"),
        (b"--B--\r\n", "no parts"),
        (b"--Bogus\r\n\r\nDATA\r\n--B--", "trailing characters"),
    ],
)
def test_broken_bodies_are_refused_clearly(body: bytes, problem: str):
    with pytest.raises(MultipartError, match=problem):
        read_multipart(io.BytesIO(body), DICOM_TYPE.format("B"))


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=B',
        "multipart/form-data; boundary=B",
        None,
    ],
)
def test_wrong_media_types_are_refused(content_type):
    body = b"--B\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--B--"
    with pytest.raises(MediaTypeError):
        read_multipart(io.BytesIO(body), content_type)


def test_a_part_of_another_type_is_refused():
    body = b"--B\r\nContent-Type: application/pdf\r\n\r\nDATA\r\n--B--"
    with pytest.raises(MediaTypeError, match="application/pdf"):
        read_multipart(io.BytesIO(body), DICOM_TYPE.format("B"))


def test_missing_boundary_parameter_is_malformed():
    with pytest.raises(MultipartError, match="boundary"):
        read_multipart(io.BytesIO(b"--B--"), 'multipart/related; type="application/dicom"')
