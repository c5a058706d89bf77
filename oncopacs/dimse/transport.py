"""Transport tuning applied to every association OncoPACS accepts or opens."""

from __future__ import annotations

import socket

from oncopacs.dimse.responses import install_fast_responses

DUL_POLL_S = 0.0002


def tune_association(event) -> None:  # noqa: ANN001 - pynetdicom Event
    """Tune a new association's transport for latency.

    Nagle's algorithm is turned off (with delayed ACKs it costs ~45 ms a message), and the
    DUL reactor polls every 0.2 ms instead of 1 ms when idle: a synchronous SCU waits that
    long before each instance is even read (~0.5 ms of every ~6 ms C-STORE of a CT slice).
    PDUs are read in large chunks (:func:`install_fast_recv`), and as acceptor, C-STORE and
    C-FIND responses go through :mod:`oncopacs.dimse.responses`.
    """
    event.assoc.dul._run_loop_delay = DUL_POLL_S
    install_fast_recv(event.assoc.dul.socket)
    if event.assoc.is_acceptor:
        install_fast_responses(event.assoc)
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def install_fast_recv(association_socket) -> None:  # noqa: ANN001 - pynetdicom AssociationSocket
    """Read PDUs with ``recv_into`` a buffer of the PDU's size.

    pynetdicom's ``AssociationSocket.recv`` reads 4 KiB per system call and grows a bytearray
    (128 calls for each 512 KiB CT slice). The contract is the same: return the bytes asked
    for, or fewer if the peer closed the connection.
    """
    if association_socket is None or getattr(association_socket, "socket", None) is None:
        return

    def recv(nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = association_socket.socket.recv_into(view[received:], nr_bytes - received)
            if count == 0:
                del view
                return buffer[:received]
            received += count
        return buffer

    association_socket.recv = recv
