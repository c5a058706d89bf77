"""DICOM over TLS (PS3.15 B.1): the listener's handshake, off pynetdicom's accept loop, and TLS for
associations OncoPACS opens to peers marked ``+tls``.

pynetdicom wraps each accepted socket in the thread that accepts every connection, where a
client that connects and stays silent would hold up all the others until it left. The listener's
context (:func:`listener_context`) defers the handshake, and :func:`complete_handshake` runs it
in the connection's own thread within the ARTIM time; a connection whose handshake fails is
closed with one log line and never becomes an association.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from typing import Any

from oncopacs.settings import RemoteAE
from oncopacs.tls import TlsFiles, describe_tls_error

log = logging.getLogger(__name__)


class DeferredHandshakeContext(ssl.SSLContext):
    """An SSL context whose sockets do their handshake when :func:`complete_handshake` asks, not when wrapped."""

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None) -> ssl.SSLSocket:  # ssl.SSLContext's signature
        return super().wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False,
                                   suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname,
                                   session=session)


def listener_context(files: TlsFiles) -> ssl.SSLContext:
    """The DICOM-TLS listener's context: the server certificate; a client certificate too when ``files.ca`` is set."""
    return files.server_context(DeferredHandshakeContext)


def complete_handshake(event: Any, timeout_s: float) -> None:  # a pynetdicom EVT_CONN_OPEN event
    """Finish an accepted connection's TLS handshake within ``timeout_s``, or close the connection."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if not event.assoc.is_acceptor or not isinstance(sock, ssl.SSLSocket):
        return
    address = event.address[0] if event.address else "?"
    previous = sock.gettimeout()
    try:
        sock.settimeout(timeout_s)
        sock.do_handshake()
    except OSError as exc:  # an SSLError, or timed out, reset, closed
        _close(sock, address, describe_tls_error(exc))
        return
    with contextlib.suppress(OSError):
        sock.settimeout(previous)
    log.debug("DICOM-TLS: %s with %s", sock.version(), address)


def _close(sock: ssl.SSLSocket, address: str, reason: str) -> None:
    log.warning("DICOM-TLS: handshake with %s failed (%s); connection closed", address, reason)
    with contextlib.suppress(OSError):  # pynetdicom finds the connection closed at its first read
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's, which would read on in clear


def tls_args_for(remote: RemoteAE, context: ssl.SSLContext | None) -> dict[str, Any]:
    """``associate()`` keyword arguments for ``remote``: TLS if it is marked ``+tls``, its certificate and host
    name verified with ``context`` (:meth:`TlsFiles.client_context`; the system's CAs when None)."""
    if not remote.tls:
        return {}
    return {"tls_args": (context or ssl.create_default_context(), remote.host)}
