"""How the platform puts the EHR's side together: the handlers of every HL7 message kind it takes (ADT, orders,
appointments), the prefetch job, the arrival rule linking studies to orders, and one dispatcher over the message
log, audit and handlers for ``oncopacs serve``'s listener."""

from __future__ import annotations

from collections.abc import Mapping

from oncopacs.archive.ingest import Archive
from oncopacs.audit.trail import AuditTrail
from oncopacs.ehr.adt import build_adt_handlers
from oncopacs.ehr.dispatch import Handler, Hl7Dispatcher
from oncopacs.ehr.message_log import MessageLog
from oncopacs.ehr.orders import ArrivalLinker, build_order_handlers
from oncopacs.ehr.prefetch import build_prefetch_handlers, install_prefetch
from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.kinds import JobSystem
from oncopacs.settings import Settings


def install_ehr(settings: Settings, archive: Archive, jobs: JobSystem) -> tuple[dict[str, Handler], ArrivalLinker]:
    """The HL7 handlers by message kind and the prefetch job kind (ConfigError for bad [[prefetch]] tables); the
    arrival linker the platform runs as a built-in rule."""
    install_prefetch(archive, jobs, settings)
    handlers = {**build_adt_handlers(archive.index), **build_order_handlers(archive.index),
                **build_prefetch_handlers(jobs, settings)}
    return handlers, ArrivalLinker(archive.index)


def build_dispatcher(settings: Settings, index: IndexDatabase, audit: AuditTrail,
                     handlers: Mapping[str, Handler]) -> Hl7Dispatcher:
    """The dispatcher of ``handlers`` (by message kind, e.g. ``ADT^A08``), with the allow-list of ``settings``."""
    return Hl7Dispatcher(handlers, MessageLog(index), audit, settings.hl7_allowed_senders,
                         application=settings.ae_title)


__all__ = ["build_dispatcher", "install_ehr"]
