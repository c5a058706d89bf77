"""Where a de-identified export can go besides a folder: a remote AE (C-STORE) or a DICOMweb server (STOW-RS).

:func:`parse_export_target` tells a target's kind from its text without touching anything (rules are checked
with it when the platform opens); :func:`sink_for` opens the sink. Both remote sinks reuse the outbox's sender
(:mod:`oncopacs.orchestration.delivery`): the same presentation contexts, transfer-syntax fitting, TLS and
STOW-RS answer reading. A failed delivery raises :class:`RemoteNodeError` naming the peer and its DIMSE or HTTP
status, never patient data.
"""

from __future__ import annotations

import abc
import enum
import io
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pynetdicom.association import Association

from oncopacs.archive.transcode import TranscodeError, fit_transfer_syntax
from oncopacs.errors import ConfigError, RemoteNodeError
from oncopacs.orchestration.deid_export import DeidSink, DirectorySink, ObjectKind
from oncopacs.orchestration.delivery import (
    STORE_SUCCESS,
    TIMEOUT_S,
    build_store_contexts,
    open_store_association,
    post_stow,
    read_stow_failures,
)
from oncopacs.orchestration.dicomweb_auth import REFUSED, DicomwebAuth, refusal_reason
from oncopacs.orchestration.outbox import parse_destination
from oncopacs.settings import RemoteAE

log = logging.getLogger(__name__)

STOW_BATCH = 50  # objects per STOW-RS request


class TargetKind(str, enum.Enum):
    FOLDER = "folder"
    DIMSE = "dimse"  # C-STORE to a configured remote AE
    STOW = "stow"  # STOW-RS to a DICOMweb base URL


@dataclass(frozen=True, slots=True)
class ExportTarget:
    """Where an export goes: an absolute folder, an AE title of the configured remote AEs, or a base URL."""

    name: str
    kind: TargetKind


def parse_export_target(text: str, remote_aes: Iterable[RemoteAE]) -> ExportTarget:
    """The target ``text`` names; ConfigError when it is none of an absolute folder, a configured AE title or an
    http(s) URL (nothing is opened or created here)."""
    name = text.strip()
    if name.lower().startswith(("http://", "https://")):
        return ExportTarget(parse_destination(name, remote_aes).name, TargetKind.STOW)
    if name and Path(name).is_absolute():
        return ExportTarget(name, TargetKind.FOLDER)
    try:
        return ExportTarget(parse_destination(name, remote_aes).name, TargetKind.DIMSE)
    except ConfigError:
        raise ConfigError(f"export to {name[:60]!r}: give an absolute folder path, an AE title of "
                          "ONCOPACS_REMOTE_AES or an http(s) DICOMweb URL") from None


def sink_for(text: str, remote_aes: Iterable[RemoteAE], *, local_ae_title: str = "ONCOPACS",
             ssl_context: ssl.SSLContext | None = None, timeout_s: float = TIMEOUT_S,
             credentials: DicomwebAuth | None = None) -> DeidSink:
    """The sink of the target ``text`` names (see :func:`parse_export_target`): a :class:`DirectorySink`, an
    :class:`AeSink` calling as ``local_ae_title`` or a :class:`StowSink` with the ``credentials`` of its URL (their
    file read here: ConfigError when it cannot be); ``ssl_context`` verifies ``+tls`` peers and https servers (the
    system's CAs when None)."""
    remotes = tuple(remote_aes)
    target = parse_export_target(text, remotes)
    if target.kind is TargetKind.FOLDER:
        return DirectorySink(Path(target.name))
    if target.kind is TargetKind.STOW:
        authorization = credentials.authorization_for(target.name) if credentials is not None else None
        return StowSink(target.name, ssl_context=ssl_context, timeout_s=timeout_s, authorization=authorization)
    remote = next(r for r in remotes if r.ae_title == target.name)
    return AeSink(remote, local_ae_title, ssl_context=ssl_context, timeout_s=timeout_s)


class _Closing(abc.ABC):
    """A sink as a context manager: closed at the end of the ``with``, completed unless it raised."""

    @abc.abstractmethod
    def close(self, completed: bool = True) -> None:
        """Flush what is pending and release the connection (``completed``: the export did not fail)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(completed=kind is None)


class AeSink(_Closing):
    """C-STORE of every object to ``remote`` in one association, opened by :meth:`begin`."""

    def __init__(self, remote: RemoteAE, local_ae_title: str, *, ssl_context: ssl.SSLContext | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.remote = remote
        self.local_ae_title = local_ae_title
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.sent = 0
        self._assoc: Association | None = None
        self._accepted: dict[str, set[str]] = {}

    @property
    def peer(self) -> str:
        return f"{self.remote.ae_title} at {self.remote.host}:{self.remote.port}"

    def begin(self, kinds: frozenset[ObjectKind]) -> None:
        """Open the association, proposing each SOP class in its syntax and uncompressed little endian."""
        self.close(completed=False)
        ordered: list[ObjectKind] = sorted(kinds, key=_kind_order)
        self._assoc, self._accepted = open_store_association(
            self.local_ae_title, self.remote, build_store_contexts(ordered),
            ssl_context=self.ssl_context, timeout_s=self.timeout_s)

    def write(self, dataset: Dataset, pseudonym: str) -> None:
        assoc = self._assoc
        if assoc is None:
            raise ValueError("AeSink.begin() opens the association before the first write")
        sop_uid = str(dataset.SOPInstanceUID)
        try:
            dataset = fit_transfer_syntax(dataset, self._accepted.get(str(dataset.SOPClassUID), set()))
        except TranscodeError as exc:
            raise RemoteNodeError(f"{self.peer}: cannot send {sop_uid}: {exc}") from None
        if not assoc.is_established:
            raise RemoteNodeError(f"{self.peer} ended the association after {self.sent} object(s)")
        reply = assoc.send_c_store(dataset)
        if "Status" not in reply:
            raise RemoteNodeError(f"{self.peer}: no C-STORE response for {sop_uid} (timeout or association lost)")
        status = int(reply.Status)
        if status not in STORE_SUCCESS:
            raise RemoteNodeError(f"{self.peer} refused {sop_uid}: C-STORE status 0x{status:04X}")
        self.sent += 1

    def close(self, completed: bool = True) -> None:
        """Release the association (abort it after a failure)."""
        assoc, self._assoc = self._assoc, None
        if assoc is None or not assoc.is_established:
            return
        if completed:
            assoc.release()
        else:
            assoc.abort()
        log.info("de-identified export to %s: %d object(s) stored", self.remote.ae_title, self.sent)


class StowSink(_Closing):
    """STOW-RS of every object to the DICOMweb base URL ``base_url``, ``batch_size`` objects per request, with the
    ``Authorization`` header value ``authorization`` when given (see :mod:`.dicomweb_auth`; never logged)."""

    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | None = None, timeout_s: float = TIMEOUT_S,
                 batch_size: int = STOW_BATCH, authorization: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._authorization = authorization
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.requests = 0
        self._batch: list[tuple[str, bytes]] = []  # (SOP Instance UID, Part 10 bytes)

    def write(self, dataset: Dataset, pseudonym: str) -> None:
        buffer = io.BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        self._batch.append((str(dataset.SOPInstanceUID), buffer.getvalue()))
        if len(self._batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Send what is batched in one request; RemoteNodeError naming the server and why when any is not stored."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            status, answer = post_stow(self.base_url, [data for _, data in batch], ssl_context=self.ssl_context,
                                       timeout_s=self.timeout_s, authorization=self._authorization)
        except RemoteNodeError as exc:
            raise RemoteNodeError(f"STOW-RS to {self.base_url}: {exc}") from None
        self.requests += 1
        if status in REFUSED:
            raise RemoteNodeError(f"STOW-RS to {self.base_url} answered "
                                  f"{refusal_reason(status, self._authorization is not None)}")
        if status not in (200, 202):
            raise RemoteNodeError(f"STOW-RS to {self.base_url} answered HTTP {status}")
        failures = read_stow_failures([uid for uid, _ in batch], status, answer)
        if failures:
            raise RemoteNodeError(f"STOW-RS to {self.base_url}: {len(failures)} of {len(batch)} object(s) not "
                                  f"stored ({next(iter(failures.values()))})")

    def close(self, completed: bool = True) -> None:
        """Send the last batch (drop it after a failure)."""
        if completed:
            self.flush()
        self._batch = []


def _kind_order(kind: ObjectKind) -> tuple[str, str]:
    return kind.sop_class_uid, kind.transfer_syntax_uid


__all__ = ["STOW_BATCH", "AeSink", "ExportTarget", "StowSink", "TargetKind", "parse_export_target", "sink_for"]
