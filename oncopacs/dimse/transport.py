"""Transport tuning applied to every association OncoPACS accepts or opens."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
import weakref

import pynetdicom.association
import pynetdicom.dul
from pynetdicom.pdu_primitives import P_DATA

from oncopacs.dimse.responses import install_fast_responses

log = logging.getLogger(__name__)

DUL_POLL_S = 0.0002
#: The DUL reactor's idle wait once it wakes on its socket and on queued sends (:func:`install_dul_wake`).
DUL_WAKEABLE_POLL_S = 0.001
#: :func:`install_fast_recv` reads a PDU into a buffer of its announced size up to this many bytes; a
#: larger announced length (a peer ignoring the negotiated maximum, or lying) is read as it arrives.
RECV_PREALLOCATE_LIMIT = 16 * 1024 * 1024
#: A PDU may exceed the maximum length we advertise by this much (association PDUs, peers that count
#: the PDU header in the maximum); a longer one ends the association (:func:`install_fast_recv`).
PDU_LENGTH_ALLOWANCE = 1024 * 1024
#: A-ABORT PDU, source DICOM UL service-provider, reason invalid PDU parameter value (PS3.8 9.3.8).
A_ABORT_INVALID_PDU = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"
#: :func:`install_batched_sends` joins queued P-DATA-TF PDUs into one send up to this many bytes.
SEND_BATCH_BYTES = 1024 * 1024
#: pynetdicom's Association._run_reactor sleeps this long between looks at its message queue.
ASSOCIATION_POLL_S = 0.001


def tune_association(event) -> None:  # pynetdicom Event
    """Tune a new association's transport for latency.

    Nagle's algorithm is turned off (with delayed ACKs it costs ~45 ms a message), and the
    DUL reactor polls every 0.2 ms instead of 1 ms when idle: a synchronous SCU waits that
    long before each instance is even read (~0.5 ms of every ~6 ms C-STORE of a CT slice).
    PDUs are read in large chunks (:func:`install_fast_recv`), and as acceptor, C-STORE and
    C-FIND responses go through :mod:`oncopacs.dimse.responses`. The association's reactor
    wakes as soon as a request is complete instead of at its next 1 ms poll
    (:func:`install_reactor_wake`), and the DUL reactor as soon as data arrives or a PDU is
    queued to be sent (:func:`install_dul_wake`), and sends every P-DATA PDU queued by then
    in one system call (:func:`install_batched_sends`).
    """
    event.assoc.dul._run_loop_delay = DUL_POLL_S
    maximum = event.assoc.ae.maximum_pdu_size
    install_fast_recv(event.assoc.dul.socket, maximum + PDU_LENGTH_ALLOWANCE if maximum else None)
    install_reactor_wake(event.assoc)
    install_dul_wake(event.assoc.dul)
    install_batched_sends(event.assoc.dul)
    if event.assoc.is_acceptor:
        install_fast_responses(event.assoc)
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def install_fast_recv(association_socket, limit_bytes: int | None = None) -> None:  # pynetdicom AssociationSocket
    """Read PDUs with ``recv_into`` a buffer of the PDU's size, and refuse the reads a peer should not ask for.

    pynetdicom's ``AssociationSocket.recv`` reads 4 KiB per system call and grows a bytearray
    (128 calls for each 512 KiB CT slice). The contract is the same: return the bytes asked
    for, or fewer if the peer closed the connection. Fewer are also returned, after an A-ABORT
    is sent, when a read asks for more than ``limit_bytes`` (a PDU longer than the maximum we
    advertised: its length is never waited for nor allocated), when no byte arrived for the
    socket's timeout (:func:`oncopacs.dimse.perimeter.set_socket_timeouts`), and between two
    pieces of a PDU once the association is being ended (a peer trickling a PDU byte by byte
    cannot hold it). pynetdicom treats a short read as a closed transport.
    """
    if association_socket is None or getattr(association_socket, "socket", None) is None:
        return
    assoc = getattr(association_socket, "_assoc", None)
    if assoc is None:  # a bare socket wrapper (tests): never ended
        assoc = _NEVER_ENDED

    def recv(nr_bytes: int) -> bytearray:
        sock = association_socket.socket
        if limit_bytes is not None and nr_bytes > limit_bytes:
            log.warning("a PDU longer than the %d-byte limit from %s: A-ABORT sent", limit_bytes, _peer_of(sock))
            _send_abort(sock)
            return bytearray()
        try:
            if nr_bytes > RECV_PREALLOCATE_LIMIT:  # a length the peer claims: memory grows only as bytes arrive
                grown = bytearray()
                while len(grown) < nr_bytes:
                    chunk = sock.recv(min(nr_bytes - len(grown), RECV_PREALLOCATE_LIMIT))
                    grown += chunk
                    if not chunk:
                        break
                    if assoc._kill:
                        _abandon(sock, partial=len(grown) < nr_bytes)
                        break
                return grown
            buffer = bytearray(nr_bytes)
            view = memoryview(buffer)
            received = 0
            while received < nr_bytes:
                count = sock.recv_into(view[received:], nr_bytes - received)
                received += count
                if count == 0:
                    break
                if assoc._kill:
                    _abandon(sock, partial=received < nr_bytes)
                    break
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO: the peer stopped in the middle of a PDU
            log.warning("no data from %s for the idle timeout in the middle of a PDU: A-ABORT sent", _peer_of(sock))
            _send_abort(sock)
            return bytearray()
        del view
        return buffer if received == nr_bytes else buffer[:received]

    association_socket.recv = recv


def _abandon(sock: socket.socket, *, partial: bool) -> None:
    """The association is being ended (killed): the rest of a PDU is not waited for, and a peer still
    sending one gets an A-ABORT (nothing else will tell it)."""
    if partial:
        _send_abort(sock)


class _NeverEnded:
    _kill = False


_NEVER_ENDED = _NeverEnded()


def _send_abort(sock: socket.socket) -> None:
    """Send an A-ABORT straight to the peer (from the DUL thread, the socket's only writer)."""
    with contextlib.suppress(OSError):
        sock.sendall(A_ABORT_INVALID_PDU)


def _peer_of(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return "a peer already gone"


class _AssociationClock:
    """The ``time`` module as ``pynetdicom.association`` sees it, but for the reactor's idle sleep.

    ``Association._run_reactor`` sleeps 1 ms between looks at its message queue, so a complete
    C-STORE request waits 0.5 ms on average before its handler starts (every CT slice). Here
    that one sleep waits on the association's own event instead, which :meth:`wake` sets when
    a message is complete: it ends at once then, and after 1 ms otherwise, as before. Every
    other use of ``time`` goes to the real module.
    """

    def __init__(self) -> None:
        self._events: weakref.WeakKeyDictionary[threading.Thread, threading.Event] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if seconds != ASSOCIATION_POLL_S:
            time.sleep(seconds)
            return
        event = self._event_of(threading.current_thread())
        if event.wait(seconds):
            event.clear()

    def wake(self, association: threading.Thread) -> None:
        self._event_of(association).set()

    def _event_of(self, thread: threading.Thread) -> threading.Event:
        with self._lock:
            event = self._events.get(thread)
            if event is None:
                event = self._events[thread] = threading.Event()
            return event


_CLOCK = _AssociationClock()


def install_reactor_wake(assoc) -> None:  # pynetdicom Association
    """Wake ``assoc``'s reactor as soon as its DIMSE provider has a complete message, or its DUL
    passes up a release or abort from the peer (:class:`_AssociationClock`)."""
    if pynetdicom.association.time is not _CLOCK:  # type: ignore[comparison-overlap]  # a module, or our clock
        pynetdicom.association.time = _CLOCK  # type: ignore[assignment]
    to_user = assoc.dul.to_user_queue
    put = to_user.put

    def put_and_wake(item, *args, **kwargs) -> None:  # queue.Queue.put's signature
        put(item, *args, **kwargs)
        _CLOCK.wake(assoc)

    to_user.put = put_and_wake
    dimse = assoc.dimse
    receive_primitive = dimse.receive_primitive

    def receive(primitive) -> None:  # P_DATA
        receive_primitive(primitive)
        if dimse.message is None:  # the message is complete and queued
            _CLOCK.wake(assoc)

    dimse.receive_primitive = receive


class _DulWait:
    """What a woken DUL reactor waits on, and whether it is waiting now."""

    __slots__ = ("queue", "sleeping", "sock", "wake_fd")

    def __init__(self, pending: queue.Queue, sock: socket.socket, wake_fd: int) -> None:
        self.queue, self.sock, self.wake_fd = pending, sock, wake_fd  # not the DUL: it keys a weak mapping
        self.sleeping = False

    def wake(self) -> None:
        """Signal the wake-up descriptor if the reactor is (about to be) in its ``select``."""
        if self.sleeping:
            try:  # noqa: SIM105 - once per queued PDU: cheaper than contextlib.suppress
                os.eventfd_write(self.wake_fd, 1)
            except OSError:  # closed with the DUL: nothing left to wake
                pass


class _DulClock:
    """The ``time`` module as ``pynetdicom.dul`` sees it, but for a woken DUL reactor's idle sleep.

    ``DULServiceProvider.run_reactor`` sleeps between looks at its socket and its queue of PDUs
    to send: a PDU that arrives, or a response the handler queues, waits for the end of that
    sleep. For a DUL registered here, the sleep is a ``select`` on its socket and on a wake-up
    descriptor that :func:`install_dul_wake` signals when a PDU is queued while the reactor
    sleeps, with the same timeout, so it ends as soon as there is something to do. A PDU queued
    while the reactor is awake costs no signal (500 C-FIND responses used to cost 500 system
    calls and as many thread switches): the reactor marks itself sleeping, then looks at its
    queue once more before it waits, so a PDU is either seen there or signalled. Any other thread
    sleeps as before.
    """

    def __init__(self) -> None:
        self._waits: weakref.WeakKeyDictionary[threading.Thread, _DulWait] = weakref.WeakKeyDictionary()

    def __getattr__(self, name: str):
        return getattr(time, name)

    def register(self, dul: threading.Thread, wait: _DulWait) -> None:
        self._waits[dul] = wait

    def sleep(self, seconds: float) -> None:
        wait = self._waits.get(threading.current_thread())
        if wait is None:
            time.sleep(seconds)
            return
        wait.sleeping = True
        try:
            if not wait.queue.empty():  # queued before the flag was seen: no signal came
                return
            watched: list[socket.socket | int] = [wait.sock, wait.wake_fd]
            readable, _, _ = select.select(watched, [], [], seconds)
        except (OSError, ValueError):  # the socket is closed: the reactor finds out on its own
            return
        finally:
            wait.sleeping = False
        if wait.wake_fd in readable:
            try:  # noqa: SIM105 - once per reactor wake-up: cheaper than contextlib.suppress
                os.read(wait.wake_fd, 8)
            except BlockingIOError:
                pass


_DUL_CLOCK = _DulClock()


def install_dul_wake(dul) -> None:  # pynetdicom DULServiceProvider
    """Wake ``dul``'s reactor when its socket has data or a PDU is queued to be sent (:class:`_DulClock`).

    Not for TLS sockets, whose buffered records ``select`` cannot see: those keep polling.
    """
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket) or not hasattr(os, "eventfd"):
        return
    if pynetdicom.dul.time is not _DUL_CLOCK:  # type: ignore[comparison-overlap]  # a module, or our clock
        pynetdicom.dul.time = _DUL_CLOCK  # type: ignore[assignment]
    wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    weakref.finalize(dul, os.close, wake_fd)
    wait = _DulWait(dul.to_provider_queue, sock, wake_fd)
    _DUL_CLOCK.register(dul, wait)
    send_pdu = dul.send_pdu

    def send(primitive) -> None:  # a PDU primitive
        send_pdu(primitive)
        wait.wake()

    dul.send_pdu = send
    dul._run_loop_delay = DUL_WAKEABLE_POLL_S


_PDU_HEADER = struct.Struct(">BBL")  # P-DATA-TF: type 0x04, reserved, length (PS3.8 9.3.5)
_PDV_HEADER = struct.Struct(">LB")  # PDV item: length, presentation context ID


def install_batched_sends(dul) -> None:  # pynetdicom DULServiceProvider
    """Send all the P-DATA PDUs queued to ``dul`` in one system call instead of one each.

    pynetdicom's reactor takes one primitive from its queue per turn and sends it with its own
    system call, each of which also wakes the peer: 500 C-FIND responses cost 500 sends,
    500 state-machine actions and 500 thread switches. Here, in data transfer (Sta6) with no
    event of the reactor pending, the P-DATA primitives at the head of the queue are encoded as
    P-DATA-TF PDUs exactly as pynetdicom would (PS3.8 9.3.5), in order, and sent together (up to
    :data:`SEND_BATCH_BYTES`). Anything else (association, release and abort primitives, other
    states, TLS sockets) takes pynetdicom's path. A failed send is reported to the state machine
    as pynetdicom reports it (Evt17). The batched PDUs are not reported to EVT_PDU_SENT /
    EVT_DATA_SENT handlers (OncoPACS binds none).
    """
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return
    process_primitive = dul._process_recv_primitive

    def process() -> bool:
        return _send_queued_data(dul, sock) or process_primitive()

    dul._process_recv_primitive = process


def _send_queued_data(dul, sock: socket.socket) -> bool:  # pynetdicom DULServiceProvider
    """Send the P-DATA primitives at the head of ``dul``'s queue as one write; False if there were none to take."""
    pending = dul.to_provider_queue
    if dul.state_machine.current_state != "Sta6" or not dul.event_queue.empty():
        return False
    chunks: list[bytes] = []
    size = 0
    while size < SEND_BATCH_BYTES:
        try:
            primitive = pending.queue[0]  # only this thread takes from the queue
        except IndexError:
            break
        if not isinstance(primitive, P_DATA):
            break
        pending.get(False)
        chunks.append(encode_p_data_tf(primitive))
        size += len(chunks[-1])
    if not chunks:
        return False
    try:
        sock.sendall(b"".join(chunks))
    except OSError:  # as pynetdicom's AssociationSocket.send: the transport connection is closed
        dul.event_queue.put("Evt17")
    return True


def encode_p_data_tf(primitive: P_DATA) -> bytes:
    """The P-DATA-TF PDU of a P-DATA primitive (PS3.8 9.3.5): the bytes pynetdicom's ``P_DATA_TF.encode`` gives."""
    items = [_PDV_HEADER.pack(len(data) + 1, context_id) + data
             for context_id, data in primitive.presentation_data_value_list]
    return _PDU_HEADER.pack(0x04, 0x00, sum(map(len, items))) + b"".join(items)
