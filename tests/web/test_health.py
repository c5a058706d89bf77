"""``/health`` says how full the storage is: ok, low (still 200) or full (503), with the free bytes."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple

import pytest
from flask import Flask

from oncopacs.web import health

GIB = 1024**3
Usage = namedtuple("Usage", "total used free")


def with_free_bytes(monkeypatch: pytest.MonkeyPatch, free: int, total: int = 100 * GIB) -> None:
    monkeypatch.setattr(health.shutil, "disk_usage", lambda path: Usage(total, total - free, free))


@pytest.mark.parametrize(
    ("free", "state", "status"),
    [
        (50 * GIB, "ok", 200),
        (GIB - 1, "low", 200),  # below storage_low_bytes (1 GiB): an administrator should act, stores still work
        (health.FULL_BYTES - 1, "full", 503),
        (0, "full", 503),  # 100 % full
    ],
)
def test_storage_is_ok_low_or_full(sqlite_web_app: Flask, monkeypatch: pytest.MonkeyPatch, free: int, state: str,
                                   status: int):
    with_free_bytes(monkeypatch, free)
    reply = sqlite_web_app.test_client().get("/health")
    body = reply.get_json()
    assert reply.status_code == status
    assert body["checks"] == {"index": "ok", "storage": state}
    assert body["storage_free_bytes"] == free and body["storage_total_bytes"] == 100 * GIB
    assert body["status"] == ("ok" if state == "ok" else "degraded")


def test_the_real_disk_is_measured(sqlite_web_app: Flask):
    body = sqlite_web_app.test_client().get("/health").get_json()
    root = sqlite_web_app.extensions["oncopacs.archive"].storage.root
    expected = shutil.disk_usage(root if root.exists() else root.parent)
    assert abs(body["storage_free_bytes"] - expected.free) < 256 * 1024**2  # other writers may run meanwhile
    assert body["storage_total_bytes"] == expected.total


def test_no_free_inode_is_full(sqlite_web_app: Flask, monkeypatch: pytest.MonkeyPatch):
    real = os.statvfs

    class NoInodes:
        def __init__(self, path):
            self._stat = real(path)
            self.f_files, self.f_favail = 1000, 0

        def __getattr__(self, name):
            return getattr(self._stat, name)

    monkeypatch.setattr(health.os, "statvfs", NoInodes)
    with_free_bytes(monkeypatch, 50 * GIB)
    reply = sqlite_web_app.test_client().get("/health")
    assert reply.status_code == 503 and reply.get_json()["checks"]["storage"] == "full"


def test_a_lower_threshold_is_honoured(sqlite_settings, monkeypatch: pytest.MonkeyPatch):
    from oncopacs.platform import open_platform
    from oncopacs.web.app import create_app

    with open_platform(sqlite_settings.with_overrides(storage_low_bytes=200 * 1024**2)) as platform:
        app = create_app(platform)
        with_free_bytes(monkeypatch, 300 * 1024**2)
        assert app.test_client().get("/health").get_json()["checks"]["storage"] == "ok"
        with_free_bytes(monkeypatch, 100 * 1024**2)
        assert app.test_client().get("/health").get_json()["checks"]["storage"] == "low"
