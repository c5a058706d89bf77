"""Sending audit messages to a syslog collector (RFC 5424 messages; UDP per RFC 5426, TCP per RFC 6587,
TLS per RFC 5425).

Each message is ``<PRI>1 TIMESTAMP HOSTNAME oncopacs PROCID IHE+RFC-3881 - BOM<AuditMessage…>``
with PRI = facility authpriv (10) × 8 + severity. Over TCP and TLS it is framed by octet counting
(``LEN SP MSG``); over TLS the collector's certificate and host name are verified. The
:class:`SyslogSender` queues records in memory and sends them from its own thread, so recording
never waits on the network; failures are logged (never with PHI) and retried.

Audit checkpoints (:mod:`oncopacs.audit.checkpoints`) go the same way with MSGID ``oncopacs-checkpoint`` and
their JSON line as MSG, so the collector holds the chain head outside this host as well.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from oncopacs.audit.atna import audit_message_xml
from oncopacs.audit.checkpoints import Checkpoint
from oncopacs.audit.events import Outcome
from oncopacs.audit.trail import AuditEntry
from oncopacs.errors import ConfigError
from oncopacs.tls import TlsFiles, describe_tls_error

log = logging.getLogger(__name__)

AUTHPRIV = 10
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
APP_NAME = "oncopacs"
MSGID = "IHE+RFC-3881"  # the MSGID IHE ATNA (ITI-20) gives audit messages
CHECKPOINT_MSGID = "oncopacs-checkpoint"
BOM = b"\xef\xbb\xbf"
MAX_UDP_BYTES = 65_507
QUEUE_LIMIT = 10_000  # records kept in memory while the collector is unreachable; the oldest go first
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class SyslogTarget:
    """Where audit messages go: ``udp://host:port``, ``tcp://host:port`` or ``tls://host:port``."""

    protocol: str  # "udp", "tcp" or "tls"
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SyslogTarget:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            port, parts = None, None
        if parts is None or parts.scheme not in {"udp", "tcp", "tls"} or not parts.hostname or port is None:
            raise ConfigError(f"audit syslog target {url!r} is not of the form udp://host:port, tcp://host:port "
                              "or tls://host:port")
        return cls(parts.scheme, parts.hostname, port)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


def build_syslog_message(
    payload: bytes, *, severity: int, hostname: str, timestamp: datetime, procid: int | str = "-",
    app_name: str = APP_NAME, msgid: str = MSGID,
) -> bytes:
    """One RFC 5424 message: header, no structured data, ``payload`` (UTF-8) as MSG after a BOM."""
    if not 0 <= severity <= 7:
        raise ValueError(f"syslog severity {severity} is not 0-7")
    stamp = timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{AUTHPRIV * 8 + severity}>1 {stamp} {_header_field(hostname, 255)} {_header_field(app_name, 48)} " \
             f"{_header_field(str(procid), 128)} {_header_field(msgid, 32)} -"
    return header.encode("ascii") + b" " + BOM + payload


def frame_octet_counted(message: bytes) -> bytes:
    """TCP and TLS framing of RFC 6587 3.4.1 / RFC 5425 4.3: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def severity_of(outcome: int) -> int:
    return SEVERITY_NOTICE if outcome == Outcome.SUCCESS else SEVERITY_WARNING


def _header_field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE ``-``."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


class SyslogSender:
    """Sends audit records to one collector from a background thread, best effort.

    :meth:`submit` only queues. Messages that cannot be sent stay queued and are retried with
    back-off (up to :data:`QUEUE_LIMIT`, then the oldest are dropped and counted).
    """

    def __init__(self, target: SyslogTarget, audit_source_id: str, *, hostname: str | None = None,
                 queue_limit: int = QUEUE_LIMIT, ssl_context: ssl.SSLContext | None = None):
        self.target = target
        # for tls://: verifies the collector (TlsFiles.client_context; None: the system's CAs)
        self.ssl_context = ssl_context
        self.audit_source_id = audit_source_id
        self.hostname = hostname or socket.gethostname()
        self.dropped = 0  # records dropped because the queue was full
        self.sent = 0
        self.skipped = 0  # records that could never be sent (too large for UDP)
        self._queue: collections.deque[AuditEntry | Checkpoint] = collections.deque()
        self._queue_limit = queue_limit
        self._condition = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def submit(self, entry: AuditEntry) -> None:
        """Queue ``entry`` for sending; never blocks, never raises."""
        self._enqueue(entry)

    def submit_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Queue an audit checkpoint for sending; never blocks, never raises."""
        self._enqueue(checkpoint)

    def _enqueue(self, entry: AuditEntry | Checkpoint) -> None:
        with self._condition:
            if self._closed:
                return
            if len(self._queue) >= self._queue_limit:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("audit syslog queue full: %d record(s) not sent to %s", self.dropped, self.target)
            self._queue.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="oncopacs-audit-syslog", daemon=True)
                self._thread.start()
            self._condition.notify()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued record was sent; False if some are still waiting after ``timeout_s``."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._queue and not self._busy, timeout=timeout_s)

    @property
    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the sender thread (after trying to send what is queued for up to ``timeout_s``)."""
        self.flush(timeout_s)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s + RETRY_MAX_S)
        self._disconnect()

    # -- the sender thread ----------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                entry = self._queue[0]
                self._busy = True
            try:
                self._send(self._message(entry))
            except OSError as exc:
                log.warning("audit %s not sent to %s (%s); retrying in %.1f s",
                            _name(entry), self.target, describe_tls_error(exc), delay)
                self._disconnect()
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()
                    self._condition.wait_for(lambda: self._closed, timeout=delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception as exc:  # noqa: BLE001 - a record that can never be sent must not hold up the others
                log.error(
                    "audit %s cannot be sent to %s (%s); skipped", _name(entry), self.target, type(exc).__name__
                )
                self.skipped += 1
            else:
                self.sent += 1
            delay = RETRY_MIN_S
            with self._condition:
                if self._queue and self._queue[0] is entry:
                    self._queue.popleft()
                self._busy = False
                self._condition.notify_all()

    def _message(self, entry: AuditEntry | Checkpoint) -> bytes:
        if isinstance(entry, Checkpoint):
            return build_syslog_message(
                entry.to_line().rstrip(b"\n"), severity=SEVERITY_NOTICE, hostname=self.hostname,
                timestamp=datetime.fromisoformat(entry.written_at), procid=os.getpid(), msgid=CHECKPOINT_MSGID,
            )
        payload = audit_message_xml(entry, self.audit_source_id, host_name=self.hostname)
        return build_syslog_message(
            payload, severity=severity_of(entry.outcome), hostname=self.hostname,
            timestamp=datetime.fromisoformat(entry.recorded_at), procid=os.getpid(),
        )

    def _send(self, message: bytes) -> None:
        if self.target.protocol == "udp":
            if len(message) > MAX_UDP_BYTES:
                raise ValueError(f"a message of {len(message)} bytes does not fit in a UDP datagram")
            if self._socket is None:
                self._socket = socket.socket(_family(self.target.host), socket.SOCK_DGRAM)
            self._socket.sendto(message, (self.target.host, self.target.port))
            return
        if self._socket is None:
            self._socket = self._connect()
        self._socket.sendall(frame_octet_counted(message))

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.target.host, self.target.port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.target.protocol != "tls":
            return sock
        context = self.ssl_context or ssl.create_default_context()
        try:
            return context.wrap_socket(sock, server_hostname=self.target.host)
        except OSError:
            sock.close()
            raise

    def _disconnect(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


def _name(entry: AuditEntry | Checkpoint) -> str:
    return f"checkpoint of record {entry.record_id}" if isinstance(entry, Checkpoint) else f"record {entry.id}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_syslog_sender(url: str, audit_source_id: str, tls: TlsFiles | None = None) -> SyslogSender | None:
    """The sender for ``settings.audit_syslog`` (None when empty); ConfigError when malformed.

    A ``tls://`` collector is verified with ``tls``'s client context (``tls_ca``, else the system's CAs).
    """
    if not url.strip():
        return None
    target = SyslogTarget.parse(url)
    context = (tls or TlsFiles()).client_context() if target.protocol == "tls" else None
    return SyslogSender(target, audit_source_id, ssl_context=context)
