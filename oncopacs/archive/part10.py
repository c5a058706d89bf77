"""Building and splitting DICOM Part 10 files without re-encoding the dataset."""

from __future__ import annotations

import io
import struct

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite, write_file_meta_info
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
    """A Part 10 file: preamble, a new File Meta group, then ``dataset_bytes`` unchanged."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae_title:
        meta.SourceApplicationEntityTitle = source_ae_title.strip()[:16]
    buffer = io.BytesIO()
    buffer.write(PREAMBLE)
    write_file_meta_info(buffer, meta, enforce_standard=True)
    buffer.write(dataset_bytes)
    return buffer.getvalue()


def dataset_offset(part10: bytes | memoryview) -> int:
    """Where the dataset starts in a Part 10 file (after the File Meta group), or 0 for a bare dataset."""
    if bytes(part10[128:132]) != b"DICM":
        return 0
    # (0002,0000) File Meta Information Group Length, UL, explicit VR little endian.
    tag_group, tag_element, vr = struct.unpack("<HH2s", part10[132:138])
    if (tag_group, tag_element, vr) != (0x0002, 0x0000, b"UL"):
        return _scan_meta_end(part10)
    (group_length,) = struct.unpack("<I", part10[140:144])
    return 144 + group_length


def _scan_meta_end(part10: bytes | memoryview) -> int:
    """Walk group 0002 element by element when the group length is absent."""
    offset = 132
    while offset + 8 <= len(part10):
        group, _element, vr = struct.unpack("<HH2s", part10[offset : offset + 6])
        if group != 0x0002:
            return offset
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            (length,) = struct.unpack("<I", part10[offset + 8 : offset + 12])
            offset += 12 + length
        else:
            (length,) = struct.unpack("<H", part10[offset + 6 : offset + 8])
            offset += 8 + length
    return offset


def encode_dataset(dataset: Dataset) -> bytes:
    """A Part 10 file of a dataset built in memory (derived objects, phantoms)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()
