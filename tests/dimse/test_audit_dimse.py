"""DIMSE audit records and the calling-AE allow-list, driven by a pynetdicom SCU."""

from __future__ import annotations

import copy
import time

import pytest
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditEntry, AuditFilter, AuditTrail
from oncopacs.dimse.auditing import CallingAllowList
from oncopacs.dimse.server import start_dimse
from oncopacs.errors import ConfigError
from oncopacs.settings import RemoteAE, Settings
from tests.conftest import free_port
from tests.factories import small_ct_series, without


def client(title: str, *contexts) -> AE:
    ae = AE(ae_title=title)
    for context in contexts:
        ae.add_requested_context(context)
    return ae


def records(archive: Archive, action: AuditAction, count: int = 1, timeout_s: float = 10) -> list[AuditEntry]:
    """The records of ``action``, waiting until there are at least ``count`` (some are written at association end)."""
    trail = AuditTrail(archive.index)
    deadline = time.monotonic() + timeout_s
    while True:
        found = list(trail.iter_entries(AuditFilter(action=action)))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_one_store_record_per_association(dimse_server, archive: Archive):
    series = small_ct_series(3, prefix="AS")
    assoc = client("MODALITY", CTImageStorage).associate(*dimse_server)
    assert [assoc.send_c_store(ds).Status for ds in series] == [0, 0, 0]
    assert assoc.send_c_store(without(small_ct_series(1, prefix="AX")[0], "StudyInstanceUID")).Status == 0xC000
    assert records(archive, AuditAction.STORE, timeout_s=0.3) == []  # nothing written per instance
    assoc.release()
    (stored,) = records(archive, AuditAction.STORE)
    time.sleep(0.3)
    assert len(records(archive, AuditAction.STORE)) == 1  # released and closed: still one record
    assert stored.actor == "MODALITY" and stored.actor_kind == "ae" and stored.source == "127.0.0.1"
    assert stored.patient_ids == (str(series[0].PatientID),)
    assert stored.study_uids == (str(series[0].StudyInstanceUID),)
    assert "3 stored, 1 failed" in stored.detail and stored.outcome == Outcome.MINOR_FAILURE
    assert archive.audit.verify().ok



def test_refusals_are_recorded_with_status_reason_and_declared_patient(dimse_server, archive: Archive):
    from pydicom.uid import generate_uid

    series = small_ct_series(2, prefix="RF")
    store = client("MODALITY", CTImageStorage).associate(*dimse_server)
    assert [store.send_c_store(ds).Status for ds in series] == [0, 0]
    store.release()
    changed = copy.deepcopy(series[0])  # same SOP Instance UID, other content
    changed.SeriesDescription = "changed"
    other_patient = copy.deepcopy(series[1])  # a new instance in the stored study, under another patient
    other_patient.SOPInstanceUID, other_patient.PatientID = generate_uid(), "RF-OTHER"
    other_patient.file_meta.MediaStorageSOPInstanceUID = other_patient.SOPInstanceUID
    moved = copy.deepcopy(series[1])  # the stored SOP Instance UID in a new study
    moved.StudyInstanceUID, moved.SeriesInstanceUID, moved.PatientID = generate_uid(), generate_uid(), "RF-MOVER"
    refused = client("MODALITY", CTImageStorage).associate(*dimse_server)
    assert [refused.send_c_store(ds).Status for ds in (changed, other_patient, moved)] == [0x0111, 0xA778, 0xA77B]
    refused.release()
    _, record = records(archive, AuditAction.STORE, 2)
    assert record.actor == "MODALITY" and record.source == "127.0.0.1"
    assert record.outcome == Outcome.SERIOUS_FAILURE and "0 stored, 3 failed" in record.detail
    assert {"RF-OTHER", "RF-MOVER", str(series[0].PatientID)} <= set(record.patient_ids)
    assert f"0x0111 already stored with different content (first copy kept): SOP Instance {changed.SOPInstanceUID}" \
        in record.detail
    assert "0xA778 " in record.detail and f"0xA77B already stored in another study or series: SOP Instance " \
        f"{moved.SOPInstanceUID}" in record.detail
    assert "RF-OTHER" not in record.detail  # the sender's reason (both Patient IDs) is not the audited one


def test_an_aborted_association_is_recorded_too(dimse_server, archive: Archive):
    series = small_ct_series(2, studies=2, prefix="AB")
    assoc = client("MODALITY", CTImageStorage).associate(*dimse_server)
    assert [assoc.send_c_store(ds).Status for ds in series] == [0, 0]
    assoc.abort()
    (stored,) = records(archive, AuditAction.STORE)
    assert sorted(stored.study_uids) == sorted({str(ds.StudyInstanceUID) for ds in series})
    assert sorted(stored.patient_ids) == sorted({str(ds.PatientID) for ds in series})
    assert stored.detail in ("C-STORE: 2 stored, 0 failed; association aborted",
                             "C-STORE: 2 stored, 0 failed; association closed")  # the abort may race the close
    assert stored.outcome == Outcome.SUCCESS


def test_find_gives_one_query_record(dimse_server, archive: Archive):
    series = small_ct_series(2, studies=2, prefix="AF")
    for dataset in series:
        archive.ingest_dataset(dataset, source="t")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = ""
    query.StudyInstanceUID = ""
    assoc = client("VIEWER", StudyRootQueryRetrieveInformationModelFind).associate(*dimse_server)
    answers = [i for s, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind) if s.Status == 0xFF00]
    assoc.release()
    assert len(answers) == 2
    (queried,) = records(archive, AuditAction.QUERY)
    assert queried.actor == "VIEWER" and queried.source == "127.0.0.1" and queried.outcome == Outcome.SUCCESS
    assert sorted(queried.study_uids) == sorted(str(ds.StudyInstanceUID) for ds in series)
    assert sorted(queried.patient_ids) == sorted({str(ds.PatientID) for ds in series})
    assert "C-FIND STUDY_ROOT STUDY" in queried.detail and "2 match(es)" in queried.detail


def test_get_gives_one_retrieve_record(dimse_server, archive: Archive):
    series = small_ct_series(3, prefix="AG")
    for dataset in series:
        archive.ingest_dataset(dataset, source="t")
    received: list[str] = []
    ae = client("VIEWER", StudyRootQueryRetrieveInformationModelGet, CTImageStorage)
    assoc = ae.associate(
        *dimse_server, ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.request.AffectedSOPInstanceUID) or 0)],
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = series[0].StudyInstanceUID
    final = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
    assoc.release()
    assert final.Status == 0 and len(received) == 3
    (retrieved,) = records(archive, AuditAction.RETRIEVE)
    assert retrieved.actor == "VIEWER" and retrieved.outcome == Outcome.SUCCESS
    assert retrieved.patient_ids == (str(series[0].PatientID),)
    assert retrieved.study_uids == (str(series[0].StudyInstanceUID),)
    assert "C-GET: 3 of 3 sent, 0 failed" in retrieved.detail


def test_a_get_whose_receiver_refuses_is_a_failure(dimse_server, archive: Archive):
    series = small_ct_series(2, prefix="AR")
    for dataset in series:
        archive.ingest_dataset(dataset, source="t")
    ae = client("VIEWER", StudyRootQueryRetrieveInformationModelGet, CTImageStorage)
    assoc = ae.associate(*dimse_server, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda e: 0xA700)])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = series[0].StudyInstanceUID
    final = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
    assoc.release()
    assert final.Status == 0xA702
    (retrieved,) = records(archive, AuditAction.RETRIEVE)
    assert retrieved.outcome == Outcome.SERIOUS_FAILURE and "0 of 2 sent, 2 failed" in retrieved.detail


def test_move_record_names_the_destination(settings: Settings, archive: Archive):
    series = small_ct_series(2, prefix="AM")
    for dataset in series:
        archive.ingest_dataset(dataset, source="t")
    destination = AE(ae_title="DEST")
    destination.add_supported_context(CTImageStorage)
    port = free_port()
    receiver = destination.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)])
    server = start_dimse(settings.with_overrides(remote_aes=(RemoteAE("DEST", "127.0.0.1", port),)), archive)
    try:
        assoc = client("MOVER", StudyRootQueryRetrieveInformationModelMove).associate(
            "127.0.0.1", server.server_address[1]
        )
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = series[0].StudyInstanceUID
        final = [s for s, _ in assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove)][-1]
        unknown = [s.Status for s, _ in assoc.send_c_move(query, "NOWHERE", StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
    finally:
        server.shutdown()
        receiver.shutdown()
    assert final.Status == 0 and unknown == [0xA801]
    moved, refused = records(archive, AuditAction.RETRIEVE, 2)
    assert moved.actor == "MOVER" and moved.outcome == Outcome.SUCCESS
    assert "C-MOVE to DEST@127.0.0.1" in moved.detail and "2 of 2 sent" in moved.detail
    assert moved.study_uids == (str(series[0].StudyInstanceUID),)
    assert refused.outcome == Outcome.SERIOUS_FAILURE and "NOWHERE" in refused.detail


def test_an_unknown_calling_ae_is_rejected_and_audited(settings: Settings, archive: Archive, caplog):
    server = start_dimse(settings.with_overrides(allowed_aes=("TRUSTED", "PACS@10.99.99.99")), archive)
    try:
        port = server.server_address[1]
        with caplog.at_level("WARNING", logger="oncopacs.dimse"):
            stranger = client("STRANGER", Verification).associate("127.0.0.1", port)
            elsewhere = client("PACS", Verification).associate("127.0.0.1", port)  # right title, wrong host
        trusted = client("TRUSTED", Verification).associate("127.0.0.1", port)
        assert trusted.is_established and trusted.send_c_echo().Status == 0
        trusted.release()
    finally:
        server.shutdown()
    for refused in (stranger, elsewhere):
        assert refused.is_rejected
        rejection = refused.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
    alerts = records(archive, AuditAction.ASSOCIATION_REFUSED, 2)
    assert [a.actor for a in alerts] == ["STRANGER", "PACS"]
    assert all(a.source == "127.0.0.1" and a.outcome == Outcome.SERIOUS_FAILURE for a in alerts)
    assert "STRANGER" in caplog.text and "127.0.0.1" in caplog.text


def test_an_allowed_ae_at_its_host_may_store(settings: Settings, archive: Archive):
    server = start_dimse(settings.with_overrides(allowed_aes=("CT1@127.0.0.1", "@localhost")), archive)
    try:
        port = server.server_address[1]
        assoc = client("CT1", CTImageStorage).associate("127.0.0.1", port)
        assert assoc.is_established
        assert assoc.send_c_store(small_ct_series(1, prefix="AL")[0]).Status == 0
        assoc.release()
        anyone = client("ANY", Verification).associate("127.0.0.1", port)  # "@localhost": any title from here
        assert anyone.is_established
        anyone.release()
    finally:
        server.shutdown()
    assert len(records(archive, AuditAction.STORE)) == 1
    assert records(archive, AuditAction.ASSOCIATION_REFUSED, timeout_s=0) == []


def test_allow_list_entries():
    allowed = CallingAllowList(["CT1", "PACS@10.0.0.5", "@192.168.7.7", "WS@::1"])
    assert allowed.permits("CT1", "10.1.1.1")
    assert allowed.permits("PACS", "10.0.0.5") and not allowed.permits("PACS", "10.0.0.6")
    assert allowed.permits("ANYONE", "192.168.7.7") and allowed.permits("ANYONE", "::ffff:192.168.7.7")
    assert allowed.permits("WS", "::1") and not allowed.permits("WS", "127.0.0.1")
    assert not allowed.permits("CT2", "10.0.0.5")
    assert CallingAllowList([]).permits("ANY", "1.2.3.4")
    assert Settings.load(env={"ONCOPACS_ALLOWED_AES": "CT1, PACS@10.0.0.5,@host"}).allowed_aes == (
        "CT1", "PACS@10.0.0.5", "@host")
    for bad in ("TOOLONGAETITLE_XYZ", "CT1@", "@"):
        with pytest.raises(ConfigError):
            Settings.load(env={"ONCOPACS_ALLOWED_AES": bad})


def test_an_entry_naming_no_host_is_refused_never_read_as_any_host():
    for bad in ("CT1@[]", "CT1@[ ]", "@[]"):
        with pytest.raises(ConfigError):
            Settings.load(env={"ONCOPACS_ALLOWED_AES": bad})
        with pytest.raises(ValueError, match="names no host"):
            CallingAllowList([bad])
    assert CallingAllowList(["CT1@[::1]"]).permits("CT1", "::1")  # a bracketed IPv6 address still works
