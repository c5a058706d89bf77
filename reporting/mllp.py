"""Sending one HL7 message over MLLP (python-hl7's asyncio streams), or MLLP over TLS, and waiting for its ACK."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

import hl7
from hl7.mllp import InvalidBlockError, open_hl7_connection

from oncopacs.errors import RemoteNodeError
from oncopacs.tls import describe_tls_error
from reporting.oru import Ack, Hl7Destination, read_ack

ACK_LIMIT_BYTES = 1024 * 1024


async def _exchange(destination: Hl7Destination, message: str) -> hl7.Message:
    tls = {"ssl": destination.ssl_context or ssl.create_default_context(), "server_hostname": destination.host,
           "ssl_handshake_timeout": destination.timeout_s} if destination.tls else {}
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(destination.host, destination.port, limit=ACK_LIMIT_BYTES, encoding="utf-8", **tls),
        destination.timeout_s)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.writemessage(hl7.parse(message))
        await writer.drain()
        return await asyncio.wait_for(reader.readmessage(), destination.timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def send_message(destination: Hl7Destination, message: str) -> Ack:
    """Send ``message`` and return the receiver's ACK; RemoteNodeError on refusal, drop, timeout or garbage."""
    where = destination.endpoint
    try:
        reply = asyncio.run(_exchange(destination, message))
    except TimeoutError:
        raise RemoteNodeError(f"no HL7 ACK from {where} within {destination.timeout_s:g} s") from None
    except asyncio.IncompleteReadError:
        raise RemoteNodeError(f"{where} closed the connection before acknowledging") from None
    except ssl.SSLError as exc:
        raise RemoteNodeError(f"TLS with {where} failed: {describe_tls_error(exc)}") from None
    except InvalidBlockError:
        raise RemoteNodeError(f"{where} answered with an invalid MLLP block") from None
    except (ConnectionError, OSError) as exc:
        raise RemoteNodeError(f"cannot deliver to {where}: {exc.strerror or type(exc).__name__}") from None
    except hl7.ParseException:
        raise RemoteNodeError(f"{where} answered with a message that is not HL7") from None
    return read_ack(reply)
