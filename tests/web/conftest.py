"""Web fixtures: the Flask app over a fresh archive, and credentials for each role."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import WSGIRequestHandler, make_server

from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app

TEST_PASSWORD = "correct horse battery"


@pytest.fixture
def web_app(platform: Platform) -> Flask:
    """The app over the (SQLite and PostgreSQL) ``platform`` fixture (its ``archive`` is the same)."""
    app = create_app(platform)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def sqlite_web_app(sqlite_settings: Settings) -> Iterator[Flask]:
    """The app over a fresh SQLite platform only (for tests that do not need both back-ends)."""
    with open_platform(sqlite_settings) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


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


class _NoDelayHandler(WSGIRequestHandler):
    """Request handler that turns Nagle's algorithm off (headers and body go out at once)."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # keep test output quiet


@contextmanager
def serve_app(app: Flask) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a free loopback port (werkzeug, threaded); yield its base URL."""
    with serving(make_server("127.0.0.1", 0, app, threaded=True, request_handler=_NoDelayHandler)) as url:
        yield url


@contextmanager
def serving(server: Any) -> Iterator[str]:
    """Run a bound ``socketserver``-style server (``serve_forever``/``shutdown``) in a thread; yield its base URL."""
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture
def live_server(web_app: Flask) -> Iterator[str]:
    """``web_app`` on a real HTTP server (for real clients such as dicomweb-client); yields the base URL."""
    with serve_app(web_app) as url:
        yield url


@pytest.fixture(scope="module")
def module_web_app(module_platform: Platform) -> Flask:
    """The app over ``module_platform`` (one per module and back-end, for read-only tests on shared data)."""
    app = create_app(module_platform)
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="module")
def module_headers_for(module_web_app: Flask) -> Callable[[Role | str], dict[str, str]]:
    return _headers_factory(module_web_app)


@pytest.fixture(scope="module")
def module_live_server(module_web_app: Flask) -> Iterator[str]:
    with serve_app(module_web_app) as url:
        yield url
