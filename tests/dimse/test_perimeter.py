"""The listener's perimeter: connections that never associate cost no slot and end with their
transport, the ARTIM and idle timeouts end the silent ones, and one host cannot take every slot.

Everything runs against a real listener (``start_dimse``) on loopback; the hostile peers are raw
sockets. No assertion is on a duration: a wait that must end is bounded well below the timeout
that would otherwise end it, so the test fails if the slot is freed by the wrong mechanism.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import time

import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditFilter, AuditTrail
from tests.dimse.raw_peer import (
    A_ABORT_TYPE,
    A_ASSOCIATE_AC_TYPE,
    A_ASSOCIATE_RJ_TYPE,
    P_DATA_TF_TYPE,
    RawPeer,
    associate_rq_bytes,
    c_echo_rq,
    echo,
)

VERIFICATION = [(Verification, [ImplicitVRLittleEndian])]
LONG_S = 60  # a timeout the test must never reach


def _connect(address, *, bind: str | None = None, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection(address, timeout=timeout_s, source_address=(bind, 0) if bind else None)


def _half_request() -> bytes:
    return associate_rq_bytes(VERIFICATION)[:40]  # the PDU header announces more than this


def _flood(address, rng: random.Random) -> None:
    """200 connect-and-close, 50 random-byte connections, huge PDU lengths and half A-ASSOCIATE-RQs."""
    for _ in range(200):
        _connect(address).close()
    for _ in range(50):
        with _connect(address) as sock:
            sock.sendall(rng.randbytes(rng.randint(1, 4000)))
    for pdu_type in (0x01, 0x04, 0x07, 0x09, 0xFF):
        with _connect(address) as sock:
            sock.sendall(struct.pack(">BBL", pdu_type, 0, 0xFFFFFFF0))
    for _ in range(5):
        with _connect(address) as sock:
            sock.sendall(_half_request())


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def _refusals(listener) -> list:
    """The ASSOCIATION_REFUSED records of ``listener``'s archive (written just after the A-ASSOCIATE-RJ)."""
    trail = AuditTrail(listener.archive.index)
    found: list = []

    def written() -> bool:
        found[:] = trail.iter_entries(AuditFilter(action=AuditAction.ASSOCIATION_REFUSED))
        return bool(found)

    _wait_for(written, 5.0)
    return found


def _read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (socket.timeout if it never does)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_flood_of_connections_that_never_associate_holds_no_slot(start_listener):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=LONG_S)
    _flood(listener.address, random.Random(18))
    status, _ = echo(listener.address)  # while the flood may still be draining
    assert status == 0x0000
    # Freed as each peer closed: with ARTIM and idle at 60 s, nothing else could have freed them by now.
    assert listener.wait_until_idle(10.0)
    assert echo(listener.address)[0] == 0x0000


def test_a_connection_taken_in_is_freed_the_moment_its_peer_closes(start_listener):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=LONG_S)
    rng = random.Random(3)
    held = [_connect(listener.address) for _ in range(24)]
    try:
        assert _wait_for(lambda: listener.active() == 24)  # each has its association and DUL threads
        for index, sock in enumerate(held):
            if index % 3 == 1:
                sock.sendall(rng.randbytes(rng.randint(1, 3000)))
            elif index % 3 == 2:
                sock.sendall(_half_request())
    finally:
        for sock in held:
            sock.close()
    assert listener.wait_until_idle(10.0)  # ARTIM and idle are 60 s: only the closes can have freed them
    assert echo(listener.address)[0] == 0x0000


def test_the_listener_survives_the_flood_with_the_default_timeouts(start_listener):
    listener = start_listener()
    _flood(listener.address, random.Random(7))
    assert listener.wait_until_idle(5.0)  # the defaults are 10 s (ARTIM) and 60 s (idle)
    assert echo(listener.address)[0] == 0x0000


@pytest.mark.parametrize("opening", [b"", b"\x01\x00", "half request"], ids=["silent", "two bytes", "half RQ"])
def test_a_connection_that_does_not_finish_its_request_is_closed_after_artim(start_listener, opening):
    listener = start_listener(dicom_artim_seconds=1, dicom_idle_seconds=LONG_S)
    with _connect(listener.address, timeout_s=8.0) as sock:  # fails with socket.timeout if never closed
        sock.sendall(_half_request() if opening == "half request" else opening)
        _read_until_closed(sock)
    assert listener.wait_until_idle(5.0)


def test_a_pdu_longer_than_the_limit_is_aborted_at_once(start_listener):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=LONG_S)
    with _connect(listener.address, timeout_s=8.0) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 64 * 1024 * 1024))  # an A-ASSOCIATE-RQ of 64 MiB, announced
        reply = _read_until_closed(sock)
    assert reply[:1] == bytes([A_ABORT_TYPE])
    with RawPeer(listener.address, timeout_s=8.0) as peer:
        assert peer.associate(VERIFICATION).pdu_type == A_ASSOCIATE_AC_TYPE
        peer.send(struct.pack(">BBL", P_DATA_TF_TYPE, 0, 0xFFFFFFF0))
        ended = peer.read_pdu()
    assert ended is not None and ended.pdu_type == A_ABORT_TYPE
    assert listener.wait_until_idle(5.0)


def test_an_idle_association_is_aborted_after_the_idle_timeout(start_listener):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=1)
    with RawPeer(listener.address, timeout_s=8.0) as peer:
        assert peer.associate(VERIFICATION).pdu_type == A_ASSOCIATE_AC_TYPE
        reply = peer.request(1, c_echo_rq())
        assert reply.status == 0x0000
        ended = peer.read_pdu()  # nothing more is sent: the server ends it
    assert ended is not None and ended.pdu_type == A_ABORT_TYPE
    assert listener.wait_until_idle(5.0)


def test_an_association_stalled_in_the_middle_of_a_pdu_is_aborted_after_the_idle_timeout(start_listener):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=1)
    with RawPeer(listener.address, timeout_s=8.0) as peer:
        assert peer.associate(VERIFICATION).pdu_type == A_ASSOCIATE_AC_TYPE
        peer.send(struct.pack(">BBL", P_DATA_TF_TYPE, 0, 1000) + b"\x00" * 10)  # 10 of 1000 bytes, then nothing
        ended = peer.read_pdu()
    assert ended is not None and ended.pdu_type == A_ABORT_TYPE
    assert listener.wait_until_idle(5.0)


def test_one_host_at_its_limit_does_not_block_another(start_listener, caplog):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=LONG_S)
    per_host = listener.settings.dicom_max_per_host
    holders = [RawPeer(listener.address) for _ in range(per_host)]
    try:
        for peer in holders:  # idle established associations from 127.0.0.1
            assert peer.associate(VERIFICATION).pdu_type == A_ASSOCIATE_AC_TYPE
        with caplog.at_level(logging.WARNING, logger="oncopacs.dimse.perimeter"), RawPeer(listener.address) as extra:
            refused = extra.associate(VERIFICATION, calling_ae="GREEDY")
        assert refused is not None and refused.pdu_type == A_ASSOCIATE_RJ_TYPE
        assert refused.body[1:4] == bytes([0x02, 0x03, 0x02])  # transient, service-provider (presentation), local limit
        assert f"association from GREEDY at 127.0.0.1 refused: {per_host} associations from this host" in caplog.text
        (alert,) = _refusals(listener)
        assert (alert.actor, alert.actor_kind, alert.source) == ("GREEDY", "ae", "127.0.0.1")
        assert alert.outcome == Outcome.SERIOUS_FAILURE and "association limit per host reached" in alert.detail
        assert f"ONCOPACS_DICOM_MAX_PER_HOST {per_host}" in alert.detail
        status, _ = echo(listener.address, bind="127.0.0.2")
        assert status == 0x0000
        # pynetdicom as the other host's SCU too
        ae = AE(ae_title="OTHERHOST")
        ae.add_requested_context(Verification)
        assoc = ae.associate(*listener.address, ae_title="ONCOPACS", bind_address=("127.0.0.2", 0))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        for peer in holders:
            peer.close()


def test_connections_still_negotiating_take_no_slot_and_are_capped_per_host(start_listener, caplog):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=LONG_S, max_associations=4,
                              dicom_max_per_host=2)
    silent = [_connect(listener.address) for _ in range(7)]
    try:
        # 8 connections from 127.0.0.1 negotiate (the cap: 4 per slot a host may hold), more than the
        # server's 4 slots: neither host is refused an association.
        assert echo(listener.address)[0] == 0x0000
        assert echo(listener.address, bind="127.0.0.2")[0] == 0x0000
        assert _wait_for(lambda: listener.active() == 7)  # the echoes' associations have ended
        silent.append(_connect(listener.address))
        assert _wait_for(lambda: listener.active() == 8)  # the server has taken all 8 in (connections race)
        with caplog.at_level(logging.WARNING, logger="oncopacs.dimse.perimeter"), \
                _connect(listener.address, timeout_s=8.0) as over:
            assert _read_until_closed(over) == b""  # the ninth is closed at once, unanswered
        assert "8 connections from it are still negotiating" in caplog.text
    finally:
        for sock in silent:
            sock.close()
    assert listener.wait_until_idle(10.0)


def test_the_server_limit_applies_over_all_hosts(start_listener):
    listener = start_listener(dicom_artim_seconds=LONG_S, dicom_idle_seconds=LONG_S, max_associations=4,
                              dicom_max_per_host=2)
    holders = [RawPeer(listener.address, bind=host) for host in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2")]
    try:
        for peer in holders:
            assert peer.associate(VERIFICATION).pdu_type == A_ASSOCIATE_AC_TYPE
        with RawPeer(listener.address, bind="127.0.0.3") as late:
            refused = late.associate(VERIFICATION, calling_ae="LATE")
        assert refused is not None and refused.pdu_type == A_ASSOCIATE_RJ_TYPE
        assert refused.body[1:4] == bytes([0x02, 0x03, 0x02])
        (alert,) = _refusals(listener)
        assert (alert.actor, alert.source, alert.outcome) == ("LATE", "127.0.0.3", Outcome.SERIOUS_FAILURE)
        assert "all 4 associations in use (ONCOPACS_MAX_ASSOCIATIONS)" in alert.detail
        with holders.pop() as leaving:  # a slot is given back when the association has ended
            leaving.release()
            assert leaving.read_pdu() is None  # the server closed the connection
        assert echo(listener.address, bind="127.0.0.3")[0] == 0x0000
    finally:
        for peer in holders:
            peer.close()
