"""A seeded mutator of DICOM Part 10 files: it knows where elements, lengths, VRs and items are.

:func:`walk` maps a file into :class:`Element` records (File Meta, dataset, items of nested
sequences); :class:`Mutator` damages one file in one of the ways hostile or broken senders do
(byte flips, cuts, length fields, VRs, huge lengths, duplicated elements, sequence items and
delimiters, the File Meta). Everything is driven by one ``random.Random``: the same seed gives the
same mutants, and each mutant carries a description that names what was done, so a failure is
reproduced from its seed and case number alone.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

PREAMBLE_LENGTH = 132  # 128 bytes and "DICM"
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 7.1.2).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
SHORT_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
             b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"]
BOGUS_VRS = [b"XX", b"ZZ", b"\x00\x00", b"  ", b"u\xff", b"ab", b"1a"]
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
    "1.2.3.4.5.6.7", "not.a.uid", "", "1.2.840.10008.1.2.4.201",
]
HUGE_LENGTHS = [0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFE, 0x80000000, 0x10000000, 0xFFFF, 0xFFFFFFFF]
IDENTITY_TAGS = (0x00080018, 0x0020000D, 0x0020000E)  # SOP Instance, Study, Series Instance UIDs


@dataclass(frozen=True, slots=True)
class Syntax:
    """How a dataset is encoded."""

    implicit: bool
    little: bool

    @property
    def order(self) -> str:
        return "<" if self.little else ">"


EXPLICIT_LE = Syntax(implicit=False, little=True)
IMPLICIT_LE = Syntax(implicit=True, little=True)


@dataclass(frozen=True, slots=True)
class Element:
    """One element (or item, or delimiter) in the file: where its header, length field and value are."""

    offset: int  # of the tag
    tag: int
    vr: bytes | None  # None in implicit VR and for items/delimiters
    header_length: int
    length_offset: int
    length_size: int  # 2 or 4
    length: int
    depth: int  # 0: File Meta or top-level dataset; 1: inside an item of a top-level sequence; ...
    syntax: Syntax
    meta: bool = False

    @property
    def value_offset(self) -> int:
        return self.offset + self.header_length

    @property
    def end(self) -> int:
        """Where the element ends when its length is defined."""
        return self.value_offset + (0 if self.length == UNDEFINED else self.length)

    @property
    def is_item_or_delimiter(self) -> bool:
        return self.tag >> 16 == 0xFFFE


def syntax_of(transfer_syntax_uid: str) -> Syntax | None:
    """The encoding of a transfer syntax, or None when its dataset is not walked (deflated)."""
    uid = UID(transfer_syntax_uid)
    if uid == "1.2.840.10008.1.2.1.99" or not uid.is_transfer_syntax:
        return None
    return Syntax(implicit=uid.is_implicit_VR, little=uid.is_little_endian)


def walk(data: bytes) -> list[Element]:
    """Every element of a Part 10 file (or a bare little endian dataset), nested items included, in file order.

    Walking stops quietly where the bytes stop making sense (the seed files are well formed).
    """
    elements: list[Element] = []
    offset, syntax = 0, IMPLICIT_LE
    if data[128:132] == b"DICM":
        offset = _walk_meta(data, elements)
        transfer_syntax = next((_text(data, e) for e in elements if e.tag == 0x00020010), "1.2.840.10008.1.2")
        found = syntax_of(transfer_syntax)
        if found is None:
            return elements
        syntax = found
    elif data[4:6] in LONG_VRS or data[4:6] in SHORT_VRS:
        syntax = EXPLICIT_LE
    _walk_dataset(data, offset, len(data), syntax, 0, elements)
    return elements


def _text(data: bytes, element: Element) -> str:
    return data[element.value_offset : element.end].decode("ascii", "replace").strip("\x00 ")


def _walk_meta(data: bytes, out: list[Element]) -> int:
    offset = PREAMBLE_LENGTH
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            break
        element = _read_header(data, offset, EXPLICIT_LE, 0, meta=True)
        if element is None or element.length == UNDEFINED:
            break
        out.append(element)
        offset = element.end
    return offset


def _read_header(data: bytes, offset: int, syntax: Syntax, depth: int, *, meta: bool = False) -> Element | None:
    if offset + 8 > len(data):
        return None
    order = syntax.order
    group, number = struct.unpack_from(order + "HH", data, offset)
    tag = group << 16 | number
    if group == 0xFFFE:  # items and delimiters: always tag + 4-byte length
        (length,) = struct.unpack_from(order + "I", data, offset + 4)
        return Element(offset, tag, None, 8, offset + 4, 4, length, depth, syntax, meta)
    if syntax.implicit:
        (length,) = struct.unpack_from(order + "I", data, offset + 4)
        return Element(offset, tag, None, 8, offset + 4, 4, length, depth, syntax, meta)
    vr = data[offset + 4 : offset + 6]
    if vr in LONG_VRS:
        if offset + 12 > len(data):
            return None
        (length,) = struct.unpack_from(order + "I", data, offset + 8)
        return Element(offset, tag, vr, 12, offset + 8, 4, length, depth, syntax, meta)
    (length,) = struct.unpack_from(order + "H", data, offset + 6)
    return Element(offset, tag, vr, 8, offset + 6, 2, length, depth, syntax, meta)


def _is_sequence(element: Element) -> bool:
    if element.vr == b"SQ":
        return True
    if element.tag == 0x7FE00010:  # encapsulated pixel data: fragments, not datasets
        return False
    if element.vr == b"UN" and element.length == UNDEFINED:
        return True
    if element.vr is None:
        try:
            return dictionary_VR(element.tag) == "SQ" or element.length == UNDEFINED
        except KeyError:
            return element.length == UNDEFINED
    return False


def _walk_dataset(data: bytes, offset: int, stop: int, syntax: Syntax, depth: int, out: list[Element]) -> int:
    """Walk elements from ``offset`` until ``stop`` or an item delimiter; return where walking ended."""
    while offset < stop:
        element = _read_header(data, offset, syntax, depth)
        if element is None:
            return len(data)
        out.append(element)
        if element.tag in (ITEM_END, SEQUENCE_END):
            return element.end
        if _is_sequence(element):
            inner = IMPLICIT_LE if element.vr == b"UN" else syntax
            offset = _walk_items(data, element, inner, depth, out)
        elif element.length == UNDEFINED:  # encapsulated pixel data: fragments up to the delimiter
            offset = _walk_fragments(data, element.value_offset, syntax, depth, out)
        else:
            offset = element.end
    return offset


def _walk_items(data: bytes, sequence: Element, syntax: Syntax, depth: int, out: list[Element]) -> int:
    offset = sequence.value_offset
    stop = len(data) if sequence.length == UNDEFINED else sequence.end
    while offset < stop:
        item = _read_header(data, offset, syntax, depth + 1)
        if item is None:
            return len(data)
        out.append(item)
        if item.tag == SEQUENCE_END:
            return item.end
        if item.tag != ITEM:
            return len(data)  # not what a seed holds: stop walking
        item_stop = len(data) if item.length == UNDEFINED else item.end
        offset = _walk_dataset(data, item.value_offset, item_stop, syntax, depth + 1, out)
        if item.length != UNDEFINED:
            offset = item.end
    return offset


def _walk_fragments(data: bytes, offset: int, syntax: Syntax, depth: int, out: list[Element]) -> int:
    while offset + 8 <= len(data):
        fragment = _read_header(data, offset, IMPLICIT_LE if syntax.little else syntax, depth + 1)
        if fragment is None:
            return len(data)
        out.append(fragment)
        if fragment.tag == SEQUENCE_END:
            return fragment.end
        offset = fragment.end
    return len(data)


# -- building blocks ----------------------------------------------------------------------------


def encode_header(tag: int, vr: bytes | None, length: int, syntax: Syntax) -> bytes:
    """An element header in ``syntax`` (``vr`` None: implicit VR)."""
    order = syntax.order
    group, number = tag >> 16, tag & 0xFFFF
    if vr is None or syntax.implicit or group == 0xFFFE:
        return struct.pack(order + "HHI", group, number, length & 0xFFFFFFFF)
    if vr in LONG_VRS:
        return struct.pack(order + "HH2sHI", group, number, vr, 0, length & 0xFFFFFFFF)
    return struct.pack(order + "HH2sH", group, number, vr, length & 0xFFFF)


def replace_range(data: bytes, start: int, end: int, new: bytes) -> bytes:
    return data[:start] + new + data[end:]


def element_at(data: bytes, tag: int) -> Element:
    """The top-level dataset element ``tag`` (not the File Meta's)."""
    return next(e for e in walk(data) if e.tag == tag and not e.meta and e.depth == 0)


def with_length(data: bytes, tag: int, length: int) -> bytes:
    """``data`` with the length field of element ``tag`` set to ``length`` (its value left as it was)."""
    element = element_at(data, tag)
    packed = struct.pack(element.syntax.order + ("I" if element.length_size == 4 else "H"), length)
    return replace_range(data, element.length_offset, element.length_offset + element.length_size, packed)


def with_vr(data: bytes, tag: int, vr: bytes | None, value: bytes | None = None) -> bytes:
    """``data`` with element ``tag`` re-encoded with VR ``vr`` (None: implicit VR) and ``value`` (default: its own)."""
    element = element_at(data, tag)
    value = data[element.value_offset : element.end] if value is None else value
    return replace_range(data, element.offset, element.end, encode_header(tag, vr, len(value), element.syntax) + value)


def with_fresh_uids(data: bytes, case: int) -> bytes:
    """``data`` with its SOP Instance, Study and Series UIDs (and the meta's copy) replaced by ones unique to
    ``case``, of the same lengths (so every offset stays valid): each mutant is judged on its own, not as a
    resend of another."""
    for element in walk(data):
        if element.depth or element.tag not in (*IDENTITY_TAGS, 0x00020003) or element.length == UNDEFINED:
            continue
        size = element.length
        if size < 8:
            continue
        root = f"2.25.{(element.tag & 0xFFFF)}{case}9"
        digits = (root + "1" * size)[:size]
        if size % 2 == 0 and data[element.end - 1 : element.end] == b"\x00":
            digits = digits[:-1] + "\x00"
        data = replace_range(data, element.value_offset, element.end, digits.encode("ascii"))
    return _keep_meta_in_step(data)


def _keep_meta_in_step(data: bytes) -> bytes:
    """Copy the dataset's SOP Instance UID into the File Meta's (same length: both were rewritten alike)."""
    elements = walk(data)
    meta = next((e for e in elements if e.meta and e.tag == 0x00020003), None)
    own = next((e for e in elements if not e.meta and e.depth == 0 and e.tag == 0x00080018), None)
    if meta is None or own is None or meta.length != own.length:
        return data
    return replace_range(data, meta.value_offset, meta.end, data[own.value_offset : own.end])


# -- the mutations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutant:
    """A damaged file and what was done to it."""

    kind: str
    description: str
    data: bytes


class Mutator:
    """Damages files in one of :data:`KINDS` ways, chosen and parameterised by ``rng``."""

    KINDS = (
        "byte_flip", "truncate", "length", "vr", "huge_length", "duplicate", "sequence", "file_meta",
        "delete", "value",
    )

    def __init__(self, rng: random.Random):
        self.rng = rng

    def mutate(self, data: bytes, kind: str | None = None) -> Mutant:
        kind = kind or self.rng.choice(self.KINDS)
        elements = walk(data)
        method: Callable[[bytes, list[Element]], tuple[str, bytes]] = getattr(self, f"_{kind}")
        description, mutated = method(data, elements)
        return Mutant(kind, description, mutated)

    # Each method returns (description, mutated bytes).

    def _header_end(self, elements: list[Element], data: bytes) -> int:
        pixel = next((e for e in elements if e.tag == 0x7FE00010 and e.depth == 0), None)
        return pixel.value_offset + 16 if pixel else len(data)

    def _pick(self, elements: list[Element], where: Callable[[Element], bool] = lambda e: True) -> Element | None:
        chosen = [e for e in elements if where(e)]
        return self.rng.choice(chosen) if chosen else None

    def _byte_flip(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        buffer = bytearray(data)
        limit = self._header_end(elements, data) if self.rng.random() < 0.9 else len(data)
        flips = []
        for _ in range(self.rng.randint(1, 8)):
            position = self.rng.randrange(min(limit, len(data)))
            value = self.rng.choice([0x00, 0xFF, 0x80, self.rng.randrange(256), buffer[position] ^ 1])
            buffer[position] = value
            flips.append(f"{position:#x}={value:#04x}")
        return f"bytes {', '.join(flips)}", bytes(buffer)

    def _truncate(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements)
        if element is not None and self.rng.random() < 0.7:  # near an element: inside its header or value
            position = element.offset + self.rng.randint(0, element.header_length + min(element.length, 64))
        else:
            position = self.rng.randrange(len(data))
        position = max(0, min(position, len(data) - 1))
        return f"cut at {position:#x} of {len(data):#x}", data[:position]

    def _length(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements)
        if element is None:
            return self._truncate(data, elements)
        length = element.length if element.length != UNDEFINED else 0
        choices = [0, 1, length + 1, max(length - 1, 0), length * 2 + 2, self.rng.randrange(1 << 16),
                   len(data), len(data) - element.offset, 3]
        if element.length_size == 4:
            choices += [UNDEFINED, *HUGE_LENGTHS, self.rng.randrange(1 << 32)]
        else:
            choices += [0xFFFF, 0xFFFE]
        new = self.rng.choice(choices) & ((1 << 8 * element.length_size) - 1)
        packed = struct.pack(element.syntax.order + ("I" if element.length_size == 4 else "H"), new)
        mutated = replace_range(data, element.length_offset, element.length_offset + element.length_size, packed)
        return f"length of {element.tag:08X} at {element.offset:#x} {element.length:#x} -> {new:#x}", mutated

    def _vr(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements, lambda e: e.vr is not None)
        if element is None:
            return self._byte_flip(data, elements)
        new_vr = self.rng.choice([*SHORT_VRS, *LONG_VRS, *BOGUS_VRS])
        if self.rng.random() < 0.5:  # re-encode the header in the new VR's layout, value kept
            value_end = element.end if element.length != UNDEFINED else element.value_offset
            value = data[element.value_offset : value_end]
            length = element.length if element.length == UNDEFINED else len(value)
            header = encode_header(element.tag, new_vr, length, element.syntax)
            mutated = replace_range(data, element.offset, value_end, header + value)
            how = "re-encoded"
        else:  # only the two VR bytes: the length field is then read in the wrong layout
            mutated = replace_range(data, element.offset + 4, element.offset + 6, new_vr)
            how = "bytes only"
        return f"VR of {element.tag:08X} at {element.offset:#x} {element.vr!r} -> {new_vr!r} ({how})", mutated

    def _huge_length(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements, lambda e: not e.meta)
        where = element.offset if element is not None else len(data)
        syntax = element.syntax if element is not None else IMPLICIT_LE
        length = self.rng.choice(HUGE_LENGTHS)
        tag = self.rng.choice([0x00091010, 0x00100020, 0x7FE00010, 0x00081140, 0x00290010, 0x00100010])
        vr = self.rng.choice([b"OB", b"UN", b"SQ", b"UT", b"LO"])
        header = encode_header(tag, vr, length, syntax)
        payload = bytes(self.rng.randrange(0, 32))
        return (f"inserted {tag:08X} {vr!r} length {length:#x} at {where:#x}",
                replace_range(data, where, where, header + payload))

    def _duplicate(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements, lambda e: e.length != UNDEFINED and not e.is_item_or_delimiter)
        if element is None:
            return self._byte_flip(data, elements)
        copy = data[element.offset : element.end]
        target = self._pick(elements, lambda e: e.depth == element.depth and e.meta == element.meta)
        where = element.end if target is None or self.rng.random() < 0.5 else target.offset
        return (f"duplicated {element.tag:08X} from {element.offset:#x} at {where:#x}",
                replace_range(data, where, where, copy))

    def _sequence(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements, lambda e: e.is_item_or_delimiter or e.vr == b"SQ")
        if element is None:
            return self._length(data, elements)
        action = self.rng.choice(["tag", "length", "remove", "swap", "undefined"])
        if action == "remove":  # the header only: an item's elements, or a sequence's items, are left dangling
            return (f"removed the {element.tag:08X} header at {element.offset:#x}",
                    replace_range(data, element.offset, element.value_offset, b""))
        if action == "tag":
            new_tag = self.rng.choice([ITEM, ITEM_END, SEQUENCE_END, 0xFFFEE001, 0x00100010, 0x0000E000])
            header = encode_header(new_tag, element.vr, element.length, element.syntax)[: element.header_length]
            header = header.ljust(element.header_length, b"\x00")
            return (f"tag of {element.tag:08X} at {element.offset:#x} -> {new_tag:08X}",
                    replace_range(data, element.offset, element.offset + 4, header[:4]))
        if action == "swap":  # item delimiter <-> sequence delimiter, or an item where a delimiter is
            new_tag = {ITEM_END: SEQUENCE_END, SEQUENCE_END: ITEM_END}.get(element.tag, ITEM_END)
            packed = struct.pack(element.syntax.order + "HH", new_tag >> 16, new_tag & 0xFFFF)
            return (f"tag of {element.tag:08X} at {element.offset:#x} swapped to {new_tag:08X}",
                    replace_range(data, element.offset, element.offset + 4, packed))
        new = UNDEFINED if action == "undefined" else self.rng.choice([0, 2, 7, element.length + 8, *HUGE_LENGTHS])
        new &= (1 << 8 * element.length_size) - 1
        packed = struct.pack(element.syntax.order + ("I" if element.length_size == 4 else "H"), new)
        return (f"length of {element.tag:08X} at {element.offset:#x} -> {new:#x}",
                replace_range(data, element.length_offset, element.length_offset + element.length_size, packed))

    def _file_meta(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        meta = [e for e in elements if e.meta]
        action = self.rng.choice(["group_length", "syntax", "media_uid", "prefix", "remove", "flip", "vr", "cut"])
        if not meta or action == "prefix":
            choice = self.rng.choice([b"DICN", b"\x00\x00\x00\x00", b"dicm"])
            return f"prefix -> {choice!r}", replace_range(data, 128, 132, choice)
        if action == "group_length" and meta[0].tag == 0x00020000:
            new = self.rng.choice([0, 1, meta[0].length, len(data), 0xFFFFFFFF, self.rng.randrange(1 << 32),
                                   sum(e.end - e.offset for e in meta[1:]) + self.rng.choice([-8, -2, 2, 8])])
            new &= 0xFFFFFFFF
            return (f"meta group length -> {new:#x}",
                    replace_range(data, meta[0].value_offset, meta[0].value_offset + 4, struct.pack("<I", new)))
        if action in ("syntax", "media_uid"):
            tag = 0x00020010 if action == "syntax" else self.rng.choice([0x00020002, 0x00020003])
            element = next((e for e in meta if e.tag == tag), None)
            if element is not None:
                value = (self.rng.choice(TRANSFER_SYNTAXES) if action == "syntax"
                         else self.rng.choice(["1.2.3", "", "1.2.840.10008.5.1.4.1.1.2", "\xff\xfe"]))
                raw = value.encode("latin-1")
                raw += b"\x00" * (len(raw) % 2)
                return f"meta {tag:08X} -> {value!r}", self._set_value(data, element, raw, meta)
        if action == "remove":
            element = self.rng.choice(meta)
            return (f"meta {element.tag:08X} removed",
                    self._fix_group_length(replace_range(data, element.offset, element.end, b""), meta))
        if action == "vr":
            element = self.rng.choice(meta)
            new_vr = self.rng.choice([*BOGUS_VRS, b"OB", b"UN", b"UL", b"SQ"])
            return (f"meta {element.tag:08X} VR -> {new_vr!r}",
                    replace_range(data, element.offset + 4, element.offset + 6, new_vr))
        if action == "cut":
            position = self.rng.randrange(128, meta[-1].end + 1)
            return f"cut inside the File Meta at {position:#x}", data[:position]
        buffer = bytearray(data)
        position = self.rng.randrange(PREAMBLE_LENGTH, meta[-1].end)
        buffer[position] = self.rng.randrange(256)
        return f"meta byte {position:#x} -> {buffer[position]:#04x}", bytes(buffer)

    def _set_value(self, data: bytes, element: Element, raw: bytes, meta: list[Element]) -> bytes:
        header = encode_header(element.tag, element.vr, len(raw), element.syntax)
        return self._fix_group_length(replace_range(data, element.offset, element.end, header + raw), meta)

    @staticmethod
    def _fix_group_length(data: bytes, meta: list[Element]) -> bytes:
        """Keep the File Meta group length right after a meta change (so the damage is the one intended)."""
        if not meta or meta[0].tag != 0x00020000:
            return data
        rest = walk(data)
        end = max((e.end for e in rest if e.meta and e.tag != 0x00020000), default=meta[0].end)
        return replace_range(data, meta[0].value_offset, meta[0].value_offset + 4, struct.pack("<I", end - meta[0].end))

    def _delete(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        element = self._pick(elements, lambda e: not e.meta and e.length != UNDEFINED and not e.is_item_or_delimiter)
        if element is None:
            return self._truncate(data, elements)
        return f"deleted {element.tag:08X} at {element.offset:#x}", replace_range(data, element.offset,
                                                                                     element.end, b"")

    def _value(self, data: bytes, elements: list[Element]) -> tuple[str, bytes]:
        """A new value (same VR, re-encoded length): odd, non-ASCII, multi-valued, empty, over-long or binary."""
        element = self._pick(elements, lambda e: e.length != UNDEFINED and not e.is_item_or_delimiter
                             and e.tag != 0x7FE00010)
        if element is None:
            return self._byte_flip(data, elements)
        raw = self.rng.choice([
            b"", b"\x00", b"1", b"abc", b"\xff\xfe\xfd", "Ærø^Ünï".encode("latin-1"), b"1\\2\\3", b"-1", b"1e999",
            b"nan", b"99999999999999999999", b"1.2.3..4", b"\x1b$B\x1b(B", b"A" * 70, b"\x00" * 7,
            bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 12))),
        ])
        header = encode_header(element.tag, element.vr, len(raw), element.syntax)
        if element.length_size == 2 and element.vr in LONG_VRS:
            header = header[: element.header_length]
        mutated = replace_range(data, element.offset, element.end, header + raw)
        meta = [e for e in elements if e.meta]
        if element.meta:
            mutated = self._fix_group_length(mutated, meta)
        return f"value of {element.tag:08X} at {element.offset:#x} -> {raw[:16]!r} ({len(raw)} bytes)", mutated
