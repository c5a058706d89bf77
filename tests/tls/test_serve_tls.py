"""``oncopacs serve`` with TLS on, checked with real clients: curl over HTTPS, dcmtk's echoscu over DICOM-TLS."""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

import pytest

from oncopacs.tls.certificates import TrialCertificates
from tests.tls.conftest import TlsServerProcess, curl, dcmtk_tls, echoscu, handshake

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def tls_server(tmp_path: Path, certs: TrialCertificates):
    server = TlsServerProcess(tmp_path / "served", certs)
    yield server
    server.kill()


@pytest.fixture
def mutual_tls_server(tmp_path: Path, certs: TrialCertificates):
    """TLS with client certificates required, and no plain DIMSE listener (ONCOPACS_DICOM_PORT=0)."""
    server = TlsServerProcess(tmp_path / "served", certs, {"ONCOPACS_DICOM_PORT": "0"}, require_clients=True)
    yield server
    server.kill()


def test_https_only_and_dicom_tls_beside_plain_dimse(tls_server: TlsServerProcess,
                                                    certs: TrialCertificates) -> None:
    server = tls_server.start()
    https = f"https://127.0.0.1:{server.http_port}/health"
    answer = curl("--cacert", str(certs.ca), https)
    assert answer.returncode == 0 and answer.stdout.endswith("\n200") and '"status":"ok"' in answer.stdout
    assert curl("--cacert", str(certs.ca), f"https://localhost:{server.http_port}/health").returncode == 0
    assert curl(https).returncode == 60  # curl does not know the trial CA: the certificate is not trusted
    plain = curl(f"http://127.0.0.1:{server.http_port}/health")  # plain HTTP on the HTTPS port
    assert plain.stdout.endswith("\n400") and "HTTPS only" in plain.stdout

    secured = echoscu(server.dicom_tls_port, *dcmtk_tls(certs))
    assert secured.returncode == 0, secured.stderr
    assert echoscu(server.dicom_port).returncode == 0  # the plain listener is still there
    assert echoscu(server.dicom_tls_port).returncode != 0  # plain DICOM on the TLS port is refused

    assert server.stop() == 0
    log = server.log_path.read_text()
    assert f"HTTP on https://127.0.0.1:{server.http_port}" in log
    assert f"DICOM-TLS ONCOPACS on port {server.dicom_tls_port}" in log
    assert "stopped cleanly" in log and "Traceback" not in log


def test_client_certificates_required_when_the_ca_is_set(mutual_tls_server: TlsServerProcess,
                                                        certs: TrialCertificates,
                                                        stranger: TrialCertificates) -> None:
    server = mutual_tls_server.start()
    https = f"https://127.0.0.1:{server.http_port}/health"
    with_certificate = curl("--cacert", str(certs.ca), "--cert", str(certs.client_cert), "--key",
                            str(certs.client_key), https)
    assert with_certificate.returncode == 0 and with_certificate.stdout.endswith("\n200")
    assert curl("--cacert", str(certs.ca), https).returncode != 0
    assert curl("--cacert", str(certs.ca), "--cert", str(stranger.client_cert), "--key", str(stranger.client_key),
                https).returncode != 0

    assert echoscu(server.dicom_tls_port, *dcmtk_tls(certs)).returncode == 0
    assert echoscu(server.dicom_tls_port, "+tla", "+cf", str(certs.ca)).returncode != 0  # no client certificate
    assert echoscu(server.dicom_tls_port, *dcmtk_tls(certs, client=stranger)).returncode != 0
    assert echoscu(server.dicom_port).returncode != 0  # ONCOPACS_DICOM_PORT=0: no plain listener
    assert server.stop() == 0
    log = server.log_path.read_text()
    assert "no client certificate" in log and "Traceback" not in log


def test_silent_and_stalled_clients_do_not_hold_up_others(tls_server: TlsServerProcess,
                                                          certs: TrialCertificates) -> None:
    """Clients that connect and say nothing, or stop half-way through a handshake, outnumbering cheroot's 16
    workers: cheroot alone would keep curl waiting at least its 10 s socket timeout (curl gives up after 5 s).
    They are closed once that timeout has passed."""
    server = tls_server.start()
    silent = [socket.create_connection(("127.0.0.1", port)) for port in (server.http_port, server.dicom_tls_port)
              for _ in range(40)]
    stalled = [socket.create_connection(("127.0.0.1", port)) for port in (server.http_port, server.dicom_tls_port)
               for _ in range(20)]
    try:
        for sock in stalled:
            sock.sendall(b"\x16\x03\x01")  # the first bytes of a TLS record carrying a ClientHello
        answer = curl("--max-time", "5", "--cacert", str(certs.ca), f"https://127.0.0.1:{server.http_port}/health")
        assert answer.returncode == 0, answer.stderr
        assert echoscu(server.dicom_tls_port, *dcmtk_tls(certs)).returncode == 0
        silent[0].settimeout(30)
        assert silent[0].recv(1) == b""  # closed by the server after its timeout, not by ours
    finally:
        for sock in silent + stalled:
            sock.close()


def old_tls_client(certs: TrialCertificates) -> ssl.SSLContext:
    """A client that offers TLS 1.1 and nothing newer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_tls_below_1_2_is_refused(tls_server: TlsServerProcess, certs: TrialCertificates) -> None:
    client = old_tls_client(certs)
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # control: this client does get TLS 1.1 where allowed
    permissive.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert handshake(permissive, client, "localhost") == "TLSv1.1"

    server = tls_server.start()
    for port in (server.http_port, server.dicom_tls_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, pytest.raises(ssl.SSLError):
            client.wrap_socket(sock, server_hostname="localhost")


def test_a_taken_dicom_tls_port_is_one_line_and_exit_2(tmp_path: Path, certs: TrialCertificates) -> None:
    server = TlsServerProcess(tmp_path / "served", certs)
    with socket.create_server(("127.0.0.1", server.dicom_tls_port)):
        server.launch()
        assert server.process is not None
        code = server.process.wait(120)
    server.kill()
    lines = server.log_path.read_text().splitlines()
    assert code == 2
    assert f"oncopacs: cannot listen for DICOM-TLS on 127.0.0.1:{server.dicom_tls_port}: Address already in use" \
        in lines
    assert not any("Traceback" in line for line in lines)
