"""DICOM Audit Messages (PS3.15 A.5): structure, codes and value sets of the A.5.1 schema."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from oncopacs.audit.atna import (
    EVENT_KINDS,
    audit_message_xml,
    build_audit_message,
    iter_audit_messages_xml,
)
from oncopacs.audit.events import ActorKind, AuditAction, Outcome
from oncopacs.audit.trail import AuditEntry

EXPECTED_EVENT = {
    AuditAction.QUERY: ("110112", "E"),
    AuditAction.RETRIEVE: ("110104", "R"),
    AuditAction.STORE: ("110104", "C"),
    AuditAction.READ: ("110110", "R"),
    AuditAction.REPORT_VIEW: ("110110", "R"),
    AuditAction.EXPORT: ("110106", "R"),
    AuditAction.LOGIN: ("110114", "E"),
    AuditAction.LOGIN_FAILED: ("110114", "E"),
    AuditAction.LOGOUT: ("110114", "E"),
    AuditAction.USER_CHANGE: ("110113", "E"),
    AuditAction.CONFIG_CHANGE: ("110113", "E"),
    AuditAction.ASSOCIATION_REFUSED: ("110113", "E"),
    AuditAction.PATIENT_RECORD: ("110110", "U"),
    AuditAction.ORDER_RECORD: ("110109", "U"),
    AuditAction.AUDIT_LOG_USED: ("110101", "R"),
}


def entry(action: AuditAction, *, outcome: Outcome = Outcome.SUCCESS, kind: ActorKind = ActorKind.USER,
          source: str = "192.168.1.20", patients=("PAT-1",), studies=("1.2.826.0.1.1", "1.2.826.0.1.2")) -> AuditEntry:
    return AuditEntry(id=7, recorded_at="2025-03-04T05:06:07.123456+00:00", action=action.value, outcome=int(outcome),
                      actor="STORESCU" if kind is ActorKind.AE else "alice", actor_kind=kind.value, source=source,
                      patient_ids=patients, study_uids=studies, detail="C-STORE: 3 stored <&> 0 failed")


def check_coded(element: ET.Element) -> None:
    """CodedValueType: csd-code, codeSystemName and originalText are required."""
    for name in ("csd-code", "codeSystemName", "originalText"):
        assert element.get(name), f"{element.tag} lacks {name}"


def check_schema(message: ET.Element) -> None:
    """The A.5.1 rules this implementation relies on (RELAX NG compact schema of PS3.15)."""
    assert message.tag == "AuditMessage"
    tags = [child.tag for child in message]
    assert tags[0] == "EventIdentification"
    participants = [i for i, t in enumerate(tags) if t == "ActiveParticipant"]
    source_at = tags.index("AuditSourceIdentification")
    assert participants and participants == list(range(1, source_at)), "ActiveParticipant+ follow the event"
    assert all(t == "ParticipantObjectIdentification" for t in tags[source_at + 1:])

    event = message[0]
    assert next(c.tag for c in event) == "EventID"
    assert all(c.tag in ("EventID", "EventTypeCode", "EventOutcomeDescription") for c in event)
    for coded in event:
        if coded.tag != "EventOutcomeDescription":
            check_coded(coded)
    assert event.get("EventActionCode") in {"C", "R", "U", "D", "E"}
    assert event.get("EventOutcomeIndicator") in {"0", "4", "8", "12"}
    datetime.fromisoformat(event.get("EventDateTime"))

    for participant in (message[i] for i in participants):
        assert participant.get("UserID")
        assert participant.get("UserIsRequestor") in {"true", "false"}
        assert participant.get("NetworkAccessPointTypeCode", "1") in {"1", "2", "3", "4", "5"}
        for role in participant.findall("RoleIDCode"):
            check_coded(role)
    assert [p.get("UserIsRequestor") for p in (message[i] for i in participants)].count("true") == 1

    source = message[source_at]
    assert source.get("AuditSourceID")
    for code in source:
        assert code.tag == "AuditSourceTypeCode" and code.get("csd-code") in set("123456789")

    for obj in message[source_at + 1:]:
        assert obj.get("ParticipantObjectID")
        assert obj.get("ParticipantObjectTypeCode") in {"1", "2", "3", "4"}
        assert 1 <= int(obj.get("ParticipantObjectTypeCodeRole")) <= 26
        assert obj[0].tag == "ParticipantObjectIDTypeCode"
        check_coded(obj[0])


@pytest.mark.parametrize("action", list(AuditAction))
def test_every_action_gives_a_valid_message(action: AuditAction):
    message = build_audit_message(entry(action), "ONCOPACS", host_name="pacs.example")
    check_schema(message)
    event_id, action_code = EXPECTED_EVENT[action]
    event = message.find("EventIdentification")
    assert event.find("EventID").get("csd-code") == event_id
    assert event.find("EventID").get("codeSystemName") == "DCM"
    assert event.get("EventActionCode") == action_code
    assert event.get("EventDateTime") == "2025-03-04T05:06:07.123456+00:00"
    assert set(EVENT_KINDS) == set(AuditAction)


def test_patient_and_study_objects():
    message = build_audit_message(entry(AuditAction.RETRIEVE), "ONCOPACS", host_name="pacs.example")
    objects = message.findall("ParticipantObjectIdentification")
    patient, *studies = objects
    assert patient.get("ParticipantObjectID") == "PAT-1"
    assert (patient.get("ParticipantObjectTypeCode"), patient.get("ParticipantObjectTypeCodeRole")) == ("1", "1")
    assert patient.find("ParticipantObjectIDTypeCode").get("csd-code") == "2"
    assert [s.get("ParticipantObjectID") for s in studies] == ["1.2.826.0.1.1", "1.2.826.0.1.2"]
    for study in studies:
        assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == ("2", "3")
        code = study.find("ParticipantObjectIDTypeCode")
        assert (code.get("csd-code"), code.get("codeSystemName")) == ("110180", "DCM")


def test_participants_name_the_requestor_and_its_address():
    message = build_audit_message(entry(AuditAction.STORE, kind=ActorKind.AE), "ONCOPACS", host_name="pacs.example")
    requestor, archive = message.findall("ActiveParticipant")
    assert requestor.get("UserID") == "STORESCU" and requestor.get("AlternativeUserID") == "AETITLES=STORESCU"
    assert requestor.get("UserIsRequestor") == "true"
    assert (requestor.get("NetworkAccessPointID"), requestor.get("NetworkAccessPointTypeCode")) == ("192.168.1.20", "2")
    assert requestor.find("RoleIDCode").get("csd-code") == "110153"  # the storing AE is the source
    assert archive.get("UserID") == "ONCOPACS" and archive.get("UserIsRequestor") == "false"
    assert archive.find("RoleIDCode").get("csd-code") == "110152"
    assert message.find("AuditSourceIdentification").get("AuditSourceID") == "ONCOPACS"
    named = build_audit_message(entry(AuditAction.LOGIN, source="ws-12.example"), "ONCOPACS")
    assert named.find("ActiveParticipant").get("NetworkAccessPointTypeCode") == "1"


def test_failures_carry_outcome_and_description():
    refused = build_audit_message(entry(AuditAction.ASSOCIATION_REFUSED, outcome=Outcome.SERIOUS_FAILURE,
                                        patients=(), studies=()), "ONCOPACS")
    event = refused.find("EventIdentification")
    assert event.get("EventOutcomeIndicator") == "8"
    assert event.find("EventTypeCode").get("csd-code") == "110126"
    assert event.find("EventOutcomeDescription").text.startswith("C-STORE")
    assert refused.findall("ParticipantObjectIdentification") == []
    failed_login = build_audit_message(entry(AuditAction.LOGIN_FAILED, outcome=Outcome.MINOR_FAILURE), "ONCOPACS")
    assert failed_login.find("EventIdentification").get("EventOutcomeIndicator") == "4"


def test_serialized_documents_parse():
    document = audit_message_xml(entry(AuditAction.QUERY), "ONCOPACS")
    assert document.startswith(b"<?xml")
    check_schema(ET.fromstring(document))
    export = b"".join(iter_audit_messages_xml([entry(AuditAction.QUERY), entry(AuditAction.STORE)], "ONCOPACS"))
    root = ET.fromstring(export)
    assert root.tag == "AuditMessages" and len(root) == 2
    for message in root:
        check_schema(message)
    empty = ET.fromstring(b"".join(iter_audit_messages_xml([], "ONCOPACS")))
    assert len(empty) == 0
