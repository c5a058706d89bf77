"""From one received HL7 v2 message to its ACK: read it, check the sender, log it, hand it on, audit it.

Original acknowledgment mode (HL7 v2.5 2.9.2): MSA-1 ``AR`` for a message refused before any handler saw it (not
readable, a sender not on the allow-list, a type nobody handles), ``AE`` when a handler understood it but did not
apply it (its reason in MSA-3 and ERR-8; an unexpected exception in a handler is an AE too) and ``AA`` when applied.
Every message is logged in ``hl7_messages`` (before its handler runs: the handler gets the row's id) and audited as an
ATNA Patient Record (ADT) or Order Record (orders, appointments) event. Nothing here logs message content.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.ehr.message_log import MessageLog
from oncopacs.ehr.messages import AckCode, HandlerOutcome, Hl7FormatError, Hl7Message, parse_message
from oncopacs.errors import OncopacsError

log = logging.getLogger(__name__)

Handler = Callable[[Hl7Message, int | None], HandlerOutcome]

#: Message types audited as an Order Record (110109); any other as a Patient Record (110110).
ORDER_TYPES = frozenset({"ORM", "OMI", "OMG", "OML", "SIU"})
DEFAULT_APPLICATION = "ONCOPACS"

# HL7 table 0357 (message error condition codes) for ERR-3.
_UNREADABLE = ("100", "Segment sequence error")
_UNSUPPORTED_TYPE = ("200", "Unsupported message type")
_UNSUPPORTED_EVENT = ("201", "Unsupported event code")
_APPLICATION_ERROR = ("207", "Application internal error")
_OUTCOMES = {AckCode.ACCEPT: Outcome.SUCCESS, AckCode.ERROR: Outcome.MINOR_FAILURE,
             AckCode.REJECT: Outcome.SERIOUS_FAILURE}


@dataclass(frozen=True, slots=True)
class Answer:
    """How one message was taken: the ACK code, its reason, and the row of the message log (None if not logged)."""

    ack: AckCode
    reason: str
    message_pk: int | None


class Hl7Dispatcher:
    """Turns received message text into ACK text; thread-safe (each call uses its own database sessions)."""

    def __init__(self, handlers: Mapping[str, Handler], log: MessageLog, audit: AuditTrail | None,
                 allowed_senders: Collection[str] = (), *, application: str = DEFAULT_APPLICATION):
        self.handlers = dict(handlers)
        self.log = log
        self.audit = audit
        self.allowed_senders = frozenset(s.strip().upper() for s in allowed_senders if s.strip())
        self.application = application

    def handle(self, raw_text: str, peer: str, size: int | None = None) -> str:
        """The ACK (text, segments separated by CR) for one message received from ``peer`` (``host:port``)."""
        size = len(raw_text.encode("utf-8", "replace")) if size is None else size
        try:
            if "\x00" in raw_text:
                raise Hl7FormatError("the message holds NUL characters (binary data is not HL7 v2 text)")
            message = parse_message(raw_text)
        except Hl7FormatError as exc:
            reason = str(exc)
            self._log_unreadable(peer, size, raw_text, reason)
            self._audit(None, peer, AckCode.REJECT, reason)
            return build_ack(None, AckCode.REJECT, reason, _UNREADABLE, application=self.application)
        answer = self._answer(message, peer, size)
        self._audit(message, peer, answer.ack, answer.reason)
        error = None
        if answer.ack is not AckCode.ACCEPT:
            error = _error_code(answer, message, self.handlers)
        return build_ack(message, answer.ack, answer.reason, error, application=self.application)

    def refuse(self, peer: str, size: int, reason: str) -> str:
        """Log, audit and answer (AR) a message the listener could not read whole (e.g. over the size limit)."""
        self._log_unreadable(peer, size, "", reason)
        self._audit(None, peer, AckCode.REJECT, reason)
        return build_ack(None, AckCode.REJECT, reason, _UNREADABLE, application=self.application)

    def _answer(self, message: Hl7Message, peer: str, size: int) -> Answer:
        sender = _sender(message)
        refusal = ""
        if not self.is_allowed(message):
            refusal = f"sending application {sender} is not allowed"
        elif message.kind not in self.handlers:
            refusal = f"message type {message.kind} is not accepted here"
        try:
            message_pk = self.log.record(
                peer=peer, sending_application=message.sending_application,
                sending_facility=message.sending_facility, message_type=message.kind, control_id=message.control_id,
                raw=message.raw, size=size, outcome=AckCode.REJECT.value if refusal else "", reason=refusal)
        except SQLAlchemyError as exc:
            log.error("HL7 %s %s from %s not logged (%s): answered AE", message.kind, message.control_id, peer,
                      type(exc).__name__)
            return Answer(AckCode.ERROR, "the message could not be recorded; send it again later", None)
        if refusal:
            log.warning("HL7 %s %s from %s (%s) refused: %s", message.kind, message.control_id, peer, sender, refusal)
            return Answer(AckCode.REJECT, refusal, message_pk)
        outcome = self._run_handler(message, message_pk)
        try:
            self.log.finish(message_pk, outcome.ack.value, outcome.text)
        except SQLAlchemyError as exc:
            log.error("HL7 message log row %d not updated (%s)", message_pk, type(exc).__name__)
        log.info("HL7 %s %s from %s (%s): %s", message.kind, message.control_id, peer, sender, outcome.ack.value)
        return Answer(outcome.ack, outcome.text, message_pk)

    def _run_handler(self, message: Hl7Message, message_pk: int) -> HandlerOutcome:
        try:
            outcome = self.handlers[message.kind](message, message_pk)
        except Exception as exc:  # noqa: BLE001 - a failing handler is an AE for its message, never a dropped link
            log.error("HL7 %s %s (log row %d): handler failed with %s", message.kind, message.control_id,
                      message_pk, type(exc).__name__)
            return HandlerOutcome.not_applied(f"could not be applied: {type(exc).__name__}")
        if outcome.ack is not AckCode.ACCEPT and not outcome.text:
            return HandlerOutcome(outcome.ack, "not applied", outcome.message_pk)
        return outcome

    def is_allowed(self, message: Hl7Message) -> bool:
        """Whether MSH-3 (or MSH-3^MSH-4) is on the allow-list; everything is when the list is empty."""
        if not self.allowed_senders:
            return True
        application = message.sending_application.upper()
        return (application in self.allowed_senders
                or f"{application}^{message.sending_facility.upper()}" in self.allowed_senders)

    def _log_unreadable(self, peer: str, size: int, raw: str, reason: str) -> None:
        try:
            self.log.record(peer=peer, raw=raw, size=size, outcome=AckCode.REJECT.value, reason=reason)
        except SQLAlchemyError as exc:
            log.error("unreadable HL7 message from %s not logged (%s)", peer, type(exc).__name__)
        log.warning("HL7 message from %s refused: %s", peer, reason)

    def _audit(self, message: Hl7Message | None, peer: str, ack: AckCode, reason: str) -> None:
        if self.audit is None:
            return
        patient_ids: tuple[str, ...] = ()
        if message is not None and message.has("PID"):
            with contextlib.suppress(Hl7FormatError):
                patient_ids = (message.patient().patient_id,)
        kind = message.kind if message is not None else "unreadable message"
        detail = f"HL7 {kind} control ID {message.control_id if message else '-'}: {ack.value}"
        event = AuditEvent(
            action=AuditAction.ORDER_RECORD if message is not None and message.message_type in ORDER_TYPES
            else AuditAction.PATIENT_RECORD,
            outcome=_OUTCOMES[ack],
            actor=_sender(message)[:128] if message is not None else "-",
            actor_kind=ActorKind.APPLICATION,
            source=peer.rpartition(":")[0] or peer,
            patient_ids=patient_ids,
            detail=(f"{detail} ({reason})" if reason else detail)[:2000],
        )
        try:
            self.audit.record(event)
        except OncopacsError as exc:
            log.error("HL7 %s: the audit record could not be kept (%s)", kind, type(exc).__name__)


def _sender(message: Hl7Message) -> str:
    application = message.sending_application or "(none)"
    return f"{application}^{message.sending_facility}" if message.sending_facility else application


def _error_code(answer: Answer, message: Hl7Message, handlers: Mapping[str, Handler]) -> tuple[str, str]:
    if answer.ack is AckCode.REJECT and message.kind not in handlers:
        known_types = {kind.partition("^")[0] for kind in handlers}
        return _UNSUPPORTED_EVENT if message.message_type in known_types else _UNSUPPORTED_TYPE
    return _APPLICATION_ERROR


# --- the ACK ---------------------------------------------------------------------------------------------------

_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def escape(text: str, limit: int = 80) -> str:
    """``text`` as one HL7 field value under the standard encoding characters, at most ``limit`` characters
    before escaping; control characters (CR, LF, MLLP's block characters) become spaces."""
    cleaned = "".join(c if c.isprintable() else " " for c in text[:limit])
    return "".join(_ESCAPES.get(c, c) for c in cleaned)


def build_ack(message: Hl7Message | None, code: AckCode, reason: str = "", error: tuple[str, str] | None = None,
              *, application: str = DEFAULT_APPLICATION, now: datetime | None = None) -> str:
    """The ACK of ``message`` (None: it could not be read, and the header takes defaults): MSH with sender and
    receiver swapped, a new control ID and the same version; MSA-1 ``code``, MSA-2 the message's control ID, MSA-3
    ``reason``; with ``error`` (an HL7 table 0357 code and text), an ERR segment (ERR-3, ERR-4 ``E``, ERR-8)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    if message is not None:
        ours = (message.receiving_application or application, message.receiving_facility)
        theirs = (message.sending_application, message.sending_facility)
        trigger, control_id = message.trigger, message.control_id
        version = message.version or "2.5"
        processing = message.field("MSH", 11) or "P"
    else:
        ours, theirs, trigger, control_id, version, processing = (application, ""), ("", ""), "", "", "2.5", "P"
    msh = "|".join([
        "MSH", "^~\\&", escape(ours[0], 180), escape(ours[1], 180), escape(theirs[0], 180), escape(theirs[1], 180),
        stamp, "", f"ACK^{escape(trigger, 3)}^ACK" if trigger else "ACK", uuid.uuid4().hex[:20],
        escape(processing, 3), escape(version, 20),
    ])
    segments = [msh, "|".join(["MSA", code.value, escape(control_id, 64), escape(reason, 80)]).rstrip("|")]
    if error is not None:
        code_value, code_text = error
        segments.append(f"ERR|||{code_value}^{code_text}^HL70357|E||||{escape(reason, 250)}")
    return "\r".join(segments) + "\r"


__all__ = ["Answer", "Handler", "Hl7Dispatcher", "build_ack", "escape"]
