"""``/api/rules`` and ``/api/models``, and ``oncopacs models list``: what the hospital configured and installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from oncopacs.auth.roles import Role
from oncopacs.cli import main
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app

RULES = ({"name": "autocontour", "on": "series", "match": {"Modality": ["CT", "MR"]}, "analyse": ["body-contour"]},)


@pytest.fixture
def app(sqlite_settings: Settings) -> Iterator[Flask]:
    with open_platform(sqlite_settings.with_overrides(rules=RULES, stable_seconds=12)) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


def _headers(app: Flask, role: Role) -> dict[str, str]:
    users = app.extensions["oncopacs.platform"].users
    users.add_user(f"api-{role.value}", role, "correct horse battery")
    return {"Authorization": f"Bearer {users.create_token(f'api-{role.value}')}"}


def test_the_rules_as_configured(app: Flask):
    reply = app.test_client().get("/api/rules", headers=_headers(app, Role.PHYSICIST))
    assert reply.status_code == 200
    assert reply.json["stable_seconds"] == 12 and reply.json["pending"] == 0
    builtins, configured = reply.json["rules"][:3], reply.json["rules"][3:]
    assert [(r["name"], r["builtin"], r["source"]) for r in builtins] == [
        ("rt-analysis", True, "built-in"), ("pet-statistics", True, "built-in"), ("worklist-link", True, "built-in")]
    assert configured == [
        {"name": "autocontour", "on": "series", "description": "", "enabled": True, "builtin": False,
         "source": "config", "match": {"Modality": ["CT", "MR"]}, "forward": [], "analyse": ["body-contour"],
         "export": []}]


def test_the_installed_models(app: Flask):
    reply = app.test_client().get("/api/models", headers=_headers(app, Role.PHYSICIST))
    assert reply.status_code == 200
    (model,) = [m for m in reply.json["models"] if m["name"] == "body-contour"]
    assert model["loaded"] and model["version"] == "1.0.0" and model["accepts"]["modalities"] == ["CT"]


@pytest.mark.parametrize("path", ["/api/rules", "/api/models"])
def test_who_may_read_them(app: Flask, path: str):
    client = app.test_client()
    assert client.get(path).status_code == 401
    assert client.get(path, headers=_headers(app, Role.REFERRER)).status_code == 403


def test_models_list_on_the_command_line(tmp_path: Path):
    runner, data_dir = CliRunner(), str(tmp_path / "data")
    text = runner.invoke(main, ["--data-dir", data_dir, "models", "list"])
    assert text.exit_code == 0 and text.output.startswith("body-contour 1.0.0  accepts CT  produces RTSTRUCT, SEG")
    document = runner.invoke(main, ["--data-dir", data_dir, "models", "list", "--json"])
    assert document.exit_code == 0 and json.loads(document.output)["models"][0]["name"] == "body-contour"
