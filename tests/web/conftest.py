"""Web fixtures: the Flask app over a fresh archive, and credentials for each role."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.settings import Settings
from oncopacs.web.app import create_app

TEST_PASSWORD = "correct horse battery"


@pytest.fixture
def web_app(settings: Settings, archive: Archive) -> Flask:
    """The app over the (SQLite and PostgreSQL) ``archive`` fixture."""
    app = create_app(settings.with_overrides(secret_key="test-secret"), archive)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def sqlite_web_app(sqlite_settings: Settings) -> Iterator[Flask]:
    """The app over a fresh SQLite archive only (for tests that do not need both back-ends)."""
    app = create_app(sqlite_settings.with_overrides(secret_key="test-secret"))
    app.config["TESTING"] = True
    yield app
    app.extensions["oncopacs.archive"].close()


def _headers_factory(app: Flask) -> Callable[[Role | str], dict[str, str]]:
    made: dict[str, dict[str, str]] = {}

    def headers_for(role: Role | str) -> dict[str, str]:
        """Bearer-token headers of a user with ``role`` (created on first use)."""
        role = Role(role)
        if role.value not in made:
            store: UserStore = app.extensions["oncopacs.users"]
            store.add_user(f"test-{role.value}", role, TEST_PASSWORD)
            made[role.value] = {"Authorization": f"Bearer {store.create_token(f'test-{role.value}')}"}
        return made[role.value]

    return headers_for


@pytest.fixture
def headers_for(web_app: Flask) -> Callable[[Role | str], dict[str, str]]:
    return _headers_factory(web_app)


@pytest.fixture
def sqlite_headers_for(sqlite_web_app: Flask) -> Callable[[Role | str], dict[str, str]]:
    return _headers_factory(sqlite_web_app)


def basic_auth(username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def client(web_app: Flask) -> FlaskClient:
    return web_app.test_client()
