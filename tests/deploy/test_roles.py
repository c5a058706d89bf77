"""``oncopacs serve --role``: a web node listens for HTTP only, a DIMSE node for DIMSE only; both stop cleanly."""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from oncopacs.errors import ConfigError
from oncopacs.settings import Settings
from tests.conftest import ServerProcess


def test_the_role_setting_defaults_to_all_and_refuses_others():
    assert Settings.load(env={}).role == "all"
    assert Settings.load(env={"ONCOPACS_ROLE": " DIMSE "}).role == "dimse"
    with pytest.raises(ConfigError, match="all, web or dimse"):
        Settings.load(env={"ONCOPACS_ROLE": "worker"})


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _echo(port: int) -> int | None:
    ae = AE(ae_title="ROLETEST")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="ONCOPACS")
    if not association.is_established:
        return None
    status = association.send_c_echo().Status
    association.release()
    return int(status)


def test_a_web_node_serves_http_and_no_dimse(tmp_path: Path):
    server = ServerProcess(tmp_path / "web", {"ONCOPACS_ROLE": "web"})
    try:
        server.start()
        assert not _listening(server.dicom_port)
    finally:
        assert server.stop() == 0


def test_a_dimse_node_answers_c_echo_and_serves_no_http(tmp_path: Path):
    server = ServerProcess(tmp_path / "dimse", {"ONCOPACS_ROLE": "dimse"})
    try:
        server.launch()
        deadline = time.monotonic() + 30
        while not _listening(server.dicom_port):
            assert server.process is not None and server.process.poll() is None, server.log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the DIMSE node did not listen in time"
            time.sleep(0.1)
        assert _echo(server.dicom_port) == 0
        assert not _listening(server.http_port)
    finally:
        assert server.stop() == 0
    assert "stopped cleanly" in server.log_path.read_text()


@pytest.mark.parametrize("hops, source", [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_behind_a_proxy_a_failed_sign_in_counts_against_the_forwarded_address(sqlite_settings: Settings, hops: int,
                                                                              source: str):
    from oncopacs.platform import open_platform
    from oncopacs.web.app import create_app

    with open_platform(sqlite_settings.with_overrides(proxy_hops=hops)) as platform:
        client = create_app(platform).test_client()
        client.environ_base.update({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.9"})
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        reply = client.post("/login", data={"csrf_token": token, "username": "nobody", "password": "wrong"})
        assert reply.status_code == 401
        assert [state.source for state in platform.users.throttle.active(datetime.now(UTC))] == [source]


def test_a_dimse_node_with_nothing_to_listen_on_refuses_to_start(tmp_path: Path):
    server = ServerProcess(tmp_path / "idle", {"ONCOPACS_ROLE": "dimse", "ONCOPACS_DICOM_PORT": "0"})
    server.launch()
    assert server.process is not None and server.process.wait(60) == 2
    server.stop()
    assert "role dimse with no DICOM port" in server.log_path.read_text()
