"""The transport tuning: the PDU reader keeps pynetdicom's recv contract, queued P-DATA go out in one
write as pynetdicom encodes them, and the reactors are woken when there is something to do."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import tracemalloc
from types import SimpleNamespace

import pytest
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_RELEASE, P_DATA

from oncopacs.dimse import transport
from oncopacs.dimse.transport import (
    encode_p_data_tf,
    install_fast_recv,
    install_reactor_wake,
)


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


def _p_data(*items: tuple[int, bytes]) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, data] for context_id, data in items]
    return primitive


@pytest.mark.parametrize("items", [
    [(1, b"\x03" + b"c" * 90)],  # a command, last fragment
    [(1, b"\x03" + b"c" * 90), (1, b"\x02" + b"d" * 301)],  # command and dataset in one PDU
    [(7, b"\x00" + bytes(range(256)) * 512)],  # a 128 KiB middle dataset fragment
])
def test_p_data_tf_is_encoded_as_pynetdicom_encodes_it(items):
    primitive = _p_data(*items)
    assert encode_p_data_tf(primitive) == P_DATA_TF(primitive).encode()


def _fake_dul(*primitives, state: str = "Sta6") -> SimpleNamespace:
    pending = queue.Queue()
    for primitive in primitives:
        pending.put(primitive)
    return SimpleNamespace(to_provider_queue=pending, event_queue=queue.Queue(),
                           state_machine=SimpleNamespace(current_state=state))


def test_queued_p_data_go_out_in_one_write_and_the_rest_is_left_to_pynetdicom():
    ours, peer = socket.socketpair()
    writes: list[int] = []
    counted = SimpleNamespace(sendall=lambda data: (writes.append(len(data)), ours.sendall(data)))
    responses = [_p_data((1, b"\x03" + bytes([n]) * 100), (1, b"\x02" + bytes([n]) * 60)) for n in range(5)]
    release = A_RELEASE()
    dul = _fake_dul(*responses, release)
    assert transport._send_queued_data(dul, counted)
    expected = b"".join(P_DATA_TF(p).encode() for p in responses)
    assert writes == [len(expected)]  # one system call for five PDUs
    peer.settimeout(5)
    received = b""
    while len(received) < len(expected):
        received += peer.recv(65536)
    assert received == expected
    assert dul.to_provider_queue.queue[0] is release  # pynetdicom's own path takes it
    assert not transport._send_queued_data(dul, counted)
    ours.close(), peer.close()


def test_p_data_wait_for_pynetdicom_outside_data_transfer_or_behind_a_pending_event():
    ours, peer = socket.socketpair()
    for dul in (_fake_dul(_p_data((1, b"\x03x")), state="Sta7"), _fake_dul(_p_data((1, b"\x03x")))):
        if dul.state_machine.current_state == "Sta6":
            dul.event_queue.put("Evt10")
        assert not transport._send_queued_data(dul, ours)
        assert dul.to_provider_queue.qsize() == 1
    ours.close(), peer.close()


def test_a_failed_write_is_reported_to_the_state_machine_as_a_closed_connection():
    ours, peer = socket.socketpair()
    peer.close(), ours.close()
    dul = _fake_dul(_p_data((1, b"\x03x")))
    assert transport._send_queued_data(dul, ours)
    assert dul.event_queue.get_nowait() == "Evt17"


def test_the_dul_is_signalled_only_while_it_sleeps_and_sees_what_was_queued_before(monkeypatch):
    ours, peer = socket.socketpair()
    pending = queue.Queue()
    wake_fd = os.eventfd(0, os.EFD_NONBLOCK)
    wait = transport._DulWait(pending, ours, wake_fd)
    clock = transport._DulClock()
    clock.register(threading.current_thread(), wait)
    wait.wake()  # awake: no signal
    with pytest.raises(BlockingIOError):
        os.read(wake_fd, 8)
    pending.put("queued while the reactor was deciding to sleep")
    started = time.monotonic()
    clock.sleep(5.0)  # returns at once: the queue is looked at after the flag is set
    assert time.monotonic() - started < 1.0 and not wait.sleeping
    pending.get()
    waker = threading.Timer(0.05, wait.wake)
    waker.start()
    started = time.monotonic()
    clock.sleep(5.0)  # asleep: the signal ends the select
    assert time.monotonic() - started < 2.0
    waker.join()
    os.close(wake_fd), ours.close(), peer.close()


class _Association(threading.Thread):
    """Just what install_reactor_wake touches of a pynetdicom Association."""

    def __init__(self) -> None:
        super().__init__()
        self.dul = SimpleNamespace(to_user_queue=queue.Queue())
        self.dimse = SimpleNamespace(receive_primitive=lambda primitive: None, message=None)


def test_a_release_from_the_peer_wakes_the_association_reactor():
    assoc = _Association()
    install_reactor_wake(assoc)
    event = transport._CLOCK._event_of(assoc)
    assert not event.is_set()
    assoc.dul.to_user_queue.put(A_RELEASE())
    assert event.is_set()
    assert isinstance(assoc.dul.to_user_queue.get_nowait(), A_RELEASE)
