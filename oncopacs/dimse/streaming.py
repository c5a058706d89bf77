"""Stage a C-STORE dataset in the storage area while its PDUs arrive, not after the last one.

pynetdicom gathers a request's dataset fragments into the message's ``data_set`` (a BytesIO)
and hands the whole message to the C-STORE handler once the last fragment is in. Writing the
file only then puts the disk's whole write on the acknowledgement's critical path (about half
of each ~6 ms CT slice on this storage). Here, as each C-STORE-RQ arrives, ``data_set`` is a
:class:`StreamedDataset`: it still keeps every byte in memory for the handler, and it also
copies each fragment, behind the File Meta header the archive would write, to a staged file
whose writeback starts at once (:meth:`oncopacs.archive.storage.StagingArea.open_stream`). The
handler passes that file to :meth:`~oncopacs.archive.ingest.Archive.ingest_dimse`, which
validates, hashes and indexes exactly as before and only makes the staged file durable
(fdatasync) instead of writing the bytes again. Nothing is acknowledged earlier than before.

A staged file whose message never reaches the handler (an aborted association) is deleted
when the association ends; one left by a crash is cleared at the next start like any other.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import struct
from typing import cast

from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage

from oncopacs.archive.ingest import ReceivedFile
from oncopacs.archive.part10 import build_file_meta
from oncopacs.archive.storage import StagingArea, StagingStream
from oncopacs.errors import StorageError

log = logging.getLogger(__name__)

_STREAMS = "_oncopacs_streams"


class StreamedDataset(io.BytesIO):
    """A DIMSE message's dataset buffer that also stages a C-STORE-RQ's dataset as it arrives."""

    def __init__(self, message: DIMSEMessage, assoc, streams: _AssociationStreams) -> None:
        super().__init__()
        self._message = message
        self._assoc = assoc
        self._streams = streams
        self._received: ReceivedFile | None = None
        self._decided = False

    def write(self, fragment) -> int:  # bytes-like, as BytesIO.write
        count = super().write(fragment)
        if not self._decided:
            self._decided = True
            self._received = self._open()
        if self._received is not None:
            try:
                self._received.stream.write(fragment)
            except StorageError as exc:  # the handler writes the file from memory instead
                log.warning("staging a C-STORE dataset while it arrives failed: %s", exc)
                self._forget()
        return count

    def take_received(self) -> ReceivedFile | None:
        """The staged file, handed over once (the caller finishes or abandons it); None if there is none."""
        received, self._received = self._received, None
        if received is not None:
            self._streams.release(received.stream)
        return received

    def _open(self) -> ReceivedFile | None:
        if not isinstance(self._message, C_STORE_RQ):  # C-FIND identifiers and the like stay in memory
            return None
        try:
            command = self._message.command_set
            context = self._assoc._accepted_cx[self._message.context_id]
            header = build_file_meta(
                sop_class_uid=str(command.AffectedSOPClassUID),
                sop_instance_uid=str(command.AffectedSOPInstanceUID),
                transfer_syntax_uid=str(context.transfer_syntax[0]),
                source_ae_title=self._assoc.requestor.ae_title,
            )
            stream = self._streams.take()
        except (StorageError, AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # a non-ASCII UID
            log.debug("C-STORE dataset not staged while it arrives: %s", exc)
            return None
        try:
            stream.write(header)
        except StorageError:
            self._streams.release(stream)
            return None  # write() abandoned the file already
        return ReceivedFile(header, stream)

    def _forget(self) -> None:
        received = self.take_received()
        if received is not None:
            received.stream.abandon()


class _AssociationStreams:
    """One association's staged files: those being written or not yet handed over, and a spare.

    The spare is an empty staged file created after each C-STORE request is in, while the
    handler works and the reactor would otherwise wait, so that creating a file is not on the
    next request's path. Used by the reactor thread (take, prepare) and the association's
    threads (release, close); set and attribute updates are atomic under the GIL.
    """

    def __init__(self, storage: StagingArea) -> None:
        self._storage = storage
        self._open: set[StagingStream] = set()
        self._spare: StagingStream | None = None
        self._closed = False

    def take(self) -> StagingStream:
        if self._closed:
            raise StorageError("the association has ended")
        stream, self._spare = self._spare, None
        if stream is None:
            stream = self._storage.open_stream()
        self._open.add(stream)
        return stream

    def release(self, stream: StagingStream) -> None:
        """``stream`` is no longer this association's to clean up."""
        self._open.discard(stream)

    def prepare(self) -> None:
        if self._spare is None and not self._closed:
            try:
                self._spare = self._storage.open_stream()
            except StorageError:
                self._spare = None
            if self._closed:  # the association ended meanwhile
                self.close()

    def close(self) -> None:
        """Delete every staged file not handed over, and the spare."""
        self._closed = True
        spare, self._spare = self._spare, None
        for stream in [*self._open, *([spare] if spare is not None else [])]:
            self._open.discard(stream)
            stream.abandon()


def install_streamed_staging(assoc, storage: StagingArea) -> None:  # pynetdicom Association
    """Make every incoming DIMSE message of ``assoc`` gather its dataset in a :class:`StreamedDataset`."""
    dimse = assoc.dimse
    receive_primitive = dimse.receive_primitive
    streams = _AssociationStreams(storage)
    setattr(assoc, _STREAMS, streams)

    def receive(primitive) -> None:  # P_DATA
        if dimse.message is None:
            dimse.message = DIMSEMessage()
            dimse.message.data_set = StreamedDataset(dimse.message, assoc, streams)
        message = dimse.message
        receive_primitive(primitive)
        if dimse.message is not message and isinstance(message, C_STORE_RQ):  # a request is in: ready the next file
            streams.prepare()

    dimse.receive_primitive = receive


def install_fast_dataset_fragments(assoc) -> None:  # pynetdicom Association
    """Take a C-STORE dataset's middle fragments straight from the socket into the request's dataset buffer.

    pynetdicom turns every P-DATA-TF PDU into a PDU object, two event notifications, a state
    machine action and a P-DATA primitive before its DIMSE provider appends the fragment to the
    message's ``data_set`` (``DIMSEMessage.decode_msg``): about a fifth of a millisecond of
    Python for each 128 KiB PDU a CT slice arrives in. Where that provider would do nothing but
    append, this does just that: in data transfer (Sta6), with no event or PDU of the reactor
    still pending, for a PDU that is one PDV of the current C-STORE-RQ's presentation context
    whose control header says dataset, not last (peeked at before it is read). Everything
    else (commands, last fragments, other PDUs, TLS sockets) takes pynetdicom's path, so the
    message still completes, is checked and is handled as before. The fast fragments are not
    reported to EVT_DATA_RECV / EVT_PDU_RECV handlers (OncoPACS binds none).
    """
    dul = assoc.dul
    read_pdu_data = dul._read_pdu_data

    def read() -> None:
        if not _read_middle_fragment(dul):
            read_pdu_data()

    dul._read_pdu_data = read


_MIDDLE_FRAGMENT = struct.Struct(">BBLLBB")  # PDU type, reserved, length; PDV item length, context ID, control


def _read_middle_fragment(dul) -> bool:  # pynetdicom DULServiceProvider
    """Append the next PDU's dataset fragment to the current C-STORE-RQ if it is a middle one; False if not taken."""
    message = dul.assoc.dimse.message
    if not isinstance(message, C_STORE_RQ) or dul.state_machine.current_state != "Sta6":
        return False
    if not (dul.event_queue.empty() and dul._recv_pdu.empty()):
        return False
    raw = getattr(dul.socket, "socket", None)
    if raw is None or isinstance(raw, ssl.SSLSocket):
        return False
    try:
        head = raw.recv(_MIDDLE_FRAGMENT.size, socket.MSG_PEEK)
    except (OSError, ValueError):
        return False
    if len(head) < _MIDDLE_FRAGMENT.size:
        return False
    pdu_type, _, pdu_length, item_length, context_id, control = _MIDDLE_FRAGMENT.unpack(head)
    if (pdu_type != 0x04 or control != 0x00 or item_length < 2 or item_length + 4 != pdu_length
            or context_id != message.context_id):
        return False
    try:
        data = dul.socket.recv(6 + pdu_length)
    except (OSError, TimeoutError) as exc:  # as pynetdicom's READ_PDU_EXC_D
        log.error("Connection closed before the entire PDU was received: %s", exc)
        dul.event_queue.put("Evt17")
        return True
    if len(data) != 6 + pdu_length:  # the peer went away mid-PDU (pynetdicom's READ_PDU_EXC_E)
        log.error("The received PDU is shorter than expected (%d of %d bytes received)", len(data), 6 + pdu_length)
        dul.event_queue.put("Evt17")
        return True
    # a C-STORE-RQ past its first dataset fragment has its data set
    cast(io.BytesIO, message.data_set).write(memoryview(data)[_MIDDLE_FRAGMENT.size:])
    return True


def abandon_streams(assoc) -> None:  # pynetdicom Association
    """Delete the staged files of messages that never reached the C-STORE handler (association ended)."""
    streams = getattr(assoc, _STREAMS, None)
    if streams is not None:
        streams.close()


def take_received(dataset) -> ReceivedFile | None:  # the request's DataSet
    """The file staged while ``dataset`` arrived, if it was (see :class:`StreamedDataset`)."""
    return dataset.take_received() if isinstance(dataset, StreamedDataset) else None
