"""The JSON API: patients, studies with their oncology summary, series, jobs and peers."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import verify
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import PERMISSIONS, Permission, Role
from oncopacs.auth.users import UserStore
from oncopacs.jobs.queue import DatabaseJobQueue, JobStatus
from oncopacs.jobs.worker import INTERRUPTED_MESSAGE
from oncopacs.phantom import DemoPatient, build_demo_patient
from oncopacs.platform import open_archive, open_platform
from oncopacs.settings import RemoteAE, Settings
from oncopacs.web.app import create_app
from tests.conftest import ServerProcess, free_port
from tests.factories import small_ct_series

Headers = Callable[[Role | str], dict[str, str]]


@pytest.fixture(scope="module")
def demo() -> DemoPatient:
    return build_demo_patient("ONCO-API-001", "Phantom^Proton")


@pytest.fixture(scope="module")
def browse(module_web_app: Flask, module_headers_for: Headers, demo: DemoPatient) -> tuple[FlaskClient, dict[str, str]]:
    """A client over one demo patient (planning and PET-CT studies) and five one-study CT patients."""
    archive: Archive = module_web_app.extensions["oncopacs.archive"]
    for dataset in [*demo.all_datasets(), *small_ct_series(10, studies=5, prefix="T")]:
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return module_web_app.test_client(), module_headers_for(Role.TUMOUR_BOARD)


def _audit_records(app: Flask, path: str) -> list[AuditRecord]:
    archive: Archive = app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.detail.like(f"GET {path}%"))
                                    .order_by(AuditRecord.id)))


# -- patients ---------------------------------------------------------------------------------


def test_patients_are_listed_with_their_number_of_studies(browse):
    client, headers = browse
    reply = client.get("/api/patients", headers=headers)
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["total"] == 6 and body["limit"] == 100 and body["offset"] == 0
    by_id = {p["PatientID"]: p for p in body["patients"]}
    assert by_id["ONCO-API-001"]["NumberOfPatientRelatedStudies"] == 2
    assert by_id["ONCO-API-001"]["PatientName"] == "Phantom^Proton"
    assert by_id["T-00003"]["NumberOfPatientRelatedStudies"] == 1
    assert set(by_id["T-00000"]) >= {"PatientID", "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID"}


def test_patients_page_with_limit_and_offset(browse):
    client, headers = browse
    pages = [client.get(f"/api/patients?limit=4&offset={o}", headers=headers).get_json() for o in (0, 4, 8)]
    ids = [[p["PatientID"] for p in page["patients"]] for page in pages]
    assert [len(i) for i in ids] == [4, 2, 0]
    assert all(page["total"] == 6 for page in pages)
    assert len(set(ids[0] + ids[1])) == 6


@pytest.mark.parametrize(("query", "expected"), [
    ("name=phantom*", {"ONCO-API-001"}),
    ("name=BENCH%5EPATIENT0000?", {f"T-0000{i}" for i in range(5)}),
    ("name=*proton", {"ONCO-API-001"}),
    ("id=T-00003", {"T-00003"}),
    ("id=T-*&name=*00001", {"T-00001"}),
    ("name=nobody", set()),
])
def test_patients_search_by_name_and_id(browse, query: str, expected: set[str]):
    client, headers = browse
    body = client.get(f"/api/patients?{query}", headers=headers).get_json()
    assert {p["PatientID"] for p in body["patients"]} == expected
    assert body["total"] == len(expected)


@pytest.mark.parametrize("query", ["limit=0", "limit=5000", "limit=ten", "offset=-1"])
def test_bad_paging_is_a_json_400(browse, query: str):
    client, headers = browse
    reply = client.get(f"/api/patients?{query}", headers=headers)
    assert reply.status_code == 400
    assert reply.get_json()["status"] == 400 and reply.get_json()["detail"]


def test_one_patient_with_its_studies_is_audited(browse, module_web_app: Flask, demo: DemoPatient):
    client, headers = browse
    reply = client.get("/api/patients/ONCO-API-001", headers=headers)
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["PatientID"] == "ONCO-API-001" and body["NumberOfPatientRelatedStudies"] == 2
    studies = {s["StudyID"]: s for s in body["studies"]}
    assert set(studies) == {"PLAN1", "PETCT1"}
    assert studies["PLAN1"]["ModalitiesInStudy"] == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
    assert studies["PETCT1"]["ModalitiesInStudy"] == ["CT", "PT"]
    assert studies["PLAN1"]["NumberOfStudyRelatedInstances"] == len(demo.planning_ct) + 3
    (record,) = _audit_records(module_web_app, "/api/patients/ONCO-API-001")
    assert record.action == "read" and record.outcome == 0 and record.actor == "test-tumour_board"
    assert record.patient_ids == "ONCO-API-001"
    assert set(record.study_uids.split("\\")) == {demo.rtstruct.StudyInstanceUID, demo.pet[0].StudyInstanceUID}


def test_patient_search_is_audited_as_a_query(browse, module_web_app: Flask):
    client, headers = browse
    client.get("/api/patients?id=T-00002", headers=headers)
    records = list(_audit_records(module_web_app, "/api/patients?id=T-00002"))
    assert records and records[-1].action == "query" and records[-1].patient_ids == "T-00002"


def test_unknown_or_wildcard_patient(browse, module_web_app: Flask):
    client, headers = browse
    missing = client.get("/api/patients/NOBODY", headers=headers)
    assert missing.status_code == 404 and "NOBODY" in missing.get_json()["detail"]
    (record,) = _audit_records(module_web_app, "/api/patients/NOBODY")
    assert record.outcome == 4 and record.patient_ids == "NOBODY"
    assert client.get("/api/patients/T-*", headers=headers).status_code == 400


# -- studies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("", 7),
    ("patient_id=ONCO-API-001", 2),
    ("date_from=20230102&date_to=20230104", 3),
    ("date_from=2023-01-04", 4),  # 0104, 0105 and the two 2024 studies
    ("date_to=2023-01-01", 1),
    ("modality=PT", 1),
    ("modality=rtdose", 1),
    ("modality=CT", 7),
    ("modality=CT&date_from=20240101&patient_id=ONCO-API-001", 2),
    ("modality=MR", 0),
])
def test_studies_filter(browse, query: str, expected: int):
    client, headers = browse
    body = client.get(f"/api/studies?{query}", headers=headers).get_json()
    assert body["total"] == expected and len(body["studies"]) == expected


def test_studies_page_and_are_audited(browse, module_web_app: Flask):
    client, headers = browse
    first = client.get("/api/studies?limit=5", headers=headers).get_json()
    second = client.get("/api/studies?limit=5&offset=5", headers=headers).get_json()
    uids = [s["StudyInstanceUID"] for s in first["studies"] + second["studies"]]
    assert len(uids) == len(set(uids)) == 7 and first["total"] == second["total"] == 7
    record = _audit_records(module_web_app, "/api/studies?limit=5&offset=5")[-1]
    assert record.action == "query" and set(record.study_uids.split("\\")) == set(uids[5:])


@pytest.mark.parametrize("query", ["date_from=yesterday", "date_to=2024-13", "date_from=20240102&date_to=20240101"])
def test_bad_study_dates_are_400(browse, query: str):
    client, headers = browse
    reply = client.get(f"/api/studies?{query}", headers=headers)
    assert reply.status_code == 400 and "date" in reply.get_json()["detail"]


def test_planning_study_has_series_and_oncology_summary(browse, module_web_app: Flask, demo: DemoPatient):
    client, headers = browse
    study_uid = demo.rtstruct.StudyInstanceUID
    reply = client.get(f"/api/studies/{study_uid}", headers=headers)
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["StudyInstanceUID"] == study_uid and body["PatientID"] == "ONCO-API-001"
    assert [s["Modality"] for s in body["series"]] == ["CT", "RTSTRUCT", "RTPLAN", "RTDOSE"]
    assert body["series"][0]["NumberOfSeriesRelatedInstances"] == len(demo.planning_ct)
    oncology = body["oncology"]
    assert list(oncology["image_series"]) == ["CT"]
    (chain,) = oncology["treatment_planning_sets"]
    assert chain == {
        "frame_of_reference_uid": demo.planning_ct[0].FrameOfReferenceUID,
        "image_series_uids": [demo.planning_ct[0].SeriesInstanceUID],
        "structure_set_uid": demo.rtstruct.SOPInstanceUID,
        "plan_uids": [demo.rt_ion_plan.SOPInstanceUID],
        "dose_uids": [demo.rt_dose.SOPInstanceUID],
    }
    assert oncology["plans"][0]["is_ion_plan"] is True
    assert oncology["unresolved_references"] == []
    (record,) = _audit_records(module_web_app, f"/api/studies/{study_uid}")
    assert record.action == "read" and record.patient_ids == "ONCO-API-001" and record.study_uids == study_uid


def test_pet_ct_study_pairs_its_series(browse, demo: DemoPatient):
    client, headers = browse
    body = client.get(f"/api/studies/{demo.pet[0].StudyInstanceUID}", headers=headers).get_json()
    assert body["oncology"]["pet_ct_pairs"] == [{
        "pet_series_uid": demo.pet[0].SeriesInstanceUID,
        "ct_series_uid": demo.pet_ct[0].SeriesInstanceUID,
        "frame_of_reference_uid": demo.pet[0].FrameOfReferenceUID,
    }]


def test_unknown_or_malformed_study(browse):
    client, headers = browse
    assert client.get("/api/studies/1.2.3.999", headers=headers).status_code == 404
    reply = client.get("/api/studies/1.2,1.3", headers=headers)
    assert reply.status_code == 400 and "UID" in reply.get_json()["detail"]


# -- series -----------------------------------------------------------------------------------


def test_series_lists_its_instances(browse, module_web_app: Flask, demo: DemoPatient):
    client, headers = browse
    series_uid = demo.planning_ct[0].SeriesInstanceUID
    reply = client.get(f"/api/series/{series_uid}", headers=headers)
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["SeriesInstanceUID"] == series_uid and body["Modality"] == "CT"
    assert body["StudyInstanceUID"] == demo.rtstruct.StudyInstanceUID and body["PatientID"] == "ONCO-API-001"
    assert body["NumberOfSeriesRelatedInstances"] == len(demo.planning_ct)
    instances = body["instances"]
    assert [i["SOPInstanceUID"] for i in instances] == [ds.SOPInstanceUID for ds in demo.planning_ct]
    assert instances[0]["Rows"] == demo.planning_ct[0].Rows
    assert "file_path" not in instances[0] and "PatientID" not in instances[0]
    (record,) = _audit_records(module_web_app, f"/api/series/{series_uid}")
    assert record.patient_ids == "ONCO-API-001" and record.study_uids == demo.rtstruct.StudyInstanceUID


def test_unknown_series(browse):
    client, headers = browse
    assert client.get("/api/series/1.2.3.999", headers=headers).status_code == 404
    assert client.get("/api/series/not-a-uid", headers=headers).status_code == 400


# -- permissions ------------------------------------------------------------------------------

READ_ROUTES = ["/api/patients", "/api/patients/ONCO-API-001", "/api/studies", "/api/studies/1.2.3",
               "/api/series/1.2.3", "/api/jobs", "/api/jobs/1"]


@pytest.mark.parametrize("path", READ_ROUTES)
def test_reads_need_archive_read(browse, module_headers_for: Headers, path: str):
    client, _ = browse
    assert not {Permission.ARCHIVE_READ} <= PERMISSIONS[Role.REFERRER]
    reply = client.get(path, headers=module_headers_for(Role.REFERRER))
    assert reply.status_code == 403 and reply.get_json()["status"] == 403
    assert client.get(path).status_code == 401


# -- jobs -------------------------------------------------------------------------------------


def test_verify_job_through_the_api(web_app: Flask, client: FlaskClient, headers_for: Headers, archive: Archive):
    for dataset in small_ct_series(6):
        archive.ingest_dataset(dataset, source="test")
    reply = client.post("/api/jobs", json={"kind": "verify"}, headers=headers_for(Role.PHYSICIST))
    assert reply.status_code == 202
    job = reply.get_json()
    assert job["status"] == "queued" and job["kind"] == "verify" and job["created_by"] == "test-physicist"
    assert reply.headers["Location"].endswith(f"/api/jobs/{job['id']}")

    assert web_app.extensions["oncopacs.jobs"].new_worker().run_pending() == 1

    done = client.get(f"/api/jobs/{job['id']}", headers=headers_for(Role.TUMOUR_BOARD)).get_json()
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert done["result"] == verify(archive).to_dict() and done["result"]["checked"] == 6
    listed = client.get("/api/jobs?status=succeeded&kind=verify", headers=headers_for(Role.TUMOUR_BOARD)).get_json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["total"] == 1
    assert client.get("/api/jobs?status=queued", headers=headers_for(Role.ADMIN)).get_json()["total"] == 0


def test_job_requests_are_checked(client: FlaskClient, headers_for: Headers):
    physicist = headers_for(Role.PHYSICIST)
    unknown = client.post("/api/jobs", json={"kind": "dvh-of-everything"}, headers=physicist)
    assert unknown.status_code == 400
    body = unknown.get_json()
    assert (
        body["valid_kinds"] == sorted(client.application.extensions["oncopacs.jobs"].registry)
        and "verify" in body["detail"]
        and "dvh-of-everything" in body["detail"]
    )
    assert client.post("/api/jobs", data="kind=verify", headers=physicist).status_code == 400
    assert client.post("/api/jobs", json={"kind": "verify", "params": [1]}, headers=physicist).status_code == 400
    assert client.post("/api/jobs", json={"kind": "verify"}, headers=headers_for(Role.TUMOUR_BOARD)).status_code == 403
    assert client.get("/api/jobs?status=paused", headers=physicist).status_code == 400
    assert client.get("/api/jobs/424242", headers=physicist).status_code == 404
    assert client.get("/api/jobs", headers=physicist).get_json()["total"] == 0


@pytest.mark.slow
def test_serve_runs_jobs_and_fails_those_a_crash_interrupted(tmp_path):
    data_dir = tmp_path / "served"
    settings = Settings(data_dir=data_dir)
    archive = open_archive(settings)
    try:
        users = UserStore(archive.index)
        users.add_user("phys", Role.PHYSICIST, "correct horse battery")
        token = users.create_token("phys")
        for dataset in small_ct_series(4):
            archive.ingest_dataset(dataset, source="test")
        queue = DatabaseJobQueue(archive.index)
        interrupted = queue.enqueue("verify", {}, "phys")
        queue.claim_next(frozenset({"verify"}))  # as if the previous server died while running it
    finally:
        archive.close()
    server = ServerProcess(data_dir).start()
    try:
        base = f"http://127.0.0.1:{server.http_port}/api/jobs"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        request = urllib.request.Request(base, data=json.dumps({"kind": "verify"}).encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 202
            job_id = json.load(reply)["id"]
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(f"{base}/{job_id}", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as reply:
                job = json.load(reply)
            if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert job["status"] == "succeeded" and job["result"]["checked"] == 4 and job["result"]["ok"] is True
        request = urllib.request.Request(f"{base}/{interrupted}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            old = json.load(reply)
        assert old["status"] == JobStatus.FAILED.value and old["message"] == INTERRUPTED_MESSAGE
    finally:
        assert server.stop() == 0
        server.kill()


# -- peers ------------------------------------------------------------------------------------


@pytest.fixture
def echo_scp() -> Iterator[int]:
    """A real pynetdicom Verification SCP on a loopback port."""
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    server = ae.start_server(("127.0.0.1", 0), block=False)
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def peers_client(sqlite_settings: Settings, echo_scp: int) -> Iterator[tuple[FlaskClient, Headers]]:
    peers = (RemoteAE("ECHOSCP", "127.0.0.1", echo_scp), RemoteAE("GONE", "127.0.0.1", free_port()),
             RemoteAE("WRONGAE", "127.0.0.1", echo_scp))
    app = create_app(open_platform(sqlite_settings.with_overrides(secret_key="test-secret", remote_aes=peers)))
    store: UserStore = app.extensions["oncopacs.users"]

    def headers_for(role: Role | str) -> dict[str, str]:
        name = f"peer-{Role(role).value}"
        if not store.exists(name):
            store.add_user(name, role, "correct horse battery")
        return {"Authorization": f"Bearer {store.create_token(name)}"}

    yield app.test_client(), headers_for
    app.extensions["oncopacs.archive"].close()


def test_peers_are_listed_for_administrators(peers_client, echo_scp: int):
    client, headers_for = peers_client
    body = client.get("/api/peers", headers=headers_for(Role.ADMIN)).get_json()
    assert body["ae_title"] == "ONCOPACS"
    assert body["peers"][0] == {"ae_title": "ECHOSCP", "host": "127.0.0.1", "port": echo_scp, "tls": False}
    assert [p["ae_title"] for p in body["peers"]] == ["ECHOSCP", "GONE", "WRONGAE"]
    assert client.get("/api/peers", headers=headers_for(Role.PHYSICIST)).status_code == 403


def test_echo_a_real_peer(peers_client, echo_scp: int):
    client, headers_for = peers_client
    reply = client.post("/api/peers/ECHOSCP/echo", headers=headers_for(Role.ADMIN))
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["status"] == 0 and body["success"] is True and body["port"] == echo_scp and body["elapsed_ms"] > 0


def test_echo_failures(peers_client):
    client, headers_for = peers_client
    admin = headers_for(Role.ADMIN)
    unreachable = client.post("/api/peers/GONE/echo", headers=admin)
    assert unreachable.status_code == 502
    assert unreachable.get_json()["status"] == 502 and "GONE" in unreachable.get_json()["detail"]
    refused = client.post("/api/peers/WRONGAE/echo", headers=admin)
    assert refused.status_code == 502 and "rejected" in refused.get_json()["detail"]
    unknown = client.post("/api/peers/NOSUCHAE/echo", headers=admin)
    assert unknown.status_code == 404 and unknown.get_json()["status"] == 404
    assert client.post("/api/peers/ECHOSCP/echo", headers=headers_for(Role.ONCOLOGIST)).status_code == 403
