"""Sending an N-EVENT-REPORT request on an association whose reactor also serves the peer's requests.

pynetdicom's ``send_n_event_report`` pauses the association's reactor, but on an acceptor the
reactor counts as paused while it serves a request (``_serve_request`` sets the flag), so a
report sent from another thread could go out before the response being served, its P-DATA
interleaved with it; it waits for ever for a reactor that has ended (the peer released in the
meantime), and the reactor can take the report's response off the queue. Here, with a
:class:`ReportGate` installed on the association (:func:`install_report_gate`, at EVT_CONN_OPEN):

* a report waits until no request is being served (the gate's lock is held while one is) and
  the reactor is paused at its checkpoint, at most ``timeout_s``;
* while it waits for its response the reactor takes no message, and requests that arrive in
  the meantime are put back, in order, for the reactor to serve afterwards;
* every wait is bounded, and a release requested by the peer, an abort or the end of the
  association ends it at once: the caller gets None and can report another way.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from io import BytesIO
from typing import Any

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE

log = logging.getLogger(__name__)

_GATE = "_oncopacs_report_gate"
#: How long the reactor must be seen paused, twice, before it counts as stopped at its checkpoint (s).
_PAUSE_CONFIRM_S = 0.002
_POLL_S = 0.05


class ReportGate:
    """Serialises reports with the requests an association serves (one per association)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held while a request is served, or a report sent
        self.sending = False  # while True the reactor takes no message off the queue
        self._message_ids = itertools.count(1)

    def next_message_id(self) -> int:
        """A Message ID for the next request this side sends (1..65535, then again from 1)."""
        return (next(self._message_ids) - 1) % 0xFFFF + 1


def install_report_gate(assoc) -> ReportGate:  # a pynetdicom Association
    """Give ``assoc`` its :class:`ReportGate` (idempotent); install before the association serves anything."""
    gate = getattr(assoc, _GATE, None)
    if gate is not None:
        return gate
    gate = ReportGate()
    serve_request = assoc._serve_request
    dimse = assoc.dimse
    get_msg = dimse.get_msg

    def serve(message, context_id: int) -> None:  # pynetdicom's signature
        with gate.lock:
            serve_request(message, context_id)

    def get_message(block: bool = False):  # pynetdicom's signature
        if gate.sending and not block:
            return None, None
        return get_msg(block=block)

    assoc._serve_request = serve
    dimse.get_msg = get_message
    setattr(assoc, _GATE, gate)
    return gate


def on_connection_open(event) -> None:  # EVT_CONN_OPEN; bind before install_message_guards
    """Install the report gate on every accepted association."""
    if event.assoc.is_acceptor:
        install_report_gate(event.assoc)


def send_event_report(assoc, context_id: int, class_uid: UID, instance_uid: UID, event_type: int,
                      information: Dataset, *, timeout_s: float) -> int | None:
    """Send an N-EVENT-REPORT on ``assoc``; the peer's Status, or None when it could not be sent or answered.

    ``assoc`` must have its gate (:func:`install_report_gate`). None also when the peer has asked
    to release the association, or it ended, before the response came: the report may then
    have reached the peer, and a second one on another association is harmless.
    """
    gate = getattr(assoc, _GATE, None)
    deadline = time.monotonic() + timeout_s
    if gate is None or not gate.lock.acquire(timeout=timeout_s):
        return None
    try:
        if not open_for_reports(assoc):
            return None
        checkpoint = assoc._reactor_checkpoint
        gate.sending = True
        checkpoint.clear()
        try:
            if not _reactor_stopped(assoc, deadline) or not open_for_reports(assoc):
                return None
            message_id = gate.next_message_id()
            request = _build_request(assoc, context_id, message_id, class_uid, instance_uid, event_type, information)
            assoc.dimse.send_msg(request, context_id)
            return _await_response(assoc, message_id, deadline)
        finally:
            gate.sending = False
            checkpoint.set()
    finally:
        gate.lock.release()


def open_for_reports(assoc) -> bool:
    """Whether ``assoc`` is established and its peer has neither asked to release nor aborted it."""
    if not assoc.is_established or assoc.is_released or assoc.is_aborted or not assoc.dul.is_alive():
        return False
    pending = assoc.dul.to_user_queue
    with pending.mutex:
        primitives = list(pending.queue)
    return not any(isinstance(p, A_RELEASE | A_ABORT | A_P_ABORT) for p in primitives)


def _reactor_stopped(assoc, deadline: float) -> bool:
    """Wait until the reactor is paused at its (cleared) checkpoint: seen paused twice, a moment apart."""
    while time.monotonic() < deadline:
        if not open_for_reports(assoc):
            return False
        if assoc._is_paused:
            time.sleep(_PAUSE_CONFIRM_S)
            if assoc._is_paused:
                return True
        time.sleep(0.0005)
    return False


def _build_request(assoc, context_id: int, message_id: int, class_uid: UID, instance_uid: UID, event_type: int,
                   information: Dataset) -> N_EVENT_REPORT:
    context = next(cx for cx in assoc.accepted_contexts if cx.context_id == context_id)
    syntax = context.transfer_syntax[0]
    encoded = encode(information, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError("the Event Information cannot be encoded")
    request = N_EVENT_REPORT()
    request.MessageID = message_id
    request.AffectedSOPClassUID = class_uid
    request.AffectedSOPInstanceUID = instance_uid
    request.EventTypeID = event_type
    request.EventInformation = BytesIO(encoded)
    return request


def _await_response(assoc, message_id: int, deadline: float) -> int | None:
    """The Status of the response to ``message_id``; other messages are put back for the reactor, in order."""
    messages: queue.Queue = assoc.dimse.msg_queue
    held: list[tuple[Any, Any]] = []
    try:
        while time.monotonic() < deadline and open_for_reports(assoc):
            try:
                item = messages.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            message = item[1]
            if message is None:  # pynetdicom's "the association has ended"
                held.append(item)
                return None
            if isinstance(message, N_EVENT_REPORT) and message.MessageIDBeingRespondedTo == message_id:
                status = message.Status
                return int(status) if status is not None else None
            held.append(item)
        return None
    finally:
        if held:
            with messages.mutex:
                messages.queue.extendleft(reversed(held))
                messages.not_empty.notify(len(held))
