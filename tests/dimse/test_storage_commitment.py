"""Storage Commitment Push Model: pynetdicom as the SCU stores instances, asks for their commitment and
receives the N-EVENT-REPORT on the same association, or on a new one to its own listener after it released.

dcmtk's storescu has no storage commitment option (``storescu --help`` names none), so pynetdicom is the peer.
"""

from __future__ import annotations

import queue
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
    Verification,
)

from oncopacs.archive.ingest import Archive
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.dimse.commitment import (
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT_VALUE,
    NO_SUCH_INSTANCE,
    PROCESSING_FAILURE,
    CommitmentRequest,
    ReferencedInstance,
    RequestProblem,
    read_commitment_request,
)
from oncopacs.settings import RemoteAE
from tests.conftest import free_port
from tests.factories import small_ct_series

SCU_TITLE = "COMMITSCU"
REPORT_WAIT_S = 20.0


@dataclass(frozen=True)
class Report:
    """One N-EVENT-REPORT as the SCU's handler saw it."""

    event_type: int
    information: Dataset
    association: object  # the pynetdicom Association it came on

    def committed(self) -> set[str]:
        return {str(item.ReferencedSOPInstanceUID) for item in self.information.get("ReferencedSOPSequence", [])}

    def failed(self) -> dict[str, int]:
        return {str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
                for item in self.information.get("FailedSOPSequence", [])}


class Reports:
    """The SCU's EVT_N_EVENT_REPORT handler: answers success and keeps what it received."""

    def __init__(self) -> None:
        self.received: queue.Queue[Report] = queue.Queue()

    def on_report(self, event) -> tuple[int, None]:
        self.received.put(Report(event.event_type, event.event_information, event.assoc))
        return 0x0000, None

    def next(self) -> Report:
        return self.received.get(timeout=REPORT_WAIT_S)


def commitment_request(transaction_uid: str | None, references: list[tuple[str, str]]) -> Dataset:
    information = Dataset()
    if transaction_uid is not None:
        information.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        with warnings.catch_warnings():  # some tests send malformed UIDs on purpose
            warnings.simplefilter("ignore", UserWarning)
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        items.append(item)
    information.ReferencedSOPSequence = Sequence(items)
    return information


def scu() -> AE:
    ae = AE(ae_title=SCU_TITLE)
    for context in (CTImageStorage, StorageCommitmentPushModel, Verification):
        ae.add_requested_context(context)
    return ae


def request_commitment(assoc, information: Dataset, action_type: int = 1):
    return assoc.send_n_action(information, action_type, StorageCommitmentPushModel,
                               StorageCommitmentPushModelInstance)


def store(assoc, datasets: list[Dataset]) -> list[tuple[str, str]]:
    assert [assoc.send_c_store(ds).Status for ds in datasets] == [0] * len(datasets)
    return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in datasets]


def commitment_records(archive: Archive, count: int = 1) -> list[str]:
    """The details of the Storage Commitment audit records, once ``count`` are there.

    A commitment's record is written once the SCU's response to the report is in: an SCU that waits for
    it before releasing does not release while its own reactor is still sending that response.
    """
    trail, details = AuditTrail(archive.index), []
    deadline = time.monotonic() + REPORT_WAIT_S
    while time.monotonic() < deadline:
        page = trail.query(AuditFilter(actor=SCU_TITLE), limit=500)
        details = [entry.detail for entry in page.entries if entry.detail.startswith("Storage Commitment")]
        if len(details) >= count:
            break
        time.sleep(0.05)
    return details


@pytest.fixture
def scu_listener() -> Iterator[tuple[int, Reports]]:
    """The SCU's own AE, listening for reports on new associations (it accepts our SCP role)."""
    reports, port = Reports(), free_port()
    ae = AE(ae_title=SCU_TITLE)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.on_report)])
    yield port, reports
    server.shutdown()


def test_same_association_success_for_stored_and_0112_for_unknown(dimse_server, archive: Archive):
    reports = Reports()
    assoc = scu().associate(*dimse_server, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.on_report)])
    assert assoc.is_established
    stored = store(assoc, small_ct_series(3, prefix="SC1"))
    unknown = (str(CTImageStorage), str(generate_uid()))
    transaction = generate_uid()
    status, _ = request_commitment(assoc, commitment_request(transaction, [*stored, unknown]))
    assert status.Status == 0x0000
    report = reports.next()
    (detail,) = commitment_records(archive)
    assoc.release()
    assert report.association is assoc  # pushed on the N-ACTION's own association
    assert report.event_type == 2
    assert str(report.information.TransactionUID) == transaction
    assert report.committed() == {sop for _, sop in stored}
    assert report.failed() == {unknown[1]: NO_SUCH_INSTANCE}
    assert f"{transaction}: 3 committed, 1 failed (0x0112 x1)" in detail and "status 0x0000" in detail


def test_all_committed_is_event_type_1_without_a_failed_sequence(start_listener):
    listener = start_listener()
    reports = Reports()
    assoc = scu().associate(*listener.address, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.on_report)])
    stored = store(assoc, small_ct_series(2, prefix="SC2"))
    assert request_commitment(assoc, commitment_request(generate_uid(), stored))[0].Status == 0
    report = reports.next()
    assert commitment_records(listener.archive)
    assoc.release()
    assert report.event_type == 1
    assert report.committed() == {sop for _, sop in stored}
    assert "FailedSOPSequence" not in report.information


def test_altered_file_is_0110_and_wrong_class_is_0119(start_listener):
    listener = start_listener()
    reports = Reports()
    assoc = scu().associate(*listener.address, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.on_report)])
    (altered, intact, other_class) = store(assoc, small_ct_series(3, prefix="SC3"))
    with listener.archive.index.reading() as session:
        from oncopacs.index.query import find_instances

        (row,) = find_instances(session, {"SOPInstanceUID": altered[1]})
    path = listener.archive.storage.path_of(row.file_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte changed on disk
    path.write_bytes(bytes(data))
    request = commitment_request(generate_uid(), [altered, intact, (str(MRImageStorage), other_class[1])])
    assert request_commitment(assoc, request)[0].Status == 0
    report = reports.next()
    assert commitment_records(listener.archive)
    assoc.release()
    assert report.event_type == 2
    assert report.committed() == {intact[1]}
    assert report.failed() == {altered[1]: PROCESSING_FAILURE, other_class[1]: CLASS_INSTANCE_CONFLICT}


def test_released_first_gets_the_report_on_a_new_association(start_listener, scu_listener):
    port, reports = scu_listener
    listener = start_listener(remote_aes=(RemoteAE(SCU_TITLE, "127.0.0.1", port),))
    assoc = scu().associate(*listener.address)
    stored = store(assoc, small_ct_series(2, prefix="SC4"))
    unknown = (str(CTImageStorage), str(generate_uid()))
    transaction = generate_uid()
    send_then_release(assoc, commitment_request(transaction, [*stored, unknown]))
    report = reports.next()
    assert report.association is not assoc and report.association.is_acceptor  # the SCU's listener took it
    assert str(report.information.TransactionUID) == transaction
    assert report.committed() == {sop for _, sop in stored}
    assert report.failed() == {unknown[1]: NO_SUCH_INSTANCE}
    (detail,) = commitment_records(listener.archive)
    assert f"on a new association to {SCU_TITLE}@127.0.0.1:{port}: status 0x0000" in detail


def test_released_first_from_an_unknown_ae_is_audited_and_the_server_serves_on(start_listener):
    listener = start_listener()  # no remote_aes: the requestor cannot be reached
    assoc = scu().associate(*listener.address)
    stored = store(assoc, small_ct_series(1, prefix="SC5"))
    send_then_release(assoc, commitment_request(generate_uid(), stored))
    (detail,) = commitment_records(listener.archive)
    assert f"not delivered: {SCU_TITLE} is not in remote_aes" in detail
    again = scu().associate(*listener.address)
    assert again.send_c_echo().Status == 0
    again.release()


def test_malformed_requests_are_refused_and_the_association_serves_on(start_listener):
    listener = start_listener()
    reports = Reports()
    assoc = scu().associate(*listener.address, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.on_report)])
    stored = store(assoc, small_ct_series(1, prefix="SC6"))
    refusals = {
        "no TransactionUID": (commitment_request(None, stored), 1, 0x0115),
        "wrong action type": (commitment_request(generate_uid(), stored), 2, 0x0123),
        "no references": (commitment_request(generate_uid(), []), 1, 0x0115),
        "bad UID": (commitment_request(generate_uid(), [(str(CTImageStorage), "1..2")]), 1, 0x0115),
    }
    for name, (information, action_type, expected) in refusals.items():
        status, _ = request_commitment(assoc, information, action_type)
        assert status.Status == expected, name
        assert status.ErrorComment, name
    wrong_instance = assoc.send_n_action(commitment_request(generate_uid(), stored), 1, StorageCommitmentPushModel,
                                         generate_uid())
    assert wrong_instance[0].Status == 0x0117
    assert reports.received.empty()  # no report for a refused request
    assert assoc.send_c_echo().Status == 0
    assert request_commitment(assoc, commitment_request(generate_uid(), stored))[0].Status == 0
    assert reports.next().event_type == 1
    assert len(commitment_records(listener.archive, 6)) == 6  # five refusals and the commitment
    assoc.release()


def test_read_commitment_request_names_the_problem_without_values():
    good = commitment_request("1.2.3", [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")])
    assert read_commitment_request(good) == CommitmentRequest(
        UID("1.2.3"), (ReferencedInstance(UID("1.2.840.10008.5.1.4.1.1.2"), UID("1.2.3.4")),))
    bad = commitment_request("1.2.3", [("1.2.840.10008.5.1.4.1.1.2", "1..2")])
    problem = read_commitment_request(bad)
    assert problem == RequestProblem(INVALID_ARGUMENT_VALUE, "ReferencedSOPInstanceUID of item 1 is not a valid UID")
    assert read_commitment_request(commitment_request(None, [])) == RequestProblem(
        INVALID_ARGUMENT_VALUE, "TransactionUID is missing")


def send_then_release(assoc, information: Dataset) -> None:
    """Send the N-ACTION and the A-RELEASE-RQ back to back, as a modality that wants its report later does.

    pynetdicom's ``send_n_action`` would wait for the response first, and the report could then still
    come on this association; here the release request is already on its way when the N-ACTION is served.
    """
    (context,) = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == StorageCommitmentPushModel]
    syntax = context.transfer_syntax[0]
    request = N_ACTION()
    request.MessageID = 99
    request.RequestedSOPClassUID = StorageCommitmentPushModel
    request.RequestedSOPInstanceUID = StorageCommitmentPushModelInstance
    request.ActionTypeID = 1
    request.ActionInformation = BytesIO(encode(information, syntax.is_implicit_VR, syntax.is_little_endian,
                                               syntax.is_deflated))
    assoc.dimse.send_msg(request, context.context_id)
    assoc.release()
    assert assoc.is_released
