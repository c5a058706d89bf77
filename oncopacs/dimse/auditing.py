"""Audit records of DIMSE services and the calling-AE allow-list.

C-FIND gives one QUERY record per request, C-GET and C-MOVE one RETRIEVE record per request
(outcome from the sub-operation results), and C-STORE one STORE record per association, written
when it ends: the C-STORE path itself only counts in memory. The actor is the calling AE title,
the source the peer's IP address. A refused association (allow-list or association limits) gives an
ASSOCIATION_REFUSED record. ``oncopacs import`` tallies its run with the same :class:`StoreTally`
and writes one STORE record per run (:func:`store_event`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from pynetdicom.dimse_messages import C_STORE_RSP
from sqlalchemy import select

from oncopacs.archive.ingest import IngestResult
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.index.models import Patient, Study

log = logging.getLogger(__name__)

MAX_AUDITED_IDS = 500  # patient IDs / study UIDs named in one record; the detail says how many more
MAX_DETAIL_CHARS = 2000
MAX_LISTED_REFUSALS = 20  # refused objects named (status and reason) in one STORE record; the rest are counted
_WARNING_STATUSES = {0xB000, 0xB006, 0xB007}


# -- the allow-list ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowedPeer:
    """One allow-list entry: an AE title (None: any) from a host (None: any)."""

    ae_title: str | None
    host: str | None
    addresses: frozenset[str] = frozenset()  # the host's IP addresses, resolved once


class CallingAllowList:
    """Which calling AEs may associate (``ONCOPACS_ALLOWED_AES``: ``AET``, ``AET@host``, ``@host``)."""

    def __init__(self, entries: Iterable[str]):
        self.peers = tuple(_parse_entry(entry) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self.peers)

    def permits(self, ae_title: str, address: str) -> bool:
        """True when no list is set, or an entry matches this calling AE title and peer address."""
        if not self.peers:
            return True
        title, ip = ae_title.strip(), _normal_ip(address)
        return any(
            (peer.ae_title is None or peer.ae_title == title) and (peer.host is None or ip in peer.addresses)
            for peer in self.peers
        )


def _parse_entry(entry: str) -> AllowedPeer:
    title: str | None
    host: str | None
    title, at, host = entry.strip().partition("@")
    title, host = title.strip() or None, host.strip().strip("[]").strip() or None
    if not at:
        return AllowedPeer(title, None)
    if host is None:  # "AE@" or "AE@[]" (Settings refuses both): never widen it to "from any host"
        raise ValueError(f"allowed AE entry {entry.strip()!r} names no host")
    return AllowedPeer(title, host, frozenset(_resolve(host)))


def _resolve(host: str) -> set[str]:
    try:
        if _is_ip(host):
            return {_normal_ip(host)}
        # an IPv4/IPv6 address: a str
        return {_normal_ip(cast(str, info[4][0])) for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        log.warning("allowed AE host %s cannot be resolved (%s): it matches no peer", host, exc.strerror or exc)
        return set()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _normal_ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


# -- what each service records ----------------------------------------------------------------


@dataclass(slots=True)
class StoreTally:
    """The C-STOREs of one association (or the files of one ``oncopacs import``), counted in memory until it ends."""

    calling_ae: str  # who stored: a calling AE title, or the operating-system user of an import
    source: str
    stored: int = 0
    failed: int = 0
    study_uids: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    patient_ids: dict[str, None] = field(default_factory=dict)  # declared by refused objects (stored: looked up)
    refusals: list[str] = field(default_factory=list)  # "0xA778 <reason>" (reasons name UIDs only), the first few
    unlisted_refusals: int = 0

    def count(self, study_uid: str | None, acknowledged: bool, *, patient_id: str | None = None,
              refusal: str | None = None) -> None:
        """One object; ``refusal`` (see :func:`refusal_text`) and ``patient_id`` say what a refused one was."""
        if acknowledged:
            self.stored += 1
        else:
            self.failed += 1
            if patient_id:
                self.patient_ids[patient_id] = None
            if refusal and len(self.refusals) < MAX_LISTED_REFUSALS:
                self.refusals.append(refusal)
            elif refusal:
                self.unlisted_refusals += 1
        if study_uid:
            self.study_uids[study_uid] = None

    def count_result(self, result: IngestResult) -> None:
        """One ingest result: a refusal with its status, reason and declared Patient ID."""
        refusal = None if result.acknowledged else refusal_text(int(result.status), result.reason)
        self.count(result.study_instance_uid, result.acknowledged, patient_id=result.patient_id, refusal=refusal)


def refusal_text(status: int, reason: str) -> str:
    """A refusal as a STORE record names it: the DICOM status in hex and the (loggable) reason."""
    return f"0x{status:04X} {reason}".rstrip()


@dataclass(slots=True)
class SubOperationTally:
    """C-STORE sub-operation results of one C-GET or C-MOVE, read from the responses received."""

    completed: int = 0
    warning: int = 0
    failed: int = 0

    def on_response(self, event) -> None:  # pynetdicom EVT_DIMSE_RECV
        message = event.message
        if not isinstance(message, C_STORE_RSP):
            return
        status = int(getattr(message.command_set, "Status", 0xC000))
        if status == 0:
            self.completed += 1
        elif status in _WARNING_STATUSES:
            self.warning += 1
        else:
            self.failed += 1


class DimseAudit:
    """Writes the audit records of the DIMSE services of one listener."""

    def __init__(self, trail: AuditTrail):
        self.trail = trail
        self._stores: dict[int, StoreTally] = {}
        self._lock = threading.Lock()

    # C-STORE: counted per association, one record at its end

    def count_store(self, assoc, study_uid: str | None, acknowledged: bool, *, patient_id: str | None = None,
                    refusal: str | None = None) -> None:
        tally = self._tally(assoc)
        tally.count(study_uid, acknowledged, patient_id=patient_id, refusal=refusal)

    def count_stored(self, assoc, result: IngestResult) -> None:
        """Count one C-STORE's ingest result (see :meth:`StoreTally.count_result`)."""
        tally = self._tally(assoc)
        tally.count_result(result)

    def _tally(self, assoc) -> StoreTally:
        key = id(assoc)
        tally = self._stores.get(key)
        if tally is None:
            with self._lock:
                tally = self._stores.setdefault(key, StoreTally(assoc.requestor.ae_title, _peer(assoc)))
        return tally

    def association_ended(self, assoc, ending: str, patient_ids_for) -> None:
        """Write the STORE record of ``assoc`` (once; later calls for it do nothing).

        ``ending``: released, aborted, closed.

        ``patient_ids_for(study_uids)`` looks up the patients of the stored studies.
        """
        with self._lock:
            tally = self._stores.pop(id(assoc), None)
        if tally is None:
            return
        self.trail.record(store_event(tally, ActorKind.AE, "C-STORE", f"association {ending}", patient_ids_for))

    # C-FIND, C-GET, C-MOVE: one record per request

    def query(self, assoc, service: str, level: str, keys: Mapping[str, str], matches: Iterable[Mapping],
              outcome: Outcome = Outcome.SUCCESS, problem: str = "") -> None:
        """Record one C-FIND (raises AuditError: the caller answers with a failure)."""
        patients: dict[str, None] = {}
        studies: dict[str, None] = {}
        count = 0
        for values in matches:
            count += 1
            if values.get("PatientID"):
                patients[str(values["PatientID"])] = None
            if values.get("StudyInstanceUID"):
                studies[str(values["StudyInstanceUID"])] = None
        asked = " ".join(f"{k}={v}" for k, v in keys.items() if v)
        detail = f"C-FIND {service} {level} {asked}".rstrip() + (f": {problem}" if problem else f": {count} match(es)")
        self._record(AuditAction.QUERY, outcome, assoc.requestor.ae_title, _peer(assoc), patients, studies, detail)

    def retrieve(self, assoc, service: str, instances, tally: SubOperationTally | None, *,
                 unsendable: int = 0, cancelled: bool = False, problem: str = "") -> None:
        """Record one C-GET or C-MOVE with the patients and studies it sent (or was to send)."""
        patients = {i.patient_id: None for i in instances}
        studies = {i.study_instance_uid: None for i in instances}
        completed = tally.completed + tally.warning if tally else 0
        failed = (tally.failed if tally else 0) + unsendable
        total = len(instances)
        if problem:
            outcome = Outcome.SERIOUS_FAILURE
            detail = f"{service}: {problem}"
        else:
            outcome = _outcome(completed, total - completed, total)
            if cancelled and outcome == Outcome.SUCCESS and completed < total:
                outcome = Outcome.MINOR_FAILURE
            detail = f"{service}: {completed} of {total} sent, {failed} failed" + ("; cancelled" if cancelled else "")
        self._record(AuditAction.RETRIEVE, outcome, assoc.requestor.ae_title, _peer(assoc), patients, studies, detail)

    def refused(self, ae_title: str, address: str, called_ae: str, why: str = "") -> None:
        """Record a refused association (a Security Alert); ``why`` defaults to the allow-list's reason."""
        why = why or f"calling AE not allowed from {address}"
        self._record(AuditAction.ASSOCIATION_REFUSED, Outcome.SERIOUS_FAILURE, ae_title, _normal_ip(address), (), (),
                     f"association from {ae_title} to {called_ae} refused: {why}")

    def _record(self, action: AuditAction, outcome: Outcome, actor: str, source: str,
                patients: Iterable[str], studies: Iterable[str], detail: str) -> None:
        self.trail.record(_event(action, outcome, actor, ActorKind.AE, source, patients, studies, detail))


def store_event(tally: StoreTally, actor_kind: ActorKind, service: str, ending: str, patient_ids_for) -> AuditEvent:
    """The one STORE record of a tally: its studies, their patients (``patient_ids_for(study_uids)``, a
    failed look-up leaves them out) and the patients refused objects declared, the counts, and the refusals
    by status and reason. ``service``: "C-STORE", "import"; ``ending``: "association released", ..."""
    studies = list(tally.study_uids)
    try:
        patients = list(patient_ids_for(studies[:MAX_AUDITED_IDS]))
    except Exception:  # the record is still written, without the patients
        log.exception("could not look up the patients of a %s by %s", service, tally.calling_ae)
        patients = []
    patients = list(dict.fromkeys([*patients, *tally.patient_ids]))
    total = tally.stored + tally.failed
    detail = f"{service}: {tally.stored} stored, {tally.failed} failed; {ending}"
    if tally.refusals:
        more = f"; {tally.unlisted_refusals} more" if tally.unlisted_refusals else ""
        detail += f"; refused: {'; '.join(tally.refusals)}{more}"
    return _event(AuditAction.STORE, _outcome(tally.stored, tally.failed, total), tally.calling_ae, actor_kind,
                  tally.source, patients, studies, detail)


def _event(action: AuditAction, outcome: Outcome, actor: str, actor_kind: ActorKind, source: str,
           patients: Iterable[str], studies: Iterable[str], detail: str) -> AuditEvent:
    patients, studies = [p for p in patients if p], [s for s in studies if s]
    extra = [f"{len(v) - MAX_AUDITED_IDS} more {what}" for v, what in ((patients, "patients"), (studies, "studies"))
             if len(v) > MAX_AUDITED_IDS]
    if extra:  # put before the refusals, so a truncated detail keeps it
        head, sep, tail = detail.partition("; refused: ")
        detail = f"{head} ({', '.join(extra)} not listed){sep}{tail}"
    return AuditEvent(
        action=action, outcome=outcome, actor=actor.strip(), actor_kind=actor_kind, source=source,
        patient_ids=tuple(patients[:MAX_AUDITED_IDS]), study_uids=tuple(studies[:MAX_AUDITED_IDS]),
        detail=detail[:MAX_DETAIL_CHARS],
    )


def patient_ids_of_studies(session, study_uids: list[str]) -> list[str]:  # a SQLAlchemy Session
    """The patient IDs of these studies, in the order first seen."""
    if not study_uids:
        return []
    rows = session.execute(
        select(Study.study_instance_uid, Patient.patient_id).join(Patient, Study.patient_pk == Patient.id)
        .where(Study.study_instance_uid.in_(study_uids))
    ).all()
    by_study = dict(rows)
    return list(dict.fromkeys(by_study[uid] for uid in study_uids if by_study.get(uid)))


def _outcome(succeeded: int, failed: int, total: int) -> Outcome:
    if failed <= 0:
        return Outcome.SUCCESS
    return Outcome.SERIOUS_FAILURE if succeeded == 0 and total > 0 else Outcome.MINOR_FAILURE


def _peer(assoc) -> str:
    return _normal_ip(str(assoc.requestor.address or ""))
