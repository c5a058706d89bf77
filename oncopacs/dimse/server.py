"""The DIMSE listener: one pynetdicom AE serving many associations at once, each on its own thread."""

from __future__ import annotations

import copy
import logging
from typing import cast

from pynetdicom import AE, _config, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from oncopacs.archive.ingest import Archive
from oncopacs.audit.trail import AuditTrail
from oncopacs.dimse.contexts import (
    ACCEPTED_SYNTAXES,
    FIND_SOP_CLASSES,
    GET_SOP_CLASSES,
    MOVE_SOP_CLASSES,
    QUERY_SYNTAXES,
    STORAGE_SOP_CLASSES,
    VERIFICATION,
)
from oncopacs.dimse.handlers import DimseHandlers
from oncopacs.dimse.responses import install_encoder
from oncopacs.dimse.transport import tune_association
from oncopacs.settings import Settings

log = logging.getLogger(__name__)


def build_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class, Q/R (Patient and Study Root) and Verification.

    The calling-AE allow-list (titles and hosts) is enforced by ``DimseHandlers.on_requested``.
    """
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.require_called_aet = False
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.add_supported_context(VERIFICATION, QUERY_SYNTAXES)
    for sop_class in STORAGE_SOP_CLASSES:
        # scu_role/scp_role: accept the SCP role a C-GET requestor asks for on storage contexts.
        ae.add_supported_context(sop_class, ACCEPTED_SYNTAXES, scu_role=True, scp_role=True)
    for sop_class in [*FIND_SOP_CLASSES, *GET_SOP_CLASSES, *MOVE_SOP_CLASSES]:
        ae.add_supported_context(sop_class, QUERY_SYNTAXES)
    return ae


def start_dimse(settings: Settings, archive: Archive, audit: AuditTrail | None = None) -> ThreadedAssociationServer:
    """Start listening on ``settings.dicom_host:dicom_port``; returns the running server.

    ``audit`` receives the DIMSE audit records (default: the trail in ``archive``'s index).
    """
    # pynetdicom formats every request and response identifier for a debug log line even when
    # that level is off (~5 % of a large C-FIND); OncoPACS logs its own summary instead.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    install_encoder()
    handlers = DimseHandlers(archive, settings, audit)
    ae = build_ae(settings)
    bound: list[EventHandlerType] = [
        (evt.EVT_CONN_OPEN, tune_association),
        (evt.EVT_CONN_OPEN, handlers.on_connection_open),
        (evt.EVT_REQUESTED, handlers.on_requested),
        (evt.EVT_RELEASED, handlers.on_association_end),
        (evt.EVT_ABORTED, handlers.on_association_end),
        (evt.EVT_CONN_CLOSE, handlers.on_association_end),
        (evt.EVT_C_ECHO, handlers.on_echo),
        (evt.EVT_C_STORE, handlers.on_store),
        (evt.EVT_C_FIND, handlers.on_find),
        (evt.EVT_C_GET, handlers.on_get),
        (evt.EVT_C_MOVE, handlers.on_move),
        (evt.EVT_REJECTED, _log_rejected),
    ]
    server = cast(  # with block=False, start_server returns the running server
        ThreadedAssociationServer,
        ae.start_server((settings.dicom_host, settings.dicom_port), block=False, evt_handlers=bound),
    )
    server.contexts = _ContextTemplates(server.contexts)
    log.info("DICOM %s listening on %s:%s", settings.ae_title, settings.dicom_host, server.server_address[1])
    return server


class _ContextTemplates(list):
    """The supported contexts, cheap to copy.

    pynetdicom deep-copies the acceptor's contexts for every association; with every storage
    SOP class that took ~0.8 s of CPU per association (UIDs are re-validated on copy). A context
    holds only immutable UIDs and flags, so a shallow copy with its own syntax list is enough.
    """

    def __deepcopy__(self, memo: dict) -> list:
        clones = []
        for context in self:
            clone = copy.copy(context)
            clone._transfer_syntax = list(context._transfer_syntax)
            clones.append(clone)
        return clones


def _log_rejected(event) -> None:
    requestor = event.assoc.requestor
    log.warning("association from %s (%s) rejected", requestor.ae_title, requestor.address)
