"""C-ECHO to a configured peer: is it there, and does it speak DICOM to us (over TLS for a ``+tls`` peer)."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made by pynetdicom at import

from oncopacs.dimse.tls import tls_args_for
from oncopacs.dimse.transport import tune_association
from oncopacs.errors import RemoteNodeError
from oncopacs.settings import RemoteAE
from oncopacs.tls import describe_tls_error

ECHO_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class EchoResult:
    """The answer of one C-ECHO: its DIMSE status (0x0000 is success) and the round trip in ms."""

    ae_title: str
    host: str
    port: int
    status: int
    elapsed_ms: float

    @property
    def success(self) -> bool:
        return self.status == 0x0000

    def to_dict(self) -> dict:
        return {"ae_title": self.ae_title, "host": self.host, "port": self.port, "status": self.status,
                "success": self.success, "elapsed_ms": round(self.elapsed_ms, 1)}


def echo(local_ae_title: str, remote: RemoteAE, *, timeout_s: float = ECHO_TIMEOUT_S,
         ssl_context: ssl.SSLContext | None = None) -> EchoResult:
    """Associate with ``remote`` as ``local_ae_title`` and send a C-ECHO; RemoteNodeError if it fails.

    A peer marked ``+tls`` is reached over TLS, its certificate and host name verified with
    ``ssl_context`` (:meth:`oncopacs.tls.TlsFiles.client_context`; the system's CAs when None).
    """
    if remote.tls and ssl_context is None:
        ssl_context = ssl.create_default_context()
    _check_reachable(remote, timeout_s, ssl_context if remote.tls else None)
    ae = AE(ae_title=local_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, tune_association)], **tls_args_for(remote, ssl_context))
    if not assoc.is_established:
        _close_transport(assoc)
        reason = "rejected the association" if assoc.is_rejected else "could not be reached"
        raise RemoteNodeError(f"{remote.ae_title} at {remote.host}:{remote.port} {reason}")
    try:
        reply = assoc.send_c_echo()
    finally:
        assoc.release()
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    if "Status" not in reply:
        raise RemoteNodeError(f"{remote.ae_title} at {remote.host}:{remote.port} did not answer the C-ECHO")
    return EchoResult(remote.ae_title, remote.host, remote.port, int(reply.Status), elapsed_ms)


def _check_reachable(remote: RemoteAE, timeout_s: float, ssl_context: ssl.SSLContext | None) -> None:
    """Open and close a TCP connection first, with a TLS handshake when ``ssl_context`` is given: a
    clear reason when the peer is down or its certificate is refused, and no socket left for the
    garbage collector (pynetdicom does not close its socket when the connect fails)."""
    try:
        with socket.create_connection((remote.host, remote.port), timeout=timeout_s) as sock:
            if ssl_context is not None:
                _check_handshake(remote, sock, ssl_context)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RemoteNodeError(
            f"{remote.ae_title} at {remote.host}:{remote.port} could not be reached ({reason})"
        ) from None


def _check_handshake(remote: RemoteAE, sock: socket.socket, context: ssl.SSLContext) -> None:
    try:
        context.wrap_socket(sock, server_hostname=remote.host).close()  # only the handshake: closed at once
    except ssl.SSLError as exc:
        raise RemoteNodeError(f"{remote.ae_title} at {remote.host}:{remote.port}: TLS handshake failed "
                              f"({describe_tls_error(exc)})") from None


def _close_transport(assoc) -> None:  # a pynetdicom Association
    """Close the socket pynetdicom leaves open when the peer drops the connection before accepting (a TLS
    peer refusing our certificate answers the association request with an alert)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.close()
