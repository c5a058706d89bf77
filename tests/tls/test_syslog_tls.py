"""Audit messages to a syslog collector over TLS (RFC 5425: octet-counted RFC 5424 messages in a TLS stream)."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import pytest

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.syslog import SyslogSender, SyslogTarget, open_syslog_sender
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import TrialCertificates
from tests.audit.test_syslog import check_message, entry
from tests.tls.conftest import server_files


class TlsCollector:
    """A syslog collector on loopback speaking TLS: splits octet-counted frames, notes each connection's version."""

    def __init__(self, context: ssl.SSLContext):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)  # close() does not wake a blocked accept(): look at _closed this often
        self.port = self.server.getsockname()[1]
        self._closed = False
        self.context = context
        self.messages: list[bytes] = []
        self.versions: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                raw, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            raw.settimeout(10)
            try:
                with self.context.wrap_socket(raw, server_side=True) as connection:
                    self.versions.append(connection.version() or "?")
                    self._read(connection)
            except OSError:  # a client we refused, or one that left
                continue

    def _read(self, connection: ssl.SSLSocket) -> None:
        buffer = b""
        while chunk := connection.recv(65536):
            buffer += chunk
            while b" " in buffer:
                length, rest = buffer.split(b" ", 1)
                if len(rest) < int(length):
                    break
                self.messages.append(rest[: int(length)])
                buffer = rest[int(length):]

    def wait_for(self, count: int, timeout_s: float = 10) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        self._closed = True
        self._thread.join(15)
        self.server.close()


def test_tls_targets_parse() -> None:
    assert SyslogTarget.parse("tls://collector.example:6514") == SyslogTarget("tls", "collector.example", 6514)
    assert str(SyslogTarget.parse("tls://collector.example:6514")) == "tls://collector.example:6514"


def test_the_platform_sends_what_it_records_to_a_tls_collector(tmp_path, certs: TrialCertificates) -> None:
    collector = TlsCollector(server_files(certs, require_clients=True).server_context())
    settings = Settings(data_dir=tmp_path / "data", secret_key="k", audit_syslog=f"tls://localhost:{collector.port}",
                        tls_cert=str(certs.server_cert), tls_key=str(certs.server_key), tls_ca=str(certs.ca))
    try:
        with open_platform(settings) as platform:
            platform.audit.record(AuditEvent(AuditAction.EXPORT, Outcome.SUCCESS, "alice", ActorKind.USER,
                                             "127.0.0.1", ("P7",), (), "export"))
            assert platform.audit.sink is not None and platform.audit.sink.flush(10)
            platform.audit.sink.close()  # the platform's close leaves its sink open
        messages = collector.wait_for(2)
    finally:
        collector.close()
    # the record, then the checkpoint of the chain head after it (sealed with the audit key)
    assert len(messages) == 2 and collector.versions[0] in {"TLSv1.2", "TLSv1.3"}
    assert b" oncopacs-checkpoint - " in messages[1] and b'"id":1,' in messages[1]
    message = check_message(messages[0])
    assert message.find("EventIdentification/EventID").get("csd-code") == "110106"
    assert message.find("AuditSourceIdentification").get("AuditSourceID") == "ONCOPACS"


def test_an_untrusted_collector_gets_nothing_and_the_records_wait(certs: TrialCertificates,
                                                                  stranger: TrialCertificates,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    impostor = TlsCollector(server_files(stranger).server_context())
    sender = open_syslog_sender(f"tls://localhost:{impostor.port}", "ONCOPACS", TlsFiles(ca=certs.ca))
    assert isinstance(sender, SyslogSender)
    try:
        with caplog.at_level(logging.WARNING, logger="oncopacs.audit.syslog"):
            sender.submit(entry(1))
            assert not sender.flush(1.0)
        assert sender.pending == 1 and sender.sent == 0
    finally:
        sender.close(timeout_s=0.1)
        impostor.close()
    assert impostor.messages == []
    assert "certificate not trusted" in caplog.text
