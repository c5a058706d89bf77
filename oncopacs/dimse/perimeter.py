"""The DIMSE listener's perimeter: how long a connection may take to ask, and how many slots a host may hold.

pynetdicom counts a connection against ``maximum_associations`` from the moment it is accepted
until its Association thread ends. That thread waits the whole ACSE timeout for the
A-ASSOCIATE-RQ even after the peer has gone, and for ever when the peer stops half way through
a PDU (an accepted socket has no timeout): sixteen connections opened and closed at once kept
every modality out for half a minute. Here:

* a connection whose peer closes, or whose first PDU is not an A-ASSOCIATE-RQ, ends at once, and
  one that has not sent its A-ASSOCIATE-RQ within the ARTIM time is closed
  (:func:`install_negotiation_deadline`);
* a read or write that makes no progress for the idle time fails (socket timeouts), and an
  established association with no PDU for that long is aborted (pynetdicom's network timeout);
* slots go to associations, not connections: the global and per-host limits are applied when
  the A-ASSOCIATE-RQ arrives, over the associations admitted so far (:class:`Perimeter`), and a
  host may keep only so many connections negotiating at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.pdu_primitives import A_ASSOCIATE

from oncopacs.settings import Settings

log = logging.getLogger(__name__)

#: ``listener(calling AE, peer address, called AE, why)``: an association refused for a limit.
RefusalListener = Callable[[str, str, str, str], None]

#: A-ASSOCIATE-RJ for a full server or host: rejected-transient, service-provider (presentation), local limit exceeded.
REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 0x02, 0x03, 0x02
#: Connections from one host that may be negotiating (connected, no A-ASSOCIATE-RQ yet) at once, per admitted slot.
NEGOTIATING_PER_HOST_SLOT = 4
#: A host's refusals are logged at most once per this many seconds (a flood would otherwise flood the log).
REFUSAL_LOG_INTERVAL_S = 10.0
#: pynetdicom's own limit counts connections still negotiating; :class:`Perimeter` applies the limit instead.
PYNETDICOM_MAXIMUM_ASSOCIATIONS = 1 << 30
#: Connections the kernel queues for the accept loop (capped by net.core.somaxconn). socketserver's 5
#: made every burst of more than six connections, a flood's or a modality's, wait a second (SYN resent).
LISTEN_BACKLOG = socket.SOMAXCONN

TCP_CLOSE_WAIT = 8  # Linux's tcp_states.h: the peer has sent its FIN

_NEGOTIATION = "_oncopacs_negotiation"
_TRANSPORT_CLOSED = object()  # put on the DUL's to-user queue when the peer has gone before asking


@dataclass(frozen=True, slots=True)
class PerimeterLimits:
    """The listener's limits; 0 in a setting means none (seconds become None, pynetdicom's "no timeout")."""

    max_associations: int
    max_per_host: int
    artim_s: float | None
    idle_s: float | None

    @classmethod
    def from_settings(cls, settings: Settings) -> PerimeterLimits:
        return cls(
            max_associations=settings.max_associations,
            max_per_host=settings.dicom_max_per_host,
            artim_s=settings.dicom_artim_seconds or None,
            idle_s=settings.dicom_idle_seconds or None,
        )

    @property
    def negotiating_per_host(self) -> int:
        """Connections one host may hold before sending their A-ASSOCIATE-RQ (0: no limit)."""
        return NEGOTIATING_PER_HOST_SLOT * self.max_per_host


class Perimeter:
    """Applies :class:`PerimeterLimits` to every association a listener accepts (bound to pynetdicom events)."""

    def __init__(self, limits: PerimeterLimits, on_refused: RefusalListener | None = None) -> None:
        self.limits = limits
        self.on_refused = on_refused  # told of each association refused for a limit (the audit trail)
        self._admitted: weakref.WeakSet = weakref.WeakSet()  # Association threads holding a slot
        self._negotiating: weakref.WeakSet = weakref.WeakSet()  # connected, no A-ASSOCIATE-RQ yet
        self._lock = threading.Lock()
        self._last_logged: dict[tuple[str, str], float] = {}

    def configure(self, ae) -> None:  # a pynetdicom AE
        """Set ``ae``'s ACSE (ARTIM) and network (idle) timeouts, and leave the slot count to :meth:`admit`."""
        ae.acse_timeout = self.limits.artim_s
        ae.network_timeout = self.limits.idle_s
        ae.maximum_associations = PYNETDICOM_MAXIMUM_ASSOCIATIONS

    # -- EVT_CONN_OPEN ----------------------------------------------------------------------

    def on_connection_open(self, event) -> None:
        """Give a new connection its socket timeouts and negotiation deadline; close it at once if its
        host already has too many connections negotiating."""
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        sock = getattr(assoc.dul.socket, "socket", None)
        if sock is not None and self.limits.idle_s is not None:
            set_socket_timeouts(sock, self.limits.idle_s)
        install_negotiation_deadline(assoc, self._negotiation_ended)
        host, cap = _host_of(assoc), self.limits.negotiating_per_host
        with self._lock:
            over = bool(cap) and self._still_negotiating(host, cap) >= cap
            if not over:
                self._negotiating.add(assoc)
        if over:
            self._log_refusal(host, "connection", "connection from %s closed: %d connections from it are still "
                              "negotiating", host, cap)
            close_transport(assoc)

    # -- EVT_REQUESTED ----------------------------------------------------------------------

    def admit(self, event) -> bool:
        """Take a slot for the requesting association, or refuse it with A-ASSOCIATE-RJ (transient,
        local limit exceeded) when the server or its host has none left. Call from EVT_REQUESTED."""
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted:  # refused already (the calling-AE allow-list)
            return False
        host = _host_of(assoc)
        with self._lock:
            holding = [other for other in self._acceptors(assoc) if other in self._admitted]
            from_host = sum(1 for other in holding if _host_of(other) == host)
            full = len(holding) >= self.limits.max_associations
            host_full = bool(self.limits.max_per_host) and from_host >= self.limits.max_per_host
            if not (full or host_full):
                self._admitted.add(assoc)
                return True
        request = assoc.requestor.primitive
        calling_ae = str(request.calling_ae_title).strip()
        if host_full:
            why = f"association limit per host reached: {from_host} associations from this host " \
                  f"(ONCOPACS_DICOM_MAX_PER_HOST {self.limits.max_per_host})"
            self._log_refusal(host, "host", "association from %s at %s refused: %d associations from this host "
                              "(limit %d)", calling_ae, host, from_host, self.limits.max_per_host)
        else:
            why = f"association limit reached: all {self.limits.max_associations} associations in use " \
                  f"(ONCOPACS_MAX_ASSOCIATIONS)"
            self._log_refusal(host, "server", "association from %s at %s refused: all %d associations in use",
                              calling_ae, host, self.limits.max_associations)
        assoc.acse.send_reject(REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
        assoc.kill()  # returns once the A-ASSOCIATE-RJ is sent and the connection closed
        if self.on_refused is not None:  # after the answer: auditing never delays the refusal
            self.on_refused(calling_ae, host, str(request.called_ae_title).strip(), why)
        return False

    # -- EVT_CONN_CLOSE ---------------------------------------------------------------------

    def on_connection_close(self, event) -> None:
        """Give the association's slot back, and end the wait for an A-ASSOCIATE-RQ that can no longer
        come (see :func:`install_negotiation_deadline`)."""
        with self._lock:
            self._admitted.discard(event.assoc)
        negotiation = getattr(event.assoc, _NEGOTIATION, None)
        if negotiation is not None:
            negotiation.transport_closed(event.assoc.dul)

    # -- counting ---------------------------------------------------------------------------

    @staticmethod
    def _acceptors(assoc) -> list:
        return [other for other in assoc.ae.active_associations if other.is_acceptor and other is not assoc]

    def _still_negotiating(self, host: str, cap: int) -> int:
        """Connections from ``host`` waiting for their A-ASSOCIATE-RQ; at the cap, those whose peer has
        already closed (a flood the listener has not caught up with) are not counted."""
        waiting = [other for other in self._negotiating if _host_of(other) == host]
        if len(waiting) >= cap:
            waiting = [other for other in waiting if not peer_has_closed(other)]
        return len(waiting)

    def _negotiation_ended(self, assoc) -> None:
        with self._lock:
            self._negotiating.discard(assoc)

    def _log_refusal(self, host: str, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get((host, kind))
            if last is not None and now - last < REFUSAL_LOG_INTERVAL_S:
                return
            if len(self._last_logged) > 4096:  # many hosts: forget the old ones
                self._last_logged.clear()
            self._last_logged[(host, kind)] = now
        log.warning(message + " (further refusals of this host are logged at most every %d s)",
                    *args, REFUSAL_LOG_INTERVAL_S)


class _Negotiation:
    """Whether an acceptor is still waiting for its A-ASSOCIATE-RQ; ``on_end(assoc)`` is called once when it is not."""

    __slots__ = ("assoc", "awaiting", "lock", "on_end")

    def __init__(self, assoc, on_end: Callable[[Any], None] | None) -> None:
        self.lock = threading.Lock()
        self.awaiting = True
        self.assoc = weakref.ref(assoc)
        self.on_end = on_end

    def transport_closed(self, dul) -> None:  # a pynetdicom DULServiceProvider
        with self.lock:
            if self.awaiting:
                dul.to_user_queue.put(_TRANSPORT_CLOSED)
            on_end, self.on_end = self.on_end, None
        self._call(on_end)

    def done(self) -> None:
        with self.lock:
            self.awaiting = False
            on_end, self.on_end = self.on_end, None
        self._call(on_end)

    def _call(self, on_end: Callable[[Any], None] | None) -> None:
        assoc = self.assoc()
        if on_end is not None and assoc is not None:
            on_end(assoc)


def install_negotiation_deadline(assoc, on_end: Callable[[Any], None] | None = None) -> None:  # an acceptor
    """End ``assoc`` as soon as its A-ASSOCIATE-RQ can no longer come, and at its ACSE timeout at the latest.

    The acceptor's first ``dul.receive_pdu`` waits up to the ACSE timeout (the ARTIM time) for the
    request. Here that wait also ends when the transport closes (the peer went away, or the DUL
    closed it after an invalid PDU: EVT_CONN_CLOSE puts a marker on the queue), and whenever it
    ends without a request the socket is shut down, so that a DUL reading half a PDU from a
    silent peer wakes up, and pynetdicom ends the association at once. ``on_end(assoc)`` is called
    once when the wait is over (a request came, the transport closed, or the time ran out).
    """
    dul = assoc.dul
    receive = dul.receive_pdu
    negotiation = _Negotiation(assoc, on_end)
    setattr(assoc, _NEGOTIATION, negotiation)

    def first_receive(wait: bool = False, timeout: float | None = None):  # pynetdicom's signature
        del dul.receive_pdu  # later calls go to pynetdicom's own method
        primitive = receive(wait=wait, timeout=timeout)
        negotiation.done()
        if isinstance(primitive, A_ASSOCIATE):
            return primitive
        close_transport(assoc)
        return None  # pynetdicom: "timed out waiting for A-ASSOCIATE request", the association ends

    dul.receive_pdu = first_receive


def tune_accept_loop(server) -> None:  # a pynetdicom AssociationServer, listening
    """Keep ``server``'s accept loop fast under a burst of connections.

    The kernel may queue :data:`LISTEN_BACKLOG` connections (listen() again resizes the queue);
    a connection whose peer has already closed it is dropped as it is accepted, before it costs
    an Association and two threads (~2.5 ms of CPU: a flood of them queued every real request
    behind it); and pynetdicom's ``service_actions`` no longer runs a full ``gc.collect()`` every
    60 connections: in a process holding the whole platform that took ~0.3 s, during which no
    connection was accepted. Python's own collector still runs as usual.
    """
    server.socket.listen(LISTEN_BACKLOG)
    server.verify_request = _peer_still_there
    server.service_actions = _no_service_actions


def _peer_still_there(request, client_address) -> bool:  # socketserver's verify_request
    return not _closed_by_peer(request)


def _no_service_actions() -> None:
    return None


def close_transport(assoc) -> None:  # a pynetdicom Association
    """Shut the connection down both ways: the DUL's reads end (end of file) and it closes in turn.

    ``socket.socket.shutdown`` even for a TLS socket, whose own would drop its TLS state first.
    """
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def peer_has_closed(assoc) -> bool:  # a pynetdicom Association
    """Whether the peer has closed its end of ``assoc``'s connection (see :func:`_closed_by_peer`)."""
    sock = getattr(assoc.dul.socket, "socket", None)
    return sock is not None and _closed_by_peer(sock)


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer's FIN has arrived (TCP CLOSE-WAIT), unread data or not.

    Linux's TCP_INFO; elsewhere, or on any error, False (the connection is taken as open).
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return False
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0] == TCP_CLOSE_WAIT
    except (OSError, IndexError):
        return False


def set_socket_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make a blocking read or write that moves no byte for ``seconds`` fail (SO_RCVTIMEO, SO_SNDTIMEO).

    Kernel timeouts, not ``settimeout``: Python would poll before every read and write.
    A timed-out call raises ``BlockingIOError``, which pynetdicom treats as a closed transport.
    """
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _host_of(assoc) -> str:
    return str(assoc.requestor.address)
