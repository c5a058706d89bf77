"""The 0004 migration on both back-ends, ``oncopacs report …`` and ``/api/reports``."""

from __future__ import annotations

import json

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import inspect, select

from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.cli import main
from oncopacs.index.db import _alembic_config, open_index
from oncopacs.platform import open_archive, open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.reporting.conftest import ingest_demo


def test_migration_0004_upgrades_and_downgrades(database_url) -> None:
    index = open_index(database_url)
    try:
        with index.read_connection() as connection:
            tables = set(inspect(connection).get_table_names())
        assert {"reports", "report_deliveries"} <= tables
        with index.write_engine.begin() as connection:
            config = _alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        with index.read_connection() as connection:
            assert "reports" not in set(inspect(connection).get_table_names())
        index.migrate()
        with index.read_connection() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("report_deliveries")}
        assert {"status", "attempts", "next_attempt_at", "last_error", "ack_code", "message_control_id"} <= columns
    finally:
        index.dispose()


def _run(data_dir, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env=env)


def test_cli_make_approve_send(tmp_path, mllp) -> None:
    data_dir = tmp_path / "data"
    archive = open_archive(Settings(data_dir=data_dir))
    demo = ingest_demo(archive)
    users = UserStore(archive.index)
    users.add_user("onc", Role.ONCOLOGIST, "correct horse battery")
    users.add_user("ref", Role.REFERRER, "correct horse battery")
    archive.close()
    study = str(demo.rt_ion_plan.StudyInstanceUID)
    out = tmp_path / "plan.pdf"
    made = _run(data_dir, "report", "make", "plan", "--study", study, "--out", str(out), "--json")
    assert made.exit_code == 0, made.output
    document = json.loads(made.stdout)
    assert document["status"] == "draft" and document["pdf"] == str(out) and out.read_bytes().startswith(b"%PDF")
    report_id = str(document["report_id"])
    unknown = _run(data_dir, "report", "make", "plan", "--study", "1.2.3", "--json")
    assert unknown.exit_code == 2 and "1.2.3" in unknown.output
    draft_send = _run(data_dir, "report", "send", report_id)
    assert draft_send.exit_code == 2 and "draft" in draft_send.output
    assert _run(data_dir, "report", "approve", report_id, "--user", "nobody").exit_code == 2
    refused = _run(data_dir, "report", "approve", report_id, "--user", "ref")
    assert refused.exit_code == 2 and "may not approve" in refused.output
    approved = _run(data_dir, "report", "approve", report_id, "--user", "onc", "--json")
    assert approved.exit_code == 0 and json.loads(approved.stdout)["status"] == "final"
    nowhere = _run(data_dir, "report", "send", report_id, "--json")
    assert nowhere.exit_code == 2 and "no destination" in nowhere.output
    sent = _run(data_dir, "report", "send", report_id, "--json",
                env={"ONCOPACS_HL7_ENDPOINT": f"127.0.0.1:{mllp.port}"})
    assert sent.exit_code == 0, sent.output
    deliveries = json.loads(sent.stdout)["deliveries"]
    assert [(d["destination"], d["status"], d["ack_code"]) for d in deliveries] == [("hl7", "acknowledged", "AA")]
    assert len(mllp.received) == 1


@pytest.fixture
def api(sqlite_settings):
    app = create_app(open_platform(sqlite_settings.with_overrides(secret_key="test")))
    archive = app.extensions["oncopacs.archive"]
    demo = ingest_demo(archive)
    store = app.extensions["oncopacs.users"]
    headers = {}
    for role in (Role.PHYSICIST, Role.REFERRER, Role.TUMOUR_BOARD):
        store.add_user(f"u-{role.value}", role, "correct horse battery")
        headers[role] = {"Authorization": f"Bearer {store.create_token(f'u-{role.value}')}"}
    yield app, demo, headers
    archive.close()


def test_api_reports(api) -> None:
    app, demo, headers = api
    client = app.test_client()
    study = str(demo.rt_ion_plan.StudyInstanceUID)
    assert client.post("/api/reports", json={"type": "plan", "study_uid": study},
                       headers=headers[Role.REFERRER]).status_code == 403
    bad = client.post("/api/reports", json={"type": "nope", "study_uid": study}, headers=headers[Role.PHYSICIST])
    assert bad.status_code == 400 and "plan" in bad.get_json()["detail"]
    missing = client.post("/api/reports", json={"type": "plan", "study_uid": "1.2.3"}, headers=headers[Role.PHYSICIST])
    assert missing.status_code == 404
    made = client.post("/api/reports", json={"type": "plan", "study_uid": study}, headers=headers[Role.PHYSICIST])
    assert made.status_code == 201
    report_id = made.get_json()["report_id"]
    assert client.post(f"/api/reports/{report_id}/send", headers=headers[Role.PHYSICIST]).status_code == 409
    assert client.post(f"/api/reports/{report_id}/approve", headers=headers[Role.TUMOUR_BOARD]).status_code == 403
    approved = client.post(f"/api/reports/{report_id}/approve", headers=headers[Role.PHYSICIST])
    assert approved.status_code == 200 and approved.get_json()["status"] == "final"
    assert approved.get_json()["approved_by"] == "u-physicist"
    again = client.post(f"/api/reports/{report_id}/approve", headers=headers[Role.PHYSICIST])
    assert again.status_code == 409
    pdf = client.get(f"/api/reports/{report_id}/pdf", headers=headers[Role.REFERRER])
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    listing = client.get(f"/api/reports?study_uid={study}", headers=headers[Role.REFERRER]).get_json()
    assert [r["report_id"] for r in listing["reports"]] == [report_id]
    one = client.get(f"/api/reports/{report_id}", headers=headers[Role.REFERRER]).get_json()
    assert one["deliveries"] == [] and one["sop_instance_uid"]
    assert client.get("/api/reports/999", headers=headers[Role.REFERRER]).status_code == 404
    with app.extensions["oncopacs.archive"].index.reading() as session:
        actions = [a for a, in session.execute(select(AuditRecord.action)
                                                .where(AuditRecord.detail.like("%/api/reports%")))]
    assert {"report_view", "export", "store"} <= set(actions)
