"""Building and splitting DICOM Part 10 files without re-encoding the dataset."""

from __future__ import annotations

import io
import struct

from pydicom import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from oncopacs import __version__
from oncopacs.uids import UID_PREFIX

IMPLEMENTATION_CLASS_UID = UID(UID_PREFIX + "7.1")
IMPLEMENTATION_VERSION_NAME = f"ONCOPACS_{__version__.replace('.', '')}"[:16]
PREAMBLE = b"\x00" * 128 + b"DICM"


def build_part10(
    dataset_bytes: bytes | memoryview,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str = "",
) -> bytes:
    """A Part 10 file: preamble, a new File Meta group (:func:`build_file_meta`), then ``dataset_bytes`` unchanged."""
    header = build_file_meta(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                             transfer_syntax_uid=transfer_syntax_uid, source_ae_title=source_ae_title)
    return b"".join((header, dataset_bytes))


def build_file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                    source_ae_title: str = "") -> bytes:
    """The preamble and File Meta group that :func:`build_part10` puts in front of a dataset.

    The meta group is encoded here directly (explicit VR little endian, PS3.10 7.1): it is
    built once per received instance, and pydicom's general writer costs ~1 ms for it.
    """
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax_uid)),
        _meta_element(0x0012, b"UI", _uid_bytes(IMPLEMENTATION_CLASS_UID)),
        _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" ")),
    ]
    if source_ae_title.strip():
        ae_title = source_ae_title.strip()[:16].encode("ascii", "replace")
        elements.append(_meta_element(0x0016, b"AE", _padded(ae_title, b" ")))
    group = b"".join(elements)
    return b"".join((PREAMBLE, struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(group)), group))


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _uid_bytes(uid: str) -> bytes:
    return _padded(str(uid).encode("ascii"), b"\x00")


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def dataset_offset(part10: bytes | memoryview) -> int:
    """Where the dataset starts in a Part 10 file (after the File Meta group), or 0 for a bare dataset.

    Never past the end: a file cut inside its File Meta yields its length (an empty dataset, which the
    parser then refuses with a reason).
    """
    if bytes(part10[128:132]) != b"DICM":
        return 0
    if len(part10) < 144:  # cut inside its File Meta: nothing of a dataset follows (the parser says why)
        return len(part10)
    # (0002,0000) File Meta Information Group Length, UL, explicit VR little endian.
    tag_group, tag_element, vr = struct.unpack("<HH2s", part10[132:138])
    if (tag_group, tag_element, vr) != (0x0002, 0x0000, b"UL"):
        return _scan_meta_end(part10)
    (group_length,) = struct.unpack("<I", part10[140:144])
    return min(144 + group_length, len(part10))


def _scan_meta_end(part10: bytes | memoryview) -> int:
    """Walk group 0002 element by element when the group length is absent."""
    offset = 132
    while offset + 8 <= len(part10):
        group, _element, vr = struct.unpack("<HH2s", part10[offset : offset + 6])
        if group != 0x0002:
            return offset
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if offset + 12 > len(part10):
                return len(part10)
            (length,) = struct.unpack("<I", part10[offset + 8 : offset + 12])
            offset += 12 + length
        else:
            (length,) = struct.unpack("<H", part10[offset + 6 : offset + 8])
            offset += 8 + length
    return min(offset, len(part10))


def encode_dataset(dataset: Dataset) -> bytes:
    """A Part 10 file of a dataset built in memory (derived objects, phantoms)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()
