"""A seeded mutator for DIMSE fuzzing: data sets (as a C-STORE carries them) and raw PDU streams.

Everything is driven by one ``random.Random``: the same seed gives the same mutants, and each
mutant carries a description naming what was done, so a failure is reproduced from the seed and
its case number alone.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from oncopacs.archive.part10 import dataset_offset
from oncopacs.uids import uid_for
from tests.dimse.raw_peer import A_ABORT_TYPE, P_DATA_TF_TYPE, c_store_rq, p_data_tf
from tests.factories import part10_bytes

#: pydicom's bundled test files used as seeds (no download).
PYDICOM_SEEDS = ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm")
#: Shared RT files up to this size are seeds too (the larger ones add time, not new structure).
SHARED_SEED_BYTES = 64 * 1024
HUGE_LENGTHS = (0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x10000, 0xFFFF)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass(frozen=True)
class Seed:
    name: str
    dataset: Dataset

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def transfer_syntax_uid(self) -> str:
        return str(self.dataset.file_meta.TransferSyntaxUID)

    @property
    def implicit(self) -> bool:
        return self.transfer_syntax_uid == "1.2.840.10008.1.2"

    def encoded(self, sop_instance_uid: str) -> bytes:
        """The seed as a C-STORE data set, with its own SOP Instance UID (so that each mutant is a new instance)."""
        self.dataset.SOPInstanceUID = sop_instance_uid
        self.dataset.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
        data = part10_bytes(self.dataset)
        return data[dataset_offset(data) :]


def load_seeds(shared_folder: Path | None) -> list[Seed]:
    seeds = []
    for name in PYDICOM_SEEDS:
        path = get_testdata_file(name, download=False)
        if path is not None:
            seeds.append(Seed(name, dcmread(path)))
    if shared_folder is not None:
        for path in sorted(shared_folder.rglob("*.dcm")):
            if path.stat().st_size <= SHARED_SEED_BYTES:
                seeds.append(Seed(f"{path.parent.name}/{path.name[:24]}", dcmread(path)))
    return seeds


@dataclass(frozen=True)
class Mutant:
    case: int
    description: str
    data: bytes


class Mutator:
    """Damages data sets and PDU streams the ways broken or hostile senders do."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- data sets ----------------------------------------------------------------------------

    def data_set(self, data: bytes, *, implicit: bool) -> tuple[str, bytes]:
        """One damaged copy of an encoded data set, and what was done."""
        rng = self.rng
        kind = rng.choice(["intact", "tail", "flip", "bits", "cut", "insert", "delete", "length", "length",
                           "huge length", "vr", "duplicate", "zero"])
        mutable = bytearray(data)
        if kind == "intact":
            return kind, data
        if kind == "tail":  # inside the last element (pixel data, a dose grid): usually still valid
            start = len(data) - max(1, len(data) // 8)
            for _ in range(rng.randint(1, 8)):
                mutable[rng.randrange(start, len(data))] = rng.randrange(256)
            return kind, bytes(mutable)
        if kind == "flip":
            for _ in range(rng.randint(1, 16)):
                mutable[rng.randrange(len(data))] = rng.randrange(256)
            return kind, bytes(mutable)
        if kind == "bits":
            for _ in range(rng.randint(1, 4)):
                mutable[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return kind, bytes(mutable)
        if kind == "cut":
            at = rng.randrange(len(data))
            return f"cut at {at}", data[:at]
        if kind == "insert":
            at = rng.randrange(len(data))
            return f"insert at {at}", data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
        if kind == "delete":
            at = rng.randrange(len(data))
            return f"delete at {at}", data[:at] + data[at + rng.randint(1, 64) :]
        if kind == "zero":
            at = rng.randrange(len(data))
            return f"zero at {at}", data[:at] + bytes(rng.randint(1, 256)) + data[at + 256 :]
        elements = list(_elements(data, implicit=implicit))
        if not elements:
            return "flip (no elements)", bytes(mutable)
        tag_at, length_at, length_size, vr_at = rng.choice(elements)
        if kind in ("length", "huge length"):
            value = rng.choice(HUGE_LENGTHS) if kind == "huge length" else rng.choice([0, 1, 3, 7, 255, 0x1001])
            value &= (1 << (8 * length_size)) - 1
            mutable[length_at : length_at + length_size] = value.to_bytes(length_size, "little")
            return f"{kind} {value:#x} at {length_at}", bytes(mutable)
        if kind == "vr" and vr_at is not None:
            mutable[vr_at : vr_at + 2] = rng.choice([b"XX", b"UN", b"SQ", b"OB", b"US", b"\x00\x00", b"ab"])
            return f"vr at {vr_at}", bytes(mutable)
        end = length_at + length_size + int.from_bytes(data[length_at : length_at + length_size], "little")
        return f"duplicate element at {tag_at}", data[:end] + data[tag_at:end] + data[end:]

    # -- PDU streams --------------------------------------------------------------------------

    def pdu_stream(self, pdus: list[bytes]) -> tuple[str, list[bytes]]:
        """One damaged copy of a PDU exchange (a list of encoded PDUs, the A-ASSOCIATE-RQ first), and what
        was done. The peer sends the first element, waits for the answer, then sends the rest."""
        rng = self.rng
        kind = rng.choice(["flip", "flip", "pdu type", "pdu length", "pdv length", "control", "context",
                           "drop", "repeat", "swap", "cut", "garbage between", "huge length"])
        index = rng.randrange(len(pdus))
        pdus = list(pdus)
        pdu = bytearray(pdus[index])
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                pdu[rng.randrange(len(pdu))] = rng.randrange(256)
        elif kind == "pdu type":
            pdu[0] = rng.choice([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xFF])
        elif kind in ("pdu length", "huge length"):
            length = (rng.choice(HUGE_LENGTHS) if kind == "huge length"
                      else max(0, len(pdu) - 6 + rng.choice([-100, -7, -1, 1, 2, 100])))
            pdu[2:6] = struct.pack(">L", length & 0xFFFFFFFF)
        elif kind in ("pdv length", "control", "context") and pdu[0] == P_DATA_TF_TYPE and len(pdu) >= 12:
            if kind == "pdv length":
                pdu[6:10] = struct.pack(">L", rng.choice([0, 1, 2, len(pdu) - 10 + 1, 0xFFFFFFFF]))
            elif kind == "control":
                pdu[11] = rng.randrange(256)
            else:
                pdu[10] = rng.choice([0, 2, 3, 255])
        elif kind == "drop" and index > 0:
            del pdus[index]
            return f"drop PDU {index}", pdus
        elif kind == "repeat":
            pdus.insert(index + 1, pdus[index])
            return f"repeat PDU {index}", pdus
        elif kind == "swap" and index > 0 and len(pdus) > 2:
            other = rng.randrange(1, len(pdus))
            pdus[index], pdus[other] = pdus[other], pdus[index]
            return f"swap PDUs {index} and {other}", pdus
        elif kind == "cut":
            at = rng.randrange(len(pdu))
            return f"cut PDU {index} at {at}", [*pdus[:index], bytes(pdu[:at])]
        elif kind == "garbage between":
            pdus.insert(index + 1, rng.randbytes(rng.randint(1, 32)))
            return f"garbage after PDU {index}", pdus
        else:
            pdu[rng.randrange(len(pdu))] = rng.randrange(256)
        pdus[index] = bytes(pdu)
        return f"{kind} in PDU {index}", pdus


def store_exchange(associate_rq: bytes, seed: Seed, sop_instance_uid: str, data: bytes,
                   *, fragment: int = 8 * 1024) -> list[bytes]:
    """The PDUs of one association carrying one C-STORE: RQ, command, data set fragments, A-RELEASE-RQ."""
    pdus = [associate_rq, p_data_tf(1, 0x03, c_store_rq(seed.sop_class_uid, sop_instance_uid))]
    for start in range(0, len(data), fragment):
        last = start + fragment >= len(data)
        pdus.append(p_data_tf(1, 0x02 if last else 0x00, data[start : start + fragment]))
    pdus.append(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    return pdus


def data_set_sent(stream: bytes) -> bytes | None:
    """The data set of the first C-STORE in a (mutated) stream, framed as the server would read it; None if
    the framing does not carry a complete one."""
    data = b""
    for pdu_type, body in _pdus(stream):
        if pdu_type != P_DATA_TF_TYPE:
            continue
        at = 0
        while at + 6 <= len(body):
            length, _context_id, control = struct.unpack_from(">LBB", body, at)
            if length < 1 or at + 4 + length > len(body):
                return None
            if not control & 0x01:
                data += body[at + 6 : at + 4 + length]
                if control & 0x02:
                    return data
            at += 4 + length
    return None


def has_abort(stream: bytes) -> bool:
    """Whether the stream's framing carries an A-ABORT PDU (after which a silent close is the right answer)."""
    return any(pdu_type == A_ABORT_TYPE for pdu_type, _ in _pdus(stream))


def fresh_uid(*parts: str) -> str:
    return str(uid_for("dimse-fuzz", *parts))


def _pdus(stream: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 6 <= len(stream):
        pdu_type, _, length = struct.unpack_from(">BBL", stream, offset)
        if offset + 6 + length > len(stream):
            return
        yield pdu_type, stream[offset + 6 : offset + 6 + length]
        offset += 6 + length


def _elements(data: bytes, *, implicit: bool) -> Iterator[tuple[int, int, int, int | None]]:
    """Top-level elements: (tag offset, length field offset, length field size, VR offset or None)."""
    at = 0
    while at + 8 <= len(data):
        if implicit:
            length = struct.unpack_from("<L", data, at + 4)[0]
            yield at, at + 4, 4, None
            header = 8
        else:
            vr = data[at + 4 : at + 6]
            if vr in _LONG_VRS:
                if at + 12 > len(data):
                    return
                length = struct.unpack_from("<L", data, at + 8)[0]
                yield at, at + 8, 4, at + 4
                header = 12
            else:
                length = struct.unpack_from("<H", data, at + 6)[0]
                yield at, at + 6, 2, at + 4
                header = 8
        if length == 0xFFFFFFFF:
            return  # an undefined-length sequence: the walk stops here
        at += header + length
