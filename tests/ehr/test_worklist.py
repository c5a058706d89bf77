"""Orders -> Modality Worklist: ORM^O01 / OMI^O23 handlers, ``findscu -W``, MPPS and linking the arriving study."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from oncopacs.archive.extract import build_record
from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.dimse.worklist import build_worklist_response
from oncopacs.ehr.listener import Hl7Listener
from oncopacs.ehr.messages import AckCode, parse_message
from oncopacs.ehr.orders import ArrivalLinker, build_order_handlers, link_arrival
from oncopacs.ehr.wiring import build_dispatcher
from oncopacs.index.db import IndexDatabase, open_index
from oncopacs.index.models import WorklistItem
from oncopacs.index.query import QueryError
from oncopacs.index.worklist import StepStatus, find_worklist, list_order
from oncopacs.platform import Platform
from tests.conftest import dcmtk_tool
from tests.ehr.test_listener import msa, send
from tests.factories import small_ct_series

STUDY_UID = "1.2.826.0.1.3680043.8.498.424242.1"


def segment(name: str, values: dict[int, str]) -> str:
    """One HL7 segment with ``values`` at their field numbers (1-based), the others empty."""
    fields = [""] * (max(values) + 1)
    for number, value in values.items():
        fields[number] = value
    return "|".join([name, *fields[1:]])


def order_message(control: str, placer: str, *, kind: str = "ORM^O01", accession: str = "ACC1001",
                  modality: str = "CT", station: str = "CT01", start: str = "202612071030",
                  patient: tuple[str, str] = ("P1001", "DOE^JANE"), order_status: str = "",
                  ipcs: tuple[dict[int, str], ...] = (), drop: tuple[str, ...] = ()) -> str:
    filler = f"F{placer}" if placer else ""
    obr = {1: "1", 2: placer, 3: filler, 4: "CTCHEST^CT chest with contrast", 16: "77^WHO^ORDERED",
           18: accession, 19: f"RP{placer}", 20: f"SPS{placer}", 21: station, 24: modality, 27: f"^^^{start}"}
    for name in drop:
        obr.pop(int(name.split("-")[1]), None)
    segments = [
        segment("MSH", {1: "^~\\&", 2: "RIS", 3: "HOSP", 4: "ONCOPACS", 5: "ONCO", 6: "20261207093000",
                        8: kind, 9: f"MSG{placer}{control}", 10: "P", 11: "2.5.1"}),
        segment("PID", {3: f"{patient[0]}^^^HOSP^MR", 5: patient[1], 7: "19600101", 8: "F"}),
        segment("PV1", {2: "O", 8: "1234^SMITH^JOHN^^^DR"}),
        segment("ORC", {1: control, 2: placer, 3: filler, 5: order_status}),
    ]
    if kind == "OMI^O23":
        segments.append(segment("TQ1", {1: "1", 7: start}))
    segments.append(segment("OBR", obr))
    segments.extend(segment("IPC", values) for values in ipcs)
    return "\r".join(segments)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[IndexDatabase]:
    database = open_index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    yield database
    database.dispose()


def apply(index: IndexDatabase, text: str, message_pk: int | None = None):
    message = parse_message(text)
    return build_order_handlers(index, default_station_ae="DEFAULT_AE")[message.kind](message, message_pk)


def steps(index: IndexDatabase, placer: str):
    with index.reading() as session:
        return list_order(session, placer)


# -- the handlers ---------------------------------------------------------------------------


def test_new_order_creates_a_scheduled_step(index: IndexDatabase) -> None:
    outcome = apply(index, order_message("NW", "ORD1"))
    assert outcome.ack == AckCode.ACCEPT, outcome.text
    [step] = steps(index, "ORD1")
    assert (step.accession_number, step.modality, step.scheduled_station_ae) == ("ACC1001", "CT", "CT01")
    assert (step.scheduled_date, step.scheduled_time) == ("20261207", "1030")
    assert (step.requested_procedure_id, step.scheduled_step_id) == ("RPORD1", "SPSORD1")
    assert step.requested_procedure_description == step.scheduled_step_description == "CT chest with contrast"
    assert (step.patient_id, step.issuer_of_patient_id, step.patient_name) == ("P1001", "HOSP", "DOE^JANE")
    assert (step.patient_birth_date, step.patient_sex) == ("19600101", "F")
    assert step.referring_physician_name == "SMITH^JOHN^^DR"
    assert step.filler_order_number == "FORD1" and step.status == StepStatus.SCHEDULED.value
    assert step.study_instance_uid.startswith("1.2.826.0.1.3680043.8.498.")
    # a retransmission changes nothing, the generated study UID included
    assert apply(index, order_message("NW", "ORD1")).ack == AckCode.ACCEPT
    assert steps(index, "ORD1") == [step]


def test_change_updates_and_cancel_removes_from_the_worklist(index: IndexDatabase) -> None:
    apply(index, order_message("NW", "ORD2"))
    [before] = steps(index, "ORD2")
    outcome = apply(index, order_message("XO", "ORD2", station="CT02", start="202612081400"))
    assert outcome.ack == AckCode.ACCEPT, outcome.text
    [after] = steps(index, "ORD2")
    assert (after.scheduled_station_ae, after.scheduled_date, after.scheduled_time) == ("CT02", "20261208", "1400")
    assert after.study_instance_uid == before.study_instance_uid
    with index.reading() as session:
        assert [e.accession_number for e in find_worklist(session, {"ScheduledStationAETitle": "CT02"})] == ["ACC1001"]
    assert apply(index, order_message("CA", "ORD2")).ack == AckCode.ACCEPT
    assert steps(index, "ORD2")[0].status == StepStatus.CANCELLED.value
    with index.reading() as session:
        assert find_worklist(session, {}) == []
    assert apply(index, order_message("DC", "ORD2")).ack == AckCode.ACCEPT
    assert steps(index, "ORD2")[0].status == StepStatus.DISCONTINUED.value


def test_status_change_and_station_default(index: IndexDatabase) -> None:
    apply(index, order_message("NW", "ORD3", station=""))
    assert steps(index, "ORD3")[0].scheduled_station_ae == "DEFAULT_AE"
    assert apply(index, order_message("SC", "ORD3", order_status="IP")).ack == AckCode.ACCEPT
    assert steps(index, "ORD3")[0].status == StepStatus.IN_PROGRESS.value
    outcome = apply(index, order_message("SC", "ORD3", order_status="ZZ"))
    assert outcome.ack == AckCode.ERROR and "ORC-5" in outcome.text


@pytest.mark.parametrize(("text", "named"), [
    (order_message("NW", "ORD4", drop=("OBR-18",)), "OBR-18"),
    (order_message("NW", "ORD4", drop=("OBR-24",)), "OBR-24"),
    (order_message("NW", "ORD4", drop=("OBR-27",)), "TQ1-7, OBR-27.4 and ORC-7.4"),
    (order_message("NW", "ORD4", accession="A" * 17), "longer than 16"),
    (order_message("NW", ""), "ORC-2 and ORC-3"),
    (order_message("NW", "ORD4", patient=("", "DOE^JANE")), "PID-3"),
    (order_message("ZZ", "ORD4"), "ORC-1"),
    (order_message("CA", "UNKNOWN"), "not on the worklist"),
    (order_message("NW", "ORD4", kind="OMI^O23"), "IPC"),
    (order_message("NW", "ORD4", kind="OMI^O23", ipcs=({1: "A1", 3: "1.2.x", 5: "CT"},)), "IPC-3"),
])
def test_bad_orders_are_answered_ae_naming_the_field(index: IndexDatabase, text: str, named: str) -> None:
    outcome = apply(index, text)
    assert outcome.ack == AckCode.ERROR
    assert named in outcome.text
    with index.reading() as session:
        assert session.query(WorklistItem).count() == 0


def test_omi_creates_one_step_per_ipc(index: IndexDatabase) -> None:
    ipcs = ({1: "ACC2001", 2: "RP1", 3: STUDY_UID, 4: "SPS1", 5: "MR", 9: "MR01"},
            {1: "ACC2001", 2: "RP1", 3: STUDY_UID, 4: "SPS2", 5: "CT"})
    outcome = apply(index, order_message("NW", "ORD5", kind="OMI^O23", start="20261209083000", ipcs=ipcs))
    assert outcome.ack == AckCode.ACCEPT, outcome.text
    first, second = steps(index, "ORD5")
    assert (first.scheduled_step_id, first.modality, first.scheduled_station_ae) == ("SPS1", "MR", "MR01")
    assert (second.scheduled_step_id, second.modality, second.scheduled_station_ae) == ("SPS2", "CT", "DEFAULT_AE")
    assert first.study_instance_uid == second.study_instance_uid == STUDY_UID
    assert (first.scheduled_date, first.scheduled_time) == ("20261209", "083000")
    assert apply(index, order_message("CA", "ORD5", kind="OMI^O23", ipcs=ipcs)).ack == AckCode.ACCEPT
    assert {s.status for s in steps(index, "ORD5")} == {StepStatus.CANCELLED.value}


def test_matching_keys(index: IndexDatabase) -> None:
    apply(index, order_message("NW", "M1", accession="A1", modality="CT", station="CT01", start="20261201",
                               patient=("P1", "DOE^JANE")))
    apply(index, order_message("NW", "M2", accession="A2", modality="MR", station="MR01", start="20261205",
                               patient=("P2", "ROE^RICHARD")))

    def found(**keys: str) -> list[str]:
        with index.reading() as session:
            return [e.accession_number for e in find_worklist(session, keys)]

    assert found() == ["A1", "A2"]
    assert found(Modality="MR") == ["A2"]
    assert found(ScheduledStationAETitle="CT01") == ["A1"]
    assert found(ScheduledProcedureStepStartDate="20261202-20261231") == ["A2"]
    assert found(ScheduledProcedureStepStartDate="-20261201") == ["A1"]
    assert found(ScheduledProcedureStepStartDate="20261205") == ["A2"]
    assert found(PatientName="doe*") == ["A1"]
    assert found(PatientName="R?E^*") == ["A2"]
    assert found(PatientID="P2", AccessionNumber="A2") == ["A2"]
    assert found(PatientID="P2", AccessionNumber="A1") == []
    with pytest.raises(QueryError), index.reading() as session:
        find_worklist(session, {"ScheduledProcedureStepStartDate": "2026-12-01-2026"})


def test_arrival_links_the_study(index: IndexDatabase) -> None:
    apply(index, order_message("NW", "L1", accession="ACC7"))
    ct = small_ct_series(2, prefix="W")
    for dataset in ct:
        dataset.AccessionNumber = "ACC7"
    linker = ArrivalLinker(index)
    record = build_record(ct[0], ExplicitVRLittleEndian)
    linker.react(record)
    linker.react(build_record(ct[1], ExplicitVRLittleEndian))
    [step] = steps(index, "L1")
    assert step.linked_study_uid == str(ct[0].StudyInstanceUID)
    assert step.status == StepStatus.SCHEDULED.value  # linking does not close the step
    assert link_arrival(index, record) == 0  # already linked
    other = small_ct_series(1, prefix="X")[0]
    assert link_arrival(index, build_record(other, ExplicitVRLittleEndian)) == 0  # no accession number


# -- on the wire: findscu -W and MPPS ------------------------------------------------------------


def findscu_worklist(port: int, work_dir: Path, *keys: str) -> list[Dataset]:
    """``findscu -W`` with ``keys``; the response identifiers."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    arguments = [arg for key in keys for arg in ("-k", key)]
    result = subprocess.run(
        [dcmtk_tool("findscu"), "-W", "-aet", "CT01", "-aec", "ONCOPACS", "-X", *arguments, "127.0.0.1", str(port)],
        cwd=work_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=False,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    return [pydicom.dcmread(p) for p in sorted(work_dir.glob("rsp*.dcm"))]


SPS = "ScheduledProcedureStepSequence[0]"
RETURN_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
               "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID", "ReferringPhysicianName",
               f"{SPS}.ScheduledStationAETitle", f"{SPS}.ScheduledProcedureStepStartDate",
               f"{SPS}.ScheduledProcedureStepStartTime", f"{SPS}.Modality",
               f"{SPS}.ScheduledProcedureStepDescription", f"{SPS}.ScheduledProcedureStepID")


def with_keys(**matching: str) -> list[str]:
    given = {k.replace("SPS_", f"{SPS}."): v for k, v in matching.items()}
    return [f"{key}={given.pop(key, '')}" for key in RETURN_KEYS] + [f"{k}={v}" for k, v in given.items()]


@pytest.mark.dcmtk
def test_findscu_worklist_mpps_and_cancel(archive: Archive, dimse_server: tuple[str, int], tmp_path: Path) -> None:
    _, port = dimse_server
    index = archive.index
    assert apply(index, order_message("NW", "W1", accession="ACC9001", modality="CT", station="CT01",
                                      start="202612071030", patient=("P9", "DOE^JANE"))).ack == AckCode.ACCEPT
    assert apply(index, order_message("NW", "W2", accession="ACC9002", modality="MR", station="MR01",
                                      start="202612101500", patient=("P8", "RÖE^RICHARD"))).ack == AckCode.ACCEPT
    work = tmp_path / "find"

    [answer] = findscu_worklist(port, work, *with_keys(SPS_ScheduledStationAETitle="CT01"))
    assert answer.AccessionNumber == "ACC9001" and answer.PatientID == "P9"
    assert str(answer.PatientName) == "DOE^JANE" and answer.PatientBirthDate == "19600101"
    assert answer.RequestedProcedureID == "RPW1" and answer.StudyInstanceUID
    assert str(answer.ReferringPhysicianName) == "SMITH^JOHN^^DR"
    [item] = answer.ScheduledProcedureStepSequence
    assert (item.ScheduledStationAETitle, item.Modality, item.ScheduledProcedureStepID) == ("CT01", "CT", "SPSW1")
    assert (item.ScheduledProcedureStepStartDate, item.ScheduledProcedureStepStartTime) == ("20261207", "1030")
    assert item.ScheduledProcedureStepDescription == "CT chest with contrast"
    assert "IssuerOfPatientID" not in answer  # only what was asked for
    [queried] = AuditTrail(index).iter_entries(AuditFilter(action=AuditAction.QUERY))
    assert "C-FIND WORKLIST" in queried.detail and "1 match(es)" in queried.detail
    assert (queried.actor, queried.patient_ids, queried.study_uids) == ("CT01", ("P9",), (answer.StudyInstanceUID,))
    [mr] = findscu_worklist(port, work, *with_keys(SPS_Modality="MR"))
    assert str(mr.PatientName) == "RÖE^RICHARD" and mr.SpecificCharacterSet == "ISO_IR 192"

    def accessions(**keys: str) -> list[str]:
        return sorted(str(a.AccessionNumber) for a in findscu_worklist(port, work, *with_keys(**keys)))

    assert accessions() == ["ACC9001", "ACC9002"]
    assert accessions(SPS_Modality="MR") == ["ACC9002"]
    assert accessions(SPS_ScheduledProcedureStepStartDate="20261208-20261231") == ["ACC9002"]
    assert accessions(PatientName="doe*") == ["ACC9001"]
    assert accessions(AccessionNumber="ACC9002") == ["ACC9002"]

    # a cancelled order disappears
    assert apply(index, order_message("CA", "W2")).ack == AckCode.ACCEPT
    assert accessions() == ["ACC9001"]

    # the modality performs W1: MPPS N-CREATE (IN PROGRESS) takes it off the worklist, N-SET closes it
    study_uid = str(answer.StudyInstanceUID)
    mpps_uid = "1.2.826.0.1.3680043.8.498.424242.99"
    created = Dataset()
    created.PerformedProcedureStepStatus = "IN PROGRESS"
    created.Modality = "CT"
    created.PerformedStationAETitle = "CT01"
    step = Dataset()
    step.AccessionNumber, step.ScheduledProcedureStepID, step.StudyInstanceUID = "ACC9001", "SPSW1", study_uid
    created.ScheduledStepAttributesSequence = [step]
    modality = AE(ae_title="CT01")
    modality.add_requested_context(ModalityPerformedProcedureStep)
    assoc = modality.associate("127.0.0.1", port, ae_title="ONCOPACS")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(created, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0000
        assert steps(index, "W1")[0].status == StepStatus.IN_PROGRESS.value
        assert accessions() == []
        status, _ = assoc.send_n_create(created, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0111  # the same MPPS twice
        finished = Dataset()
        finished.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_set(finished, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0000
        assert steps(index, "W1")[0].status == StepStatus.COMPLETED.value
        status, _ = assoc.send_n_set(finished, ModalityPerformedProcedureStep, mpps_uid)
        assert status.Status == 0x0110  # a completed step is no longer updated
        status, _ = assoc.send_n_set(finished, ModalityPerformedProcedureStep, "1.2.3.4.5.6")
        assert status.Status == 0x0112  # no such MPPS
        bad = Dataset()
        bad.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_create(bad, ModalityPerformedProcedureStep, "1.2.3.4.5.7")
        assert status.Status == 0x0106  # an MPPS starts IN PROGRESS
    finally:
        assoc.release()
    assert accessions() == []

    # the CT that arrives with the accession number is linked to the order
    ct = small_ct_series(1, prefix="WL")[0]
    ct.AccessionNumber = "ACC9001"
    assert archive.ingest_dataset(ct, source="test").acknowledged
    assert steps(index, "W1")[0].linked_study_uid == str(ct.StudyInstanceUID)  # by the built-in worklist-link rule
    assert link_arrival(index, build_record(ct, ExplicitVRLittleEndian)) == 0  # linked already


@pytest.mark.dcmtk
def test_an_order_over_mllp_reaches_findscu(platform: Platform, dimse_server: tuple[str, int], tmp_path: Path) -> None:
    settings = dataclasses.replace(platform.settings, hl7_listen_host="127.0.0.1", hl7_listen_port=0)
    dispatcher = build_dispatcher(settings, platform.index, platform.audit, build_order_handlers(platform.index))
    listener = Hl7Listener(settings, dispatcher)
    listener.start()
    try:
        ack = send(listener.port, order_message("NW", "WIRE1", accession="ACCWIRE", station="CT01"))
        assert msa(ack)[0] == "AA"
        [answer] = findscu_worklist(dimse_server[1], tmp_path / "find", *with_keys(AccessionNumber="ACCWIRE"))
        [step] = steps(platform.index, "WIRE1")
        assert (answer.PatientID, answer.StudyInstanceUID) == ("P1001", step.study_instance_uid)
        ack = send(listener.port, order_message("CA", "WIRE1"))
        assert msa(ack)[0] == "AA"
        assert findscu_worklist(dimse_server[1], tmp_path / "find", *with_keys(AccessionNumber="ACCWIRE")) == []
        ack = send(listener.port, order_message("CA", "WIRE-UNKNOWN"))
        assert msa(ack)[0] == "AE" and "not on the worklist" in msa(ack)[2]
    finally:
        listener.stop()


def test_an_empty_step_sequence_asks_for_every_step_attribute(index: IndexDatabase) -> None:
    apply(index, order_message("NW", "R1", accession="ACCR1", station="CT09"))
    with index.reading() as session:
        [entry] = find_worklist(session, {})
    identifier = Dataset()
    identifier.AccessionNumber = ""
    identifier.ScheduledProcedureStepSequence = []
    identifier.ReferencedStudySequence = []
    identifier.OtherPatientIDs = ""
    answer = build_worklist_response(identifier, entry)
    assert answer.AccessionNumber == "ACCR1" and answer.ReferencedStudySequence == []
    assert answer.OtherPatientIDs in (None, "")  # asked for, not held: returned empty
    [item] = answer.ScheduledProcedureStepSequence
    assert (item.ScheduledStationAETitle, item.Modality, item.ScheduledProcedureStepStatus) == ("CT09", "CT",
                                                                                               "SCHEDULED")
    assert "PatientName" not in answer
