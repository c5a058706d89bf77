"""/api/audit: list with filters, verify, export as DICOM Audit Messages; administrators only."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from flask import Flask
from sqlalchemy import text

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome


def seed(app: Flask) -> None:
    app.extensions["oncopacs.audit"].record_many([
        AuditEvent(
            AuditAction.RETRIEVE, Outcome.SUCCESS, "VIEWER", ActorKind.AE, "10.0.0.9", ("PAT-A",), ("1.2.3.1",), "C-GET"
        ),
        AuditEvent(
            AuditAction.QUERY, Outcome.SUCCESS, "carol", ActorKind.USER, "10.0.0.8", ("PAT-B", "PAT-A"), (), "QIDO"
        ),
        AuditEvent(
            AuditAction.LOGIN_FAILED, Outcome.MINOR_FAILURE, "mallory", ActorKind.USER, "10.6.6.6", (), (),
            "POST /login",
        ),
    ])


def test_list_filters_and_pages(web_app: Flask, client, headers_for):
    admin = headers_for("admin")
    seed(web_app)
    everything = client.get("/api/audit?limit=500", headers=admin)
    assert everything.status_code == 200
    body = everything.get_json()
    assert body["total"] == len(body["records"]) >= 3
    by_patient = client.get("/api/audit?patient_id=PAT-A", headers=admin).get_json()
    assert [r["actor"] for r in by_patient["records"]] == ["VIEWER", "carol"]
    assert by_patient["records"][0]["patient_ids"] == ["PAT-A"] and by_patient["records"][0]["source"] == "10.0.0.9"
    failed = client.get("/api/audit?action=login_failed&actor=mallory", headers=admin).get_json()
    assert failed["total"] == 1 and failed["records"][0]["outcome"] == 4
    assert client.get("/api/audit?since=2000-01-01&until=2000-01-02", headers=admin).get_json()["total"] == 0
    paged = client.get("/api/audit?patient_id=PAT-A&limit=1&offset=1", headers=admin).get_json()
    assert paged["total"] == 2 and [r["actor"] for r in paged["records"]] == ["carol"]


def test_bad_filters_are_400(client, headers_for):
    admin = headers_for("admin")
    for query in ("since=yesterday", "action=teleport", "limit=0", "until=13/13/2020"):
        reply = client.get(f"/api/audit?{query}", headers=admin)
        assert reply.status_code == 400, query
        assert reply.get_json()["detail"]
    assert client.get("/api/audit/export?format=pdf", headers=admin).status_code == 400


def test_verify_reports_a_tampered_record(web_app: Flask, client, headers_for):
    admin = headers_for("admin")
    seed(web_app)
    intact = client.get("/api/audit/verify", headers=admin).get_json()
    assert intact["ok"] is True and intact["checked"] >= 3
    target = client.get("/api/audit?actor=carol", headers=admin).get_json()["records"][0]["id"]
    with web_app.extensions["oncopacs.archive"].index.write_connection() as connection:
        connection.execute(text("UPDATE audit_records SET actor = 'nobody' WHERE id = :id"), {"id": target})
    broken = client.get("/api/audit/verify", headers=admin).get_json()
    assert broken["ok"] is False and broken["broken_id"] == target and broken["reason"] == "altered"


def test_export_atna_is_recorded_as_export(web_app: Flask, client, headers_for):
    admin = headers_for("admin")
    seed(web_app)
    reply = client.get("/api/audit/export?format=atna&patient_id=PAT-A", headers=admin)
    assert reply.status_code == 200 and reply.mimetype == "application/xml"
    assert "attachment" in reply.headers["Content-Disposition"]
    root = ET.fromstring(reply.data)
    assert root.tag == "AuditMessages" and len(root) == 2
    assert [m.find("EventIdentification/EventID").get("csd-code") for m in root] == ["110104", "110112"]
    exports = client.get("/api/audit?action=export", headers=admin).get_json()["records"]
    assert len(exports) == 1 and exports[0]["actor"] == "test-admin"
    assert "/api/audit/export" in exports[0]["detail"]
    as_json = client.get("/api/audit/export?format=json&actor=VIEWER", headers=admin)
    assert as_json.mimetype == "application/json"
    assert [r["actor"] for r in json.loads(as_json.data)] == ["VIEWER"]


def test_only_administrators_read_the_audit_trail(client, headers_for):
    for role in ("physicist", "oncologist", "tumour_board", "referrer"):
        for path in ("/api/audit", "/api/audit/verify", "/api/audit/export"):
            assert client.get(path, headers=headers_for(role)).status_code == 403, (role, path)
    assert client.get("/api/audit").status_code == 401


def test_reading_and_verifying_the_trail_are_themselves_audited(web_app: Flask, client, headers_for):
    """ATNA 110101 Audit Log Used: who looked at the trail, with what question."""
    admin = headers_for("admin")
    seed(web_app)
    assert client.get("/api/audit?patient_id=PAT-A", headers=admin).status_code == 200
    assert client.get("/api/audit/verify", headers=admin).get_json()["ok"] is True
    used = client.get("/api/audit?action=audit_log_used", headers=admin).get_json()["records"]
    assert [r["detail"] for r in used] == ["GET /api/audit?patient_id=PAT-A", "GET /api/audit/verify"]
    assert {r["actor"] for r in used} == {"test-admin"} and all(r["patient_ids"] == [] for r in used)
    atna = ET.fromstring(client.get("/api/audit/export?format=atna&action=audit_log_used", headers=admin).data)
    assert {m.find("EventIdentification/EventID").get("csd-code") for m in atna} == {"110101"}
