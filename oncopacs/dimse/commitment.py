"""Storage Commitment Push Model SCP (PS3.4 Annex J): an instance is committed only when it is durable and intact.

An N-ACTION (Action Type 1) names a Transaction UID and the instances to commit. It is answered
at once, and the instances are verified on a small worker pool: each must be in the index (the
ingest path indexes an instance only once its file is fsynced in place), of the SOP class the
request names, and its file must re-hash to the SHA-256 recorded when it was stored. The
N-EVENT-REPORT (Event Type 1: all committed; 2: some failed, with Failure Reason 0x0112 no such
instance, 0x0110 processing failure (file missing, unreadable or altered), 0x0119 class-instance
conflict) goes on the N-ACTION's association while it is open, else on a new association to
the requestor's AE title as ``remote_aes`` lists it (SCP/SCU role selection: we are the SCP).
Each transaction gives one audit record; logs name UIDs, AE titles and counts only.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, build_role
from pynetdicom.sop_class import StorageCommitmentPushModelInstance
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.dimse.contexts import STORAGE_COMMITMENT
from oncopacs.dimse.event_reports import install_report_gate, open_for_reports, send_event_report
from oncopacs.dimse.tls import tls_args_for
from oncopacs.errors import IntegrityError, StorageError
from oncopacs.index.models import Instance, Patient, Series, Study
from oncopacs.settings import RemoteAE, Settings
from oncopacs.uids import is_valid_uid

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = UID(StorageCommitmentPushModelInstance)  # the well-known instance
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs
# Failure Reasons (PS3.4 J.3.3.1.1) and N-ACTION statuses (PS3.7 C.4.4)
PROCESSING_FAILURE, NO_SUCH_INSTANCE, CLASS_INSTANCE_CONFLICT = 0x0110, 0x0112, 0x0119
INVALID_ARGUMENT_VALUE, INVALID_OBJECT_INSTANCE, NO_SUCH_SOP_CLASS = 0x0115, 0x0117, 0x0118
NO_SUCH_ACTION, RESOURCE_LIMITATION = 0x0123, 0x0213

WORKERS = 2  # transactions verified at once
MAX_PENDING = 32  # transactions accepted and not yet reported; more are refused with 0x0213
MAX_REFERENCES = 65_535  # instances in one transaction
REPORT_TIMEOUT_S = 30.0  # for each wait while reporting: the association, the peer's response
_LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReferencedInstance:
    """One instance the requestor wants committed."""

    sop_class_uid: UID
    sop_instance_uid: UID


@dataclass(frozen=True, slots=True)
class CommitmentRequest:
    """The Action Information of a Request Storage Commitment N-ACTION."""

    transaction_uid: UID
    references: tuple[ReferencedInstance, ...]


@dataclass(frozen=True, slots=True)
class RequestProblem:
    """Why an N-ACTION is refused: its status and a reason that quotes no value."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    """What verification found: the committed instances and the failed ones with their Failure Reason."""

    transaction_uid: UID
    committed: tuple[ReferencedInstance, ...]
    failed: tuple[tuple[ReferencedInstance, int], ...]
    patient_ids: tuple[str, ...] = ()  # of the committed instances, for the audit record only
    study_uids: tuple[str, ...] = ()

    @property
    def event_type(self) -> int:
        return SOME_FAILED if self.failed else ALL_COMMITTED


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the N-EVENT-REPORT went: the route, the peer's Status (None: not delivered) and why not."""

    route: str
    status: int | None
    problem: str = ""


def read_commitment_request(information: Dataset) -> CommitmentRequest | RequestProblem:
    """The transaction and instances of an N-ACTION's Action Information, or why it cannot be served."""
    transaction_uid = str(information.get("TransactionUID", "") or "").strip()
    if not transaction_uid:
        return RequestProblem(INVALID_ARGUMENT_VALUE, "TransactionUID is missing")
    if not is_valid_uid(transaction_uid):
        return RequestProblem(INVALID_ARGUMENT_VALUE, "TransactionUID is not a valid UID")
    items = information.get("ReferencedSOPSequence")
    if not items:
        return RequestProblem(INVALID_ARGUMENT_VALUE, "ReferencedSOPSequence is missing or empty")
    if len(items) > MAX_REFERENCES:
        return RequestProblem(RESOURCE_LIMITATION, f"more than {MAX_REFERENCES} instances in one request")
    references = []
    for number, item in enumerate(items, start=1):
        uids = []
        for keyword in ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"):
            value = str(item.get(keyword, "") or "").strip()
            if not is_valid_uid(value):
                return RequestProblem(INVALID_ARGUMENT_VALUE, f"{keyword} of item {number} is not a valid UID")
            uids.append(UID(value))
        references.append(ReferencedInstance(*uids))
    return CommitmentRequest(UID(transaction_uid), tuple(references))


def verify_commitment(archive: Archive, request: CommitmentRequest) -> CommitmentResult:
    """Verify each referenced instance: indexed, of the named SOP class, its file re-hashing to the stored SHA-256."""
    try:
        stored = _look_up(archive, (ref.sop_instance_uid for ref in request.references))
    except SQLAlchemyError as exc:
        log.error("storage commitment %s: the index cannot be read (%s)", request.transaction_uid,
                  type(exc).__name__)
        return CommitmentResult(request.transaction_uid, (),
                                tuple((ref, PROCESSING_FAILURE) for ref in request.references))
    committed: list[ReferencedInstance] = []
    failed: list[tuple[ReferencedInstance, int]] = []
    patients: dict[str, None] = {}
    studies: dict[str, None] = {}
    for ref in request.references:
        row = stored.get(ref.sop_instance_uid)
        if row is None:
            failed.append((ref, NO_SUCH_INSTANCE))
            continue
        reason = _failure_reason(archive, ref, row)
        if reason is not None:
            failed.append((ref, reason))
            continue
        committed.append(ref)
        patients[row.patient_id] = None
        studies[row.study_instance_uid] = None
    return CommitmentResult(request.transaction_uid, tuple(committed), tuple(failed),
                            tuple(p for p in patients if p), tuple(studies))


def _look_up(archive: Archive, sop_uids: Iterable[str]) -> dict[str, Any]:
    wanted = list(dict.fromkeys(sop_uids))
    found: dict[str, Any] = {}
    with archive.index.reading() as session:
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            rows = session.execute(
                select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.file_path, Instance.sha256,
                       Study.study_instance_uid, Patient.patient_id)
                .join(Instance.series).join(Series.study).join(Patient, Study.patient_pk == Patient.id)
                .where(Instance.sop_instance_uid.in_(wanted[start:start + _LOOKUP_CHUNK]))
            ).all()
            found.update((row.sop_instance_uid, row) for row in rows)
    return found


def _failure_reason(archive: Archive, ref: ReferencedInstance, row: Any) -> int | None:
    """Why an indexed instance cannot be committed (None: it can)."""
    if row.sop_class_uid != ref.sop_class_uid:
        return CLASS_INSTANCE_CONFLICT
    try:
        archive.storage.read(row.file_path, row.sha256)  # IntegrityError: missing or altered
    except (IntegrityError, StorageError, OSError) as exc:
        log.error("storage commitment: %s cannot be committed (%s)", ref.sop_instance_uid,
                  exc if isinstance(exc, IntegrityError) else type(exc).__name__)
        return PROCESSING_FAILURE
    return None


def build_event_information(result: CommitmentResult, retrieve_ae_title: str) -> Dataset:
    """The N-EVENT-REPORT's Event Information (PS3.4 J.3.3.1)."""
    information = Dataset()
    information.TransactionUID = result.transaction_uid
    if result.committed:
        information.RetrieveAETitle = retrieve_ae_title
        information.ReferencedSOPSequence = Sequence([_item(ref) for ref in result.committed])
    if result.failed:
        failed = []
        for ref, reason in result.failed:
            item = _item(ref)
            item.FailureReason = reason
            failed.append(item)
        information.FailedSOPSequence = Sequence(failed)
    return information


def _item(ref: ReferencedInstance) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


@dataclass(frozen=True, slots=True)
class _Job:
    request: CommitmentRequest
    assoc: Any  # the N-ACTION's pynetdicom Association
    context_id: int
    calling_ae: str
    address: str


class StorageCommitmentScp:
    """Answers Storage Commitment N-ACTIONs and reports each transaction from a bounded worker pool."""

    def __init__(self, archive: Archive, settings: Settings, audit: AuditTrail,
                 peer_tls: ssl.SSLContext | None = None) -> None:
        self.archive = archive
        self.ae_title = settings.ae_title
        self.settings = settings
        self.audit = audit
        self.peer_tls = peer_tls  # verifies remote AEs marked +tls (None: the system's CAs)
        self._slots = threading.BoundedSemaphore(MAX_PENDING)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="oncopacs-commitment")

    def close(self) -> None:
        """Finish the transactions already accepted."""
        self._pool.shutdown(wait=True)

    def on_n_action(self, event) -> tuple[int | Dataset, Dataset | None]:  # pynetdicom EVT_N_ACTION
        """Accept a commitment request (0x0000, the report follows) or refuse it with a PS3.7 status."""
        request = event.request
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        problem = _command_problem(request)
        parsed: CommitmentRequest | RequestProblem
        if problem is not None:
            parsed = problem
        else:
            try:
                parsed = read_commitment_request(event.action_information)
            except Exception as exc:  # noqa: BLE001 - a dataset pydicom cannot decode: answered, never raised
                parsed = RequestProblem(PROCESSING_FAILURE, f"the Action Information cannot be decoded "
                                                            f"({type(exc).__name__})")
        if isinstance(parsed, CommitmentRequest) and not self._slots.acquire(blocking=False):
            parsed = RequestProblem(RESOURCE_LIMITATION, f"{MAX_PENDING} commitment requests are pending")
        if isinstance(parsed, RequestProblem):
            log.warning("storage commitment request from %s refused: %s", calling_ae, parsed.reason)
            self._record(calling_ae, _peer(event.assoc), Outcome.SERIOUS_FAILURE, (), (),
                         f"Storage Commitment refused (0x{parsed.status:04X}): {parsed.reason}")
            return _status(parsed.status, parsed.reason), None
        job = _Job(parsed, event.assoc, event.context.context_id, calling_ae, _peer(event.assoc))
        try:
            self._pool.submit(self._commit, job)
        except RuntimeError:  # the pool is shut down: the listener is stopping
            self._slots.release()
            return _status(RESOURCE_LIMITATION, "the archive is shutting down"), None
        log.info("storage commitment %s from %s: %d instances to verify", parsed.transaction_uid, calling_ae,
                 len(parsed.references))
        return 0x0000, None

    def _commit(self, job: _Job) -> None:
        try:
            result = verify_commitment(self.archive, job.request)
            information = build_event_information(result, self.ae_title)
            delivery = self._deliver(job, result.event_type, information)
            self._audit(job, result, delivery)
        except Exception as exc:  # a worker must not die silently; nothing of the data is logged
            log.error("storage commitment %s from %s failed (%s)", job.request.transaction_uid, job.calling_ae,
                      type(exc).__name__)
            log.debug("the storage commitment failed", exc_info=True)
        finally:
            self._slots.release()

    def _deliver(self, job: _Job, event_type: int, information: Dataset) -> Delivery:
        if open_for_reports(job.assoc):
            status = send_event_report(job.assoc, job.context_id, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE,
                                       event_type, information, timeout_s=REPORT_TIMEOUT_S)
            if status is not None:
                return Delivery("on the N-ACTION association", status)
        remote = self.settings.remote_ae(job.calling_ae)
        if remote is None:
            log.warning("storage commitment %s: %s could not be reported to on its association and is not in "
                        "remote_aes; not reported", job.request.transaction_uid, job.calling_ae)
            return Delivery("not delivered", None, f"{job.calling_ae} is not in remote_aes")
        return report_on_new_association(remote, self.ae_title, self.peer_tls, event_type, information)

    def _audit(self, job: _Job, result: CommitmentResult, delivery: Delivery) -> None:
        reasons = Counter(reason for _, reason in result.failed)
        failed = ", ".join(f"0x{reason:04X} x{count}" for reason, count in sorted(reasons.items()))
        outcome = Outcome.SUCCESS
        if delivery.status != 0 or not result.committed:
            outcome = Outcome.SERIOUS_FAILURE
        elif result.failed:
            outcome = Outcome.MINOR_FAILURE
        answered = f"status 0x{delivery.status:04X}" if delivery.status is not None else delivery.problem
        detail = (f"Storage Commitment {result.transaction_uid}: {len(result.committed)} committed, "
                  f"{len(result.failed)} failed{f' ({failed})' if failed else ''}; "
                  f"report (event type {result.event_type}) {delivery.route}: {answered}")
        log.info("storage commitment %s from %s: %d committed, %d failed; reported %s (%s)",
                 result.transaction_uid, job.calling_ae, len(result.committed), len(result.failed), delivery.route,
                 answered)
        self._record(job.calling_ae, job.address, outcome, result.patient_ids, result.study_uids, detail)

    def _record(self, actor: str, source: str, outcome: Outcome, patient_ids: tuple[str, ...],
                study_uids: tuple[str, ...], detail: str) -> None:
        try:
            self.audit.record(AuditEvent(action=AuditAction.STORE, outcome=outcome, actor=actor,
                                         actor_kind=ActorKind.AE, source=source, patient_ids=patient_ids,
                                         study_uids=study_uids, detail=detail))
        except Exception as exc:  # noqa: BLE001 - the commitment stands; the failure is logged
            log.error("audit record of a storage commitment not written: %s", type(exc).__name__)


def report_on_new_association(remote: RemoteAE, calling_ae_title: str, peer_tls: ssl.SSLContext | None,
                              event_type: int, information: Dataset) -> Delivery:
    """Open an association to ``remote`` as Storage Commitment SCP (role selection) and send the report."""
    route = f"on a new association to {remote.ae_title}@{remote.host}:{remote.port}"
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = REPORT_TIMEOUT_S
    context = build_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    context.scu_role, context.scp_role = False, True
    try:
        assoc = ae.associate(remote.host, remote.port, contexts=[context], ae_title=remote.ae_title,
                             ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)],
                             **tls_args_for(remote, peer_tls))
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("storage commitment report to %s could not be sent: %s", remote.ae_title, type(exc).__name__)
        return Delivery(route, None, f"association failed ({type(exc).__name__})")
    if not assoc.is_established:
        log.warning("storage commitment report to %s: the association was refused", remote.ae_title)
        return Delivery(route, None, "association refused")
    try:
        install_report_gate(assoc)
        accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STORAGE_COMMITMENT]
        if not accepted:
            return Delivery(route, None, "the peer refused the Storage Commitment context")
        context_id = int(accepted[0].context_id or 0)
        status = send_event_report(assoc, context_id, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE, event_type,
                                   information, timeout_s=REPORT_TIMEOUT_S)
        return Delivery(route, status, "" if status is not None else "no response")
    finally:
        if assoc.is_established:
            assoc.release()


def _command_problem(request) -> RequestProblem | None:  # a pynetdicom N_ACTION primitive
    if str(request.RequestedSOPClassUID) != STORAGE_COMMITMENT:
        return RequestProblem(NO_SUCH_SOP_CLASS, "not the Storage Commitment Push Model SOP Class")
    if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_INSTANCE:
        return RequestProblem(INVALID_OBJECT_INSTANCE, "not the Storage Commitment Push Model SOP Instance")
    if request.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        return RequestProblem(NO_SUCH_ACTION, "Action Type ID is not 1 (Request Storage Commitment)")
    return None


def _status(status: int, comment: str) -> Dataset:
    reply = Dataset()
    reply.Status = status
    reply.ErrorComment = comment.encode("ascii", "replace").decode("ascii")[:64]  # LO
    return reply


def _peer(assoc) -> str:
    return str(assoc.requestor.address or "")
