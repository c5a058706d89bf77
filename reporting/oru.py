"""HL7 v2.5.1 ORU^R01 carrying a report PDF (OBX type ED, base64), and reading the ACK.

Segments: MSH, PID, ORC, OBR, OBX (conventions §3). OBX-5 is ``application ^ type ^ subtype ^
Base64 ^ data``; type and subtype are per destination (``AP^PDF`` or ``application^pdf``).
OBR-25 and OBX-11 are ``F`` for a final report and ``C`` for a correction (an amendment).
Text fields are escaped with python-hl7; the ACK is parsed with python-hl7.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from datetime import datetime

import hl7

from oncopacs.errors import ConfigError, RemoteNodeError
from reporting.subject import ReportSubject

HL7_VERSION = "2.5.1"
_ESCAPER = hl7.parse("MSH|^~\\&|X")


@dataclass(frozen=True, slots=True)
class Hl7Destination:
    """An MLLP receiver and how it wants the message addressed and the PDF typed."""

    host: str
    port: int
    sending_application: str = "ONCOPACS"
    sending_facility: str = "ONCOPACS"
    receiving_application: str = "EHR"
    receiving_facility: str = "HOSP"
    ed_type: str = "AP"  # or "application"
    ed_subtype: str = "PDF"  # or "pdf"
    timeout_s: float = 30.0
    tls: bool = False  # MLLP over TLS: the receiver's certificate and host name are verified
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)  # None: the system's CAs

    @classmethod
    def parse(cls, endpoint: str, **options) -> Hl7Destination:
        """``host:port`` or ``mllp://host:port``, or ``tls://host:port`` for MLLP over TLS (IPv6 hosts in brackets)."""
        scheme, _, address = endpoint.strip().rpartition("://")
        if scheme.lower() not in {"", "mllp", "tls"}:
            raise ConfigError(f"HL7 endpoint {endpoint!r} is not host:port, mllp://host:port or tls://host:port")
        host, _, port = address.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            number = 0
        if not host or not 0 < number < 65536:
            raise ConfigError(f"HL7 endpoint {endpoint!r} is not host:port, mllp://host:port or tls://host:port")
        return cls(host.strip("[]"), number, **{"tls": scheme.lower() == "tls", **options})

    @property
    def endpoint(self) -> str:
        """How deliveries name this receiver: ``host:port``, or ``tls://host:port``."""
        return f"tls://{self.host}:{self.port}" if self.tls else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OruReport:
    """What the ORU carries: the report's identity, its subject, timing and the PDF."""

    message_control_id: str
    report_id: int
    version: int
    corrected: bool
    code: str
    title: str
    service_section: str
    subject: ReportSubject
    observed_at: str  # HL7 DTM of the study (YYYYMMDD[HHMMSS])
    approved_at: datetime
    pdf: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """An MSA: code (AA/AE/AR), the control ID it acknowledges, and the receiver's text."""

    code: str
    control_id: str
    text: str


def _escape(value: str) -> str:
    return _ESCAPER.escape(value) if value else ""


def _name(dicom_name: str) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` as HL7 XPN ``Family^Given^Middle^Suffix^Prefix``."""
    parts = (dicom_name.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (_escape(p.strip()) for p in parts)
    return f"{family}^{given}^{middle}^{suffix}^{prefix}".rstrip("^")


def build_oru(report: OruReport, destination: Hl7Destination) -> str:
    """The ORU^R01 message (segments separated by CR) for ``destination``."""
    subject = report.subject
    stamp = report.approved_at.strftime("%Y%m%d%H%M%S")
    status = "C" if report.corrected else "F"
    filler = f"RPT{report.report_id}V{report.version}^{_escape(destination.sending_application)}"
    data = base64.b64encode(report.pdf).decode("ascii")  # one line: no MIME wrapping
    issuer = _escape(subject.issuer_of_patient_id or destination.sending_facility)
    segments = [
        "|".join(["MSH", "^~\\&", _escape(destination.sending_application), _escape(destination.sending_facility),
                  _escape(destination.receiving_application), _escape(destination.receiving_facility), stamp, "",
                  "ORU^R01^ORU_R01", report.message_control_id, "P", HL7_VERSION]),
        "|".join(["PID", "1", "", f"{_escape(subject.patient_id)}^^^{issuer}^MR", "", _name(subject.patient_name), "",
                  subject.patient_birth_date, _escape(subject.patient_sex)]),
        f"ORC|RE||{filler}",
        "|".join(["OBR", "1", "", filler, f"{_escape(report.code)}^{_escape(report.title)}^L", "", "",
                  report.observed_at, *[""] * 14, stamp, "", _escape(report.service_section), status]),
        "|".join(["OBX", "1", "ED", f"PDFRPT^{_escape(report.title)}^L", "",
                  (f"{_escape(destination.sending_application)}^{_escape(destination.ed_type)}^"
                  f"{_escape(destination.ed_subtype)}^Base64^{data}"), "", "", "", "", "", status, "", "", stamp]),
    ]
    return "\r".join(segments)


def read_ack(message: hl7.Message) -> Ack:
    """The MSA of an ACK; RemoteNodeError when the reply is not an acknowledgement."""
    try:
        msa = message.segment("MSA")
    except KeyError:
        raise RemoteNodeError("the HL7 reply has no MSA segment") from None
    code = str(msa(1)).strip() if len(msa) > 1 else ""
    if code not in {"AA", "AE", "AR", "CA", "CE", "CR"}:
        raise RemoteNodeError(f"the HL7 reply has an unknown acknowledgement code {code[:8]!r}")
    control_id = str(msa(2)).strip() if len(msa) > 2 else ""
    text = str(msa(3)).strip() if len(msa) > 3 else ""
    try:
        err = message.segment("ERR")
        detail = str(err(8) if len(err) > 8 else err(3) if len(err) > 3 else "").strip()
        text = "; ".join(t for t in (text, detail) if t)
    except KeyError:
        pass
    return Ack(code.replace("C", "A", 1) if code.startswith("C") else code, control_id, text)
