"""DIMSE services driven by pynetdicom as the SCU: echo, store, find, get, move, and refusals."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    RTDoseStorage,
    RTIonPlanStorage,
    RTStructureSetStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from oncopacs.archive.ingest import Archive
from oncopacs.archive.part10 import dataset_offset
from oncopacs.dimse.server import start_dimse
from oncopacs.phantom import build_demo_patient
from oncopacs.settings import RemoteAE, Settings
from tests.conftest import free_port
from tests.factories import part10_bytes, small_ct_series, without


def client(*contexts) -> AE:
    ae = AE(ae_title="TESTSCU")
    for context in contexts:
        ae.add_requested_context(context)
    return ae


@pytest.fixture
def stored_patient(archive: Archive):
    patient = build_demo_patient()
    for dataset in patient.all_datasets():
        archive.ingest_dataset(dataset, source="t")
    return patient


def test_echo(dimse_server):
    assoc = client(Verification).associate(*dimse_server, ae_title="ONCOPACS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_store_rt_objects_and_resend(dimse_server, archive: Archive):
    patient = build_demo_patient()
    objects = [patient.planning_ct[0], patient.rtstruct, patient.rt_ion_plan, patient.rt_dose]
    assoc = client(CTImageStorage, RTStructureSetStorage, RTIonPlanStorage, RTDoseStorage).associate(*dimse_server)
    statuses = [assoc.send_c_store(ds).Status for ds in objects + objects]
    assoc.release()
    assert statuses == [0] * 8
    for dataset in objects:
        with archive.index.reading() as session:
            from oncopacs.index.query import find_instances

            (stored,) = find_instances(session, {"SOPInstanceUID": str(dataset.SOPInstanceUID)})
        data = archive.storage.read(stored.file_path, expected_sha256=stored.sha256)
        sent = part10_bytes(dataset)
        assert data[dataset_offset(data) :] == sent[dataset_offset(sent) :]


def test_store_refusals_keep_the_association(dimse_server):
    ct = small_ct_series(1, prefix="R")[0]
    changed = copy.deepcopy(ct)
    changed.PixelData = bytes(len(ct.PixelData))
    assoc = client(CTImageStorage).associate(*dimse_server)
    assert assoc.send_c_store(ct).Status == 0
    missing = assoc.send_c_store(without(small_ct_series(2, prefix="R2")[1], "StudyInstanceUID"))
    assert missing.Status == 0xC000 and "StudyInstanceUID missing" in missing.ErrorComment
    conflict = assoc.send_c_store(changed)
    assert conflict.Status == 0x0111 and "different content" in conflict.ErrorComment
    assert assoc.is_established
    assert assoc.send_c_store(small_ct_series(3, prefix="R3")[2]).Status == 0
    assoc.release()


def test_unknown_sop_class_is_refused_at_association(dimse_server):
    ae = AE()
    ae.add_requested_context("1.2.3.4.5.6.7.8.9")  # not a storage SOP class
    ae.add_requested_context(Verification)
    assoc = ae.associate(*dimse_server)
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assert "1.2.3.4.5.6.7.8.9" not in accepted and Verification in accepted
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def find(server, model, identifier: Dataset) -> list[tuple[int, Dataset | None]]:
    assoc = client(model).associate(*server)
    responses = [(status.Status, ident) for status, ident in assoc.send_c_find(identifier, model)]
    assoc.release()
    return responses


def test_find_study_root(dimse_server, stored_patient):
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "Phantom*"
    query.StudyInstanceUID = ""
    query.ModalitiesInStudy = ""
    query.NumberOfStudyRelatedInstances = ""
    query.StudyDate = "19000101-"
    query.AccessionNumber = ""
    responses = find(dimse_server, StudyRootQueryRetrieveInformationModelFind, query)
    pending = [ident for status, ident in responses if status == 0xFF00]
    assert responses[-1][0] == 0 and len(pending) == 2
    modalities = sorted(tuple(ident.ModalitiesInStudy) for ident in pending)
    assert modalities == [("CT", "PT"), ("CT", "RTDOSE", "RTPLAN", "RTSTRUCT")]
    assert all(ident.RetrieveAETitle == "ONCOPACS" and "AccessionNumber" in ident for ident in pending)


def test_find_patient_root_all_levels(dimse_server, stored_patient):
    levels = {"PATIENT": 1, "STUDY": 2, "SERIES": 6, "IMAGE": len(stored_patient.all_datasets())}
    for level, expected in levels.items():
        query = Dataset()
        query.QueryRetrieveLevel = level
        query.PatientID = stored_patient.patient.patient_id
        query.SOPInstanceUID = "" if level == "IMAGE" else None
        responses = find(dimse_server, PatientRootQueryRetrieveInformationModelFind, query)
        assert sum(status == 0xFF00 for status, _ in responses) == expected, level


def test_find_with_bad_level_answers_a900(dimse_server, stored_patient):
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"  # not valid in Study Root
    query.PatientID = ""
    (response,) = find(dimse_server, StudyRootQueryRetrieveInformationModelFind, query)
    assert response[0] == 0xA900


def test_get_returns_every_instance_unchanged(dimse_server, stored_patient):
    received: list[Dataset] = []

    def on_store(event):
        received.append(event.dataset)
        return 0

    ae = client(StudyRootQueryRetrieveInformationModelGet, CTImageStorage)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.128")  # PET
    roles = [build_role(CTImageStorage, scp_role=True), build_role("1.2.840.10008.5.1.4.1.1.128", scp_role=True)]
    assoc = ae.associate(*dimse_server, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = stored_patient.pet[0].StudyInstanceUID
    statuses = [status.Status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1] == 0
    sent = {str(ds.SOPInstanceUID): ds for ds in (*stored_patient.pet, *stored_patient.pet_ct)}
    assert sorted(str(ds.SOPInstanceUID) for ds in received) == sorted(sent)
    for dataset in received:
        assert dataset.PixelData == sent[str(dataset.SOPInstanceUID)].PixelData


def test_move_to_configured_destination(settings: Settings, archive: Archive, stored_patient, tmp_path: Path):
    arrived: list[str] = []
    destination = AE(ae_title="DEST")
    destination.add_supported_context(CTImageStorage)
    destination.add_supported_context("1.2.840.10008.5.1.4.1.1.128")
    port = free_port()
    receiver = destination.start_server(
        ("127.0.0.1", port), block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: arrived.append(str(event.dataset.SOPInstanceUID)) or 0)],
    )
    server = start_dimse(settings.with_overrides(remote_aes=(RemoteAE("DEST", "127.0.0.1", port),)), archive)
    try:
        assoc = client(StudyRootQueryRetrieveInformationModelMove).associate("127.0.0.1", server.server_address[1])
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.SeriesInstanceUID = stored_patient.pet[0].SeriesInstanceUID
        statuses = [s.Status for s, _ in assoc.send_c_move(query, "DEST", StudyRootQueryRetrieveInformationModelMove)]
        unknown = [s.Status for s, _ in assoc.send_c_move(query, "NOWHERE", StudyRootQueryRetrieveInformationModelMove)]
        assoc.release()
    finally:
        server.shutdown()
        receiver.shutdown()
    assert statuses[-1] == 0 and sorted(arrived) == sorted(str(ds.SOPInstanceUID) for ds in stored_patient.pet)
    assert unknown == [0xA801]


def test_many_associations_at_once(dimse_server, archive: Archive):
    batches = [small_ct_series(10, prefix=f"M{i}") for i in range(6)]
    failures: list[int] = []

    def send(batch):
        assoc = client(CTImageStorage).associate(*dimse_server)
        failures.extend(s.Status for s in (assoc.send_c_store(ds) for ds in batch) if s.Status != 0)
        assoc.release()

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with archive.index.reading() as session:
        from oncopacs.index.query import QueryLevel, count

        assert count(session, QueryLevel.IMAGE, {}) == 60


def test_calling_ae_allow_list(settings: Settings, archive: Archive):
    server = start_dimse(settings.with_overrides(allowed_aes=("TRUSTED",)), archive)
    try:
        port = server.server_address[1]
        refused = client(Verification).associate("127.0.0.1", port)
        assert refused.is_rejected
        trusted = AE(ae_title="TRUSTED")
        trusted.add_requested_context(Verification)
        assoc = trusted.associate("127.0.0.1", port)
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        server.shutdown()


def test_a_damaged_file_is_not_sent_and_the_rest_still_are(dimse_server, archive: Archive):
    series = small_ct_series(4, prefix="H")
    for dataset in series:
        archive.ingest_dataset(dataset, source="t")
    with archive.index.reading() as session:
        from oncopacs.index.query import find_instances

        stored = find_instances(session, {"SeriesInstanceUID": str(series[0].SeriesInstanceUID)})
    damaged = archive.storage.path_of(stored[1].file_path)
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    received = []
    ae = client(StudyRootQueryRetrieveInformationModelGet, CTImageStorage)
    assoc = ae.associate(
        *dimse_server, ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(str(e.dataset.SOPInstanceUID)) or 0)],
    )
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = series[0].StudyInstanceUID
    query.SeriesInstanceUID = series[0].SeriesInstanceUID
    final = [status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
    assoc.release()
    assert sorted(received) == sorted(s.sop_instance_uid for i, s in enumerate(stored) if i != 1)
    assert final.Status == 0xB000 and final.NumberOfFailedSuboperations == 1
    assert final.NumberOfCompletedSuboperations == 3


ONCOLOGY_AND_COMMON_STORAGE = [
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130",
    "1.2.840.10008.5.1.4.1.1.481.1", "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.4", "1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.481.6",
    "1.2.840.10008.5.1.4.1.1.481.7", "1.2.840.10008.5.1.4.1.1.481.8", "1.2.840.10008.5.1.4.1.1.481.9",
    "1.2.840.10008.5.1.4.1.1.66.1", "1.2.840.10008.5.1.4.1.1.66.3", "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.7",
]
COMMON_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
]


@pytest.mark.parametrize("syntax", COMMON_SYNTAXES)
def test_every_storage_class_is_accepted_in_common_syntaxes(dimse_server, syntax: str):
    """CT to Encapsulated PDF, RT objects and records, registrations, SEG and SR, one syntax at a time."""
    ae = AE()
    for sop_class in ONCOLOGY_AND_COMMON_STORAGE:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(*dimse_server)
    accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {(sop_class, syntax) for sop_class in ONCOLOGY_AND_COMMON_STORAGE}


def test_deflated_dataset_is_stored_as_sent(dimse_server, archive: Archive):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ct = small_ct_series(1, prefix="DF")[0]
    ct.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ae = AE()
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    assoc = ae.associate(*dimse_server)
    assert assoc.send_c_store(ct).Status == 0
    assoc.release()
    with archive.index.reading() as session:
        from oncopacs.index.query import find_instances

        (stored,) = find_instances(session, {"SOPInstanceUID": str(ct.SOPInstanceUID)})
    assert stored.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    data = archive.storage.read(stored.file_path, expected_sha256=stored.sha256)
    sent = part10_bytes(ct)
    assert data[dataset_offset(data):] == sent[dataset_offset(sent):]
    assert dcmread(__import__("io").BytesIO(data)).PatientID == ct.PatientID


def test_association_limit_rejects_transiently_and_loses_nothing(settings: Settings, archive: Archive):
    server = start_dimse(settings.with_overrides(max_associations=2), archive)
    try:
        port = server.server_address[1]
        ae = client(CTImageStorage, Verification)
        held = [ae.associate("127.0.0.1", port) for _ in range(2)]
        extra = ae.associate("127.0.0.1", port)
        assert all(a.is_established for a in held) and extra.is_rejected
        assert extra.acceptor.primitive.result == 0x02  # rejected-transient: try again later
        series = small_ct_series(4, prefix="AL")
        assert [held[i % 2].send_c_store(ds).Status for i, ds in enumerate(series)] == [0] * 4
        for assoc in held:
            assoc.release()
        deadline = time.monotonic() + 10
        while server.active_associations and time.monotonic() < deadline:  # the server ends them
            time.sleep(0.05)
        later = ae.associate("127.0.0.1", port)
        assert later.is_established
        later.release()
    finally:
        server.shutdown()
    with archive.index.reading() as session:
        from oncopacs.index.query import QueryLevel, count

        assert count(session, QueryLevel.IMAGE, {"SeriesInstanceUID": str(series[0].SeriesInstanceUID)}) == 4
