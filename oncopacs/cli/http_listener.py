"""The HTTP listener of ``oncopacs serve``: waitress for plain HTTP, cheroot for HTTPS (waitress has no TLS).

cheroot hands each new connection to one of its worker threads at once and does the TLS handshake
in its accept loop, so a few clients that connect and say nothing (or stall half-way through a
handshake) keep everyone else waiting for its 10 s socket timeout. Here a new connection waits in
cheroot's selector until bytes arrive, its handshake advances there without blocking as they
come, and only a connection whose handshake is done and whose request has begun goes to a worker;
one that has not got that far within the timeout is closed. A plain HTTP request on the HTTPS port
is answered ``400`` with a sentence that says so.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
import time
from typing import Protocol

from cheroot import errors as cheroot_errors
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.ssl import Adapter
from cheroot.wsgi import Server as CherootServer
from waitress.server import create_server

from oncopacs.tls import describe_tls_error

log = logging.getLogger(__name__)

SERVER_NAME = "OncoPACS"
THREADS = 8
HTTPS_THREADS = 16
HTTPS_TIMEOUT_S = 10  # to finish the handshake after connecting; then for each read of a request
STOP_POLL_S = 0.1
_PLAIN_HTTP_ANSWER = b"This port speaks HTTPS only: use https:// instead of http://\n"
_PLAIN_HTTP_REFUSED = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_HTTP_ANSWER), _PLAIN_HTTP_ANSWER))


class HttpListener(Protocol):
    """A bound HTTP listener: :meth:`run` serves until :meth:`stop`, which a signal handler may call."""

    scheme: str

    @property
    def port(self) -> int: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...


def open_http(app, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> HttpListener:
    """Bind ``host:port`` for the WSGI ``app``: HTTPS with ``ssl_context``, else plain HTTP; OSError if it cannot.

    ``ssl_context`` is the listener's own (its sockets become :class:`_TlsSocket`).
    """
    if ssl_context is None:
        return _PlainListener(app, host, port)
    return _TlsListener(app, host, port, ssl_context)


class _PlainListener:
    scheme = "http"

    def __init__(self, app, host: str, port: int):
        self._server = create_server(app, host=host, port=port, threads=THREADS, ident=SERVER_NAME)
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):  # the closed socket, after stop()
            if not self._stopping:
                raise

    def stop(self) -> None:
        self._stopping = True
        self._server.close()


class _TlsListener:
    scheme = "https"

    def __init__(self, app, host: str, port: int, context: ssl.SSLContext):
        server = _TlsServer((host, port), app, numthreads=HTTPS_THREADS, server_name=SERVER_NAME,
                            request_queue_size=64, timeout=HTTPS_TIMEOUT_S)
        server.ssl_adapter = _TlsAdapter(context)
        server.error_log = _log_cheroot  # type: ignore[method-assign]  # cheroot's writes to standard error
        server.prepare()  # binds and listens
        self._server = server
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    def run(self) -> None:
        thread = threading.Thread(target=self._server.serve, name="oncopacs-https", daemon=True)
        thread.start()
        while not self._stopping and thread.is_alive():
            time.sleep(STOP_POLL_S)  # signals interrupt the sleep; cheroot's stop() must not run in a handler
        self._server.stop()
        thread.join()

    def stop(self) -> None:
        self._stopping = True


class _TlsServer(CherootServer):
    """cheroot's WSGI server, handshaking in its selector loop: a worker only gets a connection whose
    handshake is done and whose request has begun to arrive."""

    def prepare(self) -> None:
        super().prepare()
        manager = self._connections  # type: ignore[attr-defined]  # cheroot's own, set by prepare()
        accept = manager._from_server_socket

        def accept_and_wait(server_socket):  # cheroot's: returns the connection to give a worker now, or None
            connection = accept(server_socket)
            if connection is not None:
                manager.put(connection)  # back here through process_conn when its first bytes arrive
            return None

        manager._from_server_socket = accept_and_wait

    def process_conn(self, conn) -> None:  # a cheroot HTTPConnection with bytes to read
        sock = conn.socket
        if isinstance(sock, _TlsSocket) and not sock.handshake_done:
            progress = sock.advance_handshake()
            if progress is None:  # failed: said why, nothing more to do
                conn.close()
                return
            if not progress or (sock.handshake_done and not sock.pending()):
                connected = conn.last_used  # waits for more bytes, against the time it connected
                self._connections.put(conn)  # type: ignore[attr-defined]
                conn.last_used = connected
                return
        super().process_conn(conn)


class _TlsAdapter(Adapter):
    """cheroot's TLS adapter for a ready SSL context; the handshake is left to :class:`_TlsServer`."""

    def __init__(self, context: ssl.SSLContext):
        super().__init__(None, None)
        context.sslsocket_class = _TlsSocket
        self.context = context

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, self.get_environ()

    def get_environ(self) -> dict[str, str]:
        # wsgi.url_scheme here also wins over a request line's absolute URI ("GET http://...")
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def makefile(self, sock: socket.socket, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE):
        return StreamReader(sock, mode, bufsize) if "r" in mode else StreamWriter(sock, mode, bufsize)


class _TlsSocket(ssl.SSLSocket):
    """An accepted TLS socket whose handshake :meth:`advance_handshake` takes forward as bytes arrive.

    Should a worker read or write before the handshake is done, it finishes it there (blocking,
    under the socket's timeout). A failed handshake is one log line; a client that spoke plain
    HTTP gets a plain ``400`` that says to use https://.
    """

    handshake_done = False

    def advance_handshake(self) -> bool | None:
        """Go on with the handshake as far as the bytes that arrived allow: True when done (or left to the
        worker), False while it waits for more, None when it failed."""
        timeout = self.gettimeout()
        try:
            self.settimeout(0.0)
            self.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLWantWriteError:  # the client reads slowly: a worker finishes the handshake
            return True
        except OSError as exc:
            self._refuse(exc)
            return None
        finally:
            self.settimeout(timeout)
        self.handshake_done = True
        return True

    def _complete_handshake(self) -> None:
        if self.handshake_done:
            return
        try:
            self.do_handshake()
        except OSError as exc:  # an SSLError, or timed out, reset
            self._refuse(exc)
            raise cheroot_errors.FatalSSLAlert(str(exc)) from None  # cheroot closes quietly
        self.handshake_done = True

    def _refuse(self, exc: OSError) -> None:
        plain_http = isinstance(exc, ssl.SSLError) and exc.reason == "HTTP_REQUEST"
        if plain_http:
            try:  # noqa: SIM105 - best effort, the connection is closed either way
                socket.socket.send(self, _PLAIN_HTTP_REFUSED)  # the bare TCP socket: TLS failed
            except OSError:
                pass
        log.info("HTTPS: handshake with %s failed (%s)", _peer(self),
                 "plain HTTP on the HTTPS port" if plain_http else describe_tls_error(exc))

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._complete_handshake()
        return super().recv(buflen, flags)

    def recv_into(self, buffer, nbytes: int | None = None, flags: int = 0) -> int:
        self._complete_handshake()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data, flags: int = 0) -> int:
        self._complete_handshake()
        return super().send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:
        self._complete_handshake()
        super().sendall(data, flags)


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "a client that left"


def _log_cheroot(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's error_log, into this module's logger (with the exception only where cheroot has one to show)."""
    log.log(level, "%s", msg, exc_info=traceback)
