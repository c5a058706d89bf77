"""One received HL7 v2 message, read once: its header (MSH), type and patient (PID), and what a handler answers.

Every handler of :mod:`oncopacs.ehr` takes an :class:`Hl7Message` and returns a :class:`HandlerOutcome`; the
listener turns that into the ACK (MSA-1 AA, AE or AR with MSA-3 / ERR naming the problem). Field access goes through
python-hl7 (``hl7.Message.extract_field``) with HL7's 1-based segment, field, repetition and component numbers, and
values are unescaped (``\\F\\`` -> ``|``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import hl7

from oncopacs.errors import OncopacsError


class AckCode(str, enum.Enum):
    """MSA-1: how a message was taken (original acknowledgment mode)."""

    ACCEPT = "AA"  # understood and applied
    ERROR = "AE"  # understood, not applied (the reason says why)
    REJECT = "AR"  # refused: not for us, not allowed, not readable


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What a handler did with a message: the ACK code and a sentence (no patient data) for AE/AR and the log."""

    ack: AckCode
    text: str = ""
    message_pk: int | None = None  # set by the listener once the message is logged

    @classmethod
    def applied(cls, text: str = "") -> HandlerOutcome:
        return cls(AckCode.ACCEPT, text)

    @classmethod
    def not_applied(cls, text: str) -> HandlerOutcome:
        return cls(AckCode.ERROR, text)

    @classmethod
    def rejected(cls, text: str) -> HandlerOutcome:
        return cls(AckCode.REJECT, text)


class Hl7FormatError(OncopacsError):
    """The text is not an HL7 v2 message we can read (no MSH, bad encoding characters, no message type)."""


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """A patient as a PID segment names them, in DICOM's forms (PN with ``^``, DA, CS)."""

    patient_id: str
    issuer: str  # PID-3.4 assigning authority (namespace ID); DICOM's IssuerOfPatientID
    name: str  # PID-5 as a DICOM PN: family^given^middle^prefix^suffix
    birth_date: str  # PID-7, YYYYMMDD
    sex: str  # PID-8: M, F, O or empty


@dataclass(frozen=True, slots=True)
class Hl7Message:
    """A parsed message and its header fields."""

    parsed: hl7.Message
    raw: str
    message_type: str  # MSH-9.1, e.g. "ADT"
    trigger: str  # MSH-9.2, e.g. "A08"
    control_id: str  # MSH-10
    sending_application: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    receiving_application: str  # MSH-5.1
    receiving_facility: str  # MSH-6.1
    version: str  # MSH-12

    @property
    def kind(self) -> str:
        """``TYPE^TRIGGER``, the key handlers are registered under (e.g. ``ADT^A08``)."""
        return f"{self.message_type}^{self.trigger}"

    def has(self, segment: str) -> bool:
        return any(str(s[0]) == segment for s in self.parsed)

    def segments(self, name: str) -> list[hl7.Segment]:
        """Every segment called ``name``, in order."""
        return [s for s in self.parsed if str(s[0]) == name]

    def field(self, segment: str, field: int, component: int = 1, repetition: int = 1, *, occurrence: int = 1) -> str:
        """One component of a field, unescaped; empty when absent. Numbers are HL7's (1-based)."""
        try:
            value = self.parsed.extract_field(segment, occurrence, field, repetition, component)
        except (IndexError, KeyError, ValueError):
            return ""
        return self.parsed.unescape(str(value)).strip() if value else ""

    def patient(self, segment: str = "PID", occurrence: int = 1) -> PatientIdentity:
        """The patient of a PID (or MRG, whose fields 1 and 7 are the prior ID and name) segment.

        The identifier is the first PID-3 repetition (or the one whose type, PID-3.5, is ``MR`` when there are
        several). Hl7FormatError when there is no such segment or no identifier.
        """
        if segment == "MRG":
            id_field, name_field, birth, sex = 1, 7, 0, 0
        else:
            id_field, name_field, birth, sex = 3, 5, 7, 8
        found = self.segments(segment)
        if len(found) < occurrence:
            raise Hl7FormatError(f"{self.kind} has no {segment} segment")
        repetitions = _repetitions(found[occurrence - 1], id_field)
        chosen = next((r for r in range(1, repetitions + 1)
                       if self.field(segment, id_field, 5, r, occurrence=occurrence).upper() == "MR"), 1)
        patient_id = self.field(segment, id_field, 1, chosen, occurrence=occurrence)
        if not patient_id:
            raise Hl7FormatError(f"{self.kind}: {segment}-{id_field} names no patient identifier")
        name = "^".join(self.field(segment, name_field, c, occurrence=occurrence) for c in range(1, 6)).rstrip("^")
        return PatientIdentity(
            patient_id=patient_id[:64],
            issuer=self.field(segment, id_field, 4, chosen, occurrence=occurrence)[:64],
            name=name[:324],
            birth_date=self.field(segment, birth, occurrence=occurrence)[:8] if birth else "",
            sex=self.field(segment, sex, occurrence=occurrence)[:1].upper() if sex else "",
        )


def _repetitions(segment: hl7.Segment, field: int) -> int:
    try:
        value = segment[field]
    except IndexError:
        return 0
    if isinstance(value, hl7.Field) and value and all(isinstance(item, hl7.Repetition) for item in value):
        return len(value)  # python-hl7 holds repetitions as a Field of Repetitions
    return 1


def parse_message(text: str) -> Hl7Message:
    """Read one message (segments separated by CR; LF and CRLF accepted); Hl7FormatError naming the problem."""
    normalised = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    if not normalised.startswith("MSH"):
        raise Hl7FormatError("the message does not start with an MSH segment")
    if len(normalised) < 8 or normalised[3] in "\r" or len(set(normalised[3:8])) != 5:
        raise Hl7FormatError("MSH-1 and MSH-2 (the field separator and encoding characters) are not valid")
    try:
        parsed = hl7.parse(normalised)
    except (hl7.ParseException, IndexError, ValueError) as exc:
        raise Hl7FormatError(f"the message cannot be parsed as HL7 v2 ({type(exc).__name__})") from None
    message = Hl7Message(parsed, normalised, "", "", "", "", "", "", "", "")
    kind, trigger = message.field("MSH", 9, 1).upper(), message.field("MSH", 9, 2).upper()
    if not kind:
        raise Hl7FormatError("MSH-9 (the message type) is empty")
    return Hl7Message(parsed, normalised, kind, trigger, message.field("MSH", 10)[:64],
                      message.field("MSH", 3)[:180], message.field("MSH", 4)[:180], message.field("MSH", 5),
                      message.field("MSH", 6), message.field("MSH", 12))


def hl7_date(value: str) -> str:
    """An HL7 DTM's date as DICOM DA (YYYYMMDD), or empty when it has none."""
    digits = value.strip()[:8]
    return digits if len(digits) == 8 and digits.isdigit() else ""


def hl7_time(value: str) -> str:
    """An HL7 DTM's time of day as DICOM TM (HHMMSS), or empty."""
    digits = "".join(c for c in value.strip()[8:14] if c.isdigit())
    return digits if len(digits) in (2, 4, 6) else ""


__all__ = ["AckCode", "HandlerOutcome", "Hl7FormatError", "Hl7Message", "PatientIdentity", "hl7_date", "hl7_time",
           "parse_message"]
