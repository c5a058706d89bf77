"""A DICOM peer built from raw bytes, to send what a well-behaved SCU never would.

PDUs and command sets are packed here by hand (PS3.8 9.3, PS3.7 E.1) so that tests can send
malformed ones; only the A-ASSOCIATE-RQ is encoded with pynetdicom's PDU classes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AddressInformation

A_ASSOCIATE_RQ_TYPE, A_ASSOCIATE_AC_TYPE, A_ASSOCIATE_RJ_TYPE = 0x01, 0x02, 0x03
P_DATA_TF_TYPE, A_RELEASE_RQ_TYPE, A_RELEASE_RP_TYPE, A_ABORT_TYPE = 0x04, 0x05, 0x06, 0x07
C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030
MAX_PDU_RECEIVED = 65536


def associate_rq_bytes(
    contexts: list[tuple[str, list[str]]], *, calling_ae: str = "RAWPEER", called_ae: str = "ONCOPACS"
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (abstract syntax, transfer syntaxes), IDs 1, 3, 5..."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title = calling_ae
    request.called_ae_title = called_ae
    request.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    request.called_presentation_address = AddressInformation("127.0.0.1", 0)
    proposed = []
    for index, (abstract_syntax, syntaxes) in enumerate(contexts):
        context = build_context(abstract_syntax, syntaxes)
        context.context_id = 2 * index + 1
        proposed.append(context)
    request.presentation_context_definition_list = proposed
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = MAX_PDU_RECEIVED
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    request.user_information = [maximum, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return pdu.encode()


def pdu_bytes(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def p_data_tf(context_id: int, control: int, data: bytes) -> bytes:
    """One P-DATA-TF PDU carrying one PDV (control: bit 0 command, bit 1 last fragment)."""
    return pdu_bytes(P_DATA_TF_TYPE, struct.pack(">LBB", len(data) + 2, context_id, control) + data)


def element(tag_element: int, value: bytes) -> bytes:
    """A group 0000 element in implicit VR little endian."""
    return struct.pack("<HHI", 0x0000, tag_element, len(value)) + value


def text(value: str | bytes, pad: bytes = b"\x00") -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return raw + pad if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def command_set(*elements: bytes, group_length: int | None = None) -> bytes:
    """Elements preceded by (0000,0000) CommandGroupLength (their length unless ``group_length``)."""
    body = b"".join(elements)
    length = len(body) if group_length is None else group_length
    return element(0x0000, struct.pack("<I", length)) + body


def c_store_rq(sop_class_uid: str | bytes, sop_instance_uid: str | bytes, message_id: int = 1) -> bytes:
    return command_set(
        element(0x0002, text(sop_class_uid)),
        element(0x0100, us(C_STORE_RQ)),
        element(0x0110, us(message_id)),
        element(0x0700, us(0)),
        element(0x0800, us(0x0000)),
        element(0x1000, text(sop_instance_uid)),
    )


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set(
        element(0x0002, text(Verification)),
        element(0x0100, us(C_ECHO_RQ)),
        element(0x0110, us(message_id)),
        element(0x0800, us(0x0101)),
    )


@dataclass(frozen=True)
class Pdu:
    pdu_type: int
    body: bytes


@dataclass
class Reply:
    """What came back for one request: a command set, or the PDU that ended the association."""

    command: Dataset | None = None
    ended_by: Pdu | None = None  # A-ABORT, A-RELEASE-RP... or None with ``closed``
    closed: bool = False
    pdus: list[Pdu] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return int(self.command.Status) if self.command is not None and "Status" in self.command else None


class RawPeer:
    """One TCP connection to the server, speaking raw PDUs."""

    def __init__(self, address: tuple[str, int], *, bind: str | None = None, timeout_s: float = 10.0):
        self.sock = socket.create_connection(address, timeout=timeout_s,
                                             source_address=(bind, 0) if bind else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls
        self.accepted: dict[int, str] = {}  # context ID -> transfer syntax

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self) -> Pdu | None:
        """The next PDU, or None when the server closed the connection."""
        header = self._read_exactly(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read_exactly(length)
        return None if body is None else Pdu(pdu_type, body)

    def associate(self, contexts: list[tuple[str, list[str]]], **titles: str) -> Pdu | None:
        """Send an A-ASSOCIATE-RQ; the server's answer (AC, RJ, abort), accepted contexts noted."""
        self.send(associate_rq_bytes(contexts, **titles))
        answer = self.read_pdu()
        if answer is not None and answer.pdu_type == A_ASSOCIATE_AC_TYPE:
            self.accepted = _accepted_contexts(answer.body)
        return answer

    def request(self, context_id: int, command: bytes, dataset: bytes | None = None, *,
                max_pdv: int = 16 * 1024) -> Reply:
        """Send a DIMSE request (command, then dataset in fragments) and read its final response."""
        self.send(p_data_tf(context_id, 0x03, command))
        if dataset is not None:
            for start in range(0, max(len(dataset), 1), max_pdv):
                last = start + max_pdv >= len(dataset)
                self.send(p_data_tf(context_id, 0x02 if last else 0x00, dataset[start : start + max_pdv]))
        return self.read_reply()

    def read_reply(self) -> Reply:
        """Read PDUs until a complete non-pending response command set, an ending PDU or a close."""
        reply, command = Reply(), b""
        while True:
            try:
                pdu = self.read_pdu()
            except (TimeoutError, OSError):
                pdu = None
            if pdu is None:
                reply.closed = True
                return reply
            reply.pdus.append(pdu)
            if pdu.pdu_type != P_DATA_TF_TYPE:
                reply.ended_by = pdu
                return reply
            for control, data in _pdvs(pdu.body):
                if not control & 0x01:
                    continue  # a data set fragment
                command += data
                if control & 0x02:
                    parsed = read_dataset(BytesIO(command), is_implicit_VR=True, is_little_endian=True)
                    command = b""
                    if int(parsed.get("Status", 0)) not in (0xFF00, 0xFF01):
                        reply.command = parsed
                        return reply

    def release(self) -> Pdu | None:
        self.send(pdu_bytes(A_RELEASE_RQ_TYPE, b"\x00\x00\x00\x00"))
        return self.read_pdu()

    def _read_exactly(self, count: int) -> bytes | None:
        chunks, left = [], count
        while left:
            chunk = self.sock.recv(min(left, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def _pdvs(body: bytes) -> list[tuple[int, bytes]]:
    items, offset = [], 0
    while offset + 6 <= len(body):
        length, _context_id, control = struct.unpack_from(">LBB", body, offset)
        items.append((control, body[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items


def _accepted_contexts(body: bytes) -> dict[int, str]:
    """Context ID -> transfer syntax of the accepted presentation contexts of an A-ASSOCIATE-AC."""
    accepted, offset = {}, 68  # protocol version, reserved, called/calling AE, reserved (PS3.8 9.3.3)
    while offset + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, offset)
        if item_type == 0x21:  # presentation context item (AC)
            context_id, result = body[offset + 4], body[offset + 6]
            sub = offset + 8
            _sub_type, _, sub_length = struct.unpack_from(">BBH", body, sub)
            if result == 0:
                accepted[context_id] = body[sub + 4 : sub + 4 + sub_length].decode("ascii").rstrip("\x00 ")
        offset += 4 + length
    return accepted


def echo(address: tuple[str, int], *, bind: str | None = None, timeout_s: float = 10.0) -> tuple[int | None, float]:
    """A C-ECHO on a new association: (its status or None, seconds from connecting to the response)."""
    start = time.perf_counter()
    with RawPeer(address, bind=bind, timeout_s=timeout_s) as peer:
        answer = peer.associate([(Verification, [ImplicitVRLittleEndian])])
        if answer is None or answer.pdu_type != A_ASSOCIATE_AC_TYPE:
            return None, time.perf_counter() - start
        reply = peer.request(1, c_echo_rq())
        elapsed = time.perf_counter() - start
        peer.release()
        return reply.status, elapsed
