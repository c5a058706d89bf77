"""The outbox page (``/outbox``): destinations with their counts, the dead rows, an administrator's Retry form.

Signed-in sessions use it as a browser does (form fields, the session's CSRF token); every refusal is a page in
words with a 4xx, never JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.orchestration.outbox import Outbox, OutboxState
from oncopacs.platform import open_platform
from oncopacs.settings import RemoteAE, Settings
from oncopacs.web.app import create_app

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real Argon2id, cheap parameters
USERS = {"admin": Role.ADMIN, "phys": Role.PHYSICIST, "ref": Role.REFERRER}
STOW_URL = "http://127.0.0.1:9/dicom-web"


@pytest.fixture
def app(sqlite_settings: Settings) -> Iterator[Flask]:
    """The app over a SQLite platform with the remote AE ``DEST``; one user per role above."""
    settings = sqlite_settings.with_overrides(remote_aes=(RemoteAE("DEST", "127.0.0.1", 11199),))
    with open_platform(settings) as platform:
        app = create_app(platform)
        app.config["TESTING"] = True
        users = platform.users
        users.hasher = FAST_HASHER
        for name, role in USERS.items():
            users.add_user(name, role, PASSWORD)
        yield app


def outbox_of(app: Flask) -> Outbox:
    return app.extensions["oncopacs.platform"].outbox


def queue_rows(app: Flask) -> tuple[int, int]:
    """Three rows to DEST (one dead for good, one failing), one to a DICOMweb server: (dead id, failing id)."""
    outbox = outbox_of(app)
    outbox.enqueue(["1.2.3.1", "1.2.3.2", "1.2.3.3"], "DEST", "forward-ct")
    outbox.enqueue(["1.2.3.1"], STOW_URL)
    claimed = {item.sop_instance_uid: item for item in outbox.claim_due() if item.destination == "DEST"}
    outbox.mark_failed(claimed["1.2.3.2"], "C-STORE status 0xA700", permanent=True)
    outbox.mark_failed(claimed["1.2.3.3"], "DEST at 127.0.0.1:11199 could not be reached")
    outbox.mark_delivered(claimed["1.2.3.1"])
    return claimed["1.2.3.2"].id, claimed["1.2.3.3"].id


def signed_in(app: Flask, username: str) -> FlaskClient:
    browser = app.test_client()
    login = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login).group(1)
    assert browser.post("/login", data={"csrf_token": token, "username": username, "password": PASSWORD}
                        ).status_code in (302, 303)
    return browser


def page_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def html(reply, code: int = 200) -> str:
    text = reply.get_data(as_text=True)
    assert reply.status_code == code, (reply.status_code, text[:300])
    assert reply.mimetype == "text/html" and not text.lstrip().startswith("{"), text[:200]
    return text


def cells(page: str, destination: str) -> dict[str, str]:
    """The count cells of ``destination``'s row: {"pending": "1", ...}."""
    row = re.search(rf'<tr data-destination="{re.escape(destination)}".*?</tr>', page, re.S).group(0)
    return dict(re.findall(r'class="op-number outbox-(\w+)">(\d+)<', row))


def test_an_administrator_sees_each_destination_and_its_counts(app: Flask):
    dead_id, failing_id = queue_rows(app)
    page = html(signed_in(app, "admin").get("/outbox"))
    assert cells(page, "DEST") == {"pending": "1", "delivering": "0", "delivered": "1", "dead": "1"}
    assert cells(page, STOW_URL) == {"pending": "0", "delivering": "1", "delivered": "0", "dead": "0"}
    assert "C-STORE" in page and "STOW-RS" in page
    dead_table = re.search(r'<table class="op-table" id="outbox-dead">.*?</table>', page, re.S).group(0)
    assert f'id="outbox-item-{dead_id}"' in dead_table and "C-STORE status 0xA700" in dead_table
    assert dead_table.count("Retry</button>") == 1
    failing = re.search(r'<table class="op-table" id="outbox-failing">.*?</table>', page, re.S).group(0)
    assert f'id="outbox-item-{failing_id}"' in failing and "could not be reached" in failing
    assert 'id="shell-outbox"' in page  # the header links to the page
    due = outbox_of(app).get(failing_id).next_attempt_at  # type: ignore[union-attr]
    assert outbox_of(app).next_due_by_destination() == {"DEST": due}  # the only pending row
    row = re.search(r'<tr data-destination="DEST".*?</tr>', page, re.S).group(0)
    assert due.strftime("%d %b %Y %H:%M:%S") in row


def test_retry_queues_the_dead_row_again_and_is_audited(app: Flask):
    dead_id, _ = queue_rows(app)
    browser = signed_in(app, "admin")
    token = page_token(html(browser.get("/outbox")))
    reply = browser.post(f"/outbox/{dead_id}/retry", data={"csrf_token": token})
    assert reply.status_code == 303 and reply.headers["Location"].endswith(f"/outbox?retried={dead_id}")
    item = outbox_of(app).get(dead_id)
    assert item is not None and (item.state, item.attempts, item.last_error) == (OutboxState.PENDING, 0, "")
    [entry] = app.extensions["oncopacs.platform"].audit.query(AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries
    assert entry.actor == "admin" and f"outbox item {dead_id} to DEST queued again" in entry.detail
    after = html(browser.get(reply.headers["Location"]))
    assert f"Outbox item {dead_id} queued again" in after and cells(after, "DEST")["dead"] == "0"

    again = html(browser.post(f"/outbox/{dead_id}/retry", data={"csrf_token": token}), 409)
    assert "only dead or delivered items can be queued again" in again
    assert "does not exist" in html(browser.post("/outbox/424242/retry", data={"csrf_token": token}), 404)


def test_a_role_without_the_permission_is_refused_in_words(app: Flask):
    dead_id, _ = queue_rows(app)
    referrer = signed_in(app, "ref")
    refused = html(referrer.get("/outbox"), 403)
    assert "Your role (Referrer) may not see the outbox" in refused
    assert 'id="shell-outbox"' not in html(referrer.get("/reports"))  # no link to a page it may not see

    physicist = signed_in(app, "phys")
    page = html(physicist.get("/outbox"))  # may read, as GET /api/outbox
    assert cells(page, "DEST")["dead"] == "1" and "Retry</button>" not in page
    refused = html(physicist.post(f"/outbox/{dead_id}/retry", data={"csrf_token": page_token(page)}), 403)
    assert "may not queue outbox items again; these roles may: Admin" in refused
    assert outbox_of(app).get(dead_id).state is OutboxState.DEAD  # type: ignore[union-attr]


def test_retry_without_the_sessions_csrf_token_is_refused(app: Flask):
    dead_id, _ = queue_rows(app)
    browser = signed_in(app, "admin")
    for forged in ({}, {"csrf_token": "forged"}):
        refused = html(browser.post(f"/outbox/{dead_id}/retry", data=forged), 400)
        assert "security token is missing or stale" in refused
    assert outbox_of(app).get(dead_id).state is OutboxState.DEAD  # type: ignore[union-attr]
    assert not app.extensions["oncopacs.platform"].audit.query(
        AuditFilter(action=AuditAction.CONFIG_CHANGE)).entries


def test_no_rows_yet_says_so(app: Flask):
    page = html(signed_in(app, "admin").get("/outbox"))
    assert 'id="outbox-empty"' in page and 'id="outbox-dead-empty"' in page
