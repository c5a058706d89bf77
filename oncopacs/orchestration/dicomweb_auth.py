"""Credentials for outgoing DICOMweb requests (STOW-RS forwarding, de-identified export to a URL).

Each ``[[dicomweb_auth]]`` table names a base URL prefix and where its secret lives: ``bearer_token_file`` (a
file holding the token) or ``username`` + ``password_file`` (HTTP Basic). The secret stays in its file: settings,
outbox rows, logs and pages carry the URL only. A file is read at the first request that needs it and kept;
a missing, unreadable or empty file is a :class:`ConfigError` naming the entry and the file, never the secret.

A URL is covered by the entry with the longest prefix it starts with, compared on the normalised scheme, host and
port (default 80/443) and on whole path segments: ``https://a.example/dicom-web`` covers
``https://a.example/dicom-web/studies`` but neither ``https://a.example/dicom-web-other`` nor ``http://a.example/…``.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from oncopacs.errors import ConfigError

KEYS = frozenset({"url", "bearer_token_file", "username", "password_file"})
DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSED = (401, 403)  # the answers that mean "not with these credentials" (or "not without any")
MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class UrlPrefix:
    """A URL reduced to what matching compares: lower-case scheme and host, the port, decoded path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    def covers(self, other: UrlPrefix) -> bool:
        """Whether ``other`` is this URL or below it (same origin, whole path segments)."""
        return ((self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
                and other.segments[: len(self.segments)] == self.segments)


def normalise_url(url: str) -> UrlPrefix | None:
    """``url`` reduced for matching (query and fragment ignored, ``.``/``..`` resolved); None when it is no
    http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    segments: list[str] = []
    for segment in (unquote(raw) for raw in parts.path.split("/")):
        if segment in ("", "."):
            continue
        if segment == "..":  # also %2E%2E, which servers may resolve too
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return UrlPrefix(scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme], tuple(segments))


@dataclass(frozen=True, slots=True)
class CredentialEntry:
    """One ``[[dicomweb_auth]]`` table, checked: where the secret of requests below ``url`` is (not the secret)."""

    position: int
    url: str
    prefix: UrlPrefix
    bearer_token_file: Path | None = None
    username: str = ""
    password_file: Path | None = None

    @property
    def label(self) -> str:
        return f"dicomweb_auth entry #{self.position} ({self.url})"

    @property
    def scheme(self) -> str:
        """The HTTP authentication scheme: ``Bearer`` or ``Basic``."""
        return "Bearer" if self.bearer_token_file is not None else "Basic"


def parse_entries(tables: Iterable[Mapping[str, Any]]) -> tuple[CredentialEntry, ...]:
    """The ``[[dicomweb_auth]]`` tables, checked (ConfigError naming the entry and the problem); no file is read."""
    entries: list[CredentialEntry] = []
    for position, table in enumerate(tables, start=1):
        entry = parse_entry(table, position)
        clash = next((e for e in entries if e.prefix == entry.prefix), None)
        if clash is not None:
            raise ConfigError(f"{entry.label}: the same URL as entry #{clash.position}; keep one")
        entries.append(entry)
    return tuple(entries)


def parse_entry(table: Mapping[str, Any], position: int = 1) -> CredentialEntry:
    """One ``[[dicomweb_auth]]`` table, checked (ConfigError naming the entry by position and URL)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"dicomweb_auth entry #{position} is not a table")
    url = table.get("url")
    shown = _shown(url)

    def problem(text: str) -> ConfigError:
        return ConfigError(f"dicomweb_auth entry #{position} ({shown}): {text}")

    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise problem(f"unknown keys {', '.join(map(str, unknown))} (known: {', '.join(sorted(KEYS))})")
    prefix = normalise_url(url) if isinstance(url, str) else None
    if prefix is None or not isinstance(url, str):
        raise problem("url is not an http:// or https:// URL with a host")
    parts = urlsplit(url.strip())
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise problem("url must be a plain base URL: no credentials, query or fragment (secrets go in files)")
    token_file, username, password_file = (table.get(key) for key in ("bearer_token_file", "username",
                                                                       "password_file"))
    if (token_file is not None) == (username is not None or password_file is not None):
        raise problem("give exactly one of bearer_token_file, or username and password_file")
    if token_file is not None:
        return CredentialEntry(position, shown, prefix, bearer_token_file=_absolute(token_file, "bearer_token_file",
                                                                                    problem))
    if not isinstance(username, str) or not username or ":" in username or not username.isprintable():
        raise problem("username must be a non-empty printable name without ':' (HTTP Basic, RFC 7617)")
    return CredentialEntry(position, shown, prefix, username=username,
                           password_file=_absolute(password_file, "password_file", problem))


def _shown(url: object) -> str:
    """``url`` for messages: without credentials, query or fragment (they could hold a secret)."""
    if not isinstance(url, str):
        return "no url"
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "an unreadable url"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}".rstrip("/")[:80]


def _absolute(value: object, key: str, problem: Callable[[str], ConfigError]) -> Path:
    if not isinstance(value, str) or not value.strip() or not Path(value.strip()).is_absolute():
        raise problem(f"{key} must be the absolute path of a file holding the secret")
    return Path(value.strip())


class DicomwebAuth:
    """The ``Authorization`` header value for outgoing DICOMweb requests, by URL; secrets read once and kept.

    Thread-safe: the delivery loop and export jobs may ask at once. ``repr`` names the URLs, never a secret.
    """

    def __init__(self, entries: Iterable[CredentialEntry] = ()) -> None:
        self.entries = tuple(sorted(entries, key=lambda e: len(e.prefix.segments), reverse=True))
        self._headers: dict[int, str] = {}  # entry position -> header value
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DicomwebAuth({', '.join(f'{e.url} ({e.scheme})' for e in self.entries)})"

    def entry_for(self, url: str) -> CredentialEntry | None:
        """The entry with the longest prefix covering ``url``, if any."""
        target = normalise_url(url)
        if target is None:
            return None
        return next((e for e in self.entries if e.prefix.covers(target)), None)

    def authorization_for(self, url: str) -> str | None:
        """``Bearer <token>`` or ``Basic <base64>`` for a request to ``url``; None when no entry covers it.
        ConfigError naming the entry and the file when its secret cannot be read (tried again next time)."""
        entry = self.entry_for(url)
        if entry is None:
            return None
        with self._lock:
            header = self._headers.get(entry.position)
            if header is None:
                header = self._headers[entry.position] = _read_header(entry)
        return header

    def forget(self, url: str) -> None:
        """Drop the kept secret of the entry covering ``url`` (the server refused it): the next request reads its
        file again, so a rotated token is used without a restart."""
        entry = self.entry_for(url)
        if entry is not None:
            with self._lock:
                self._headers.pop(entry.position, None)


def parse_dicomweb_auth(tables: Iterable[Mapping[str, Any]]) -> DicomwebAuth:
    """The credentials of the ``[[dicomweb_auth]]`` tables (``Settings.dicomweb_auth``), checked; no file read."""
    return DicomwebAuth(parse_entries(tables))


def refusal_reason(status: int, sent_credentials: bool) -> str:
    """One sentence for a 401/403 answer, naming the setting to look at (never a secret)."""
    if sent_credentials:
        return f"HTTP {status}: the server refused our credentials (see dicomweb_auth)"
    return f"HTTP {status}: the server wants credentials and no dicomweb_auth entry covers this URL"


def _read_header(entry: CredentialEntry) -> str:
    if entry.bearer_token_file is not None:
        token = _read_secret(entry, "bearer_token_file", entry.bearer_token_file).strip()
        if not token or any(not 0x21 <= ord(c) <= 0x7E for c in token):
            raise ConfigError(f"{entry.label}: bearer_token_file {entry.bearer_token_file} must hold one token of "
                              "visible ASCII characters without spaces")
        return f"Bearer {token}"
    password_file = entry.password_file or Path()
    password = _read_secret(entry, "password_file", password_file).rstrip("\r\n")
    if not password or not password.isprintable():
        raise ConfigError(f"{entry.label}: password_file {password_file} must hold the password on one line")
    credentials = f"{entry.username}:{password}".encode()
    return f"Basic {base64.b64encode(credentials).decode('ascii')}"


def _read_secret(entry: CredentialEntry, key: str, path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{entry.label}: {key} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{entry.label}: {key} {path} cannot be read ({exc.strerror or type(exc).__name__})") \
            from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{entry.label}: {key} {path} is larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{entry.label}: {key} {path} is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{entry.label}: {key} {path} is empty")
    return text


__all__ = ["CredentialEntry", "DicomwebAuth", "UrlPrefix", "normalise_url", "parse_dicomweb_auth",
           "parse_entries", "parse_entry", "refusal_reason"]
