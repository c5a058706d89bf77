"""TLS fixtures: trial certificates (ours and a stranger's CA), and ``oncopacs serve`` with TLS on."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import TrialCertificates, write_trial_certificates
from tests.conftest import ServerProcess, dcmtk_tool, free_port, require


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect after each test: a socket left unclosed is then reported against the test that left it."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TrialCertificates:
    """A trial CA, a server certificate (localhost, 127.0.0.1, ::1, pacs.test) and a client certificate."""
    return write_trial_certificates(tmp_path_factory.mktemp("certs"), ["pacs.test"])


@pytest.fixture(scope="session")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> TrialCertificates:
    """Certificates of another CA, which nothing here trusts."""
    return write_trial_certificates(tmp_path_factory.mktemp("stranger"))


def server_files(certs: TrialCertificates, *, require_clients: bool = False) -> TlsFiles:
    return TlsFiles(certs.server_cert, certs.server_key, certs.ca if require_clients else None)


def client_context(certs: TrialCertificates, *, with_certificate: bool = False) -> ssl.SSLContext:
    """What a client of OncoPACS uses: trusts the trial CA, presents the client certificate if asked."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_certificate:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


def tls_env(certs: TrialCertificates, *, require_clients: bool = False) -> dict[str, str]:
    env = {"ONCOPACS_TLS_CERT": str(certs.server_cert), "ONCOPACS_TLS_KEY": str(certs.server_key),
           "ONCOPACS_DICOM_TLS_PORT": str(free_port())}
    if require_clients:
        env["ONCOPACS_TLS_CA"] = str(certs.ca)
    return env


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> str:
    """A TLS handshake between the two contexts over a socket pair; the client's view of the version."""
    left, right = socket.socketpair()
    failure: list[BaseException] = []

    def accept() -> None:
        try:
            with server.wrap_socket(right, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        with client.wrap_socket(left, server_hostname=server_hostname) as tls:
            version = tls.version() or ""
            tls.sendall(b"x")
    finally:
        thread.join(10)
        right.close()
    if failure:
        raise failure[0]
    return version


class TlsServerProcess(ServerProcess):
    """``oncopacs serve`` with TLS on: healthy once ``https://…/health`` answers 200 to a client trusting the CA."""

    def __init__(self, data_dir: Path, certs: TrialCertificates, env: dict[str, str] | None = None, *,
                 require_clients: bool = False):
        super().__init__(data_dir, {**tls_env(certs, require_clients=require_clients), **(env or {})})
        self.certs = certs
        self.dicom_tls_port = int(self.env["ONCOPACS_DICOM_TLS_PORT"])
        self._context = client_context(certs, with_certificate=require_clients)

    def wait_healthy(self, timeout_s: float = 30.0) -> TlsServerProcess:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oncopacs serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.http_port}/health", timeout=2,
                                            context=self._context) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("oncopacs serve did not become healthy in time")


def curl(*args: str) -> subprocess.CompletedProcess:
    """curl, silent but for errors, printing the HTTP status last; its exit status says whether TLS worked."""
    require(shutil.which("curl") is not None, "curl is not installed (apt-get install curl)")
    return subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)


DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk keeps Nagle's algorithm on unless told


def echoscu(port: int, *tls_options: str, called: str = "ONCOPACS") -> subprocess.CompletedProcess:
    """dcmtk's echoscu to 127.0.0.1:``port`` with the TLS options given (none: plain TCP)."""
    return subprocess.run([dcmtk_tool("echoscu"), "-v", "-to", "20", "-aec", called, *tls_options, "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=60, env=DCMTK_ENV)


def dcmtk_tls(certs: TrialCertificates, *, client: TrialCertificates | None = None) -> tuple[str, ...]:
    """dcmtk's options for TLS with a client certificate (``client``'s, default ours), trusting ``certs``' CA."""
    who = client or certs
    return ("+tls", str(who.client_key), str(who.client_cert), "+cf", str(certs.ca))
