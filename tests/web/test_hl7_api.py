"""``/api/hl7/messages``: the HL7 message log for administrators, filtered and paged; raw text only one by one."""

from __future__ import annotations

from flask import Flask

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.ehr.dispatch import Hl7Dispatcher
from oncopacs.ehr.message_log import MessageLog
from oncopacs.ehr.messages import HandlerOutcome

PATIENT_ID = "PAT-5521"


def message(control_id: str, kind: str = "ADT^A08") -> str:
    return (f"MSH|^~\\&|EPIC|HOSP|ONCOPACS|ONCO|20250101120000||{kind}|{control_id}|P|2.5\r"
            f"PID|1||{PATIENT_ID}^^^HOSP^MR||Doe^Jane||19700101|F\r")


def fill(app: Flask) -> None:
    platform = app.extensions["oncopacs.platform"]
    handlers = {"ADT^A08": lambda m, pk: HandlerOutcome.applied(),
                "ADT^A31": lambda m, pk: HandlerOutcome.not_applied("no such patient")}
    dispatcher = Hl7Dispatcher(handlers, MessageLog(platform.index), platform.audit)
    for control_id, kind in [("M1", "ADT^A08"), ("M2", "ADT^A31"), ("M3", "ORU^R01"), ("M4", "ADT^A08")]:
        dispatcher.handle(message(control_id, kind), "10.0.0.9:4000")
    dispatcher.handle("not HL7 at all", "10.0.0.9:4001")


def test_the_log_lists_filters_and_pages_without_message_text(sqlite_web_app: Flask, sqlite_headers_for):
    fill(sqlite_web_app)
    client, admin = sqlite_web_app.test_client(), sqlite_headers_for(Role.ADMIN)
    body = client.get("/api/hl7/messages", headers=admin).get_json()
    assert body["total"] == 5
    assert [m["control_id"] for m in body["messages"]] == ["", "M4", "M3", "M2", "M1"]  # newest first
    assert all("raw" not in m for m in body["messages"]) and PATIENT_ID not in str(body)
    outcomes = {m["control_id"]: (m["outcome"], m["reason"]) for m in body["messages"]}
    assert outcomes["M2"] == ("AE", "no such patient")
    assert outcomes["M3"] == ("AR", "message type ORU^R01 is not accepted here")
    assert outcomes[""][0] == "AR"

    def ids(query: str) -> list[str]:
        return [m["control_id"] for m in client.get(f"/api/hl7/messages?{query}", headers=admin).get_json()["messages"]]

    assert ids("outcome=aa") == ["M4", "M1"]
    assert ids("type=ADT") == ["M4", "M2", "M1"]
    assert ids("type=ADT%5EA31") == ["M2"]
    assert ids("limit=2&offset=1") == ["M4", "M3"]
    for bad in ("outcome=XX", "type=AD%25", "limit=0"):
        response = client.get(f"/api/hl7/messages?{bad}", headers=admin)
        assert response.status_code == 400 and response.get_json()["error"]


def test_one_message_with_its_text_is_an_audited_read(sqlite_web_app: Flask, sqlite_headers_for):
    fill(sqlite_web_app)
    client, admin = sqlite_web_app.test_client(), sqlite_headers_for(Role.ADMIN)
    listed = client.get("/api/hl7/messages?outcome=AA&limit=1", headers=admin).get_json()["messages"][0]
    body = client.get(f"/api/hl7/messages/{listed['id']}", headers=admin).get_json()
    assert body["raw"].startswith("MSH|^~\\&|EPIC") and body["control_id"] == "M4"
    audit = sqlite_web_app.extensions["oncopacs.audit"]
    [read] = audit.query(AuditFilter(action=AuditAction.READ)).entries
    assert read.patient_ids == (PATIENT_ID,) and read.actor == "test-admin"
    assert client.get("/api/hl7/messages/999999", headers=admin).status_code == 404


def test_only_administrators_read_the_log(sqlite_web_app: Flask, sqlite_headers_for):
    client = sqlite_web_app.test_client()
    for role in (Role.PHYSICIST, Role.ONCOLOGIST, Role.REFERRER):
        assert client.get("/api/hl7/messages", headers=sqlite_headers_for(role)).status_code == 403
    assert client.get("/api/hl7/messages").status_code == 401
