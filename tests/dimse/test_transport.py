"""The PDU reader installed on association sockets keeps pynetdicom's recv contract."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

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
