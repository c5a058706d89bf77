"""Query/Retrieve as an SCU at a remote archive: a patient's studies and series (C-FIND, Study Root) and C-MOVE of a
study to an AE title, over one association (TLS to a ``+tls`` peer).

Every failure is a :class:`RemoteNodeError` whose sentence names the peer (AE title, host and port) and, for a DIMSE
failure, its status; never patient data.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made by pynetdicom at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from oncopacs.dimse.tls import tls_args_for
from oncopacs.dimse.transport import tune_association
from oncopacs.ehr.prefetch_rules import RemoteSeries, RemoteStudy
from oncopacs.errors import RemoteNodeError
from oncopacs.settings import RemoteAE
from oncopacs.tls import describe_tls_error

CONNECT_TIMEOUT_S = 10.0  # TCP connect and association negotiation
DIMSE_TIMEOUT_S = 300.0  # the longest wait for one C-FIND or C-MOVE response (a C-MOVE sends one per instance)
MAX_STUDIES = 1000  # the most studies of one patient read from a remote archive

_PENDING = {0xFF00, 0xFF01}


@dataclass(frozen=True, slots=True)
class MoveOutcome:
    """How a C-MOVE ended: the final DIMSE status and the sub-operation counts it reported."""

    status: int
    completed: int
    failed: int
    warning: int

    @property
    def success(self) -> bool:
        return self.status == 0x0000

    def to_dict(self) -> dict[str, int | str]:
        return {"status": f"0x{self.status:04X}", "completed": self.completed, "failed": self.failed,
                "warning": self.warning}


class RemoteArchive:
    """One association with ``remote`` as ``local_ae_title``, for C-FIND and C-MOVE; use it as a context manager."""

    def __init__(self, local_ae_title: str, remote: RemoteAE, *, ssl_context: ssl.SSLContext | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, dimse_timeout_s: float = DIMSE_TIMEOUT_S):
        self.remote = remote
        self.name = f"{remote.ae_title} at {remote.host}:{remote.port}"
        self._assoc = _associate(local_ae_title, remote, ssl_context, connect_timeout_s, dimse_timeout_s, self.name)

    def __enter__(self) -> RemoteArchive:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._assoc.is_established:
            self._assoc.release()

    def patient_studies(self, patient_id: str) -> list[RemoteStudy]:
        """Every study of the patient with ``patient_id``, with its series (the issuer is not matched: archives
        often hold objects without IssuerOfPatientID although the EHR sends one)."""
        query = _query("STUDY", PatientID=patient_id, StudyInstanceUID="", StudyDate="", StudyTime="",
                       NumberOfStudyRelatedInstances="")
        answers = list(self._find(query, "the patient's studies"))  # all read before the next C-FIND is sent
        uids = [str(a.get("StudyInstanceUID", "") or "") for a in answers]
        return [RemoteStudy(uid, str(a.get("StudyDate", "") or ""), str(a.get("StudyTime", "") or ""),
                            _count(a, "NumberOfStudyRelatedInstances"), self._series(uid))
                for uid, a in list(zip(uids, answers, strict=True))[:MAX_STUDIES] if uid]

    def move_study(self, study_instance_uid: str, destination: str) -> MoveOutcome:
        """C-MOVE one study to the AE title ``destination`` and wait until the remote has sent it all."""
        query = _query("STUDY", StudyInstanceUID=study_instance_uid)
        last: Dataset | None = None
        try:
            for status, _ in self._assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove):
                if not status:  # no answer within the DIMSE timeout, or the association ended
                    break
                last = status
                if int(status.Status) not in _PENDING:
                    break
        except (RuntimeError, ValueError) as exc:  # pynetdicom: association gone, context not accepted
            raise RemoteNodeError(f"{self.name}: the C-MOVE could not be sent ({exc})") from None
        if last is None or int(last.Status) in _PENDING:
            raise RemoteNodeError(f"{self.name} did not finish the C-MOVE (no final response)")
        return MoveOutcome(int(last.Status), _count(last, "NumberOfCompletedSuboperations"),
                           _count(last, "NumberOfFailedSuboperations"), _count(last, "NumberOfWarningSuboperations"))

    def _series(self, study_instance_uid: str) -> tuple[RemoteSeries, ...]:
        query = _query("SERIES", StudyInstanceUID=study_instance_uid, SeriesInstanceUID="", Modality="",
                       SeriesDescription="", BodyPartExamined="", NumberOfSeriesRelatedInstances="")
        answers = list(self._find(query, "a study's series"))
        return tuple(
            RemoteSeries(str(a.get("SeriesInstanceUID", "") or ""), str(a.get("Modality", "") or "").upper(),
                         str(a.get("BodyPartExamined", "") or "").upper(), str(a.get("SeriesDescription", "") or ""),
                         _count(a, "NumberOfSeriesRelatedInstances"))
            for a in answers
        )

    def _find(self, query: Dataset, what: str) -> Iterator[Dataset]:
        try:
            responses = self._assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            for status, identifier in responses:
                if not status:
                    raise RemoteNodeError(f"{self.name} did not answer the C-FIND for {what} in time")
                code = int(status.Status)
                if code in _PENDING:
                    if identifier is not None:
                        yield identifier
                elif code != 0x0000:
                    raise RemoteNodeError(f"{self.name} refused the C-FIND for {what} (status 0x{code:04X})")
        except (RuntimeError, ValueError) as exc:
            raise RemoteNodeError(f"{self.name}: the C-FIND for {what} could not be sent ({exc})") from None


def _associate(local_ae_title: str, remote: RemoteAE, ssl_context: ssl.SSLContext | None, connect_timeout_s: float,
               dimse_timeout_s: float, name: str) -> Association:
    if remote.tls and ssl_context is None:
        ssl_context = ssl.create_default_context()
    _probe(remote, ssl_context if remote.tls else None, connect_timeout_s, name)
    ae = AE(ae_title=local_ae_title)
    ae.acse_timeout = ae.connection_timeout = connect_timeout_s
    ae.dimse_timeout = ae.network_timeout = dimse_timeout_s
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, tune_association)], **tls_args_for(remote, ssl_context))
    if not assoc.is_established:
        sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            sock.close()
        reason = "rejected the association" if assoc.is_rejected else "could not be reached"
        raise RemoteNodeError(f"{name} {reason}")
    return assoc


def _probe(remote: RemoteAE, context: ssl.SSLContext | None, timeout_s: float, name: str) -> None:
    """Connect (and shake hands, over TLS) once first: pynetdicom leaves the socket of a refused connection to the
    garbage collector and says no more than "could not be reached" when a handshake fails."""
    try:
        with socket.create_connection((remote.host, remote.port), timeout=timeout_s) as sock:
            if context is not None:
                try:
                    context.wrap_socket(sock, server_hostname=remote.host).close()
                except ssl.SSLError as exc:
                    raise RemoteNodeError(f"{name}: TLS handshake failed ({describe_tls_error(exc)})") from None
    except OSError as exc:
        raise RemoteNodeError(f"{name} could not be reached ({exc.strerror or type(exc).__name__})") from None


def _query(level: str, **keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _count(dataset: Dataset, keyword: str) -> int:
    try:
        return int(dataset.get(keyword, 0) or 0)
    except (TypeError, ValueError):
        return 0
