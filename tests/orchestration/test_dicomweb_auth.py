"""Credentials of outgoing DICOMweb requests ([[dicomweb_auth]]): matching, checking, and forwarding for real.

The forwarding tests send through the outbox to a second OncoPACS on loopback, which requires a bearer token or
HTTP Basic like any OncoPACS; the secrets live in files and must appear in no row, log record or message.
"""

from __future__ import annotations

import base64
import logging
import string
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from oncopacs.auth.roles import Role
from oncopacs.errors import ConfigError
from oncopacs.index.models import Instance
from oncopacs.orchestration.delivery import open_delivery
from oncopacs.orchestration.dicomweb_auth import DicomwebAuth, normalise_url, parse_dicomweb_auth, parse_entries
from oncopacs.orchestration.outbox import Outbox, OutboxRecord, OutboxState, RetryPolicy
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY
from tests.factories import small_ct_series
from tests.orchestration.conftest import ingest

TOKEN = "s3cr3t-t0ken-Zq9"
PASSWORD = "pass-W0rd-Xy7 correct horse"


def write_secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- matching ----------------------------------------------------------------------------------------------------


def auth_for(tmp_path: Path, *urls: str) -> DicomwebAuth:
    """One bearer entry per URL, entry n's token being ``token-n``."""
    tables = [{"url": url, "bearer_token_file": write_secret(tmp_path, f"t{n}", f"token-{n}\n")}
              for n, url in enumerate(urls, start=1)]
    return parse_dicomweb_auth(tables)


@pytest.mark.parametrize(("url", "token"), [
    ("https://a.example/dicom-web", "token-1"),
    ("https://a.example/dicom-web/", "token-1"),
    ("https://a.example/dicom-web/studies", "token-1"),
    ("HTTPS://A.Example:443/dicom-web/studies?x=1", "token-1"),  # scheme and host case, default port, query
    ("https://a.example/dicom-web/research", "token-2"),  # the longest prefix wins
    ("https://a.example/dicom-web/research/studies", "token-2"),
    ("https://a.example/dicom-web/researchers", "token-1"),  # whole segments only
    ("https://a.example/dicom-web-other", None),
    ("https://a.example/dicom-webs/studies", None),
    ("https://a.example/dicom-web/../other", None),  # dot segments are resolved before matching
    ("https://a.example/dicom-web/%2e%2E/other", None),
    ("https://a.example/dicom%2Dweb/studies", "token-1"),  # percent-encoding is decoded
    ("http://a.example/dicom-web", None),  # another scheme is another origin
    ("https://a.example:8443/dicom-web", None),
    ("https://b.example/dicom-web", None),
    ("https://a.example.evil/dicom-web", None),
    ("http://b.example:8080/anything/below", "token-3"),  # an entry for the whole origin
    ("http://b.example/anything", None),
    ("ftp://a.example/dicom-web", None),
    ("not a url", None),
])
def test_the_longest_prefix_on_segment_boundaries_of_the_same_origin_wins(tmp_path: Path, url: str,
                                                                          token: str | None):
    auth = auth_for(tmp_path, "https://a.example/dicom-web/", "https://a.example/dicom-web/research",
                    "http://b.example:8080")
    assert auth.authorization_for(url) == (f"Bearer {token}" if token else None)


SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_~", min_size=1, max_size=8)


@given(prefix=st.lists(SEGMENT, min_size=1, max_size=4), rest=st.lists(SEGMENT, max_size=3),
       tail=SEGMENT, https=st.booleans())
def test_a_prefix_covers_its_subpaths_and_never_a_longer_last_segment_or_the_other_scheme(
        prefix: list[str], rest: list[str], tail: str, https: bool):
    scheme, other = ("https", "http") if https else ("http", "https")
    base = normalise_url(f"{scheme}://a.example/{'/'.join(prefix)}")
    assert base is not None
    below = normalise_url(f"{scheme}://a.example/{'/'.join(prefix + rest)}/")
    longer = normalise_url(f"{scheme}://a.example/{'/'.join(prefix)}{tail}/{'/'.join(rest)}")
    elsewhere = normalise_url(f"{other}://a.example/{'/'.join(prefix + rest)}")
    assert below is not None and longer is not None and elsewhere is not None
    assert base.covers(below)
    assert not base.covers(longer)
    assert not base.covers(elsewhere)


def test_basic_credentials_are_the_username_and_the_password_line(tmp_path: Path):
    auth = parse_dicomweb_auth([{"url": "https://a.example/dw", "username": "forwarder",
                                 "password_file": write_secret(tmp_path, "pw", PASSWORD + "\n")}])
    header = auth.authorization_for("https://a.example/dw/studies")
    assert header is not None and header.startswith("Basic ")
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == f"forwarder:{PASSWORD}"


def test_a_secret_is_read_once_and_read_again_after_forget(tmp_path: Path):
    auth = auth_for(tmp_path, "https://a.example/dw")
    assert auth.authorization_for("https://a.example/dw") == "Bearer token-1"
    (tmp_path / "t1").write_text("rotated\n")
    assert auth.authorization_for("https://a.example/dw/studies") == "Bearer token-1"  # kept
    auth.forget("https://a.example/dw")
    assert auth.authorization_for("https://a.example/dw") == "Bearer rotated"


# -- checking -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "says"), [
    ({"url": "https://a.example/dw", "bearer_token_file": "/t", "scope": "x"},
     r"#1 \(https://a.example/dw\): unknown keys scope"),
    ({"url": "https://a.example/dw"}, "give exactly one of bearer_token_file, or username and password_file"),
    ({"url": "https://a.example/dw", "bearer_token_file": "/t", "username": "u", "password_file": "/p"},
     "give exactly one of"),
    ({"url": "https://a.example/dw", "username": "u"}, "password_file must be the absolute path"),
    ({"url": "https://a.example/dw", "password_file": "/p"}, "username must be a non-empty printable name"),
    ({"url": "https://a.example/dw", "username": "a:b", "password_file": "/p"}, "without ':'"),
    ({"url": "https://a.example/dw", "bearer_token_file": "token.txt"}, "bearer_token_file must be the absolute path"),
    ({"url": "ftp://a.example/dw", "bearer_token_file": "/t"}, "url is not an http:// or https:// URL"),
    ({"url": "https:///dw", "bearer_token_file": "/t"}, "url is not an http:// or https:// URL with a host"),
    ({"bearer_token_file": "/t"}, r"#1 \(no url\): url is not"),
    ({"url": "https://a.example/dw?token=abc", "bearer_token_file": "/t"}, "no credentials, query or fragment"),
    ("https://a.example/dw", "dicomweb_auth entry #1 is not a table"),
])
def test_a_malformed_entry_is_refused_naming_it(table, says: str):
    with pytest.raises(ConfigError, match=says):
        parse_entries([table])


def test_a_url_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(ConfigError) as refused:
        parse_entries([{"url": "https://bob:hunter2@a.example/dw", "bearer_token_file": "/t"}])
    assert "hunter2" not in str(refused.value) and "bob" not in str(refused.value)
    assert "dicomweb_auth entry #1 (https://a.example/dw)" in str(refused.value)


def test_two_entries_for_the_same_url_are_refused():
    with pytest.raises(ConfigError, match=r"entry #2 \(https://A.example:443/dw\): the same URL as entry #1"):
        parse_entries([{"url": "https://a.example/dw", "bearer_token_file": "/t"},
                       {"url": "https://A.example:443/dw/", "bearer_token_file": "/u"}])


def test_a_secret_file_that_cannot_be_used_is_named_at_first_use(tmp_path: Path):
    empty, spaced = write_secret(tmp_path, "empty", " \n"), write_secret(tmp_path, "spaced", "two words\n")
    auth = parse_dicomweb_auth([  # checking the tables reads no file
        {"url": "https://a.example/missing", "bearer_token_file": str(tmp_path / "absent")},
        {"url": "https://a.example/empty", "bearer_token_file": empty},
        {"url": "https://a.example/folder", "bearer_token_file": str(tmp_path)},
        {"url": "https://a.example/spaced", "bearer_token_file": spaced},
        {"url": "https://a.example/binary", "username": "u", "password_file": write_secret(tmp_path, "b", "x")},
    ])
    (tmp_path / "b").write_bytes(b"\xff\xfe")
    expected = {
        "missing": f"entry #1 (https://a.example/missing): bearer_token_file {tmp_path / 'absent'} does not exist",
        "empty": f"entry #2 (https://a.example/empty): bearer_token_file {empty} is empty",
        "folder": f"entry #3 (https://a.example/folder): bearer_token_file {tmp_path} cannot be read",
        "spaced": f"entry #4 (https://a.example/spaced): bearer_token_file {spaced} must hold one token",
        "binary": f"entry #5 (https://a.example/binary): password_file {tmp_path / 'b'} is not UTF-8 text",
    }
    for path, says in expected.items():
        with pytest.raises(ConfigError) as refused:
            auth.authorization_for(f"https://a.example/{path}/studies")
        assert says in str(refused.value) and "two words" not in str(refused.value)
    (tmp_path / "absent").write_text(TOKEN)  # a failure is not kept: fixed, it is read
    assert auth.authorization_for("https://a.example/missing") == f"Bearer {TOKEN}"


def test_settings_read_the_tables_from_the_config_file_and_from_an_env_file(tmp_path: Path):
    token_file = write_secret(tmp_path, "token", TOKEN)
    config = tmp_path / "oncopacs.toml"
    config.write_text(f'[[dicomweb_auth]]\nurl = "https://a.example/dw"\nbearer_token_file = "{token_file}"\n')
    settings = Settings.load(env={}, config_file=config)
    auth = parse_dicomweb_auth(settings.dicomweb_auth)
    assert auth.authorization_for("https://a.example/dw") == f"Bearer {TOKEN}"
    assert TOKEN not in repr(settings) and TOKEN not in str(settings) and TOKEN not in repr(auth)

    tables = tmp_path / "auth.toml"
    tables.write_text(f'[[dicomweb_auth]]\nurl = "https://b.example/dw"\nusername = "fw"\n'
                      f'password_file = "{write_secret(tmp_path, "pw", PASSWORD)}"\n')
    settings = Settings.load(env={"ONCOPACS_DICOMWEB_AUTH": str(tables)}, config_file=config)  # env wins
    auth = parse_dicomweb_auth(settings.dicomweb_auth)
    assert auth.authorization_for("https://a.example/dw") is None
    assert auth.authorization_for("https://b.example/dw") is not None
    assert PASSWORD not in repr(settings) and PASSWORD not in repr(auth)
    with pytest.raises(ConfigError, match=r"dicomweb_auth file .* cannot be read as TOML"):
        Settings.load(env={"ONCOPACS_DICOMWEB_AUTH": str(tmp_path / "nowhere.toml")})


def test_a_malformed_entry_stops_the_platform_from_opening(sqlite_settings: Settings):
    with pytest.raises(ConfigError, match="dicomweb_auth entry #1"):
        open_platform(sqlite_settings.with_overrides(dicomweb_auth=({"url": "https://a.example"},)))


# -- forwarding to a second OncoPACS --------------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[Platform, str]]:
    """A second OncoPACS served on loopback (it requires credentials); a user ``forwarder`` of it; its URL."""
    from oncopacs.web.app import create_app
    from tests.web.conftest import serve_app

    settings = Settings(data_dir=tmp_path / "receiver", dicom_host="127.0.0.1", dicom_port=0,
                        secret_key=TEST_SECRET_KEY, audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        app = create_app(platform)
        app.extensions["oncopacs.users"].add_user("forwarder", Role.PHYSICIST, PASSWORD)
        with serve_app(app) as url:
            yield platform, f"{url}/dicom-web"


def received_count(platform: Platform) -> int:
    with platform.index.reading() as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def forward(settings: Settings, url: str, *, policy: RetryPolicy | None = None) -> tuple[list[OutboxRecord], int]:
    """Two phantom slices stored by a platform of ``settings``, queued for ``url`` and delivered once; the rows."""
    with open_platform(settings) as platform:
        series = small_ct_series(2, prefix="AUTHFWD")
        ingest(platform, series)
        outbox = platform.outbox if policy is None else Outbox(platform.index, policy=policy)
        assert outbox.enqueue([ds.SOPInstanceUID for ds in series], url, "research") == 2
        loop = open_delivery(outbox, platform.archive, settings)
        delivered = loop.deliver_due()
        return outbox.list_items(limit=10).items, delivered


def test_forwarding_to_an_oncopacs_that_requires_a_bearer_token(sqlite_settings: Settings, receiver, tmp_path):
    other, url = receiver
    token = other.users.create_token("forwarder")
    settings = sqlite_settings.with_overrides(dicomweb_auth=(
        {"url": url.removesuffix("/dicom-web"), "bearer_token_file": write_secret(tmp_path, "tok", "wrong\n")},
        {"url": url, "bearer_token_file": write_secret(tmp_path, "token", f"{token}\n")},  # the longer one is used
    ))
    rows, delivered = forward(settings, url)
    assert delivered == 2 and {row.state for row in rows} == {OutboxState.DELIVERED}
    assert received_count(other) == 2


def test_forwarding_with_http_basic(sqlite_settings: Settings, receiver, tmp_path: Path):
    other, url = receiver
    settings = sqlite_settings.with_overrides(dicomweb_auth=(
        {"url": url, "username": "forwarder", "password_file": write_secret(tmp_path, "pw", f"{PASSWORD}\n")},))
    rows, delivered = forward(settings, url)
    assert delivered == 2 and {row.state for row in rows} == {OutboxState.DELIVERED}
    assert received_count(other) == 2


@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_refused_credentials_are_a_failed_try_that_names_the_setting_not_the_secret(
        sqlite_settings: Settings, receiver, tmp_path: Path, caplog, kind: str):
    other, url = receiver
    caplog.set_level(logging.DEBUG)
    secret = TOKEN if kind == "bearer" else PASSWORD + "-not"
    entry = ({"url": url, "bearer_token_file": write_secret(tmp_path, "s", secret)} if kind == "bearer" else
             {"url": url, "username": "forwarder", "password_file": write_secret(tmp_path, "s", secret)})
    rows, delivered = forward(sqlite_settings.with_overrides(dicomweb_auth=(entry,)), url,
                              policy=RetryPolicy(max_attempts=1))
    assert delivered == 0 and received_count(other) == 0
    assert {row.state for row in rows} == {OutboxState.DEAD}
    assert {row.last_error for row in rows} == {
        "STOW-RS answered HTTP 401: the server refused our credentials (see dicomweb_auth)"}
    encoded = base64.b64encode(f"forwarder:{secret}".encode()).decode()
    for text in (caplog.text, *(str(row.to_dict()) for row in rows)):
        assert secret not in text and encoded not in text
    assert "the server refused our credentials" in caplog.text


def test_no_entry_for_the_url_says_so(sqlite_settings: Settings, receiver):
    _, url = receiver
    rows, _ = forward(sqlite_settings, url)
    assert {row.state for row in rows} == {OutboxState.PENDING}
    assert {row.last_error for row in rows} == {
        "STOW-RS answered HTTP 401: the server wants credentials and no dicomweb_auth entry covers this URL"}


def test_a_missing_secret_file_is_a_failed_try_naming_it(sqlite_settings: Settings, tmp_path: Path):
    absent = tmp_path / "absent-token"
    settings = sqlite_settings.with_overrides(dicomweb_auth=(
        {"url": "http://127.0.0.1:9/dicom-web", "bearer_token_file": str(absent)},))
    rows, _ = forward(settings, "http://127.0.0.1:9/dicom-web")
    assert {row.last_error for row in rows} == {
        f"dicomweb_auth entry #1 (http://127.0.0.1:9/dicom-web): bearer_token_file {absent} does not exist"}
    assert {row.state for row in rows} == {OutboxState.PENDING}  # fixed, the next try goes through


def test_a_redirect_is_not_followed_with_our_credentials(sqlite_settings: Settings, tmp_path: Path):
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/elsewhere/studies")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        settings = sqlite_settings.with_overrides(dicomweb_auth=(
            {"url": url, "bearer_token_file": write_secret(tmp_path, "t", TOKEN)},))
        rows, delivered = forward(settings, url)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert delivered == 0 and {row.last_error for row in rows} == {"STOW-RS answered HTTP 307"}
    assert seen == [f"Bearer {TOKEN}"]  # one request, to the configured URL only

