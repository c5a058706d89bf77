"""The HL7 v2 listener: MLLP (python-hl7's asyncio streams), or MLLP over TLS, answering every message with its ACK.

An asyncio loop in one thread reads blocks; each message goes to :meth:`Hl7Dispatcher.handle` in a thread pool
(database work never blocks the loop), in order per connection. Defences: a message larger than
``hl7_max_message_bytes`` is answered AR and the connection closed (the stream reader never buffers much more than
the limit; the rest of the message is read in chunks and dropped, so that the sender can read the AR); a connection
that sends nothing whole within ``idle_timeout_s`` (no end block, a stalled sender) is closed, as is one that sends
a block without MLLP's start character; past ``max_connections`` at once, a new connection is closed at once. With
``tls_cert`` and ``tls_key`` the listener speaks TLS only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import threading
from typing import Any

from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError, start_hl7_server

from oncopacs.ehr.dispatch import Hl7Dispatcher
from oncopacs.errors import ListenError
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles, describe_tls_error

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 32
HANDLER_THREADS = 8
DISCARD_BYTES = 64 * 1024 * 1024  # the most of an oversized message read (in chunks, and dropped) after its AR
_END = b"\x1c\r"
_START_TIMEOUT_S = 10.0


class Hl7Listener:
    """One MLLP server on ``settings.hl7_listen_host:hl7_listen_port`` (0: any free port, see :attr:`port`)."""

    def __init__(self, settings: Settings, dispatcher: Hl7Dispatcher, *, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, ssl_context: ssl.SSLContext | None = None):
        self.host = settings.hl7_listen_host
        self.requested_port = settings.hl7_listen_port
        self.max_message_bytes = settings.hl7_max_message_bytes
        self.dispatcher = dispatcher
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        tls = TlsFiles.from_settings(settings)
        self.ssl_context = ssl_context if ssl_context is not None else tls.server_context() if tls.serving else None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def start(self) -> None:
        """Listen (returns once the socket is bound); ListenError when the port cannot be had."""
        if self._thread is not None:
            raise RuntimeError("the HL7 listener is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="hl7-handler")
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_log_loop_error)

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(self._listen())
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hl7-listener", daemon=True)
        self._thread.start()
        ready.wait(_START_TIMEOUT_S)
        if failure:
            self._thread.join()
            self._close_loop()
            exc = failure[0]
            raise ListenError(f"cannot listen for HL7 on {self.host}:{self.requested_port}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        log.info("HL7 (MLLP%s) on %s:%d", " over TLS" if self.tls else "", self.host, self.port)

    async def _listen(self) -> asyncio.Server:
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.idle_timeout_s}
        return await start_hl7_server(self._serve, self.host, self.requested_port, limit=self.max_message_bytes,
                                      encoding="utf-8", reuse_address=True, **tls)

    def stop(self) -> None:
        """Stop listening, close open connections and wait for messages being handled."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            future.result(_START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT_S)
        self._close_loop()
        self._thread = None

    def _close_loop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()
        self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=_START_TIMEOUT_S)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        peer = _peer(writer)
        if len(self._connections) >= self.max_connections:
            log.warning("HL7 connection from %s closed: already %d open", peer, len(self._connections))
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._converse(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as exc:
            log.info("HL7 connection from %s lost: %s", peer, describe_tls_error(exc))
        except Exception as exc:  # noqa: BLE001 - one connection's failure must not stop the listener
            log.error("HL7 connection from %s closed after an unexpected %s", peer, type(exc).__name__)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _converse(self, reader: HL7StreamReader, writer: HL7StreamWriter, peer: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                block = await asyncio.wait_for(reader.readblock(), self.idle_timeout_s)
            except TimeoutError:
                log.info("HL7 connection from %s closed: nothing whole within %g s", peer, self.idle_timeout_s)
                return
            except asyncio.IncompleteReadError:
                return  # the sender closed (any partial block is dropped)
            except InvalidBlockError:
                log.warning("HL7 connection from %s closed: a block without the MLLP start character", peer)
                return
            except ValueError:  # the stream reader's limit: the message is larger than allowed
                reason = f"the message is larger than {self.max_message_bytes} bytes"
                ack = await loop.run_in_executor(self._executor, self.dispatcher.refuse, peer, 0, reason)
                writer.writeblock(ack.encode("utf-8"))
                with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                    await asyncio.wait_for(writer.drain(), self.idle_timeout_s)
                    await self._discard_rest(reader)  # so that the sender, done writing, can read the AR
                return
            ack = await loop.run_in_executor(self._executor, self.dispatcher.handle, _decode(block), peer, len(block))
            writer.writeblock(ack.encode("utf-8"))
            try:
                await asyncio.wait_for(writer.drain(), self.idle_timeout_s)
            except TimeoutError:
                log.info("HL7 connection from %s closed: it does not read its ACKs", peer)
                return

    async def _discard_rest(self, reader: HL7StreamReader) -> None:
        """Read and drop the rest of an oversized message, up to its end block (or DISCARD_BYTES, or the idle
        timeout): closing with unread data would reset the connection before the sender sees the AR."""
        budget, tail = DISCARD_BYTES, b""
        while budget > 0:
            chunk = await asyncio.wait_for(reader.read(64 * 1024), self.idle_timeout_s)
            if not chunk or _END in tail + chunk:
                return
            budget -= len(chunk)
            tail = chunk[-1:]


def _decode(block: bytes) -> str:
    """UTF-8 when the bytes are UTF-8, else ISO 8859-1 (HL7's other common character set): never fails."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        return block.decode("latin-1")


def _peer(writer: HL7StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "-")


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failed TLS handshakes and dropped links are one line, not a traceback."""
    exc = context.get("exception")
    if isinstance(exc, OSError):
        log.info("HL7 connection failed: %s", describe_tls_error(exc))
    else:
        log.warning("HL7 listener: %s%s", context.get("message", "unexpected error"),
                    f" ({type(exc).__name__})" if exc is not None else "")


__all__ = ["Hl7Listener"]
