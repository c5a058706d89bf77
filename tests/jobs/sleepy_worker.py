"""A queue worker process for tests: ``oncopacs worker`` with one more job kind, ``test_sleep``.

Run as ``python -m tests.jobs.sleepy_worker LEASE_SECONDS`` with the settings in the environment. A
``test_sleep`` job appends ``start PID`` to the file ``params["log"]``, sleeps ``params["seconds"]``
reporting progress, appends ``done PID`` and returns ``{"pid": PID}``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from oncopacs.cli.worker import run_worker
from oncopacs.jobs.worker import ProgressCallback
from oncopacs.platform import open_platform

SLEEP = "test_sleep"


def _note(path: str, line: str) -> None:
    with open(path, "a") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


def sleep_job(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
    _note(params["log"], f"start {os.getpid()}")
    seconds = float(params["seconds"])
    steps = max(int(seconds / 0.1), 1)
    for step in range(steps):
        time.sleep(seconds / steps)
        progress((step + 1) / steps, "sleeping")
    _note(params["log"], f"done {os.getpid()}")
    return {"pid": os.getpid()}


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    with open_platform() as platform:
        platform.jobs.registry.register(SLEEP, sleep_job)
        run_worker(platform, stop, lease_s=float(sys.argv[1]))


if __name__ == "__main__":
    main()
