"""``oncopacs serve``: HTTP and DIMSE of one platform in one process, with crash recovery at start-up."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from waitress.server import create_server

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import recover_orphans
from oncopacs.dimse.server import start_dimse
from oncopacs.errors import ListenError
from oncopacs.platform import Platform
from oncopacs.settings import Settings

log = logging.getLogger(__name__)

RUNNING_MARKER = "serve.running"


def recover_if_needed(settings: Settings, archive: Archive) -> None:
    """After an unclean stop, index any file that was made durable but not yet indexed."""
    marker = settings.data_dir / RUNNING_MARKER
    if marker.exists():
        log.warning("the previous run did not stop cleanly; checking the storage area against the index")
        recovered = recover_orphans(archive)
        log.warning("recovery done: %d file(s) re-indexed", recovered)
    else:
        archive.storage.clear_incoming()


def serve(platform: Platform, *, ready: threading.Event | None = None) -> None:
    """Serve ``platform`` until SIGINT or SIGTERM; returns after a clean shutdown.

    The platform arrives whole (its rules installed by :func:`oncopacs.platform.open_platform`), so
    the first instance a listener accepts already meets them.
    """
    from oncopacs.web.app import create_app  # the web layer is only needed when serving

    settings, archive = platform.settings, platform.archive
    recover_if_needed(settings, archive)
    app = create_app(platform)
    try:
        dimse = start_dimse(settings, archive, platform.audit)
    except OSError as exc:
        raise ListenError(
            f"cannot listen for DICOM on {settings.dicom_host}:{settings.dicom_port}: {exc.strerror}"
        ) from None
    try:
        http = create_server(app, host=settings.http_host, port=settings.http_port, threads=8, ident="OncoPACS")
    except OSError as exc:
        dimse.shutdown()
        raise ListenError(
            f"cannot listen for HTTP on {settings.http_host}:{settings.http_port}: {exc.strerror}"
        ) from None
    marker = settings.data_dir / RUNNING_MARKER
    _write_marker(marker)
    worker = platform.jobs.new_worker()
    worker.start()
    platform.reports.start()  # delivers final reports to the EHR, with retries
    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %s received, shutting down", signum)
        stop.set()
        http.close()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info(
        "HTTP on http://%s:%s  DICOM %s on port %s",
        settings.http_host,
        http.effective_port,
        settings.ae_title,
        dimse.server_address[1],
    )
    if ready is not None:
        ready.set()
    try:
        http.run()
    except (OSError, ValueError):
        if not stop.is_set():
            raise
    finally:
        worker.stop()
        platform.reports.stop()
        dimse.shutdown()
        platform.index.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        marker.unlink(missing_ok=True)
        log.info("stopped cleanly")


def _write_marker(marker: Path) -> None:
    """Durably note that a server runs here: if it is still there at the next start, the stop was unclean."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "w") as file:
        file.write(str(os.getpid()))
        file.flush()
        os.fsync(file.fileno())
    directory = os.open(marker.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
