"""What a malformed DIMSE message gets: a failure status when the request can be answered, an
A-ABORT when it cannot, and never an exception that ends a reactor thread and drops the association.

pynetdicom decodes a message's command set in the DUL thread: a command set it cannot decode
(garbage, a missing Command Field, a wrong value length) raised there, the thread ended and the
peer saw its connection close with no answer. A request lacking a required element was ignored,
so the peer waited for a response that never came. And an exception while a request was served
(a non-ASCII UID in the response) ended the association thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue

from pynetdicom import fsm
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_P_ABORT

from oncopacs.uids import is_valid_uid

log = logging.getLogger(__name__)

#: PS3.7 C.5 / PS3.4 B.2.3: the request cannot be understood.
CANNOT_UNDERSTAND = 0xC000
#: Events of primitives from the local user (PS3.8 9.2): A-ASSOCIATE response accept and reject, P-DATA,
#: A-RELEASE request and response, A-ABORT.
_LOCAL_PRIMITIVE_EVENTS = ("Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15")
_DROP_LOCAL_PRIMITIVE = "OncoPACS-drop-local"
#: A-ABORT PDU, source DICOM UL service-provider, reason not specified (PS3.8 9.3.8).
A_ABORT_BY_THE_PROVIDER = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"
#: The elements a C-STORE request cannot be answered without, as pynetdicom names them.
_STORE_REQUEST_KEYWORDS = ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority", "DataSet")


def install_message_guards(event) -> None:  # EVT_CONN_OPEN; bind after every other handler that wraps the DIMSE
    """Guard an accepted association's state machine and message decoding (DUL thread) and its
    request serving (the association's thread)."""
    if event.assoc.is_acceptor:
        guard_state_machine(event.assoc)
        guard_decoding(event.assoc)
        guard_serving(event.assoc)


def guard_state_machine(assoc) -> None:  # a pynetdicom Association
    """Abort the association, as the DUL does for an invalid PDU, when an action of its state machine fails.

    A PDU that decodes but cannot become a primitive (an A-ABORT with an unknown source, say)
    raised in the action that passes it up, and the DUL thread ended without a word to the peer.
    Here the peer gets an A-ABORT, the association an A-P-ABORT indication, and the connection
    is closed through the state machine (Sta13, then Sta1) so that EVT_CONN_CLOSE still fires.
    """
    dul = assoc.dul
    state_machine = dul.state_machine
    do_action = state_machine.do_action

    def guarded(event: str) -> None:
        try:
            do_action(event)
        except Exception as exc:  # noqa: BLE001 - the DUL thread must live to end the association
            log.warning("association from %s at %s aborted: the upper layer could not act on %s in %s (%s)",
                        _calling_ae(assoc), assoc.requestor.address, event, state_machine.current_state,
                        type(exc).__name__)
            _abort_from_the_dul(dul)

    state_machine.do_action = guarded


def _abort_from_the_dul(dul) -> None:  # a pynetdicom DULServiceProvider
    state = dul.state_machine.current_state
    if state == "Sta1":  # the connection is closed already
        return
    sock = dul.socket
    connected = sock is not None and sock.socket is not None
    if state != "Sta13":
        if connected:
            sock.send(A_ABORT_BY_THE_PROVIDER)  # on failure it queues Evt17 itself
        indication = A_P_ABORT()
        indication.provider_reason = 0x00  # reason not specified
        dul.to_user_queue.put(indication)
    dul.state_machine.current_state = "Sta13"  # awaiting the close, which comes next
    dul.artim_timer.start()
    if connected:
        sock.close()  # queues Evt17: AR-5 closes, fires EVT_CONN_CLOSE and goes to Sta1
    else:
        dul.event_queue.put("Evt17")


def guard_decoding(assoc) -> None:  # a pynetdicom Association
    """Abort the association (A-ABORT, as for an invalid PDU) when a received message cannot be decoded."""
    dimse = assoc.dimse
    receive_primitive = dimse.receive_primitive

    def receive(primitive) -> None:  # P_DATA
        try:
            receive_primitive(primitive)
        except Exception as exc:  # noqa: BLE001 - the DUL thread must live to send the A-ABORT
            dimse.message = None
            log.warning("association from %s at %s aborted: a DIMSE message could not be decoded (%s)",
                        _calling_ae(assoc), assoc.requestor.address, type(exc).__name__)
            assoc.dul.event_queue.put("Evt19")  # invalid PDU: A-ABORT, A-P-ABORT indication (PS3.8 AA-8)

    dimse.receive_primitive = receive


def guard_serving(assoc) -> None:  # a pynetdicom Association
    """Answer every request, and restart the idle timer once it is answered.

    A C-STORE request lacking a required element gets 0xC000 naming the element; another
    request that cannot be answered, or an exception while serving one, aborts the
    association. A long C-MOVE or C-FIND is not idle time: the idle timer restarts when the
    request has been answered.
    """
    serve_request = assoc._serve_request

    def serve(message, context_id: int) -> None:  # a DIMSE primitive
        try:
            if _is_request(message) and not message.is_valid_request:
                _answer_incomplete(assoc, message, context_id)
            else:
                serve_request(message, context_id)
        except Exception as exc:  # the association gets an A-ABORT, never a silent drop
            log.error("association from %s at %s aborted: serving a %s request failed (%s)", _calling_ae(assoc),
                      assoc.requestor.address, type(message).__name__, type(exc).__name__)
            log.debug("serving the request failed", exc_info=True)
            assoc.abort()
        finally:
            assoc.dul._idle_timer.restart()

    assoc._serve_request = serve


def tolerate_late_local_primitives() -> None:
    """Let the DUL drop what the local user sends after the association has already ended (idempotent).

    A peer that sends a PDU before it has the A-ASSOCIATE-AC (or garbage while a request is being
    served) makes the DUL abort the association (Sta13, awaiting the close) while the acceptor is
    still deciding: its A-ASSOCIATE-AC, a response or an A-ABORT then reaches a state machine with
    no transition for it, and pynetdicom's DUL thread ended with InvalidEventError. PS3.8 defines
    no transition for local requests in Sta1 or Sta13 (there is no association left to send them
    on); they are now dropped there.
    """
    if _DROP_LOCAL_PRIMITIVE in fsm.ACTIONS:
        return
    fsm.ACTIONS[_DROP_LOCAL_PRIMITIVE] = ("Drop a local primitive: the association has ended",
                                          _drop_local_primitive, "unchanged")
    for state in ("Sta1", "Sta13"):
        for event in _LOCAL_PRIMITIVE_EVENTS:
            fsm.TRANSITION_TABLE.setdefault((event, state), _DROP_LOCAL_PRIMITIVE)


def _drop_local_primitive(dul) -> str:  # a pynetdicom DULServiceProvider
    with contextlib.suppress(queue.Empty):
        dul.to_provider_queue.get(False)
    return dul.state_machine.current_state


def store_command_problem(request) -> str | None:  # a pynetdicom C_STORE primitive
    """What makes a C-STORE request's command unusable, named without its values; None if nothing."""
    for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
        value = getattr(request, keyword, None)
        if value is None or not is_valid_uid(str(value)):
            return f"{keyword} is not a valid UID"
    return None


def _is_request(message) -> bool:
    return message.MessageIDBeingRespondedTo is None and getattr(message, "Status", None) is None


def _answer_incomplete(assoc, message, context_id: int) -> None:
    """0xC000 for a C-STORE request lacking a required element; an A-ABORT for any other incomplete request."""
    missing = [keyword for keyword in _STORE_REQUEST_KEYWORDS if getattr(message, keyword, None) is None]
    if not isinstance(message, C_STORE) or message.MessageID is None:
        log.warning("association from %s at %s aborted: a %s request lacks required elements",
                    _calling_ae(assoc), assoc.requestor.address, type(message).__name__)
        assoc.abort()
        return
    log.warning("C-STORE from %s refused: the request lacks %s", _calling_ae(assoc), ", ".join(missing))
    response = C_STORE()
    response.MessageIDBeingRespondedTo = message.MessageID
    response.Status = CANNOT_UNDERSTAND
    comment = f"the C-STORE request lacks {', '.join(missing)}"[:64]
    response.ErrorComment = comment  # type: ignore[assignment]  # pynetdicom's stub says None
    if message.AffectedSOPClassUID is not None and is_valid_uid(str(message.AffectedSOPClassUID)):
        response.AffectedSOPClassUID = message.AffectedSOPClassUID
    assoc.dimse.send_msg(response, context_id)


def _calling_ae(assoc) -> str:
    return str(assoc.requestor.ae_title).strip()
