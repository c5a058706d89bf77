"""A DIMSE listener with chosen perimeter settings, on loopback, torn down with everything it started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from pynetdicom.transport import ThreadedAssociationServer

from oncopacs.archive.ingest import Archive
from oncopacs.dimse.server import start_dimse
from oncopacs.platform import open_platform
from oncopacs.settings import Settings


@dataclass(frozen=True)
class Listener:
    server: ThreadedAssociationServer
    archive: Archive
    settings: Settings

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.server.server_address[1]

    def active(self) -> int:
        """Connections the listener holds now (pynetdicom's acceptor threads)."""
        return len(self.server.active_associations)

    def wait_until_idle(self, timeout_s: float) -> bool:
        """Whether every connection has ended within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.active() == 0


@pytest.fixture
def start_listener(sqlite_settings: Settings) -> Iterator[Callable[..., Listener]]:
    """``start_listener(**settings_overrides)``: the whole platform's DIMSE listener on 127.0.0.1, port 0."""
    with ExitStack() as stack:

        def start(**overrides) -> Listener:
            settings = sqlite_settings.with_overrides(**overrides)
            platform = stack.enter_context(open_platform(settings))
            server = start_dimse(settings, platform.archive)
            stack.callback(_stop, server)
            return Listener(server, platform.archive, settings)

        yield start


def _stop(server: ThreadedAssociationServer) -> None:
    server.shutdown()
    for assoc in server.active_associations:
        assoc.abort()
    for thread in threading.enumerate():  # the DUL threads are not daemons
        if type(thread).__name__ == "DULServiceProvider":
            thread.join(5)
