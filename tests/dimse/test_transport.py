"""The PDU reader installed on association sockets keeps pynetdicom's recv contract."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from types import SimpleNamespace

from oncopacs.dimse import transport
from oncopacs.dimse.transport import install_fast_recv


def test_reads_exactly_what_is_asked_across_segments_and_stops_at_close():
    ours, peer = socket.socketpair()
    association_socket = SimpleNamespace(socket=ours)
    install_fast_recv(association_socket)
    payload = bytes(range(256)) * 1024  # 256 KiB, sent in uneven pieces

    def send():
        for start in range(0, len(payload), 70_001):
            peer.sendall(payload[start : start + 70_001])
        peer.sendall(b"tail")
        peer.close()

    sender = threading.Thread(target=send)
    sender.start()
    assert association_socket.recv(6) == payload[:6]
    assert association_socket.recv(len(payload) - 6) == payload[6:]
    assert association_socket.recv(100) == b"tail"  # the peer closed: what there was
    sender.join(10)
    ours.close()


def test_a_claimed_length_beyond_the_limit_is_read_as_it_arrives(monkeypatch):
    """A peer announcing a huge PDU gets no buffer of that size: the reader grows with the bytes."""
    monkeypatch.setattr(transport, "RECV_PREALLOCATE_LIMIT", 1024)
    ours, peer = socket.socketpair()
    association_socket = SimpleNamespace(socket=ours)
    install_fast_recv(association_socket)
    peer.sendall(b"x" * 3000)
    peer.close()
    tracemalloc.start()
    try:
        data = association_socket.recv(64 * 1024**2)  # 64 MiB announced, 3000 bytes sent, then closed
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == b"x" * 3000 and isinstance(data, bytearray)
    assert peak < 1024**2
    ours.close()
