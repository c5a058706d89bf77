"""The DIMSE listener: one pynetdicom AE serving many associations at once, each on its own thread."""

from __future__ import annotations

import logging
import ssl
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
    MPPS,
    QUERY_SYNTAXES,
    STORAGE_COMMITMENT,
    STORAGE_SOP_CLASSES,
    VERIFICATION,
)
from oncopacs.dimse.event_reports import on_connection_open as install_report_gate
from oncopacs.dimse.handlers import DimseHandlers
from oncopacs.dimse.malformed import install_message_guards, tolerate_late_local_primitives
from oncopacs.dimse.perimeter import Perimeter, PerimeterLimits, tune_accept_loop
from oncopacs.dimse.responses import install_encoder
from oncopacs.dimse.tls import complete_handshake
from oncopacs.dimse.transport import tune_association
from oncopacs.settings import Settings

log = logging.getLogger(__name__)


def build_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class, Q/R (Patient and Study Root), Modality Worklist, MPPS,
    Storage Commitment and Verification.

    The calling-AE allow-list (titles and hosts) is enforced by ``DimseHandlers.on_requested``; the
    association limits and timeouts are set by :class:`~oncopacs.dimse.perimeter.Perimeter`.
    """
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.require_called_aet = False
    ae.dimse_timeout = 60
    ae.add_supported_context(VERIFICATION, QUERY_SYNTAXES)
    for sop_class in STORAGE_SOP_CLASSES:
        # scu_role/scp_role: accept the SCP role a C-GET requestor asks for on storage contexts.
        ae.add_supported_context(sop_class, ACCEPTED_SYNTAXES, scu_role=True, scp_role=True)
    for sop_class in [*FIND_SOP_CLASSES, *GET_SOP_CLASSES, *MOVE_SOP_CLASSES]:
        ae.add_supported_context(sop_class, QUERY_SYNTAXES)
    ae.add_supported_context(MPPS, QUERY_SYNTAXES)
    # scu_role/scp_role: accept a requestor that proposes role selection (it receives our N-EVENT-REPORT).
    ae.add_supported_context(STORAGE_COMMITMENT, QUERY_SYNTAXES, scu_role=True, scp_role=True)
    return ae


def start_dimse(settings: Settings, archive: Archive, audit: AuditTrail | None = None, *,
                ssl_context: ssl.SSLContext | None = None) -> ThreadedAssociationServer:
    """Start listening on ``settings.dicom_host:dicom_port``; returns the running server.

    ``audit`` receives the DIMSE audit records (default: the trail in ``archive``'s index).
    With ``ssl_context`` (:func:`oncopacs.dimse.tls.listener_context`) it is the DICOM-TLS
    listener on ``dicom_tls_port`` instead; a port of 0 is one the system picks.
    """
    # pynetdicom formats every request and response identifier for a debug log line even when
    # that level is off (~5 % of a large C-FIND); OncoPACS logs its own summary instead.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    install_encoder()
    tolerate_late_local_primitives()
    handlers = DimseHandlers(archive, settings, audit)
    perimeter = Perimeter(PerimeterLimits.from_settings(settings), on_refused=handlers.on_limit_refused)
    ae = build_ae(settings)
    perimeter.configure(ae)

    def on_requested(event) -> None:  # EVT_REQUESTED takes one handler: the allow-list, then the slot limits
        handlers.on_requested(event)
        perimeter.admit(event)

    bound: list[EventHandlerType] = [
        (evt.EVT_CONN_OPEN, tune_association),
        (evt.EVT_CONN_OPEN, handlers.on_connection_open),
        (evt.EVT_CONN_OPEN, perimeter.on_connection_open),
        (evt.EVT_CONN_OPEN, install_report_gate),  # Storage Commitment reports wait for served requests
        (evt.EVT_CONN_OPEN, install_message_guards),  # last: it wraps what the others installed
        (evt.EVT_REQUESTED, on_requested),
        (evt.EVT_RELEASED, handlers.on_association_end),
        (evt.EVT_ABORTED, handlers.on_association_end),
        (evt.EVT_CONN_CLOSE, handlers.on_association_end),
        (evt.EVT_CONN_CLOSE, perimeter.on_connection_close),
        (evt.EVT_C_ECHO, handlers.on_echo),
        (evt.EVT_C_STORE, handlers.on_store),
        (evt.EVT_C_FIND, handlers.on_find),
        (evt.EVT_C_GET, handlers.on_get),
        (evt.EVT_C_MOVE, handlers.on_move),
        (evt.EVT_N_CREATE, handlers.mpps.on_n_create),
        (evt.EVT_N_SET, handlers.mpps.on_n_set),
        (evt.EVT_N_ACTION, handlers.on_n_action),
        (evt.EVT_REJECTED, _log_rejected),
    ]
    if ssl_context is not None:  # the handshake first, in the connection's thread (oncopacs.dimse.tls)
        bound.insert(0, (evt.EVT_CONN_OPEN, complete_handshake, [settings.dicom_artim_seconds]))
    port = settings.dicom_port if ssl_context is None else settings.dicom_tls_port
    server = cast(  # with block=False, start_server returns the running server
        ThreadedAssociationServer,
        ae.start_server((settings.dicom_host, port), block=False, evt_handlers=bound, ssl_context=ssl_context),
    )
    server.contexts = _ContextTemplates(server.contexts)
    tune_accept_loop(server)
    log.info("DICOM%s %s listening on %s:%s", "-TLS" if ssl_context else "", settings.ae_title, settings.dicom_host,
             server.server_address[1])
    return server


class _ContextTemplates(list):
    """The supported contexts, shared instead of copied.

    pynetdicom deep-copies the acceptor's contexts for every connection; with every storage
    SOP class that took ~0.8 s of CPU (UIDs are re-validated on copy), and even a shallow copy
    of each context was ~3 ms, most of what a connection costs (a flood's too). pynetdicom only
    reads an acceptor's supported contexts, when it negotiates (``negotiate_as_acceptor`` builds
    new result contexts), so every connection gets a new list of the same contexts.
    """

    def __deepcopy__(self, memo: dict) -> list:
        return list(self)


def _log_rejected(event) -> None:
    requestor = event.assoc.requestor
    log.warning("association from %s (%s) rejected", requestor.ae_title, requestor.address)
