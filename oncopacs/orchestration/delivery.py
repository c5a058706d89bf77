"""Delivering the outbox: C-STORE to remote AEs and STOW-RS to DICOMweb servers, on a background thread.

Due rows are claimed in batches; the rows of one destination go in one association (or one STOW-RS
request). A row is marked delivered only after the peer's success: C-STORE status 0x0000 or a warning
(0xB000, 0xB006, 0xB007), a STOW-RS instance not listed as failed. Everything else is a failed try,
its DIMSE or HTTP status in ``last_error``. Files are read through the archive (SHA-256 checked); an
instance whose file is altered or missing, or that the peer accepts in no syntax we can produce, is
dead at once (trying again cannot help).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import IO, Protocol

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.archive.transcode import TranscodeError, fit_transfer_syntax
from oncopacs.dicomweb.multipart import BodyPart, build_multipart_content_type, new_boundary, write_multipart
from oncopacs.dimse.handlers import accepted_syntaxes_as_sender, leave_responses_to_the_sender
from oncopacs.dimse.tls import tls_args_for
from oncopacs.dimse.transport import tune_association
from oncopacs.errors import ConfigError, IntegrityError, RemoteNodeError
from oncopacs.index.models import Instance
from oncopacs.jobs.background import BackgroundLoop
from oncopacs.orchestration.dicomweb_auth import REFUSED, DicomwebAuth, parse_dicomweb_auth, refusal_reason
from oncopacs.orchestration.outbox import DestinationKind, Outbox, OutboxRecord
from oncopacs.settings import RemoteAE, Settings
from oncopacs.tls import TlsFiles

log = logging.getLogger(__name__)

STORE_SUCCESS = frozenset({0x0000, 0xB000, 0xB006, 0xB007})  # success, and the warnings that mean "stored"
UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
MAX_CONTEXTS = 128  # presentation contexts one association may propose
TIMEOUT_S = 30.0
DICOM_JSON = "application/dicom+json"
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE, REFERENCED_SOP_INSTANCE_UID = "00081198", "00081199", "00081155"
FAILURE_REASON = "00081197"
ALTERED = "the stored file is missing or fails its SHA-256 check"


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What became of one row's try: delivered, or the reason it was not (no patient data)."""

    item: OutboxRecord
    delivered: bool
    error: str = ""
    permanent: bool = False  # trying again cannot help: dead at once


class StoredSyntax(Protocol):
    """What presentation contexts are built from: an object's SOP class and the transfer syntax it is in."""

    @property
    def sop_class_uid(self) -> str: ...

    @property
    def transfer_syntax_uid(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Where an instance's bytes are and what they are."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str
    sha256: str


class Sender:
    """Sends a batch of rows of one destination, as ``local_ae_title``, to the peers of ``remote_aes``; STOW-RS
    requests carry the ``credentials`` of their URL, if any."""

    def __init__(self, archive: Archive, local_ae_title: str, remote_aes: Iterable[RemoteAE], *,
                 ssl_context: ssl.SSLContext | None = None, timeout_s: float = TIMEOUT_S,
                 credentials: DicomwebAuth | None = None):
        self.archive = archive
        self.local_ae_title = local_ae_title
        self.remote_aes = tuple(remote_aes)
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.credentials = credentials or DicomwebAuth()

    def send(self, items: Sequence[OutboxRecord]) -> list[ItemOutcome]:
        """Try each of ``items`` (all of one destination and kind); one outcome per item."""
        if not items:
            return []
        files = self._stored_files(item.sop_instance_uid for item in items)
        present = [item for item in items if item.sop_instance_uid in files]
        outcomes = [ItemOutcome(item, False, "not in the archive", permanent=True)
                    for item in items if item.sop_instance_uid not in files]
        if present:
            if present[0].kind is DestinationKind.STOW:
                outcomes += self._send_stow(present, files)
            else:
                outcomes += self._send_dimse(present, files)
        return outcomes

    # -- DIMSE ---------------------------------------------------------------------------------

    def _send_dimse(self, items: Sequence[OutboxRecord], files: dict[str, StoredFile]) -> list[ItemOutcome]:
        destination = items[0].destination
        remote = next((r for r in self.remote_aes if r.ae_title == destination), None)
        if remote is None:
            return _all_failed(items, f"no remote AE {destination!r} in ONCOPACS_REMOTE_AES")
        try:
            assoc, accepted = open_store_association(
                self.local_ae_title, remote, build_store_contexts(files[item.sop_instance_uid] for item in items),
                ssl_context=self.ssl_context, timeout_s=self.timeout_s)
        except RemoteNodeError as exc:
            return _all_failed(items, str(exc))
        outcomes: list[ItemOutcome] = []
        try:
            for position, item in enumerate(items):
                if not assoc.is_established:
                    outcomes += _all_failed(items[position:], "the association ended before the instance was sent")
                    break
                outcomes.append(self._store_one(assoc, item, files[item.sop_instance_uid], accepted))
        finally:
            if assoc.is_established:
                assoc.release()
        return outcomes

    def _store_one(self, assoc, item: OutboxRecord, stored: StoredFile,
                   accepted: dict[str, set[str]]) -> ItemOutcome:
        try:
            dataset = self.archive.read_dataset(stored.file_path, stored.sha256)
            dataset = fit_transfer_syntax(dataset, accepted.get(stored.sop_class_uid, set()))
        except IntegrityError:
            return ItemOutcome(item, False, ALTERED, permanent=True)
        except TranscodeError as exc:
            return ItemOutcome(item, False, f"not sendable: {exc}", permanent=True)
        reply = assoc.send_c_store(dataset)
        if "Status" not in reply:
            return ItemOutcome(item, False, "no C-STORE response (timeout or association lost)")
        status = int(reply.Status)
        if status in STORE_SUCCESS:
            return ItemOutcome(item, True)
        return ItemOutcome(item, False, f"C-STORE status 0x{status:04X}")

    # -- STOW-RS -------------------------------------------------------------------------------

    def _send_stow(self, items: Sequence[OutboxRecord], files: dict[str, StoredFile]) -> list[ItemOutcome]:
        base_url = items[0].destination
        readable: list[tuple[OutboxRecord, bytes]] = []
        outcomes: list[ItemOutcome] = []
        for item in items:
            stored = files[item.sop_instance_uid]
            try:
                readable.append((item, self.archive.storage.read(stored.file_path, stored.sha256)))
            except IntegrityError:
                outcomes.append(ItemOutcome(item, False, ALTERED, permanent=True))
        if not readable:
            return outcomes
        sent = [item for item, _ in readable]
        try:
            authorization = self.credentials.authorization_for(base_url)
            status, answer = post_stow(base_url, [data for _, data in readable], ssl_context=self.ssl_context,
                                       timeout_s=self.timeout_s, authorization=authorization)
        except (ConfigError, RemoteNodeError) as exc:  # a secret file that cannot be read is a failed try too
            return outcomes + _all_failed(sent, str(exc))
        if status in REFUSED:
            self.credentials.forget(base_url)  # the next try reads the secret again (it may have been rotated)
            return outcomes + _all_failed(sent, f"STOW-RS answered {refusal_reason(status, bool(authorization))}")
        return outcomes + read_stow_answer(sent, status, answer)

    def _stored_files(self, uids: Iterable[str]) -> dict[str, StoredFile]:
        wanted = sorted(set(uids))
        with self.archive.index.reading() as session:
            rows = session.execute(select(Instance.sop_instance_uid, Instance.sop_class_uid,
                                          Instance.transfer_syntax_uid, Instance.file_path, Instance.sha256)
                                   .where(Instance.sop_instance_uid.in_(wanted))).all()
        return {row[0]: StoredFile(*row) for row in rows}


def open_store_association(local_ae_title: str, remote: RemoteAE, contexts: Sequence[PresentationContext], *,
                           ssl_context: ssl.SSLContext | None = None,
                           timeout_s: float = TIMEOUT_S) -> tuple[Association, dict[str, set[str]]]:
    """An association from ``local_ae_title`` to ``remote`` proposing ``contexts`` (TLS to a ``+tls`` peer), and
    the transfer syntaxes it lets us send per SOP class; RemoteNodeError naming the peer when it is down or refuses.
    """
    unreachable = _unreachable(remote, timeout_s)
    if unreachable:
        raise RemoteNodeError(unreachable)
    ae = AE(ae_title=local_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title, contexts=list(contexts),
                         evt_handlers=[(evt.EVT_CONN_OPEN, tune_association)], **tls_args_for(remote, ssl_context))
    if not assoc.is_established:
        _close_transport(assoc)
        reason = "rejected the association" if assoc.is_rejected else "could not be reached"
        raise RemoteNodeError(f"{remote.ae_title} at {remote.host}:{remote.port} {reason}")
    accepted = accepted_syntaxes_as_sender(assoc)
    leave_responses_to_the_sender(assoc)
    return assoc, accepted


def post_stow(base_url: str, parts: Sequence[bytes], *, ssl_context: ssl.SSLContext | None = None,
              timeout_s: float = TIMEOUT_S, authorization: str | None = None) -> tuple[int, bytes]:
    """POST ``parts`` (Part 10 files) to ``{base_url}/studies`` as one STOW-RS request: (HTTP status, body).
    ``authorization``: the ``Authorization`` header value (never logged). A redirect is answered as its own status,
    not followed (the body and the credentials would go elsewhere). RemoteNodeError when the server cannot be
    reached."""
    boundary = new_boundary()
    body = b"".join(write_multipart((BodyPart("application/dicom", data) for data in parts), boundary))
    headers = {"Content-Type": build_multipart_content_type("application/dicom", boundary), "Accept": DICOM_JSON}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(f"{base_url}/studies", data=body, method="POST", headers=headers)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise RemoteNodeError(f"cannot reach the STOW-RS server ({reason})") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Leaves 3xx answers to the caller (as HTTPError) instead of re-sending elsewhere."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: HTTPMessage, newurl: str) -> urllib.request.Request | None:
        return None


def build_store_contexts(files: Iterable[StoredSyntax]) -> list[PresentationContext]:
    """Per SOP class: its stored syntaxes that are not uncompressed LE (so they travel unchanged), and
    explicit plus implicit VR little endian (which any storage SCP takes; compressed data is decoded for it)."""
    stored: dict[str, list[str]] = {}
    for file in files:
        syntaxes = stored.setdefault(file.sop_class_uid, [])
        if file.transfer_syntax_uid not in syntaxes and file.transfer_syntax_uid not in UNCOMPRESSED:
            syntaxes.append(file.transfer_syntax_uid)
    contexts = []
    for sop_class, syntaxes in stored.items():
        if syntaxes:
            contexts.append(build_context(sop_class, syntaxes))
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} presentation contexts; send fewer SOP classes per association")
    return contexts


def read_stow_answer(items: Sequence[OutboxRecord], status: int, answer: bytes) -> list[ItemOutcome]:
    """Outcomes from a STOW-RS response (see :func:`read_stow_failures`)."""
    failures = read_stow_failures([item.sop_instance_uid for item in items], status, answer)
    return [ItemOutcome(item, False, failures[item.sop_instance_uid]) if item.sop_instance_uid in failures
            else ItemOutcome(item, True) for item in items]


def read_stow_failures(sop_instance_uids: Sequence[str], status: int, answer: bytes) -> dict[str, str]:
    """Why each sent instance the STOW-RS response does not confirm was not stored (absent: stored): 200 all
    stored; 202 those not in the Failed SOP Sequence (and, when the Referenced SOP Sequence is given, listed
    there); any other status fails every instance."""
    if status not in (200, 202):
        return dict.fromkeys(sop_instance_uids, f"STOW-RS answered HTTP {status}")
    try:
        document = json.loads(answer or b"{}")
    except ValueError:
        document = {}
    document = document if isinstance(document, dict) else {}
    failed = dict(_referenced(document, FAILED_SOP_SEQUENCE, with_reason=True))
    stored = dict(_referenced(document, REFERENCED_SOP_SEQUENCE))
    failures = {}
    for uid in sop_instance_uids:
        if uid in failed:
            failures[uid] = f"STOW-RS refused the instance (reason {failed[uid]})"
        elif status == 202 and stored and uid not in stored:
            failures[uid] = "STOW-RS did not confirm the instance (HTTP 202)"
    return failures


def _referenced(document: dict, sequence: str, *, with_reason: bool = False) -> Iterator[tuple[str, str]]:
    """(SOP Instance UID, failure reason) of each item of ``sequence`` in a DICOM JSON response."""
    element = document.get(sequence)
    for entry in (element.get("Value") or []) if isinstance(element, dict) else []:
        if not isinstance(entry, dict):
            continue
        uids = (entry.get(REFERENCED_SOP_INSTANCE_UID) or {}).get("Value") or []
        reason = ""
        if with_reason:
            codes = (entry.get(FAILURE_REASON) or {}).get("Value") or []
            reason = f"0x{int(codes[0]):04X}" if codes and isinstance(codes[0], int) else "unknown"
        if uids and isinstance(uids[0], str):
            yield uids[0], reason


def _unreachable(remote: RemoteAE, timeout_s: float) -> str:
    """Why a TCP connection to ``remote`` fails ("" when it opens): pynetdicom leaves the socket of a refused
    connection for the garbage collector, so a peer that is down is found out here first."""
    try:
        socket.create_connection((remote.host, remote.port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"{remote.ae_title} at {remote.host}:{remote.port} could not be reached ({reason})"
    return ""


def _close_transport(assoc) -> None:  # a pynetdicom Association
    """Close the socket pynetdicom leaves open when the peer drops the connection before accepting."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.close()


def _all_failed(items: Iterable[OutboxRecord], error: str) -> list[ItemOutcome]:
    return [ItemOutcome(item, False, error) for item in items]


class DeliveryLoop(BackgroundLoop):
    """Delivers due outbox rows, waking at the next due time or every ``poll_interval_s`` seconds."""

    thread_name = "oncopacs-outbox-delivery"

    def __init__(self, outbox: Outbox, sender: Sender, *, poll_interval_s: float = 5.0, batch_size: int = 50):
        super().__init__()
        self.outbox = outbox
        self.sender = sender
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size

    def deliver_due(self, limit: int | None = None) -> int:
        """Claim up to ``limit`` (default: one batch) due rows and try them; how many were delivered."""
        claimed = self.outbox.claim_due(limit or self.batch_size)
        groups: dict[tuple[str, DestinationKind], list[OutboxRecord]] = {}
        for item in claimed:
            groups.setdefault((item.destination, item.kind), []).append(item)
        delivered = 0
        for (destination, _), items in groups.items():
            try:
                outcomes = self.sender.send(items)
            except Exception as exc:  # a failed send must not stop the loop; its rows are tried again
                log.exception("forwarding to %s failed", destination)
                outcomes = _all_failed(items, f"send failed: {type(exc).__name__}")
            delivered += self._record(destination, outcomes)
        return delivered

    def _record(self, destination: str, outcomes: Sequence[ItemOutcome]) -> int:
        delivered = 0
        for outcome in outcomes:
            if outcome.delivered:
                delivered += self.outbox.mark_delivered(outcome.item)
            else:
                state = self.outbox.mark_failed(outcome.item, outcome.error, permanent=outcome.permanent)
                log.warning("forwarding %s to %s (try %d): %s -> %s", outcome.item.sop_instance_uid, destination,
                            outcome.item.attempts, outcome.error, state.value if state else "claim lost")
        if delivered:
            log.info("forwarded %d instance(s) to %s", delivered, destination)
        return delivered

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.poll_interval_s
            try:
                if self.deliver_due() == self.batch_size:
                    continue  # a full batch: more may be due at once
                due = self.outbox.next_due_at()
                if due is not None:
                    wait = min(wait, max((due - self.outbox.clock()).total_seconds(), 0.05))
            except Exception:
                log.exception("outbox delivery could not reach the index; retrying")
            self._sleep(wait)


def open_delivery(outbox: Outbox, archive: Archive, settings: Settings) -> DeliveryLoop:
    """The delivery loop of ``outbox``: C-STORE as ``settings.ae_title`` (TLS to ``+tls`` peers), STOW-RS with the
    credentials of ``settings.dicomweb_auth`` (ConfigError when an entry is malformed)."""
    context = TlsFiles.from_settings(settings).client_context()  # verifies +tls peers and https servers
    return DeliveryLoop(outbox, Sender(archive, settings.ae_title, settings.remote_aes, ssl_context=context,
                                       credentials=parse_dicomweb_auth(settings.dicomweb_auth)))
