"""The model registry: enabled state kept in the index, products counted, changed by administrators (API, CLI, both
audited), and a disabled plug-in's job skipped; migration 0008 that holds the state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.cli import main
from oncopacs.errors import NotFoundError
from oncopacs.index.db import _alembic_config, open_index
from oncopacs.index.models import ManagedRule, PendingRule, PluginState
from oncopacs.orchestration.body_contour import BodyContour
from oncopacs.orchestration.plugins import PluginEntry, discover_plugins, run_plugin
from oncopacs.orchestration.registry import ModelRegistry
from oncopacs.orchestration.rule_actions import PLUGIN_JOB, build_plugin_handler
from oncopacs.phantom.ct4d import CT4D_FAMILY, build_ct4d_phantom
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY
from tests.factories import small_ct_series

BROKEN = PluginEntry("broken-model", "nowhere:Model", None, "ImportError: No module named 'nowhere'")


def registry_of(platform: Platform) -> ModelRegistry:
    return ModelRegistry(platform.index, {**discover_plugins(), BROKEN.name: BROKEN})


def test_a_model_is_enabled_until_disabled_and_the_state_outlives_the_registry(platform: Platform):
    registry = registry_of(platform)
    names = [s.name for s in registry.list()]
    assert names == sorted(names) and {"body-contour", "broken-model"} <= set(names)
    status = registry.get("body-contour")
    assert (status.enabled, status.produced, status.changed_by, status.changed_at) == (True, 0, "", None)
    assert registry.is_enabled("body-contour")

    off = registry.set_enabled("body-contour", False, "admin-a")
    assert (off.enabled, off.changed_by) == (False, "admin-a") and off.changed_at is not None
    assert off.changed_at.tzinfo is not None

    fresh = registry_of(platform)  # a new registry (another process): the index holds the state
    assert not fresh.is_enabled("body-contour") and fresh.get("body-contour").changed_by == "admin-a"
    assert fresh.get("broken-model").enabled  # the other model is untouched
    on = fresh.set_enabled("body-contour", True, "admin-b")
    assert (on.enabled, on.changed_by) == (True, "admin-b")
    assert registry.is_enabled("body-contour")
    document = on.to_dict()
    assert document["name"] == "body-contour" and document["version"] == "1.0.0"
    assert (document["enabled"], document["produced"], document["changed_by"]) == (True, 0, "admin-b")
    assert isinstance(document["changed_at"], str)


def test_an_unknown_model_is_refused_naming_the_installed_ones(platform: Platform):
    registry = registry_of(platform)
    with pytest.raises(NotFoundError, match=r"no model named 'ghost' is installed \(installed: .*body-contour"):
        registry.set_enabled("ghost", False, "admin")
    with pytest.raises(NotFoundError, match="ghost"):
        registry.get("ghost")


@pytest.mark.slow  # contours a thorax CT
def test_the_registry_counts_what_the_plugin_stored(platform: Platform):
    spec = replace(CT4D_FAMILY["issue_case"], phases=1, gtv_phase=0, supersampling=1)
    ct = list(build_ct4d_phantom(spec).phases[0])
    for ds in ct:
        assert platform.archive.ingest_dataset(ds, source="test").acknowledged
    registry = registry_of(platform)
    assert registry.get("body-contour").produced == 0
    run = run_plugin(platform.archive, BodyContour(), str(ct[0].SeriesInstanceUID))
    assert len(run.stored) == 2
    counts = {s.name: s.produced for s in registry.list()}
    assert counts["body-contour"] == 2 and counts["broken-model"] == 0  # the CT itself (source "test") is not counted


def test_a_disabled_plugins_job_finishes_as_skipped_and_stores_nothing(platform: Platform):
    series = small_ct_series(2)
    for ds in series:
        assert platform.archive.ingest_dataset(ds, source="test").acknowledged
    registry = platform.models  # the platform's own registry and plug-in job handler
    registry.set_enabled("body-contour", False, "admin")
    jobs = platform.jobs
    jobs.queue.enqueue(PLUGIN_JOB, {"plugin": "body-contour", "series_instance_uid": str(series[0].SeriesInstanceUID)},
                       "test")
    assert jobs.new_worker().run_pending() == 1
    (job,) = jobs.queue.list(kind=PLUGIN_JOB).jobs
    assert job.status.value == "succeeded", job.message
    assert job.result["skipped"] == "body-contour is disabled in the model registry"
    assert job.result["stored"] == [] and registry.get("body-contour").produced == 0


def test_without_a_registry_the_handler_runs_every_plugin():
    calls: list[str] = []

    class Echo:
        name, version, accepts_modalities, accepts_sop_classes, produces = "echo", "0.1", ("CT",), (), ()

        def run(self, datasets):
            calls.append("ran")
            return []

    class Archive:  # what run_plugin asks of the archive: a series to read
        def read_series(self, uid):
            return small_ct_series(1)

    handler = build_plugin_handler(Archive(), {"echo": PluginEntry("echo", "x:Echo", Echo())})  # type: ignore[arg-type]
    result = handler({"plugin": "echo", "series_instance_uid": "1.2.3"}, lambda fraction, message: None)
    assert calls == ["ran"] and "skipped" not in result


# -- /api/models ------------------------------------------------------------------------------------------


@pytest.fixture
def app(sqlite_settings: Settings) -> Iterator[Flask]:
    with open_platform(sqlite_settings) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


def headers(app: Flask, role: Role) -> dict[str, str]:
    users = app.extensions["oncopacs.platform"].users
    users.add_user(f"models-{role.value}", role, "correct horse battery")
    return {"Authorization": f"Bearer {users.create_token(f'models-{role.value}')}"}


def model(client: FlaskClient, auth: dict[str, str], name: str = "body-contour") -> dict:
    reply = client.get("/api/models", headers=auth)
    assert reply.status_code == 200
    (found,) = [m for m in reply.json["models"] if m["name"] == name]
    return found


def test_an_administrator_disables_and_enables_a_model_audited(app: Flask):
    client, admin, reader = app.test_client(), headers(app, Role.ADMIN), headers(app, Role.PHYSICIST)
    listed = model(client, reader)
    assert (listed["enabled"], listed["produced"], listed["changed_by"], listed["changed_at"]) == (True, 0, "", None)
    assert listed["version"] == "1.0.0" and listed["accepts"]["modalities"] == ["CT"]

    off = client.post("/api/models/body-contour/disable", headers=admin)
    assert off.status_code == 200 and off.json["enabled"] is False and off.json["changed_by"] == "models-admin"
    assert model(client, reader)["enabled"] is False
    on = client.post("/api/models/body-contour/enable", headers=admin)
    assert on.status_code == 200 and on.json["enabled"] is True

    entries = app.extensions["oncopacs.platform"].audit.query(AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries
    assert [(e.actor, e.detail) for e in entries] == [
        ("models-admin", "POST /api/models/body-contour/disable: model body-contour disabled"),
        ("models-admin", "POST /api/models/body-contour/enable: model body-contour enabled")]


def test_only_administrators_change_a_model_and_an_unknown_one_is_404(app: Flask):
    client = app.test_client()
    assert client.post("/api/models/body-contour/disable").status_code == 401
    refused = client.post("/api/models/body-contour/disable", headers=headers(app, Role.PHYSICIST))
    assert refused.status_code == 403 and refused.is_json
    assert model(client, headers(app, Role.ONCOLOGIST))["enabled"] is True
    missing = client.post("/api/models/ghost-model/enable", headers=headers(app, Role.ADMIN))
    assert missing.status_code == 404 and missing.is_json
    assert "no model named 'ghost-model' is installed" in missing.json["detail"]
    assert not app.extensions["oncopacs.platform"].audit.query(AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries


def test_the_routes_are_in_the_openapi_document(app: Flask):
    paths = app.test_client().get("/api/openapi.json", headers=headers(app, Role.PHYSICIST)).json["paths"]
    assert paths["/api/models"]["get"]["x-required-permission"] == "archive.read"
    assert paths["/api/models/{name}/disable"]["post"]["x-required-permission"] == "peers.manage"
    assert paths["/api/models/{name}/enable"]["post"]["x-required-permission"] == "peers.manage"


# -- oncopacs models ------------------------------------------------------------------------------------------


def test_models_enable_disable_and_list_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("oncopacs.cli.models._os_user", lambda: "operator-1")
    runner, data_dir = CliRunner(), str(tmp_path / "data")

    def run(*args: str):
        return runner.invoke(main, ["--data-dir", data_dir, "models", *args])

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.output.splitlines() if ln.startswith("body-contour "))
    assert "ENABLED  0 produced" in line

    disabled = run("disable", "body-contour")
    assert disabled.exit_code == 0 and disabled.output == "body-contour disabled\n"
    line = next(ln for ln in run("list").output.splitlines() if ln.startswith("body-contour "))
    assert "disabled  0 produced" in line
    document = json.loads(run("list", "--json").output)
    (entry,) = [m for m in document["models"] if m["name"] == "body-contour"]
    assert (entry["enabled"], entry["changed_by"]) == (False, "operator-1")
    assert run("enable", "body-contour").output == "body-contour enabled\n"

    unknown = run("disable", "ghost-model")
    assert unknown.exit_code != 0 and "no model named 'ghost-model' is installed" in unknown.output
    assert "Traceback" not in unknown.output

    settings = Settings(data_dir=Path(data_dir), secret_key=TEST_SECRET_KEY, audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        entries = platform.audit.query(AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries
        assert [(e.actor, e.detail) for e in entries] == [
            ("operator-1", "oncopacs models disable: model body-contour disabled"),
            ("operator-1", "oncopacs models enable: model body-contour enabled")]
        assert registry_of(platform).is_enabled("body-contour")


# -- migration 0008 ---------------------------------------------------------------------------------------------


def test_migration_0008_creates_the_tables_of_the_models_and_downgrades(database_url: str) -> None:
    tables = {model.__tablename__: model for model in (PluginState, ManagedRule, PendingRule)}
    index = open_index(database_url)
    try:
        with index.read_connection() as connection:
            inspector = inspect(connection)
            for name, table_model in tables.items():
                columns = {column["name"] for column in inspector.get_columns(name)}
                assert columns == set(table_model.__table__.columns.keys()), name
        with index.write_engine.begin() as connection:
            config = _alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0007")
        with index.read_connection() as connection:
            present = set(inspect(connection).get_table_names())
            assert not present & set(tables) and "outbox_items" in present
        index.migrate()
        with index.read_connection() as connection:
            assert set(tables) <= set(inspect(connection).get_table_names())
    finally:
        index.dispose()
