"""Audit records as DICOM Audit Messages (PS3.15 A.5, the XML that IHE ATNA sends over syslog).

The element order and value sets follow the A.5.1 schema (RELAX NG compact): EventIdentification,
ActiveParticipant+, AuditSourceIdentification, ParticipantObjectIdentification*. Coded values carry
``csd-code``, ``codeSystemName`` and ``originalText``. The patient is a person object (type 1, role 1,
ID type RFC-3881 "2"); each study a system object (type 2, role 3, ID type DCM 110180).
"""

from __future__ import annotations

import ipaddress
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from oncopacs.audit.events import ActorKind, AuditAction, Outcome
from oncopacs.audit.trail import AuditEntry

DCM = "DCM"


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value (PS3.15 A.5.1 CodedValueType)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True, slots=True)
class EventKind:
    """How one audit action is reported: EventID, EventActionCode and the optional EventTypeCode."""

    event_id: Code
    action_code: str  # C, R, U, D or E
    type_code: Code | None = None


QUERY = Code("110112", DCM, "Query")
INSTANCES_TRANSFERRED = Code("110104", DCM, "DICOM Instances Transferred")
PATIENT_RECORD = Code("110110", DCM, "Patient Record")
ORDER_RECORD = Code("110109", DCM, "Order Record")
AUDIT_LOG_USED = Code("110101", DCM, "Audit Log Used")
EXPORT = Code("110106", DCM, "Export")
USER_AUTHENTICATION = Code("110114", DCM, "User Authentication")
SECURITY_ALERT = Code("110113", DCM, "Security Alert")

SOURCE_ROLE = Code("110153", DCM, "Source Role ID")
DESTINATION_ROLE = Code("110152", DCM, "Destination Role ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
STUDY_INSTANCE_UID = Code("110180", DCM, "Study Instance UID")
APPLICATION_SERVER = "4"  # AuditSourceTypeCode: application server process tier

EVENT_KINDS: dict[AuditAction, EventKind] = {
    AuditAction.QUERY: EventKind(QUERY, "E"),
    AuditAction.RETRIEVE: EventKind(INSTANCES_TRANSFERRED, "R"),
    AuditAction.STORE: EventKind(INSTANCES_TRANSFERRED, "C"),
    AuditAction.READ: EventKind(PATIENT_RECORD, "R"),
    AuditAction.REPORT_VIEW: EventKind(PATIENT_RECORD, "R"),
    AuditAction.EXPORT: EventKind(EXPORT, "R"),
    AuditAction.LOGIN: EventKind(USER_AUTHENTICATION, "E", Code("110122", DCM, "Login")),
    AuditAction.LOGIN_FAILED: EventKind(USER_AUTHENTICATION, "E", Code("110122", DCM, "Login")),
    AuditAction.LOGOUT: EventKind(USER_AUTHENTICATION, "E", Code("110123", DCM, "Logout")),
    AuditAction.USER_CHANGE: EventKind(SECURITY_ALERT, "E", Code("110137", DCM, "User Security Attributes Changed")),
    AuditAction.CONFIG_CHANGE: EventKind(SECURITY_ALERT, "E", Code("110128", DCM, "Network Configuration")),
    AuditAction.ASSOCIATION_REFUSED: EventKind(SECURITY_ALERT, "E", Code("110126", DCM, "Node Authentication")),
    AuditAction.PATIENT_RECORD: EventKind(PATIENT_RECORD, "U"),
    AuditAction.ORDER_RECORD: EventKind(ORDER_RECORD, "U"),
    AuditAction.AUDIT_LOG_USED: EventKind(AUDIT_LOG_USED, "R"),
}

# Roles of (the requestor, the archive) in a transfer; other events name no roles.
_TRANSFER_ROLES: dict[AuditAction, tuple[Code, Code]] = {
    AuditAction.STORE: (SOURCE_ROLE, DESTINATION_ROLE),
    AuditAction.RETRIEVE: (DESTINATION_ROLE, SOURCE_ROLE),
    AuditAction.EXPORT: (DESTINATION_ROLE, SOURCE_ROLE),
}


def build_audit_message(entry: AuditEntry, audit_source_id: str, *, host_name: str | None = None) -> ET.Element:
    """The ``AuditMessage`` element for one stored record, reported by ``audit_source_id`` (the AE title)."""
    action = AuditAction(entry.action)
    kind = EVENT_KINDS[action]
    message = ET.Element("AuditMessage")

    event = ET.SubElement(message, "EventIdentification", {
        "EventActionCode": kind.action_code,
        "EventDateTime": entry.recorded_at,
        "EventOutcomeIndicator": str(Outcome(entry.outcome).value),
    })
    _coded(event, "EventID", kind.event_id)
    if kind.type_code is not None:
        _coded(event, "EventTypeCode", kind.type_code)
    if entry.outcome != Outcome.SUCCESS and entry.detail:
        ET.SubElement(event, "EventOutcomeDescription").text = entry.detail

    requestor_role, archive_role = _TRANSFER_ROLES.get(action, (None, None))
    requestor = ET.SubElement(message, "ActiveParticipant", {"UserID": entry.actor or "-", "UserIsRequestor": "true"})
    if entry.actor_kind == ActorKind.AE.value:
        requestor.set("AlternativeUserID", f"AETITLES={entry.actor}")
    if entry.source:
        requestor.set("NetworkAccessPointID", entry.source)
        requestor.set("NetworkAccessPointTypeCode", _access_point_type(entry.source))
    if requestor_role is not None:
        _coded(requestor, "RoleIDCode", requestor_role)
    if archive_role is not None or action is AuditAction.QUERY:
        archive = ET.SubElement(message, "ActiveParticipant", {
            "UserID": audit_source_id,
            "AlternativeUserID": f"AETITLES={audit_source_id}",
            "UserIsRequestor": "false",
            "NetworkAccessPointID": host_name or socket.gethostname(),
            "NetworkAccessPointTypeCode": "1",
        })
        if archive_role is not None:
            _coded(archive, "RoleIDCode", archive_role)

    source = ET.SubElement(message, "AuditSourceIdentification", {"AuditSourceID": audit_source_id})
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": APPLICATION_SERVER})

    for patient_id in entry.patient_ids:
        patient = ET.SubElement(message, "ParticipantObjectIdentification", {
            "ParticipantObjectID": patient_id,
            "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1",
        })
        _coded(patient, "ParticipantObjectIDTypeCode", PATIENT_NUMBER)
    for study_uid in entry.study_uids:
        study = ET.SubElement(message, "ParticipantObjectIdentification", {
            "ParticipantObjectID": study_uid,
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3",
        })
        _coded(study, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
    return message


def audit_message_xml(entry: AuditEntry, audit_source_id: str, *, host_name: str | None = None) -> bytes:
    """One audit message as a UTF-8 XML document (what a syslog message carries)."""
    element = build_audit_message(entry, audit_source_id, host_name=host_name)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def iter_audit_messages_xml(entries: Iterable[AuditEntry], audit_source_id: str) -> Iterator[bytes]:
    """An export document, in chunks: ``<AuditMessages>`` holding one ``AuditMessage`` per record."""
    host_name = socket.gethostname()
    yield b'<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessages>\n'
    for entry in entries:
        yield ET.tostring(build_audit_message(entry, audit_source_id, host_name=host_name), encoding="utf-8") + b"\n"
    yield b"</AuditMessages>\n"


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent, tag, {"csd-code": code.value, "codeSystemName": code.scheme, "originalText": code.meaning}
    )


def _access_point_type(source: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(source)
    except ValueError:
        return "1"
    return "2"
