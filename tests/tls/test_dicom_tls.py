"""DICOM-TLS (PS3.15 B.1): the listener against dcmtk's clients, C-ECHO to a ``+tls`` peer, C-MOVE to a
``+tls`` destination (a pynetdicom storage SCP listening with TLS)."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from oncopacs.dimse.echo import echo
from oncopacs.dimse.server import start_dimse
from oncopacs.dimse.tls import listener_context
from oncopacs.errors import RemoteNodeError
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import RemoteAE, Settings
from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import TrialCertificates
from tests.conftest import dcmtk_tool
from tests.factories import small_ct_series, write_files
from tests.tls.conftest import DCMTK_ENV, dcmtk_tls, echoscu, server_files


@pytest.fixture
def tls_platform(sqlite_settings: Settings, certs: TrialCertificates) -> Iterator[Platform]:
    settings = sqlite_settings.with_overrides(dicom_tls_port=0, tls_cert=str(certs.server_cert),
                                              tls_key=str(certs.server_key))
    with open_platform(settings) as platform:
        yield platform


class Listener:
    """The archive's DICOM-TLS listener on an OS-assigned loopback port."""

    def __init__(self, platform: Platform, files: TlsFiles, **overrides):
        self.server = start_dimse(platform.settings.with_overrides(**overrides), platform.archive,
                                  ssl_context=listener_context(files))
        self.port = self.server.server_address[1]

    def peer(self) -> RemoteAE:
        return RemoteAE("ONCOPACS", "127.0.0.1", self.port, tls=True)


@pytest.fixture
def listener(tls_platform: Platform, certs: TrialCertificates) -> Iterator[Listener]:
    running = Listener(tls_platform, server_files(certs))
    yield running
    running.server.shutdown()


@pytest.fixture
def mutual_listener(tls_platform: Platform, certs: TrialCertificates) -> Iterator[Listener]:
    """The listener with tls_ca set: a client certificate signed by the trial CA is required."""
    running = Listener(tls_platform, server_files(certs, require_clients=True))
    yield running
    running.server.shutdown()


@pytest.mark.dcmtk
def test_storescu_over_tls_stores_the_same_bytes(listener: Listener, tls_platform: Platform,
                                                 certs: TrialCertificates, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert echoscu(listener.port, *dcmtk_tls(certs)).returncode == 0
    series = small_ct_series(5)
    files = write_files(series, tmp_path / "ct")
    sent = subprocess.run([dcmtk_tool("storescu"), "-v", "-aec", "ONCOPACS", *dcmtk_tls(certs), "127.0.0.1",
                           str(listener.port), *map(str, files)], capture_output=True, text=True, timeout=120,
                          env=DCMTK_ENV)
    assert sent.returncode == 0, sent.stderr
    stored = {str(ds.SOPInstanceUID): ds for ds in tls_platform.archive.read_series(str(series[0].SeriesInstanceUID))}
    assert sorted(stored) == sorted(str(ds.SOPInstanceUID) for ds in series)
    for dataset in series:
        assert stored[str(dataset.SOPInstanceUID)].PixelData == dataset.PixelData

    with caplog.at_level(logging.WARNING, logger="oncopacs.dimse.tls"):
        assert echoscu(listener.port).returncode != 0  # plain DICOM on the TLS port
    assert "the other side does not speak TLS" in caplog.text


@pytest.mark.dcmtk
def test_a_client_certificate_from_the_ca_is_required_when_it_is_set(
        mutual_listener: Listener, certs: TrialCertificates, stranger: TrialCertificates) -> None:
    accepted = echoscu(mutual_listener.port, *dcmtk_tls(certs))
    assert accepted.returncode == 0, accepted.stderr
    assert echoscu(mutual_listener.port, "+tla", "+cf", str(certs.ca)).returncode != 0
    assert echoscu(mutual_listener.port, *dcmtk_tls(certs, client=stranger)).returncode != 0


def test_echo_to_a_tls_peer_verifies_its_certificate(mutual_listener: Listener, certs: TrialCertificates,
                                                     stranger: TrialCertificates) -> None:
    ours = TlsFiles(certs.server_cert, certs.server_key, certs.ca).client_context()  # as OncoPACS's settings make
    result = echo("ECHOSCU", mutual_listener.peer(), ssl_context=ours)
    assert result.success and result.elapsed_ms > 0
    with pytest.raises(RemoteNodeError, match="certificate not trusted"):
        echo("ECHOSCU", mutual_listener.peer())  # the system's CAs do not know the trial CA
    with pytest.raises(RemoteNodeError, match="certificate not trusted"):
        echo("ECHOSCU", mutual_listener.peer(), ssl_context=TlsFiles(ca=stranger.ca).client_context())
    with pytest.raises(RemoteNodeError):  # trusted, but shows no client certificate
        echo("ECHOSCU", mutual_listener.peer(), ssl_context=TlsFiles(ca=certs.ca).client_context(), timeout_s=5)


def test_a_silent_connection_neither_holds_up_others_nor_stays(tls_platform: Platform,
                                                               certs: TrialCertificates) -> None:
    """pynetdicom would do the handshake in its accept loop: a client that connects and says nothing would keep
    every other waiting (here for the 30 s ARTIM time, longer than the echo's 5 s timeout)."""
    slow = Listener(tls_platform, server_files(certs), dicom_artim_seconds=30)
    quick = Listener(tls_platform, server_files(certs), dicom_artim_seconds=1)
    context = TlsFiles(ca=certs.ca).client_context()
    try:
        with socket.create_connection(("127.0.0.1", slow.port)):
            assert echo("ECHOSCU", slow.peer(), ssl_context=context, timeout_s=5).success
        with socket.create_connection(("127.0.0.1", quick.port), timeout=20) as silent:
            assert silent.recv(1) == b""  # closed by the listener after its ARTIM time, not by our timeout
    finally:
        slow.server.shutdown()
        quick.server.shutdown()


def storage_scp(context: ssl.SSLContext) -> tuple[object, list[tuple[str, str]]]:
    """A pynetdicom storage SCP (AE title DEST) listening with TLS; what arrived: (SOP Instance UID, TLS version)."""
    arrived: list[tuple[str, str]] = []

    def on_store(event) -> int:
        sock = event.assoc.dul.socket.socket
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else "plain"
        arrived.append((str(event.dataset.SOPInstanceUID), version or "?"))
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=context,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return server, arrived


def move_series(settings: Settings, platform: Platform, series_uid: str) -> list[int]:
    """C-MOVE the series to DEST through the archive's plain DIMSE listener; the statuses answered."""
    server = start_dimse(settings, platform.archive)
    try:
        scu = AE(ae_title="MOVESCU")
        scu.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="ONCOPACS")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.SeriesInstanceUID = series_uid
        statuses = [int(s.Status) for s, _ in assoc.send_c_move(query, "DEST",
                                                                  StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
        return statuses
    finally:
        server.shutdown()


def test_c_move_to_a_tls_destination_goes_over_tls_with_our_certificate(
        tls_platform: Platform, certs: TrialCertificates, stranger: TrialCertificates) -> None:
    series = small_ct_series(3)
    for dataset in series:
        assert tls_platform.archive.ingest_dataset(dataset, source="test").acknowledged
    uids = sorted(str(ds.SOPInstanceUID) for ds in series)
    # the destination requires a client certificate from the trial CA: OncoPACS shows its own
    destination, arrived = storage_scp(server_files(certs, require_clients=True).server_context())
    settings = tls_platform.settings.with_overrides(
        tls_ca=str(certs.ca), remote_aes=(RemoteAE("DEST", "127.0.0.1", destination.server_address[1], tls=True),))
    try:
        statuses = move_series(settings, tls_platform, str(series[0].SeriesInstanceUID))
    finally:
        destination.shutdown()
    assert statuses[-1] == 0x0000
    assert sorted(uid for uid, _ in arrived) == uids
    assert {version for _, version in arrived} <= {"TLSv1.2", "TLSv1.3"}

    impostor, reached = storage_scp(server_files(stranger).server_context())  # a certificate we do not trust
    settings = settings.with_overrides(remote_aes=(RemoteAE("DEST", "127.0.0.1", impostor.server_address[1],
                                                            tls=True),))
    try:
        statuses = move_series(settings, tls_platform, str(series[0].SeriesInstanceUID))
    finally:
        impostor.shutdown()
    assert statuses[-1] != 0x0000 and reached == []
