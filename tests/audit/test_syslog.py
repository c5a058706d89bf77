"""Audit messages over syslog: RFC 5424 framing, UDP and TCP (octet counting) to real loopback listeners."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.syslog import (
    SyslogSender,
    SyslogTarget,
    build_syslog_message,
    frame_octet_counted,
    open_syslog_sender,
)
from oncopacs.audit.trail import AuditEntry, AuditTrail
from oncopacs.errors import ConfigError
from oncopacs.platform import open_archive, open_platform
from tests.conftest import free_port

HEADER = re.compile(rb"^<(\d+)>1 (\S+) (\S+) oncopacs (\S+) IHE\+RFC-3881 - \xef\xbb\xbf")


def entry(number: int, outcome: Outcome = Outcome.SUCCESS) -> AuditEntry:
    return AuditEntry(number, "2025-01-02T03:04:05.678901+00:00", "store", int(outcome), "STORESCU", "ae",
                      "127.0.0.1", ("PID-1",), ("1.2.3",), "C-STORE: 1 stored")


def check_message(message: bytes, severity: int = 5) -> ET.Element:
    match = HEADER.match(message)
    assert match, message[:120]
    assert int(match.group(1)) == 10 * 8 + severity
    datetime.fromisoformat(match.group(2).decode().replace("Z", "+00:00"))
    return ET.fromstring(message[match.end():])


def test_rfc5424_header_and_octet_counting():
    message = build_syslog_message(b"<AuditMessage/>", severity=5, hostname="pacs one",
                                   timestamp=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), procid=42)
    assert message == b"<85>1 2025-01-02T03:04:05.678Z pacsone oncopacs 42 IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage/>"
    assert frame_octet_counted(b"abc") == b"3 abc"
    with pytest.raises(ValueError):
        build_syslog_message(b"", severity=9, hostname="h", timestamp=datetime.now(UTC))


def test_targets_parse():
    assert SyslogTarget.parse("udp://127.0.0.1:514") == SyslogTarget("udp", "127.0.0.1", 514)
    assert SyslogTarget.parse("tcp://collector.example:6514") == SyslogTarget("tcp", "collector.example", 6514)
    assert open_syslog_sender("", "ONCOPACS") is None
    for bad in ("syslog://h:1", "udp://h", "tcp://:514", "udp://h:notaport"):
        with pytest.raises(ConfigError):
            SyslogTarget.parse(bad)


def test_udp_delivery_to_a_listener():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        sender = SyslogSender(SyslogTarget("udp", "127.0.0.1", listener.getsockname()[1]), "ONCOPACS")
        try:
            sender.submit(entry(1))
            sender.submit(entry(2, Outcome.MINOR_FAILURE))
            first, second = listener.recv(65535), listener.recv(65535)
        finally:
            sender.close()
    message = check_message(first)
    assert message.find("EventIdentification/EventID").get("csd-code") == "110104"
    assert message.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "PID-1"
    check_message(second, severity=4)


class TcpCollector:
    """A syslog collector on loopback that splits octet-counted frames."""

    def __init__(self, port: int = 0):
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.messages: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        with connection:
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
        self.server.close()
        self._thread.join(5)


def test_tcp_delivery_with_octet_counting():
    collector = TcpCollector()
    sender = SyslogSender(SyslogTarget("tcp", "127.0.0.1", collector.port), "ONCOPACS")
    try:
        for number in range(1, 4):
            sender.submit(entry(number))
        assert sender.flush(10)
    finally:
        sender.close()
        collector.close()
    messages = collector.wait_for(3)
    assert len(messages) == 3
    for message in messages:
        check_message(message)


def test_an_unreachable_collector_never_blocks_and_is_retried(tmp_path):
    port = free_port()  # nothing listens here yet
    archive = open_archive_for(tmp_path)
    sender = SyslogSender(SyslogTarget("tcp", "127.0.0.1", port), "ONCOPACS")
    trail = AuditTrail(archive.index, sender)
    collector = None
    try:
        began = time.perf_counter()
        for number in range(3):
            trail.record(AuditEvent(AuditAction.QUERY, Outcome.SUCCESS, "alice", ActorKind.USER, "127.0.0.1",
                                    ("P1",), (), f"query {number}"))
        assert time.perf_counter() - began < 2
        assert not sender.flush(0.3) and sender.pending == 3
        collector = TcpCollector(port)
        messages = collector.wait_for(3, timeout_s=15)
        assert len(messages) == 3
        outcomes = [int(check_message(m).find("EventIdentification").get("EventOutcomeIndicator")) for m in messages]
        assert outcomes == [0] * 3
    finally:
        sender.close()
        if collector is not None:
            collector.close()
        archive.close()


def test_a_full_queue_drops_the_oldest():
    sender = SyslogSender(SyslogTarget("tcp", "127.0.0.1", free_port()), "ONCOPACS", queue_limit=2)  # refused
    try:
        for number in range(5):
            sender.submit(entry(number))
        assert (sender.dropped, sender.pending, sender.sent) == (3, 2, 0)
    finally:
        sender.close(timeout_s=0.1)


def open_archive_for(tmp_path):
    from oncopacs.settings import Settings

    return open_archive(Settings(data_dir=tmp_path / "data"))


def test_the_app_sends_what_it_records_when_a_collector_is_configured(tmp_path):
    from oncopacs.settings import Settings
    from oncopacs.web.app import create_app

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        settings = Settings(data_dir=tmp_path / "data", secret_key="k",
                            audit_syslog=f"udp://127.0.0.1:{listener.getsockname()[1]}")
        app = create_app(open_platform(settings))
        trail = app.extensions["oncopacs.audit"]
        try:
            record_id = trail.record(AuditEvent(AuditAction.EXPORT, Outcome.SUCCESS, "alice", ActorKind.USER,
                                                "127.0.0.1", ("P7",), (), "export"))
            received = listener.recv(65535)
            anchor = listener.recv(65535)  # then the chain head, sealed: the collector holds it off this host
        finally:
            trail.sink.close()
            app.extensions["oncopacs.archive"].close()
    message = check_message(received)
    assert message.find("EventIdentification/EventID").get("csd-code") == "110106"
    header, _, body = anchor.partition(b" - \xef\xbb\xbf")
    assert header.endswith(b" oncopacs-checkpoint") and header.startswith(b"<85>1 ")
    checkpoint = json.loads(body)
    assert checkpoint["id"] == record_id and checkpoint["key_id"] == trail.key.key_id
    assert message.find("AuditSourceIdentification").get("AuditSourceID") == "ONCOPACS"
