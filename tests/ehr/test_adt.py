"""ADT A08/A31 demographics updates and A40 merges: the index, QIDO-RS, dcmtk's findscu and getscu, WADO-RS,
later ingest under a merged ID, and an administrator's revert (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from flask import Flask
from pydicom import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Role
from oncopacs.cli.main import main as cli
from oncopacs.dicomweb.multipart import read_multipart
from oncopacs.ehr.adt import build_adt_handlers
from oncopacs.ehr.listener import Hl7Listener
from oncopacs.ehr.messages import AckCode, HandlerOutcome, parse_message
from oncopacs.ehr.wiring import build_dispatcher
from oncopacs.index.demographics import merge_generation
from oncopacs.index.models import Patient, PatientMerge, PatientUpdate, Study
from oncopacs.phantom import build_benchmark_ct
from oncopacs.platform import Platform
from oncopacs.settings import Settings
from tests.dimse.test_dcmtk import dataset_bytes, findscu, getscu
from tests.ehr.test_listener import msa, send
from tests.web.conftest import _headers_factory

OLD_NAME, NEW_NAME = "Oldname^Ann", "Newname^Ann^Marie"
SENDER = "EPIC|HOSP"


# -- helpers --------------------------------------------------------------------------------


def ct(patient_id: str, study_uid: str, *, name: str = OLD_NAME, birth: str = "19600101", sex: str = "F",
       issuer: str = "") -> Dataset:
    """One small CT slice of ``study_uid`` for this patient (fresh series and instance UIDs)."""
    dataset = next(build_benchmark_ct(1, rows=8, cols=8, prefix="ADT"))
    dataset.PatientID, dataset.PatientName, dataset.PatientBirthDate, dataset.PatientSex = (
        patient_id, name, birth, sex)
    if issuer:
        dataset.IssuerOfPatientID = issuer
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


def store(archive: Archive, dataset: Dataset) -> None:
    result = archive.ingest_dataset(dataset, source="test")
    assert result.study_instance_uid == dataset.StudyInstanceUID, result.reason


def hl7(kind: str, *segments: str, control_id: str = "C1") -> str:
    return "\r".join([f"MSH|^~\\&|{SENDER}|ONCOPACS|ONCO|20250101120000||{kind}|{control_id}|P|2.5",
                      f"EVN|{kind[-3:]}|20250101120000", *segments])


def pid(patient_id: str, name: str = "Newname^Ann^Marie", birth: str = "19600202", sex: str = "F") -> str:
    return f"PID|1||{patient_id}^^^HOSP^MR||{name}||{birth}|{sex}"


def mrg(prior_id: str, name: str = "") -> str:
    return f"MRG|{prior_id}^^^HOSP^MR||||||{name}"


def apply(archive: Archive, kind: str, *segments: str) -> HandlerOutcome:
    return build_adt_handlers(archive.index)[kind](parse_message(hl7(kind, *segments)), None)


def patient_row(archive: Archive, patient_id: str) -> Patient:
    with archive.index.reading() as session:
        return session.scalars(select(Patient).where(Patient.patient_id == patient_id)).one()


def study_owner(archive: Archive, study_uid: str) -> str:
    with archive.index.reading() as session:
        return session.scalars(select(Patient.patient_id).join(Study, Study.patient_pk == Patient.id)
                               .where(Study.study_instance_uid == study_uid)).one()


def stored_bytes(archive: Archive, sop_uid: str) -> bytes:
    from oncopacs.index.models import Instance

    with archive.index.reading() as session:
        row = session.execute(select(Instance.file_path, Instance.sha256)
                              .where(Instance.sop_instance_uid == sop_uid)).one()
    return archive.storage.read(row.file_path, row.sha256)


def qido(client, headers, **params: str) -> list[dict]:
    reply = client.get("/dicom-web/studies", query_string=params, headers=headers)
    assert reply.status_code in (200, 204), reply.data[:500]
    return reply.get_json() if reply.status_code == 200 else []


def value(document: dict, tag: str):
    return document[tag]["Value"][0]


@dataclasses.dataclass
class Web:
    app: Flask
    headers_for: Callable[[Role], dict[str, str]]

    @property
    def admin(self) -> dict[str, str]:
        return self.headers_for(Role.ADMIN)


@pytest.fixture
def web(platform: Platform) -> Web:
    from oncopacs.web.app import create_app

    app = create_app(platform)
    app.config["TESTING"] = True
    return Web(app, _headers_factory(app))


# -- updates --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ADT^A08", "ADT^A31"])
def test_an_update_changes_name_birth_date_and_sex_and_is_recorded(archive: Archive, kind: str):
    study = generate_uid()
    store(archive, ct("P-UPD", study))
    outcome = apply(archive, kind, pid("P-UPD", NEW_NAME, "19600202", "M"))
    assert outcome.ack is AckCode.ACCEPT and outcome.text == "updated name, birth_date, sex"
    row = patient_row(archive, "P-UPD")
    assert (row.patient_name, row.patient_birth_date, row.patient_sex) == (NEW_NAME, "19600202", "M")
    with archive.index.reading() as session:
        update = session.scalars(select(PatientUpdate)).one()
    assert json.loads(update.before_json)["name"] == OLD_NAME and json.loads(update.after_json)["sex"] == "M"
    # the same message again changes nothing; an empty field leaves a value alone, "" clears it
    assert apply(archive, kind, pid("P-UPD", NEW_NAME, "19600202", "M")).text == "no change"
    assert apply(archive, kind, pid("P-UPD", "", '""', "")).text == "updated birth_date"
    row = patient_row(archive, "P-UPD")
    assert (row.patient_name, row.patient_birth_date, row.patient_sex) == (NEW_NAME, "", "M")


def test_an_unknown_patient_is_registered_and_later_studies_carry_the_ehr_demographics(archive: Archive):
    outcome = apply(archive, "ADT^A08", pid("P-NEW", NEW_NAME))
    assert outcome.ack is AckCode.ACCEPT and outcome.text == "patient registered"
    # the modality had the worklist's IssuerOfPatientID (PID-3.4), so the instance files under the new row
    store(archive, ct("P-NEW", generate_uid(), name="Modality^Typo", issuer="HOSP"))
    assert patient_row(archive, "P-NEW").patient_name == NEW_NAME
    assert apply(archive, "ADT^A04", pid("P-NEW2")).text == "patient registered"


def test_a_message_without_a_patient_identifier_is_not_applied(archive: Archive):
    outcome = apply(archive, "ADT^A08", "PID|1||^^^HOSP^MR||Nobody^Here")
    assert outcome.ack is AckCode.ERROR and "PID-3" in outcome.text


# -- merges ---------------------------------------------------------------------------------


def test_a40_moves_the_studies_and_a_repeat_or_a_bad_merge_is_answered(archive: Archive):
    first, second = generate_uid(), generate_uid()
    store(archive, ct("P-SURV", first, name=NEW_NAME))
    store(archive, ct("P-PRIOR", second))
    generation = merge_generation()
    outcome = apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-PRIOR"))
    assert outcome.ack is AckCode.ACCEPT and outcome.text == "merged 1 patient(s), moved 1 studies"
    assert merge_generation() != generation
    assert study_owner(archive, first) == study_owner(archive, second) == "P-SURV"
    with archive.index.reading() as session:
        merge = session.scalars(select(PatientMerge)).one()
    assert (merge.prior_patient_id, merge.moved_study_uids) == ("P-PRIOR", second)
    assert json.loads(merge.prior_json)["name"] == OLD_NAME
    assert apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-PRIOR")).text == "merged already"
    assert apply(archive, "ADT^A40", pid("P-SURV")).ack is AckCode.ERROR  # no MRG
    assert "same patient" in apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-SURV")).text
    assert "another patient" in apply(archive, "ADT^A40", pid("P-OTHER"), mrg("P-PRIOR")).text
    assert "itself merged" in apply(archive, "ADT^A40", pid("P-PRIOR"), mrg("P-X")).text


def test_several_pairs_in_one_a40_are_merged_in_order(archive: Archive):
    uids = [generate_uid() for _ in range(3)]
    for patient_id, uid in zip(("P-A", "P-B", "P-C"), uids, strict=True):
        store(archive, ct(patient_id, uid))
    outcome = apply(archive, "ADT^A40", pid("P-A"), mrg("P-B"), pid("P-A"), mrg("P-C"))
    assert outcome.text == "merged 2 patient(s), moved 2 studies"
    assert {study_owner(archive, uid) for uid in uids} == {"P-A"}


def test_later_instances_with_the_prior_id_file_under_the_survivor_until_the_merge_is_reverted(
        archive: Archive, web: Web):
    app, headers = web.app, web.admin
    kept, moved, later = generate_uid(), generate_uid(), generate_uid()
    store(archive, ct("P-SURV", kept))
    store(archive, ct("P-PRIOR", moved))  # the writer has cached the prior patient's keys
    assert apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-PRIOR")).ack is AckCode.ACCEPT
    store(archive, ct("P-PRIOR", moved))  # one more slice of the moved study
    store(archive, ct("P-PRIOR", later))  # a new study under the prior ID
    assert study_owner(archive, moved) == study_owner(archive, later) == "P-SURV"

    client = app.test_client()
    merges = client.get("/api/patients/merges", headers=headers).get_json()["merges"]
    assert [(m["prior"]["patient_id"], m["reverted_at"]) for m in merges] == [("P-PRIOR", None)]
    reply = client.post(f"/api/patients/merges/{merges[0]['id']}/revert", headers=headers)
    assert reply.status_code == 200, reply.data
    assert client.post(f"/api/patients/merges/{merges[0]['id']}/revert", headers=headers).status_code == 409
    assert client.post("/api/patients/merges/99999/revert", headers=headers).status_code == 404
    assert study_owner(archive, moved) == "P-PRIOR"
    assert study_owner(archive, later) == "P-SURV"  # arrived after the merge: not one the merge moved
    store(archive, ct("P-PRIOR", generate_uid()))  # after the revert the prior ID is its own patient again
    assert study_owner(archive, kept) == "P-SURV"
    with archive.index.reading() as session:
        assert session.scalar(select(PatientMerge.reverted_by)) == "test-admin"
        rows = session.scalars(select(Patient.patient_id).join(Study, Study.patient_pk == Patient.id)).all()
    assert sorted(rows) == ["P-PRIOR", "P-PRIOR", "P-SURV", "P-SURV"]


def test_revert_refuses_a_merge_whose_studies_moved_since(archive: Archive, web: Web):
    app, headers = web.app, web.admin
    store(archive, ct("P-B", generate_uid()))
    apply(archive, "ADT^A40", pid("P-A"), mrg("P-B"))
    apply(archive, "ADT^A40", pid("P-C"), mrg("P-A"))  # the study moves on to P-C
    client = app.test_client()
    first = client.get("/api/patients/merges", headers=headers).get_json()["merges"][-1]
    reply = client.post(f"/api/patients/merges/{first['id']}/revert", headers=headers)
    assert reply.status_code == 409 and "moved or were deleted" in reply.get_data(as_text=True)


def test_merges_are_for_administrators_only(web: Web):
    client = web.app.test_client()
    assert client.get("/api/patients/merges", headers=web.headers_for(Role.ONCOLOGIST)).status_code == 403
    assert client.post("/api/patients/merges/1/revert", headers=web.headers_for(Role.ONCOLOGIST)).status_code == 403


def test_the_cli_lists_and_reverts_merges(archive: Archive, settings: Settings, tmp_path: Path):
    store(archive, ct("P-PRIOR", generate_uid()))
    apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-PRIOR"))
    env = {"ONCOPACS_DATA_DIR": str(settings.data_dir), "ONCOPACS_DATABASE_URL": settings.database_url}
    listed = CliRunner().invoke(cli, ["patients", "merges", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (merge,) = json.loads(listed.output)
    reverted = CliRunner().invoke(cli, ["patients", "unmerge", str(merge["id"])], env=env)
    assert reverted.exit_code == 0 and "1 studies moved back" in reverted.output
    again = CliRunner().invoke(cli, ["patients", "unmerge", str(merge["id"])], env=env)
    assert again.exit_code == 2 and "reverted already" in again.output


# -- what leaves the archive ----------------------------------------------------------------


def wado_instances(web: Web, study_uid: str, accept: str = 'multipart/related; type="application/dicom"; '
                   "transfer-syntax=*") -> dict[str, bytes]:
    reply = web.app.test_client().get(f"/dicom-web/studies/{study_uid}", headers={**web.admin, "Accept": accept})
    assert reply.status_code == 200, reply.data[:300]
    with read_multipart(io.BytesIO(reply.data), reply.content_type) as body:
        files = [part.read_bytes() for part in body.parts]
    return {str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID): f for f in files}


def test_qido_and_wado_carry_the_current_demographics_and_the_stored_files_stay(archive: Archive, web: Web):
    updated, untouched, prior = generate_uid(), generate_uid(), generate_uid()
    slice_ = ct("P-UPD", updated)
    store(archive, slice_)
    store(archive, ct("P-ELSE", untouched))
    store(archive, ct("P-PRIOR", prior))
    stored = stored_bytes(archive, slice_.SOPInstanceUID)
    apply(archive, "ADT^A08", pid("P-UPD", NEW_NAME, "19600202", "M"))
    apply(archive, "ADT^A40", pid("P-UPD"), mrg("P-PRIOR"))

    client = web.app.test_client()
    found = qido(client, web.admin, PatientID="P-UPD")
    assert {value(d, "0020000D") for d in found} == {updated, prior}  # the surviving ID finds both studies
    assert {value(d, "00100010")["Alphabetic"] for d in found} == {NEW_NAME}

    (sent,) = wado_instances(web, updated).values()
    header = pydicom.dcmread(io.BytesIO(sent))
    assert (str(header.PatientName), header.PatientBirthDate, header.PatientSex) == (NEW_NAME, "19600202", "M")
    assert header.PixelData == slice_.PixelData
    (moved,) = wado_instances(web, prior).values()
    moved_header = pydicom.dcmread(io.BytesIO(moved))
    assert moved_header.PatientID == "P-UPD"
    assert [item.PatientID for item in moved_header.OtherPatientIDsSequence] == ["P-PRIOR"]
    # transcoded on the way out too
    (explicit,) = wado_instances(web, updated, 'multipart/related; type="application/dicom"').values()
    assert str(pydicom.dcmread(io.BytesIO(explicit)).PatientName) == NEW_NAME

    metadata = client.get(f"/dicom-web/studies/{prior}/metadata", headers=web.admin).get_json()
    assert value(metadata[0], "00100020") == "P-UPD" and value(metadata[0], "00100010")["Alphabetic"] == NEW_NAME

    # a patient the EHR never touched goes out byte for byte; the stored file itself is never rewritten
    (plain,) = wado_instances(web, untouched).values()
    assert hashlib.sha256(plain).hexdigest() == hashlib.sha256(stored_bytes_of_study(archive, untouched)).hexdigest()
    assert stored_bytes(archive, slice_.SOPInstanceUID) == stored

    web.app.extensions["oncopacs.settings"] = dataclasses.replace(
        web.app.extensions["oncopacs.settings"], keep_original_on_retrieve=True)
    (original,) = wado_instances(web, updated).values()
    assert hashlib.sha256(original).hexdigest() == hashlib.sha256(stored).hexdigest()


def stored_bytes_of_study(archive: Archive, study_uid: str) -> bytes:
    from oncopacs.index.models import Instance, Series

    with archive.index.reading() as session:
        (uid,) = session.scalars(select(Instance.sop_instance_uid).join(Series).join(Study)
                                 .where(Study.study_instance_uid == study_uid)).all()
    return stored_bytes(archive, uid)


@pytest.fixture
def dimse(settings: Settings, archive: Archive) -> Iterator[Callable[..., tuple[str, int]]]:
    """Start the DIMSE service of ``archive`` (optionally with other settings) on a loopback port."""
    from oncopacs.dimse.server import start_dimse

    servers = []

    def start(**overrides) -> tuple[str, int]:
        server = start_dimse(dataclasses.replace(settings, **overrides), archive)
        servers.append(server)
        return "127.0.0.1", server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.dcmtk
def test_findscu_and_getscu_see_the_update_and_the_merge(archive: Archive, dimse, tmp_path: Path):
    first, second = generate_uid(), generate_uid()
    slice_ = ct("P-SURV", first)
    store(archive, slice_)
    store(archive, ct("P-PRIOR", second))
    stored = stored_bytes(archive, slice_.SOPInstanceUID)
    host, port = dimse()

    assert apply(archive, "ADT^A31", pid("P-SURV", NEW_NAME)).ack is AckCode.ACCEPT
    found = findscu(host, port, tmp_path / "f1", "-S", "QueryRetrieveLevel=STUDY", "PatientID=P-SURV",
                    "PatientName", "StudyInstanceUID")
    assert [(str(d.PatientName), d.StudyInstanceUID) for d in found] == [(NEW_NAME, first)]

    assert apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-PRIOR")).ack is AckCode.ACCEPT
    found = findscu(host, port, tmp_path / "f2", "-S", "QueryRetrieveLevel=STUDY", "PatientID=P-SURV",
                    "PatientName", "StudyInstanceUID")
    assert sorted(d.StudyInstanceUID for d in found) == sorted([first, second])
    found = findscu(host, port, tmp_path / "f3", "-P", "QueryRetrieveLevel=PATIENT", "PatientID=P-SURV",
                    "PatientName")
    assert [str(d.PatientName) for d in found] == [NEW_NAME]

    out = tmp_path / "got"
    result = getscu(host, port, out, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={second}")
    assert result.returncode == 0, result.stdout[-2000:]
    (got,) = [pydicom.dcmread(p) for p in out.iterdir()]
    assert (got.PatientID, str(got.PatientName)) == ("P-SURV", NEW_NAME)
    assert [item.PatientID for item in got.OtherPatientIDsSequence] == ["P-PRIOR"]

    host, port = dimse(keep_original_on_retrieve=True)
    out = tmp_path / "original"
    result = getscu(host, port, out, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={first}")
    assert result.returncode == 0, result.stdout[-2000:]
    (path,) = out.iterdir()
    assert dataset_bytes(path.read_bytes()) == dataset_bytes(stored)


def test_adt_over_mllp_updates_what_qido_answers(platform: Platform, web: Web):
    study = generate_uid()
    store(platform.archive, ct("P-WIRE", study))
    settings = dataclasses.replace(platform.settings, hl7_listen_host="127.0.0.1", hl7_listen_port=0,
                                   hl7_allowed_senders=("EPIC^HOSP",))
    dispatcher = build_dispatcher(settings, platform.index, platform.audit, build_adt_handlers(platform.index))
    listener = Hl7Listener(settings, dispatcher)
    listener.start()
    try:
        ack = send(listener.port, hl7("ADT^A08", pid("P-WIRE", NEW_NAME), control_id="W1"))
    finally:
        listener.stop()
    assert msa(ack)[:2] == ("AA", "W1")
    (found,) = qido(web.app.test_client(), web.admin, PatientID="P-WIRE")
    assert value(found, "00100010")["Alphabetic"] == NEW_NAME


def test_ingest_notices_a_merge_made_by_another_process(archive: Archive, monkeypatch: pytest.MonkeyPatch):
    from oncopacs.archive import index_writer
    from oncopacs.index import demographics

    monkeypatch.setattr(index_writer, "MERGE_CHECK_INTERVAL_S", 0.0)  # the writer looks at every write
    moved = generate_uid()
    store(archive, ct("P-PRIOR", moved))  # cached by this process's writer
    monkeypatch.setattr(demographics, "_advance_generation", lambda: None)  # as if the CLI merged elsewhere
    apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-PRIOR"))
    store(archive, ct("P-PRIOR", moved))
    store(archive, ct("P-PRIOR", later := generate_uid()))
    assert study_owner(archive, moved) == study_owner(archive, later) == "P-SURV"


def test_a_prior_id_unknown_here_files_under_the_survivor_when_it_arrives(archive: Archive):
    """The MRG named an assigning authority (HOSP); the modality sends no IssuerOfPatientID."""
    store(archive, ct("P-SURV", generate_uid()))
    outcome = apply(archive, "ADT^A40", pid("P-SURV"), mrg("P-GONE", "Gone^Name"))
    assert outcome.text == "merged 1 patient(s), moved 0 studies"
    store(archive, ct("P-GONE", later := generate_uid()))
    assert study_owner(archive, later) == "P-SURV"


def test_coercion_writes_a_valid_header_for_a_file_received_with_a_sparse_one():
    import io

    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from oncopacs.index.demographics import CurrentPatient, Demographics, coerce_part10

    original = dcmread(get_testdata_file("CT_small.dcm"))
    del original.file_meta.MediaStorageSOPClassUID, original.file_meta.MediaStorageSOPInstanceUID
    stored = io.BytesIO()
    original.save_as(stored, enforce_file_format=False)
    current = CurrentPatient(Demographics("NEWID", "HOSP", "DOE^JANE", "19600101", "F"))
    sent = dcmread(io.BytesIO(coerce_part10(stored.getvalue(), current)))
    assert (str(sent.PatientName), sent.PatientID) == ("DOE^JANE", "NEWID")
    assert sent.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
