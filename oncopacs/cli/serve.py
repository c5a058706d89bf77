"""``oncopacs serve``: HTTP(S), DIMSE and DICOM-TLS of one platform in one process, with crash recovery at start-up."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pynetdicom.transport import ThreadedAssociationServer

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import recover_orphans
from oncopacs.cli.http_listener import open_http
from oncopacs.dimse.server import start_dimse
from oncopacs.dimse.tls import listener_context
from oncopacs.ehr.listener import Hl7Listener
from oncopacs.ehr.wiring import build_dispatcher
from oncopacs.errors import ConfigError, ListenError, StorageError
from oncopacs.jobs.dispatch import DispatchingJobQueue
from oncopacs.jobs.worker import INTERRUPTED_MESSAGE, Worker
from oncopacs.orchestration.delivery import DeliveryLoop, open_delivery
from oncopacs.orchestration.rule_actions import RuleLoop
from oncopacs.platform import Platform
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from reporting.jobs import Reports

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

def recover_if_needed(settings: Settings, archive: Archive) -> None:
    """After an unclean stop, index any file that was made durable but not yet indexed.

    An object store that does not answer refuses the start when there is something to recover (its objects must be
    listed); otherwise it is logged and stores answer 0xA700 until it does (``/health`` says ``unreachable``). One
    that answers but ignores conditional writes (``If-None-Match: *``) refuses the start.
    """
    try:
        archive.storage.check_reachable()
    except StorageError as exc:
        if settings.running_marker.exists():
            raise StorageError(f"{exc}; recovery after an unclean stop needs it, start again once it answers") from None
        log.error("%s: stores are refused (0xA700) until it answers", exc)
    else:
        archive.storage.check_conditional_writes()  # StorageError: a store that could overwrite a first copy
    if settings.running_marker.exists():
        log.warning("the previous run did not stop cleanly; checking the storage area against the index")
        recovered = recover_orphans(archive)
        log.warning("recovery done: %d file(s) re-indexed", recovered)
    else:
        archive.storage.clear_incoming()


def serve(platform: Platform, *, ready: threading.Event | None = None) -> None:
    """Serve ``platform`` until SIGINT or SIGTERM; returns after a clean shutdown.

    The platform arrives whole (its rules installed by :func:`oncopacs.platform.open_platform`), so
    the first instance a listener accepts already meets them. With ``tls_cert`` and ``tls_key``,
    HTTP is HTTPS only and DICOM-TLS listens on ``dicom_tls_port`` beside plain DIMSE on
    ``dicom_port`` (0: no plain DIMSE). Unusable TLS files raise ConfigError before anything listens.

    ``settings.role`` picks the listeners: ``all`` everything; ``web`` HTTP with the report, outbox and rule
    loops (and the embedded job worker); ``dimse`` the DIMSE listeners and the HL7 listener (both plain TCP
    services a TCP-mode balancer fronts), nothing else: the nodes of another role deliver what it stores.
    """
    settings, archive = platform.settings, platform.archive
    web, dimse_role = settings.role in ("all", "web"), settings.role in ("all", "dimse")
    tls = TlsFiles.from_settings(settings)
    tls.check()
    if not web and not settings.dicom_port and not tls.serving and settings.hl7_listen_port <= 0:
        raise ConfigError("role dimse with no DICOM port, no TLS and no HL7 port would serve nothing")
    recover_if_needed(settings, archive)
    app = _create_app(platform) if web else None
    dimse = _start_dimse_listeners(platform, tls) if dimse_role else {}
    try:
        hl7 = _start_hl7_listener(platform) if dimse_role else None
    except ListenError:
        for server in dimse.values():
            server.shutdown()
        raise
    try:
        http = open_http(app, settings.http_host, settings.http_port,
                         tls.server_context() if tls.serving else None) if app is not None else None
    except OSError as exc:
        for server in dimse.values():
            server.shutdown()
        if hl7 is not None:
            hl7.stop()
        raise ListenError(
            f"cannot listen for HTTP on {settings.http_host}:{settings.http_port}: {exc.strerror or exc}"
        ) from None
    marker = settings.running_marker
    _write_marker(marker)
    loops = _start_loops(platform) if web else None
    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %s received, shutting down", signum)
        stop.set()
        if http is not None:
            http.stop()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    dicom = "  ".join(f"{label} {settings.ae_title} on port {server.server_address[1]}"
                      for label, server in dimse.items()) or (
        "no DICOM listener (ONCOPACS_DICOM_PORT=0, TLS off)" if dimse_role else "no DICOM listener (role web)")
    if http is not None:
        log.info("HTTP on %s://%s:%s  %s", http.scheme, settings.http_host, http.port, dicom)
    else:
        log.info("no HTTP listener (role dimse)  %s", dicom)
    if ready is not None:
        ready.set()
    try:
        if http is not None:
            http.run()
        else:
            while not stop.wait(1.0):  # the listeners run on their own threads; a signal ends the wait
                pass
    except (OSError, ValueError):
        if not stop.is_set():
            raise
    finally:
        if loops is not None:
            loops.stop()
        for server in dimse.values():
            server.shutdown()
        if hl7 is not None:
            hl7.stop()
        platform.index.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        marker.unlink(missing_ok=True)
        log.info("stopped cleanly")


def _create_app(platform: Platform) -> Flask:
    from oncopacs.web.app import create_app  # the web layer is only needed when serving HTTP

    return create_app(platform)


@dataclass(frozen=True, slots=True)
class _Loops:
    """A web node's background loops: the job worker (None with a queue engine), reports, outbox, rules."""

    worker: Worker | None
    reports: Reports
    outbox: DeliveryLoop
    rules: RuleLoop

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.reports.stop()
        self.outbox.stop()
        self.rules.stop()


def _start_loops(platform: Platform) -> _Loops:
    """Start the job worker (unless a queue engine runs the jobs), the report, outbox and rule loops."""
    worker = _start_job_worker(platform)  # None: `oncopacs worker` processes run the jobs
    platform.reports.start()  # delivers final reports to the EHR, with retries
    outbox_delivery = open_delivery(platform.outbox, platform.archive, platform.settings)  # forwards queued instances
    outbox_delivery.start()
    # fires series and study rules once stable (and wakes the embedded worker, so a queued analysis starts at once)
    rule_loop = RuleLoop(platform.rules, on_fired=worker.wake if worker is not None else _nothing)
    rule_loop.start()
    return _Loops(worker, platform.reports, outbox_delivery, rule_loop)


def _nothing() -> None:
    """No embedded worker to wake: `oncopacs worker` processes hear of each job from the queue engine."""


def _start_job_worker(platform: Platform) -> Worker | None:
    """The embedded job worker, started; None with a queue engine, whose workers retry what a crash left running."""
    queue = platform.jobs.queue
    if not isinstance(queue, DispatchingJobQueue):
        worker = platform.jobs.new_worker()
        worker.start()  # jobs a crash left running are failed first
        return worker
    interrupted = queue.fail_interrupted(INTERRUPTED_MESSAGE, leased=False)  # those an embedded worker ran only
    if interrupted:
        log.warning("%d job(s) run by an earlier embedded worker were interrupted and are marked failed", interrupted)
    log.info("jobs go to `oncopacs worker` processes through %s", queue.where)
    return None


def _start_dimse_listeners(platform: Platform, tls: TlsFiles) -> dict[str, ThreadedAssociationServer]:
    """Plain DIMSE on ``dicom_port`` unless it is 0, DICOM-TLS on ``dicom_tls_port`` when TLS is on; by label."""
    settings = platform.settings
    wanted: dict[str, tuple[int, ssl.SSLContext | None]] = {}
    if settings.dicom_port:
        wanted["DICOM"] = (settings.dicom_port, None)
    if tls.serving:
        wanted["DICOM-TLS"] = (settings.dicom_tls_port, listener_context(tls))
    started: dict[str, ThreadedAssociationServer] = {}
    for label, (port, context) in wanted.items():
        try:
            started[label] = start_dimse(settings, platform.archive, platform.audit, ssl_context=context)
        except OSError as exc:
            for server in started.values():
                server.shutdown()
            raise ListenError(
                f"cannot listen for {label} on {settings.dicom_host}:{port}: {exc.strerror or exc}"
            ) from None
    return started


def _start_hl7_listener(platform: Platform) -> Hl7Listener | None:
    """The HL7 v2 listener (MLLP, over TLS when TLS is on) when ``hl7_listen_port`` is set; ListenError if taken."""
    settings = platform.settings
    if settings.hl7_listen_port <= 0:
        return None
    dispatcher = build_dispatcher(settings, platform.index, platform.audit, platform.ehr_handlers)
    listener = Hl7Listener(settings, dispatcher)
    listener.start()
    return listener


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
