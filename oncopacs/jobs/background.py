"""A named background thread that loops until stopped and can be woken early (job worker, report delivery)."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class BackgroundLoop(ABC):
    """Runs :meth:`_loop` on a daemon thread; :meth:`wake` cuts its wait short, :meth:`stop` ends it."""

    thread_name = "oncopacs-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to end after the work in hand; wait up to ``timeout_s`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0f s", self.thread_name, timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``, or until woken or stopped."""
        self._wake.wait(seconds)
        self._wake.clear()

    @abstractmethod
    def _loop(self) -> None:
        """The thread's work: run until ``self._stop`` is set, pausing with :meth:`_sleep`."""
