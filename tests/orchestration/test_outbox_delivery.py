"""Delivering the outbox for real: dcmtk's storescp (C-STORE) and a loopback STOW-RS server.

Phantom CT slices go into a platform's archive, are queued for a destination and delivered by the
delivery loop; what the peer receives is compared with what the archive holds.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from sqlalchemy import select

from oncopacs.dicomweb.multipart import read_multipart
from oncopacs.index.models import Instance
from oncopacs.orchestration.delivery import DeliveryLoop, Sender, build_store_contexts, read_stow_answer
from oncopacs.orchestration.outbox import DestinationKind, Outbox, OutboxRecord, OutboxState, RetryPolicy
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import RemoteAE, Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, ServerProcess, dcmtk_tool, free_port
from tests.factories import small_ct_series
from tests.orchestration.test_outbox import FakeClock

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

FAST = RetryPolicy(base_s=1.0, cap_s=4.0, max_attempts=3, lease_s=30.0)


# -- peers ------------------------------------------------------------------------------------------


@dataclass
class StoreSCP:
    """dcmtk's storescp on a fixed loopback port, which the test may stop and start again."""

    port: int
    out_dir: Path
    log_path: Path
    accept_all_syntaxes: bool = True
    process: subprocess.Popen | None = None

    def start(self) -> StoreSCP:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        options = ["+xa"] if self.accept_all_syntaxes else []  # without: uncompressed little/big endian only
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process
        self.process = subprocess.Popen(
            [dcmtk_tool("storescp"), "-v", "-aet", "DEST", *options, "+B", "-od", str(self.out_dir), str(self.port)],
            env={**os.environ, "TCP_NODELAY": "1"}, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "storescp did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def received(self) -> list[Dataset]:
        return [dcmread(path) for path in sorted(self.out_dir.iterdir())]


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """A storescp as AE DEST, not yet started."""
    scp = StoreSCP(free_port(), tmp_path / "received", tmp_path / "storescp.log")
    yield scp
    scp.stop()


@dataclass
class StowServer:
    """A loopback STOW-RS endpoint that keeps every part it receives and answers ``status``."""

    url: str = ""
    status: int = 200
    refuse: set[str] = field(default_factory=set)  # SOP Instance UIDs answered in the Failed SOP Sequence
    received: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def stow_server() -> Iterator[StowServer]:
    state = StowServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            state.paths.append(self.path)
            with read_multipart(_Limited(self.rfile, length), self.headers["Content-Type"]) as body:
                parts = [part.read_bytes() for part in body.parts]
            if state.status >= 300:
                self._answer(state.status, {})
                return
            stored, failed = [], []
            for data in parts:
                uid = str(dcmread(io.BytesIO(data)).SOPInstanceUID)
                if uid in state.refuse:
                    failed.append({"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [272]}})
                else:
                    state.received.append(data)
                    stored.append({"00081155": {"vr": "UI", "Value": [uid]}})
            answer = {"00081199": {"vr": "SQ", "Value": stored}}
            if failed:
                answer["00081198"] = {"vr": "SQ", "Value": failed}
            self._answer(202 if failed else 200, answer)

        def _answer(self, status: int, document: dict) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        yield state
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


class _Limited:
    def __init__(self, stream, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self, size: int = -1, /) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.stream.read(size) if size else b""
        self.left -= len(data)
        return data


# -- helpers ----------------------------------------------------------------------------------------


def store_phantom(platform: Platform, n: int, *, prefix: str = "FWD", syntax: str | None = None) -> list[Dataset]:
    datasets = small_ct_series(n, prefix=prefix)
    for dataset in datasets:
        if syntax == RLELossless:
            dataset.compress(RLELossless, generate_instance_uid=False)
        result = platform.archive.ingest_dataset(dataset, source="test")
        assert result.acknowledged, result.reason
    return datasets


def delivery_loop(platform: Platform, outbox: Outbox, remote: RemoteAE | None = None) -> DeliveryLoop:
    sender = Sender(platform.archive, "ONCOPACS", [remote] if remote else [], timeout_s=10.0)
    return DeliveryLoop(outbox, sender, poll_interval_s=0.05, batch_size=50)


def rows(outbox: Outbox):
    return outbox.list_items(limit=1000).items


def assert_same_content(sent: list[Dataset], received: list[Dataset]) -> None:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in received}
    assert sorted(by_uid) == sorted(str(ds.SOPInstanceUID) for ds in sent)
    for dataset in sent:
        got = by_uid[str(dataset.SOPInstanceUID)]
        assert np.array_equal(got.pixel_array, dataset.pixel_array)
        assert got.SOPClassUID == dataset.SOPClassUID and got.StudyInstanceUID == dataset.StudyInstanceUID


@pytest.fixture
def forwarding(sqlite_settings: Settings, storescp: StoreSCP) -> Iterator[tuple[Platform, RemoteAE]]:
    remote = RemoteAE("DEST", "127.0.0.1", storescp.port)
    with open_platform(sqlite_settings.with_overrides(remote_aes=(remote,))) as platform:
        yield platform, remote


# -- C-STORE ----------------------------------------------------------------------------------------


def test_forwarded_instances_arrive_with_their_content_in_one_association(
        forwarding: tuple[Platform, RemoteAE], storescp: StoreSCP) -> None:
    platform, remote = forwarding
    sent = store_phantom(platform, 6)
    storescp.start()
    assert platform.outbox.enqueue([ds.SOPInstanceUID for ds in sent], "DEST", "all-ct") == 6
    loop = delivery_loop(platform, platform.outbox, remote)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while any(r.state is not OutboxState.DELIVERED for r in rows(platform.outbox)):
            assert time.monotonic() < deadline, [r.to_dict() for r in rows(platform.outbox)]
            time.sleep(0.05)
    finally:
        loop.stop()
    assert_same_content(sent, storescp.received())
    assert {(r.attempts, r.rule) for r in rows(platform.outbox)} == {(1, "all-ct")}
    assert storescp.log_path.read_text().count("Association Acknowledged") == 1  # one association for all


def test_compressed_instances_travel_unchanged_or_are_decoded_for_a_peer_that_wants_uncompressed(
        forwarding: tuple[Platform, RemoteAE], storescp: StoreSCP, tmp_path: Path) -> None:
    platform, remote = forwarding
    sent = store_phantom(platform, 2, syntax=RLELossless)
    storescp.start()
    platform.outbox.enqueue([ds.SOPInstanceUID for ds in sent], "DEST")
    assert delivery_loop(platform, platform.outbox, remote).deliver_due() == 2
    received = storescp.received()
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in received} == {RLELossless}
    assert sorted(ds.PixelData for ds in received) == sorted(ds.PixelData for ds in sent)  # the very fragments

    strict = StoreSCP(free_port(), tmp_path / "strict", tmp_path / "strict.log", accept_all_syntaxes=False).start()
    try:
        peer = RemoteAE("STRICT", "127.0.0.1", strict.port)
        outbox = Outbox(platform.index, [peer])
        outbox.enqueue([ds.SOPInstanceUID for ds in sent], "STRICT")
        assert delivery_loop(platform, outbox, peer).deliver_due() == 2
        decoded = strict.received()
    finally:
        strict.stop()
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in decoded} <= {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    assert_same_content(sent, decoded)


def test_the_proposed_contexts_are_the_stored_syntax_and_uncompressed_little_endian(
        forwarding: tuple[Platform, RemoteAE]) -> None:
    platform, _ = forwarding
    store_phantom(platform, 1, prefix="PLAIN")
    store_phantom(platform, 1, prefix="RLE", syntax=RLELossless)
    sender = Sender(platform.archive, "ONCOPACS", [])
    with platform.index.reading() as session:
        wanted = list(session.scalars(select(Instance.sop_instance_uid)))
    files = sender._stored_files(wanted).values()
    contexts = [(str(c.abstract_syntax), [str(s) for s in c.transfer_syntax]) for c in build_store_contexts(files)]
    [sop_class] = {abstract for abstract, _ in contexts}
    assert contexts == [(sop_class, [RLELossless]), (sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


def test_a_restart_mid_queue_delivers_the_rest_and_nothing_twice(
        sqlite_settings: Settings, storescp: StoreSCP) -> None:
    remote = RemoteAE("DEST", "127.0.0.1", storescp.port)
    settings = sqlite_settings.with_overrides(remote_aes=(remote,))
    storescp.start()
    clock = FakeClock()
    with open_platform(settings) as platform:
        sent = store_phantom(platform, 8)
        outbox = Outbox(platform.index, [remote], policy=FAST, clock=clock)
        outbox.enqueue([ds.SOPInstanceUID for ds in sent], "DEST")
        assert delivery_loop(platform, outbox, remote).deliver_due(limit=3) == 3
        abandoned = outbox.claim_due(2)  # the process dies holding these claims, before sending
    assert len(storescp.received()) == 3

    with open_platform(settings) as platform:  # a new process on the same database
        outbox = Outbox(platform.index, [remote], policy=FAST, clock=clock)
        loop = delivery_loop(platform, outbox, remote)
        assert loop.deliver_due() == 3, "the unclaimed rows go at once"
        clock.advance(FAST.lease_s)
        assert loop.deliver_due() == 2, "the dead process's claims lapse and are taken over"
        assert not any(outbox.mark_delivered(item) for item in abandoned), "the old claims cannot mark"
        final = rows(outbox)
    assert [r.state for r in final] == [OutboxState.DELIVERED] * 8
    assert sorted(r.attempts for r in final) == [1] * 6 + [2] * 2
    assert_same_content(sent, storescp.received())


def test_a_destination_that_is_down_is_retried_with_back_off_then_delivered(
        forwarding: tuple[Platform, RemoteAE], storescp: StoreSCP) -> None:
    platform, remote = forwarding
    sent = store_phantom(platform, 3)
    clock = FakeClock()
    outbox = Outbox(platform.index, [remote], policy=RetryPolicy(base_s=1.0, cap_s=60.0, max_attempts=8), clock=clock)
    outbox.enqueue([ds.SOPInstanceUID for ds in sent], "DEST")
    loop = delivery_loop(platform, outbox, remote)
    waits = []
    for attempt in (1, 2, 3):
        assert loop.deliver_due() == 0
        current = rows(outbox)
        assert {r.attempts for r in current} == {attempt} and {r.state for r in current} == {OutboxState.PENDING}
        assert "could not be reached" in current[0].last_error
        waits.append((current[0].next_attempt_at - clock.now).total_seconds())
        assert outbox.claim_due() == []
        clock.advance(waits[-1])
    assert waits == [1.0, 2.0, 4.0]
    [status] = outbox.status()
    assert status.pending == 3 and "could not be reached" in status.last_error
    storescp.start()
    assert loop.deliver_due() == 3
    assert {(r.state, r.attempts) for r in rows(outbox)} == {(OutboxState.DELIVERED, 4)}
    assert_same_content(sent, storescp.received())


def test_dead_after_the_last_try_then_an_admin_retry_delivers(
        forwarding: tuple[Platform, RemoteAE], storescp: StoreSCP) -> None:
    platform, remote = forwarding
    sent = store_phantom(platform, 1)
    clock = FakeClock()
    outbox = Outbox(platform.index, [remote], policy=FAST, clock=clock)
    outbox.enqueue([sent[0].SOPInstanceUID], "DEST")
    loop = delivery_loop(platform, outbox, remote)
    for _ in range(FAST.max_attempts):
        assert loop.deliver_due() == 0
        clock.advance(FAST.cap_s)
    [row] = rows(outbox)
    assert (row.state, row.attempts) == (OutboxState.DEAD, FAST.max_attempts)
    storescp.start()
    clock.advance(3600)
    assert loop.deliver_due() == 0, "dead rows wait for an administrator"
    outbox.requeue(row.id)
    assert loop.deliver_due() == 1
    assert_same_content(sent, storescp.received())


def test_an_instance_missing_from_the_archive_is_dead_at_once(
        forwarding: tuple[Platform, RemoteAE], storescp: StoreSCP) -> None:
    platform, remote = forwarding
    storescp.start()
    platform.outbox.enqueue(["1.2.826.0.1.3680043.10.1.404"], "DEST")
    assert delivery_loop(platform, platform.outbox, remote).deliver_due() == 0
    [row] = rows(platform.outbox)
    assert (row.state, row.last_error) == (OutboxState.DEAD, "not in the archive")
    assert storescp.received() == []


# -- STOW-RS ----------------------------------------------------------------------------------------


def test_stow_rs_delivers_the_stored_bytes(sqlite_settings: Settings, stow_server: StowServer) -> None:
    with open_platform(sqlite_settings) as platform:
        sent = store_phantom(platform, 4)
        platform.outbox.enqueue([ds.SOPInstanceUID for ds in sent], stow_server.url + "/")
        assert delivery_loop(platform, platform.outbox).deliver_due() == 4
        with platform.index.reading() as session:
            stored = [platform.archive.storage.read(path) for path in session.scalars(select(Instance.file_path))]
        assert sorted(stow_server.received) == sorted(stored)  # byte for byte
        assert stow_server.paths == ["/dicom-web/studies"]  # one request for the batch
        assert {r.state for r in rows(platform.outbox)} == {OutboxState.DELIVERED}


def test_stow_rs_refusals_and_server_errors_are_failed_tries(sqlite_settings: Settings,
                                                             stow_server: StowServer) -> None:
    with open_platform(sqlite_settings) as platform:
        sent = store_phantom(platform, 3)
        refused = str(sent[1].SOPInstanceUID)
        stow_server.refuse = {refused}
        platform.outbox.enqueue([ds.SOPInstanceUID for ds in sent], stow_server.url)
        assert delivery_loop(platform, platform.outbox).deliver_due() == 2
        by_uid = {r.sop_instance_uid: r for r in rows(platform.outbox)}
        assert by_uid[refused].state is OutboxState.PENDING
        assert by_uid[refused].last_error == "STOW-RS refused the instance (reason 0x0110)"
        assert len(stow_server.received) == 2

        stow_server.status = 503
        clock = FakeClock()
        clock.now = by_uid[refused].next_attempt_at
        outbox = Outbox(platform.index, policy=FAST, clock=clock)
        assert delivery_loop(platform, outbox).deliver_due() == 0
        assert outbox.get(by_uid[refused].id).last_error == "STOW-RS answered HTTP 503"  # type: ignore[union-attr]


def test_a_stow_answer_without_the_instance_is_not_a_delivery() -> None:
    moment = FakeClock().now
    outbox_rows = [OutboxRecord(id=1, sop_instance_uid="1.2.3", destination="http://127.0.0.1:9",
                                kind=DestinationKind.STOW, rule="", state=OutboxState.DELIVERING, attempts=1,
                                next_attempt_at=moment, last_error="", created_at=moment, delivered_at=None)]
    other = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["9.9"]}}]}}
    [outcome] = read_stow_answer(outbox_rows, 202, json.dumps(other).encode())
    assert not outcome.delivered and "did not confirm" in outcome.error
    [outcome] = read_stow_answer(outbox_rows, 200, b"")
    assert outcome.delivered
    [outcome] = read_stow_answer(outbox_rows, 409, b"{}")
    assert not outcome.delivered and outcome.error == "STOW-RS answered HTTP 409"


# -- oncopacs serve ---------------------------------------------------------------------------------


def test_oncopacs_serve_runs_the_delivery_loop(tmp_path: Path, storescp: StoreSCP) -> None:
    storescp.start()
    remote = RemoteAE("DEST", "127.0.0.1", storescp.port)
    server = ServerProcess(tmp_path / "served", env={"ONCOPACS_REMOTE_AES": f"DEST@127.0.0.1:{storescp.port}"})
    try:
        server.start()
        settings = Settings(data_dir=server.data_dir, dicom_port=0, remote_aes=(remote,),
                            audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
        with open_platform(settings) as platform:  # another process on the served archive, as a rule would be
            sent = store_phantom(platform, 3)
            platform.outbox.enqueue([ds.SOPInstanceUID for ds in sent], "DEST", "serve")
            deadline = time.monotonic() + 30
            while {r.state for r in rows(platform.outbox)} != {OutboxState.DELIVERED}:
                assert time.monotonic() < deadline, server.log_path.read_text()[-2000:]
                time.sleep(0.2)
        assert server.stop() == 0
    finally:
        server.kill()
    assert_same_content(sent, storescp.received())
