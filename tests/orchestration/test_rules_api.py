"""Administrators manage their rules through ``/api/rules``: added, changed and deleted, checked and audited; the
built-in rules and those of the configuration file are listed, never changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.factories import small_ct_series

CONFIGURED = ({"name": "configured", "on": "instance", "match": {"Modality": "MR"}, "forward": ["DEST"]},)
NEW_RULE = {"name": "forward-ct", "on": "instance", "match": {"Modality": "CT"}, "forward": ["DEST"]}


def _settings(settings: Settings) -> Settings:
    remote = Settings.load(env={"ONCOPACS_REMOTE_AES": "DEST@127.0.0.1:11199"}).remote_aes
    return settings.with_overrides(rules=CONFIGURED, remote_aes=remote)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    with open_platform(_settings(settings)) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


def _headers(app: Flask, role: Role) -> dict[str, str]:
    users = app.extensions["oncopacs.platform"].users
    users.add_user(f"rules-{role.value}", role, "correct horse battery")
    return {"Authorization": f"Bearer {users.create_token(f'rules-{role.value}')}"}


def _names(app: Flask, headers: dict[str, str]) -> list[tuple[str, str]]:
    reply = app.test_client().get("/api/rules", headers=headers)
    return [(rule["name"], rule["source"]) for rule in reply.json["rules"]]


def _config_changes(app: Flask) -> list[str]:
    trail = app.extensions["oncopacs.platform"].audit
    return [entry.detail for entry in trail.query(AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries]


def test_an_admin_adds_a_rule_that_then_fires(app: Flask):
    admin, client = _headers(app, Role.ADMIN), app.test_client()
    reply = client.post("/api/rules", json=NEW_RULE, headers=admin)
    assert reply.status_code == 201, reply.json
    assert reply.json["source"] == "api" and reply.json["forward"] == ["DEST"]
    assert _names(app, admin) == [("rt-analysis", "built-in"), ("pet-statistics", "built-in"),
                                  ("worklist-link", "built-in"), ("configured", "config"), ("forward-ct", "api")]
    platform = app.extensions["oncopacs.platform"]
    for ds in small_ct_series(2):
        assert platform.archive.ingest_dataset(ds, source="stow").acknowledged
    assert {item.rule for item in platform.outbox.list_items().items} == {"forward-ct"}
    assert _changes_name(app, "added rule forward-ct")


def _changes_name(app: Flask, text: str) -> bool:
    return any(detail.endswith(text) for detail in _config_changes(app))


def test_an_admin_changes_and_deletes_a_rule(app: Flask):
    admin, client = _headers(app, Role.ADMIN), app.test_client()
    assert client.post("/api/rules", json=NEW_RULE, headers=admin).status_code == 201
    changed = client.put("/api/rules/forward-ct", json={**NEW_RULE, "enabled": False}, headers=admin)
    assert changed.status_code == 200 and changed.json["enabled"] is False
    assert client.get("/api/rules/forward-ct", headers=admin).json["enabled"] is False
    assert client.delete("/api/rules/forward-ct", headers=admin).status_code == 204
    assert client.get("/api/rules/forward-ct", headers=admin).status_code == 404
    assert _changes_name(app, "changed rule forward-ct") and _changes_name(app, "deleted rule forward-ct")


def test_rules_added_here_survive_a_restart(settings: Settings):
    with open_platform(_settings(settings)) as platform:
        app = create_app(platform)
        assert app.test_client().post("/api/rules", json=NEW_RULE, headers=_headers(app, Role.ADMIN)).status_code == 201
    with open_platform(_settings(settings)) as again:
        assert [rule.name for rule in again.rules.engine.rules] == ["configured", "forward-ct"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({**NEW_RULE, "forward": ["NOWHERE"]}, 400, "NOWHERE"),
    ({**NEW_RULE, "on": "sometimes"}, 400, "on must be instance, series or study"),
    ({**NEW_RULE, "analyse": ["no-such-model"]}, 400, "no plug-in named 'no-such-model'"),
    ({**NEW_RULE, "match": {"NotAKeyword": "x"}}, 400, "NotAKeyword"),
    ({"name": "forward-ct", "on": "instance"}, 400, "does nothing"),
    ({**NEW_RULE, "name": "configured"}, 409, "configuration file"),
    ({**NEW_RULE, "name": "rt-analysis"}, 409, "built into OncoPACS"),
    ([1, 2], 400, "JSON object"),
])
def test_a_bad_rule_is_refused_with_what_is_wrong(app: Flask, body: object, status: int, words: str):
    reply = app.test_client().post("/api/rules", json=body, headers=_headers(app, Role.ADMIN))
    assert reply.status_code == status and words in reply.json["detail"], reply.json
    assert not _changes_name(app, "added rule forward-ct")


def test_a_name_taken_by_an_added_rule_is_a_conflict(app: Flask):
    admin, client = _headers(app, Role.ADMIN), app.test_client()
    assert client.post("/api/rules", json=NEW_RULE, headers=admin).status_code == 201
    assert client.post("/api/rules", json=NEW_RULE, headers=admin).status_code == 409


@pytest.mark.parametrize(("method", "path"), [("put", "/api/rules/configured"), ("delete", "/api/rules/configured"),
                                              ("delete", "/api/rules/rt-analysis")])
def test_built_in_and_configured_rules_are_not_changed_here(app: Flask, method: str, path: str):
    reply = getattr(app.test_client(), method)(path, json={**NEW_RULE, "name": path.rsplit("/", 1)[1]},
                                               headers=_headers(app, Role.ADMIN))
    assert reply.status_code == 409


def test_only_administrators_change_rules(app: Flask):
    physicist, client = _headers(app, Role.PHYSICIST), app.test_client()
    assert client.get("/api/rules", headers=physicist).status_code == 200
    assert client.post("/api/rules", json=NEW_RULE, headers=physicist).status_code == 403
    assert client.delete("/api/rules/configured", headers=physicist).status_code == 403
    assert client.put("/api/rules/x", json=NEW_RULE).status_code == 401


def test_a_stored_rule_whose_destination_left_the_configuration_is_listed_not_applied(settings: Settings):
    with open_platform(_settings(settings)) as platform:
        app = create_app(platform)
        assert app.test_client().post("/api/rules", json=NEW_RULE, headers=_headers(app, Role.ADMIN)).status_code == 201
    with open_platform(settings) as without_dest:  # DEST is gone from the remote AEs; the server still starts
        assert [rule.name for rule in without_dest.rules.engine.rules] == []
        (listed,) = [rule for rule in without_dest.rules.documents() if rule["name"] == "forward-ct"]
        assert listed["applied"] is False and "DEST" in listed["problem"]


def test_a_stored_rule_that_no_longer_parses_is_listed_and_can_be_deleted(settings: Settings):
    import json
    from datetime import UTC, datetime

    from oncopacs.index.models import ManagedRule

    with open_platform(_settings(settings)) as platform, platform.index.writing() as session:  # older, looser checks
        session.add(ManagedRule(name="old", created_by="admin", updated_at=datetime.now(UTC), definition=json.dumps(
            {"name": "old", "on": "series", "forward": ["DEST"], "match": {"StudyDate": "2024-abc"}})))
    with open_platform(_settings(settings)) as platform:  # it opens all the same
        app = create_app(platform)
        admin, client = _headers(app, Role.ADMIN), app.test_client()
        (listed,) = [rule for rule in client.get("/api/rules", headers=admin).json["rules"] if rule["name"] == "old"]
        assert listed["applied"] is False and "2024-abc" in listed["problem"]
        fixed = client.put("/api/rules/old", json={"name": "old", "on": "series", "forward": ["DEST"]}, headers=admin)
        assert fixed.status_code == 200 and "applied" not in fixed.json
        assert client.delete("/api/rules/old", headers=admin).status_code == 204
        assert [rule.name for rule in platform.rules.engine.rules] == ["configured"]
