"""DIMSE event handlers: each parses the request, calls the archive or the index, and answers.

Failures answer with a PS3.4 status and a logged reason; no exception reaches pynetdicom.
Audit records and the calling-AE allow-list are kept by :mod:`oncopacs.dimse.auditing`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom import Dataset
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.archive.ingest import Archive, ExpectedIdentity
from oncopacs.archive.transcode import TranscodeError, fit_transfer_syntax
from oncopacs.audit.events import Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.dimse.auditing import (
    CallingAllowList,
    DimseAudit,
    SubOperationTally,
    patient_ids_of_studies,
    refusal_text,
)
from oncopacs.dimse.commitment import StorageCommitmentScp
from oncopacs.dimse.contexts import FIND_SOP_CLASSES, UNCOMPRESSED_SYNTAXES
from oncopacs.dimse.identifiers import ResponseBuilder, read_query_keys
from oncopacs.dimse.malformed import store_command_problem
from oncopacs.dimse.mpps import MppsService
from oncopacs.dimse.streaming import (
    abandon_streams,
    install_fast_dataset_fragments,
    install_streamed_staging,
    take_received,
)
from oncopacs.dimse.tls import tls_args_for
from oncopacs.dimse.transport import tune_association
from oncopacs.dimse.worklist import WorklistFind
from oncopacs.errors import AuditError, IntegrityError
from oncopacs.index import query
from oncopacs.index.demographics import CurrentPatient, coerce, current_demographics, needs_coercion
from oncopacs.index.query import QueryError, QueryLevel
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
OUT_OF_RESOURCES = 0xA700  # C-FIND: Refused: Out of Resources
OUT_OF_RESOURCES_MATCHES = 0xA701
MAX_SUBOPERATIONS = 65535
REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED = 0x01, 0x01, 0x03


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A status reply with an ErrorComment (at most 64 characters) when there is a reason."""
    reply = Dataset()
    reply.Status = status
    if comment and status != 0:
        reply.ErrorComment = comment.encode("ascii", "replace").decode("ascii")[:64]  # LO: the default repertoire
    return reply


class DimseHandlers:
    """The archive's DIMSE services, bound to pynetdicom events by :mod:`oncopacs.dimse.server`."""

    def __init__(self, archive: Archive, settings: Settings, audit: AuditTrail | None = None):
        self.archive = archive
        self.settings = settings
        self.audit = DimseAudit(audit or archive.audit)  # the platform puts its sealed trail there
        self.allowed = CallingAllowList(settings.allowed_aes)
        self.worklist = WorklistFind(archive.index, self.audit)  # Modality Worklist C-FIND
        self.mpps = MppsService(archive.index)  # MPPS N-CREATE / N-SET
        # C-MOVE destinations marked +tls are verified with this (tls_ca, else the system's CAs)
        self.peer_tls = TlsFiles.from_settings(settings).client_context() \
            if any(remote.tls for remote in settings.remote_aes) else None
        # Storage Commitment N-ACTION; reports to remote AEs marked +tls are verified with peer_tls
        self.commitment = StorageCommitmentScp(archive, settings, self.audit.trail, self.peer_tls)

    # -- association events ---------------------------------------------------------------

    def on_requested(self, event) -> None:
        """Refuse a calling AE that is not on the allow-list: A-ASSOCIATE-RJ, a log line, a Security Alert."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling_ae, address = str(request.calling_ae_title).strip(), str(assoc.requestor.address)
        if self.allowed.permits(calling_ae, address):
            return
        log.warning("association from %s at %s refused: calling AE not allowed", calling_ae, address)
        assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)
        _quietly(self.audit.refused, calling_ae, address, str(request.called_ae_title).strip())
        assoc.kill()

    def on_limit_refused(self, calling_ae: str, address: str, called_ae: str, why: str) -> None:
        """Audit an association refused for the association limits (the Perimeter's A-ASSOCIATE-RJ)."""
        _quietly(self.audit.refused, calling_ae, address, called_ae, why)

    def on_connection_open(self, event) -> None:
        """As acceptor, stage each C-STORE dataset while it arrives, its middle fragments read straight
        from the socket (:mod:`oncopacs.dimse.streaming`)."""
        if event.assoc.is_acceptor:
            install_streamed_staging(event.assoc, self.archive.storage)
            install_fast_dataset_fragments(event.assoc)

    def on_association_end(self, event) -> None:
        """Write the association's one STORE record (released, aborted or closed, whichever comes first)."""
        ending = {"EVT_ABORTED": "aborted", "EVT_RELEASED": "released"}.get(event.event.name, "closed")
        abandon_streams(event.assoc)
        _quietly(self.audit.association_ended, event.assoc, ending, self._patient_ids_of_studies)

    def _patient_ids_of_studies(self, study_uids: list[str]) -> list[str]:
        with self.archive.index.reading() as session:
            return patient_ids_of_studies(session, study_uids)

    # -- C-ECHO ---------------------------------------------------------------------------

    def on_echo(self, event) -> int:
        return 0x0000

    # -- C-STORE --------------------------------------------------------------------------

    def on_store(self, event) -> Dataset:
        request = event.request
        calling_ae = event.assoc.requestor.ae_title
        received = take_received(request.DataSet)  # staged while it arrived (oncopacs.dimse.streaming)
        problem = store_command_problem(request)
        if problem is not None:  # never echoed: the value may be anything
            if received is not None:
                received.stream.abandon()
            log.warning("C-STORE from %s refused: %s", calling_ae, problem)
            self.audit.count_store(event.assoc, None, acknowledged=False,
                                   refusal=refusal_text(UNABLE_TO_PROCESS, problem))
            return status_dataset(UNABLE_TO_PROCESS, problem)
        try:
            result = self.archive.ingest_dimse(
                request.DataSet.getbuffer(),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                expected=ExpectedIdentity(str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)),
                calling_ae=calling_ae,
                received=received,
            )
        except Exception:  # the association must get an answer, never a drop
            if received is not None:
                received.stream.abandon()
            log.exception("C-STORE of %s from %s failed", request.AffectedSOPInstanceUID, calling_ae)
            self.audit.count_store(event.assoc, None, acknowledged=False,
                                   refusal=refusal_text(0x0110, "processing failure"))
            return status_dataset(0x0110, "processing failure")
        self.audit.count_stored(event.assoc, result)
        return status_dataset(int(result.status), result.reason)

    # -- C-FIND ---------------------------------------------------------------------------

    def on_find(self, event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Answer a Query/Retrieve C-FIND: one Pending response a match, then Success.

        At most ``find_limit`` matches are answered (``ONCOPACS_FIND_LIMIT``; 0: no limit), read with SQL
        ``LIMIT find_limit + 1``. When more match, the first ``find_limit`` go out as Pending and the last
        response is A700 (Refused: Out of Resources) whose Error Comment says the list stops there: the peer
        keeps those matches and learns they are not all (PS3.4 C.4.1.1.4 gives C-FIND no Warning status).
        Orthanc (LimitFindResults) ends such an answer with FE00, "Matching terminated due to Cancel request",
        which the peer never asked for and which carries no comment; dcm4chee (Query Max Number Of Results)
        counts every match first and refuses the query outright. A failure after Pending responses is also
        what a peer sees when an SCP fails mid-way; an SCU that drops the matches then sees dcm4chee's refusal.
        The audit record names the matches sent, with outcome minor failure and "truncated".
        """
        model = FIND_SOP_CLASSES.get(str(event.request.AffectedSOPClassUID), "STUDY_ROOT")
        if model == "WORKLIST":
            yield from self.worklist.on_find(event)
            return
        level, keys, limit = None, {}, self.settings.find_limit
        try:
            identifier = event.identifier
            level = _read_level(identifier, model)
            keys = read_query_keys(identifier)
            with self.archive.index.reading() as session:
                found = query.find_at_most(session, level, keys, limit)
        except QueryError as exc:
            log.warning("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, exc)
            _quietly(self.audit.query, event.assoc, model, getattr(level, "value", "?"), keys, (),
                     Outcome.MINOR_FAILURE, f"refused: {exc}")
            yield status_dataset(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
            return
        except (SQLAlchemyError, ValueError, TypeError, KeyError) as exc:
            log.error("C-FIND from %s failed: %s", event.assoc.requestor.ae_title, type(exc).__name__)
            _quietly(self.audit.query, event.assoc, model, getattr(level, "value", "?"), keys, (),
                     Outcome.SERIOUS_FAILURE, f"failed: {type(exc).__name__}")
            yield status_dataset(UNABLE_TO_PROCESS, "unable to process the query"), None
            return
        matches = found.matches
        outcome, problem = (Outcome.MINOR_FAILURE, f"{len(matches)} match(es) sent, truncated at the find limit "
                            f"({limit}): more matched") if found.truncated else (Outcome.SUCCESS, "")
        try:  # recorded before any match is sent: no audit record, no answer (fail closed)
            self.audit.query(event.assoc, model, level.value, keys, (match.values for match in matches),
                             outcome, problem)
        except AuditError as exc:
            log.error("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, exc)
            yield status_dataset(UNABLE_TO_PROCESS, "the audit trail is unavailable"), None
            return
        log.log(logging.WARNING if found.truncated else logging.INFO, "C-FIND %s from %s: %d matches%s",
                level.value, event.assoc.requestor.ae_title, len(matches),
                f", truncated at the find limit ({limit})" if found.truncated else "")
        syntax = event.context.transfer_syntax
        builder = ResponseBuilder(
            identifier, level, self.settings.ae_title,
            implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian,
        )
        for match in matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, builder.build(match.values)
        if found.truncated:
            yield status_dataset(OUT_OF_RESOURCES, f"more than {limit} matches, {limit} sent; narrow the query"), None

    # -- N-ACTION (Storage Commitment) ----------------------------------------------------

    def on_n_action(self, event) -> tuple[int | Dataset, Dataset | None]:
        """Answer a Storage Commitment request at once; the report follows (:mod:`oncopacs.dimse.commitment`)."""
        return self.commitment.on_n_action(event)

    # -- C-GET and C-MOVE -----------------------------------------------------------------

    def on_get(self, event) -> Iterator:
        instances, failure = self._resolve_retrieve(event)
        if failure is not None:
            _quietly(self.audit.retrieve, event.assoc, "C-GET", [], None, problem=_comment(failure))
            yield failure
            return
        tally, progress = SubOperationTally(), SendProgress()
        event.assoc.bind(evt.EVT_DIMSE_RECV, tally.on_response)
        try:
            yield len(instances)
            yield from self._send_instances(event, instances, accepted_syntaxes_as_sender(event.assoc), progress)
        finally:  # also when pynetdicom stops early and the generator is closed
            event.assoc.unbind(evt.EVT_DIMSE_RECV, tally.on_response)
            _quietly(self.audit.retrieve, event.assoc, "C-GET", instances, tally,
                     unsendable=progress.unsendable, cancelled=progress.cancelled)

    def on_move(self, event) -> Iterator:
        destination = self.settings.remote_ae(
            event.move_destination.decode()
            if isinstance(event.move_destination, bytes)
            else str(event.move_destination)
        )
        if destination is None:
            log.warning(
                "C-MOVE from %s to unknown destination %r", event.assoc.requestor.ae_title, event.move_destination
            )
            _quietly(self.audit.retrieve, event.assoc, "C-MOVE", [], None,
                     problem=f"unknown move destination {event.move_destination!r}")
            yield None, None  # pynetdicom answers 0xA801 (Move Destination Unknown)
            return
        service = f"C-MOVE to {destination.ae_title}@{destination.host}:{destination.port}"
        instances, failure = self._resolve_retrieve(event)
        sub_association: dict[str, dict[str, set[str]]] = {}
        tally, progress = SubOperationTally(), SendProgress()

        def prepare(sub_event) -> None:
            sub_association["accepted"] = accepted_syntaxes_as_sender(sub_event.assoc)
            leave_responses_to_the_sender(sub_event.assoc)

        yield destination.host, destination.port, {
            "ae_title": destination.ae_title,
            **tls_args_for(destination, self.peer_tls),
            "contexts": storage_contexts_for(instances),
            "evt_handlers": [
                (evt.EVT_CONN_OPEN, tune_association),
                (evt.EVT_ESTABLISHED, prepare),
                (evt.EVT_DIMSE_RECV, tally.on_response),
            ],
        }
        if failure is not None:
            _quietly(self.audit.retrieve, event.assoc, service, [], None, problem=_comment(failure))
            yield failure
            return
        try:
            yield len(instances)  # pynetdicom has associated with the destination by now
            yield from self._send_instances(event, instances, sub_association.get("accepted"), progress)
        finally:  # also when the destination refused the association and the generator is closed
            _quietly(self.audit.retrieve, event.assoc, service, instances, tally,
                     unsendable=progress.unsendable, cancelled=progress.cancelled)

    def _resolve_retrieve(self, event):
        try:
            identifier = event.identifier
            _read_level(identifier, "PATIENT_ROOT")
            keys = read_query_keys(identifier)
            with self.archive.index.reading() as session:
                instances = query.find_instances(session, keys)
        except QueryError as exc:
            return [], (status_dataset(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None)
        except (SQLAlchemyError, ValueError, TypeError, KeyError) as exc:
            log.error("retrieve from %s failed: %s", event.assoc.requestor.ae_title, type(exc).__name__)
            return [], (status_dataset(UNABLE_TO_PROCESS, "unable to process the retrieve"), None)
        if len(instances) > MAX_SUBOPERATIONS:
            return [], (status_dataset(OUT_OF_RESOURCES_MATCHES, "too many matches; narrow the query"), None)
        return instances, None

    def _send_instances(self, event, instances, accepted: dict[str, set[str]] | None = None,
                        progress: SendProgress | None = None) -> Iterator:
        """Yield each instance to send; one that cannot be sent counts as a failed sub-operation
        (pynetdicom counts a pending yield that is not a dataset as such) and the rest go on."""
        progress = progress if progress is not None else SendProgress()
        current = self._current_patients(instances)
        for instance in instances:
            if event.is_cancelled:
                progress.cancelled = True
                yield CANCEL, None
                return
            try:
                dataset = self.archive.read_dataset(instance.file_path, instance.sha256)
                now = current.get(instance.study_instance_uid)
                if now is not None and needs_coercion(dataset, now):
                    dataset = coerce(dataset, now)  # the EHR changed the patient: the stored file is not
                if accepted is not None:
                    dataset = fit_transfer_syntax(dataset, accepted.get(instance.sop_class_uid, set()))
            except (IntegrityError, TranscodeError) as exc:
                log.error("not sending %s: %s", instance.sop_instance_uid, exc)
                progress.unsendable += 1
                yield PENDING, UNSENDABLE
                continue
            yield PENDING, dataset

    def _current_patients(self, instances) -> dict[str, CurrentPatient]:
        """Current demographics of the studies whose patient an ADT message changed (none when the site keeps
        the original bytes on retrieve)."""
        if self.settings.keep_original_on_retrieve or not instances:
            return {}
        with self.archive.index.reading() as session:
            return current_demographics(session, (instance.study_instance_uid for instance in instances))


UNSENDABLE = "unsendable"  # truthy and not a Dataset: pynetdicom records a failed sub-operation


@dataclass(slots=True)
class SendProgress:
    """What the sender of a C-GET or C-MOVE knows beyond the peer's responses."""

    unsendable: int = 0  # instances whose file could not be read or transcoded
    cancelled: bool = False


def _quietly(record: Callable, *args, **kwargs) -> None:
    """Write an audit record where the operation can no longer be refused: a failure is logged, not raised."""
    try:
        record(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - pynetdicom must not see it; the failure is logged
        log.error("audit record not written: %s", exc if isinstance(exc, AuditError) else type(exc).__name__)


def _comment(failure: tuple) -> str:
    status = failure[0]
    return str(getattr(status, "ErrorComment", "")) or f"status 0x{int(getattr(status, 'Status', 0)):04X}"


def leave_responses_to_the_sender(assoc) -> None:  # a pynetdicom Association
    """Keep a C-MOVE sub-association's reactor thread from taking C-STORE responses.

    pynetdicom runs a reactor on every association and pauses it while ``send_c_store`` waits
    for its response, but the pause can be passed while the reactor is between its checks: under
    load the reactor then takes the response ("Received unexpected C-STORE service message") and
    the sub-operation waits out the DIMSE timeout. A storage SCP sends its SCU nothing but
    responses, so on this association only the waiting sender takes messages.
    """
    dimse = assoc.dimse
    wait_for_message = dimse.get_msg

    def get_msg(block: bool = False):  # pynetdicom's signature
        return wait_for_message(block=True) if block else (None, None)

    dimse.get_msg = get_msg


def accepted_syntaxes_as_sender(assoc) -> dict[str, set[str]]:  # a pynetdicom Association
    """SOP class -> transfer syntaxes in which this association lets us send C-STORE requests."""
    accepted: dict[str, set[str]] = {}
    for context in assoc.accepted_contexts:
        if context.as_scu:
            accepted.setdefault(str(context.abstract_syntax), set()).update(str(s) for s in context.transfer_syntax)
    return accepted


def storage_contexts_for(instances) -> list[PresentationContext]:
    """Contexts to propose for sending these instances (C-MOVE sub-operations).

    Each SOP class is proposed twice: in the syntaxes it is stored in (so it can travel
    unchanged) and in uncompressed little endian (a fallback the receiver can always take).
    """
    stored: dict[str, list[str]] = {}
    for instance in instances:
        syntaxes = stored.setdefault(instance.sop_class_uid, [])
        if instance.transfer_syntax_uid not in syntaxes:
            syntaxes.append(instance.transfer_syntax_uid)
    contexts = []
    for sop_class, syntaxes in stored.items():
        contexts.append(build_context(sop_class, syntaxes))
        if set(syntaxes) - set(UNCOMPRESSED_SYNTAXES[:2]):
            contexts.append(build_context(sop_class, UNCOMPRESSED_SYNTAXES[:2]))
    return contexts[:128]


def _read_level(identifier: Dataset, model: str) -> QueryLevel:
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = QueryLevel(raw)
    except ValueError:
        raise QueryError(f"QueryRetrieveLevel {raw!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
    if model == "STUDY_ROOT" and level == QueryLevel.PATIENT:
        raise QueryError("the Study Root model has no PATIENT level")
    return level
