"""multipart/related bodies (RFC 2387) as DICOMweb uses them, and the media types around them.

Writing streams: :func:`write_multipart` yields the body piece by piece, so a study of a thousand
instances is never one bytes object. Reading spools each part to a temporary file (kept in memory
while small) and checks the framing of the whole body before anything is handed on, so a body
without its closing boundary is refused before a single part of it is stored.

The body reader is written here because the libraries at hand do not fit: werkzeug's multipart
decoder insists on ``Content-Disposition`` (form-data only) and :mod:`email` parses line by line in
memory. Header parameters are parsed here too, since werkzeug's ``parse_options_header`` cuts an
unquoted ``type=application/dicom`` at the slash, and OHIF sends it unquoted while dicomweb-client
quotes it.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol, Self

from oncopacs.errors import OncopacsError

CHUNK_BYTES = 1 << 20
SPOOL_IN_MEMORY_BYTES = 16 << 20  # parts up to this size stay in memory, larger ones go to a temporary file
MAX_HEADER_BYTES = 64 << 10
CRLF = b"\r\n"


class MultipartError(OncopacsError):
    """A multipart body is malformed: no boundary, no parts, or no closing boundary (HTTP 400)."""


class MediaTypeError(OncopacsError):
    """A media type we do not serve or accept (HTTP 415 for a request body, 406 for an Accept header)."""


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed media type: ``type/subtype`` in lower case and its parameters (names in lower case)."""

    essence: str
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        """The ``q`` weight of an Accept entry (1.0 when absent or unreadable)."""
        try:
            return min(max(float(self.parameters.get("q", "1")), 0.0), 1.0)
        except ValueError:
            return 1.0


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One part to send: its bytes, its Content-Type and (optionally) its Content-Location."""

    content_type: str
    data: bytes | memoryview
    content_location: str | None = None


@dataclass(frozen=True, slots=True)
class ReceivedPart:
    """One part of a received body, spooled; read it with :meth:`read_bytes`."""

    content_type: str | None
    content_location: str | None
    size_bytes: int
    spool: IO[bytes]

    def read_bytes(self) -> bytes:
        self.spool.seek(0)
        return self.spool.read()


@dataclass(frozen=True, slots=True)
class ReceivedBody:
    """All parts of a received multipart/related body; close it (or use ``with``) to free the spools."""

    media_type: MediaType
    parts: tuple[ReceivedPart, ...]

    def close(self) -> None:
        for part in self.parts:
            part.spool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


# -- media types --------------------------------------------------------------------------------

_PARAMETER = re.compile(r'\s*([^\s=;,]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)\s*')


def parse_media_type(text: str) -> MediaType:
    """``type/subtype; name=value; name="quoted value"`` -> :class:`MediaType`; quoted and unquoted alike."""
    essence, _, rest = text.partition(";")
    parameters: dict[str, str] = {}
    for item in _split_outside_quotes(rest, ";"):
        match = _PARAMETER.fullmatch(item)
        if match is None:
            if item.strip():
                raise MediaTypeError(f"malformed media type parameter {item.strip()!r}")
            continue
        name, value = match.group(1).lower(), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        parameters[name] = value
    return MediaType(essence.strip().lower(), parameters)


def parse_accept(header: str | None) -> list[MediaType]:
    """The entries of an Accept header, best first (by ``q``; ties keep their order); q=0 left out."""
    if not header or not header.strip():
        return []
    entries = [parse_media_type(item) for item in _split_outside_quotes(header, ",") if item.strip()]
    return sorted((entry for entry in entries if entry.quality > 0), key=lambda entry: -entry.quality)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    quoted, escaped = False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def build_multipart_content_type(part_type: str, boundary: str) -> str:
    """The Content-Type header of a multipart/related body whose root parts are ``part_type``."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def new_boundary() -> str:
    """A boundary that cannot plausibly occur in any part (122 random bits)."""
    return f"oncopacs-{uuid.uuid4().hex}"


# -- writing ------------------------------------------------------------------------------------


def write_multipart(parts: Iterable[BodyPart], boundary: str) -> Iterator[bytes]:
    """The body, piece by piece: each part is pulled from ``parts`` only when it is to be sent."""
    delimiter = b"--" + boundary.encode("ascii")
    first = True
    for part in parts:
        headers = [f"Content-Type: {part.content_type}"]
        if part.content_location:
            headers.append(f"Content-Location: {part.content_location}")
        opening = (b"" if first else CRLF) + delimiter + CRLF + "\r\n".join(headers).encode("latin-1") + CRLF + CRLF
        first = False
        yield opening
        yield bytes(part.data) if isinstance(part.data, memoryview) else part.data
    if first:
        raise MultipartError("a multipart body needs at least one part")
    yield CRLF + delimiter + b"--" + CRLF


# -- reading ------------------------------------------------------------------------------------


def read_multipart(stream: Readable, content_type: str | None, *, root_type: str = "application/dicom") -> ReceivedBody:
    """Read a whole multipart/related body whose parts are ``root_type``, spooling each part.

    Raises :class:`MediaTypeError` when the body is not ``multipart/related`` of ``root_type`` and
    :class:`MultipartError` when its framing is broken (no boundary, no part, no closing boundary).
    """
    media_type = parse_media_type(content_type or "")
    if media_type.essence != "multipart/related":
        raise MediaTypeError(
            f'expected multipart/related; type="{root_type}", got {media_type.essence or "no Content-Type"}'
        )
    declared = media_type.parameters.get("type", root_type).lower()
    if declared != root_type:
        raise MediaTypeError(f'expected parts of type "{root_type}", the body declares "{declared}"')
    boundary = media_type.parameters.get("boundary", "")
    if not 0 < len(boundary) <= 70:
        raise MultipartError("the Content-Type has no (or an over-long) boundary parameter")
    parts = _BodyReader(stream, boundary.encode("latin-1")).read_parts()
    for part in parts:
        if part.content_type is not None and parse_media_type(part.content_type).essence != root_type:
            for spooled in parts:
                spooled.spool.close()
            raise MediaTypeError(f'a part has Content-Type "{part.content_type}", expected "{root_type}"')
    return ReceivedBody(media_type, tuple(parts))


class _BodyReader:
    """Splits a body into parts, reading ``CHUNK_BYTES`` at a time and spooling part contents."""

    def __init__(self, stream: Readable, boundary: bytes):
        self.stream = stream
        self.delimiter = CRLF + b"--" + boundary
        self.buffer = bytearray(CRLF)  # so that a boundary on the very first line is found like any other
        self.eof = False

    def read_parts(self) -> list[ReceivedPart]:
        parts: list[ReceivedPart] = []
        try:
            self._skip_to_delimiter()
            while not self._at_closing_delimiter():
                headers = self._read_headers(len(parts) + 1)
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - closed by ReceivedBody
                try:
                    size = self._copy_part_to(spool, len(parts) + 1)
                except BaseException:
                    spool.close()
                    raise
                parts.append(ReceivedPart(headers.get("content-type"), headers.get("content-location"), size, spool))
        except BaseException:
            for part in parts:
                part.spool.close()
            raise
        if not parts:
            raise MultipartError("the multipart body has no parts")
        self._drain()
        return parts

    def _fill(self) -> bool:
        """Read one more chunk; False at the end of the stream."""
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK_BYTES)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def _drain(self) -> None:
        """Read (and drop) the epilogue, so the connection is left at the end of the request."""
        self.buffer.clear()
        while self._fill():
            self.buffer.clear()

    def _skip_to_delimiter(self) -> None:
        while (index := self.buffer.find(self.delimiter)) < 0:
            del self.buffer[: max(0, len(self.buffer) - len(self.delimiter) + 1)]  # the preamble is dropped
            if not self._fill():
                raise MultipartError("the body does not contain its boundary")
        del self.buffer[: index + len(self.delimiter)]

    def _at_closing_delimiter(self) -> bool:
        """After a delimiter: True for ``--`` (the closing one); else consume padding and the CRLF."""
        while len(self.buffer) < 2 and self._fill():
            pass
        if self.buffer[:2] == b"--":
            return True
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                break
            if len(self.buffer) > 1024 or not self._fill():
                raise MultipartError("a boundary line is malformed or the body ends after it")
        if self.buffer[:end].rstrip(b"\r").strip(b" \t"):
            raise MultipartError("a boundary line has trailing characters (is the boundary inside a part?)")
        del self.buffer[: end + 1]
        return False

    def _read_headers(self, number: int) -> dict[str, str]:
        while True:
            if self.buffer.startswith(CRLF):
                del self.buffer[:2]
                return {}
            end = self.buffer.find(CRLF + CRLF)
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise MultipartError(f"the headers of part {number} are too long")
            if not self._fill():
                raise MultipartError(f"the body ends inside the headers of part {number}")
        text = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        headers: dict[str, str] = {}
        for line in re.sub(r"\r\n[ \t]+", " ", text).split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise MultipartError(f"part {number} has a malformed header line")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _copy_part_to(self, spool: IO[bytes], number: int) -> int:
        """Move the part's content to ``spool`` up to the next delimiter; return its size in bytes."""
        size = 0
        while (index := self.buffer.find(self.delimiter)) < 0:
            keep = len(self.delimiter) - 1
            if len(self.buffer) > keep:
                flushed = len(self.buffer) - keep
                spool.write(self.buffer[:flushed])
                size += flushed
                del self.buffer[:flushed]
            if not self._fill():
                raise MultipartError(f"the body ends inside part {number}, without the closing boundary")
        spool.write(self.buffer[:index])
        del self.buffer[: index + len(self.delimiter)]
        return size + index
