"""While the disk is full, reads keep working: their audit records wait in the reserved spool (and join the
chain once there is room); when the spool is used up too, requests fail closed with a 503 that says why."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

from oncopacs.audit.trail import AuditTrail
from oncopacs.auth.roles import Role
from oncopacs.index.db import IndexDatabase
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.factories import part10_bytes, small_ct_series

PASSWORD = "correct horse battery"
DICOM_JSON = {"Accept": "application/dicom+json"}


@contextmanager
def full_disk(index: IndexDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every index write fails as the archive's writes do on a full disk (OSError ENOSPC)."""

    @contextmanager
    def refuse():
        raise OSError(errno.ENOSPC, "No space left on device")
        yield  # pragma: no cover

    with monkeypatch.context() as patch:
        patch.setattr(index, "write_connection", refuse)
        patch.setattr(index, "writing", refuse)
        yield


def sign_in(browser: Any, username: str) -> Any:
    """Sign in through the form with ``browser`` (a Flask test client); the reply to the POST."""
    page = browser.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return browser.post("/login", data={"csrf_token": csrf, "username": username, "password": PASSWORD})


def store_study(app: Flask) -> tuple[str, str, str]:
    slices = small_ct_series(3, prefix="FULL")
    for dataset in slices:
        assert app.extensions["oncopacs.archive"].ingest(part10_bytes(dataset), source="test").acknowledged
    first = slices[0]
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), str(first.SOPInstanceUID)


def test_reads_keep_working_while_the_disk_is_full(web_app: Flask,
                                                   headers_for: Callable[[Role | str], dict[str, str]],
                                                   monkeypatch: pytest.MonkeyPatch):
    study, series, instance = store_study(web_app)
    token = headers_for(Role.PHYSICIST)
    web_app.extensions["oncopacs.users"].add_user("alice", Role.ONCOLOGIST, PASSWORD)
    trail: AuditTrail = web_app.extensions["oncopacs.audit"]
    client, browser, newcomer = web_app.test_client(), web_app.test_client(), web_app.test_client()
    sign_in(browser, "alice")  # before the disk fills: a session is a row in the index (revocable)
    before = trail.query().total
    reads = [
        ("/dicom-web/studies", DICOM_JSON),
        (f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata", DICOM_JSON),
        (f"/dicom-web/studies/{study}/series/{series}/instances/{instance}",
         {"Accept": 'multipart/related; type="application/dicom"'}),
        (f"/api/studies/{study}", {}),
    ]
    with full_disk(web_app.extensions["oncopacs.archive"].index, monkeypatch):
        for path, accept in reads:
            reply = client.get(path, headers=token | accept)
            assert reply.status_code == 200, (path, reply.get_data(as_text=True)[:300])
        assert browser.get("/", headers={"Accept": "text/html"}).status_code == 200  # an open session goes on
        refused = sign_in(newcomer, "alice")  # a new one cannot be recorded, so it could not be ended: refused
        assert refused.status_code == 503 and "cannot open a new session now" in refused.get_data(as_text=True)
        assert trail.query().total == before  # nothing reached the index...
        assert trail.spool is not None and trail.spool.has_entries()  # ...it waits in the spool

    assert client.get("/dicom-web/studies", headers=token | DICOM_JSON).status_code == 200  # room again
    entries = trail.query(limit=1000).entries[before:]
    actions = [entry.action for entry in entries]
    assert actions.count("retrieve") + actions.count("query") + actions.count("read") >= len(reads) + 1
    assert "login_failed" in actions and any(study in entry.study_uids for entry in entries)
    assert not trail.spool.has_entries() and trail.verify().ok


@pytest.fixture
def tiny_spool_app(sqlite_settings: Settings) -> Iterator[Flask]:
    with open_platform(sqlite_settings.with_overrides(audit_spool_bytes=8192)) as platform:  # one page of records
        app = create_app(platform)
        platform.users.add_user("reader", Role.PHYSICIST, PASSWORD)
        yield app


def test_a_used_up_spool_fails_closed_with_a_reason(tiny_spool_app: Flask, monkeypatch: pytest.MonkeyPatch):
    token = {"Authorization": f"Bearer {tiny_spool_app.extensions['oncopacs.users'].create_token('reader')}"}
    store_study(tiny_spool_app)
    client = tiny_spool_app.test_client()
    with full_disk(tiny_spool_app.extensions["oncopacs.archive"].index, monkeypatch):
        statuses = [client.get("/dicom-web/studies", headers=token | DICOM_JSON).status_code for _ in range(40)]
        refused = client.get("/dicom-web/studies", headers=token | DICOM_JSON)
    assert statuses[0] == 200 and statuses[-1] == 503 and refused.status_code == 503
    body = refused.get_json()
    assert body["status"] == 503 and "reserved audit spool is used up" in body["detail"]
    assert client.get("/dicom-web/studies", headers=token | DICOM_JSON).status_code == 200  # room again
    assert tiny_spool_app.extensions["oncopacs.audit"].verify().ok
