"""``/api/outbox``: status per destination, dead rows, an administrator's retry (audited), permissions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.orchestration.outbox import OutboxState
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import RemoteAE, Settings
from oncopacs.web.app import create_app

STOW_URL = "http://127.0.0.1:9/dicom-web"


@pytest.fixture
def outbox_app(sqlite_settings: Settings) -> Iterator[Flask]:
    settings = sqlite_settings.with_overrides(remote_aes=(RemoteAE("DEST", "127.0.0.1", 11199),))
    with open_platform(settings) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


def platform_of(app: Flask) -> Platform:
    return app.extensions["oncopacs.platform"]


def headers(app: Flask, role: Role) -> dict[str, str]:
    users = platform_of(app).users
    users.add_user(f"test-{role.value}", role, "correct horse battery")
    return {"Authorization": f"Bearer {users.create_token(f'test-{role.value}')}"}


@pytest.fixture
def client(outbox_app: Flask) -> FlaskClient:
    return outbox_app.test_client()


def dead_row(app: Flask) -> int:
    """Queue three rows to DEST and one to a DICOMweb server; fail one DEST row for good."""
    outbox = platform_of(app).outbox
    outbox.enqueue(["1.2.3.1", "1.2.3.2", "1.2.3.3"], "DEST", "forward-ct")
    outbox.enqueue(["1.2.3.1"], STOW_URL)
    claimed = next(item for item in outbox.claim_due() if item.sop_instance_uid == "1.2.3.2")
    outbox.mark_failed(claimed, "C-STORE status 0xA700", permanent=True)
    return claimed.id


def test_status_per_destination_and_the_dead_rows(outbox_app: Flask, client: FlaskClient) -> None:
    item_id = dead_row(outbox_app)
    auth = headers(outbox_app, Role.PHYSICIST)
    answer = client.get("/api/outbox", headers=auth)
    assert answer.status_code == 200
    by_name = {d["destination"]: d for d in answer.json["destinations"]}
    assert by_name["DEST"]["kind"] == "dimse" and by_name[STOW_URL]["kind"] == "stow"
    assert by_name["DEST"]["counts"]["dead"] == 1 and by_name["DEST"]["last_error"] == "C-STORE status 0xA700"
    assert "items" not in answer.json

    dead = client.get("/api/outbox?state=dead&limit=10", headers=auth).json
    assert (dead["total"], dead["limit"], dead["offset"]) == (1, 10, 0)
    [item] = dead["items"]
    assert (item["id"], item["state"], item["rule"], item["attempts"]) == (item_id, "dead", "forward-ct", 1)
    assert client.get("/api/outbox?state=delivering&destination=DEST", headers=auth).json["total"] == 2

    refused = client.get("/api/outbox?state=lost", headers=auth)
    assert refused.status_code == 400 and "unknown outbox state" in refused.json["detail"]
    assert client.get("/api/outbox?state=dead&limit=0", headers=auth).status_code == 400


def test_an_administrator_queues_a_dead_row_again_and_it_is_audited(outbox_app: Flask, client: FlaskClient) -> None:
    item_id = dead_row(outbox_app)
    admin = headers(outbox_app, Role.ADMIN)
    answer = client.post(f"/api/outbox/{item_id}/retry", headers=admin)
    assert answer.status_code == 200
    assert (answer.json["state"], answer.json["attempts"], answer.json["last_error"]) == ("pending", 0, "")
    assert platform_of(outbox_app).outbox.get(item_id).state is OutboxState.PENDING  # type: ignore[union-attr]
    [entry] = platform_of(outbox_app).audit.query(AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries
    assert entry.actor == "test-admin" and f"outbox item {item_id} to DEST queued again" in entry.detail

    again = client.post(f"/api/outbox/{item_id}/retry", headers=admin)
    assert again.status_code == 409 and "only dead or delivered" in again.json["detail"]
    missing = client.post("/api/outbox/424242/retry", headers=admin)
    assert missing.status_code == 404 and "does not exist" in missing.json["detail"]


def test_permissions(outbox_app: Flask, client: FlaskClient) -> None:
    item_id = dead_row(outbox_app)
    assert client.get("/api/outbox").status_code == 401
    assert client.post(f"/api/outbox/{item_id}/retry").status_code == 401
    referrer = headers(outbox_app, Role.REFERRER)
    assert client.get("/api/outbox", headers=referrer).status_code == 403
    physicist = headers(outbox_app, Role.PHYSICIST)
    assert client.post(f"/api/outbox/{item_id}/retry", headers=physicist).status_code == 403
    assert platform_of(outbox_app).outbox.get(item_id).state is OutboxState.DEAD  # type: ignore[union-attr]


def test_the_routes_are_in_the_openapi_document(outbox_app: Flask, client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json", headers=headers(outbox_app, Role.PHYSICIST)).json["paths"]
    assert paths["/api/outbox"]["get"]["x-required-permission"] == "archive.read"
    assert paths["/api/outbox/{item_id}/retry"]["post"]["x-required-permission"] == "peers.manage"
