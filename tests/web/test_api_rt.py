"""``/api/studies/<uid>/rt`` and ``/api/metrics/search``: RT results computed by jobs, served from the index."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from oncopacs.index.models import Instance
from oncopacs.phantom import DemoPatient, build_demo_patient
from oncopacs.uids import uid_for

Headers = Callable[[Role | str], dict[str, str]]


@pytest.fixture(scope="module")
def patients() -> tuple[DemoPatient, DemoPatient]:
    """Two demo patients; the second's plan dose is scaled to 40 % (a different dose, same anatomy)."""
    first = build_demo_patient("ONCO-RTAPI-001", "Phantom^Full")
    second = build_demo_patient("ONCO-RTAPI-002", "Phantom^Low")
    dose = copy.deepcopy(second.rt_dose)
    dose.DoseGridScaling = f"{float(dose.DoseGridScaling) * 0.4:.10g}"
    return first, DemoPatient(second.patient, second.planning_ct, second.rtstruct, second.rt_ion_plan, dose,
                              second.pet_ct, second.pet, second.truth)


def _ingest(app: Flask, patient: DemoPatient) -> str:
    archive: Archive = app.extensions["oncopacs.archive"]
    for dataset in (patient.planning_ct[0], patient.rtstruct, patient.rt_ion_plan, patient.rt_dose):
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return patient.rt_dose.StudyInstanceUID


def _run_jobs(app: Flask) -> int:
    return app.extensions["oncopacs.jobs"].new_worker().run_pending()


def _audited(app: Flask, path: str) -> list[AuditRecord]:
    with app.extensions["oncopacs.archive"].index.reading() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.detail.like(f"% {path}%"))))


def test_results_are_202_while_computing_then_200(web_app: Flask, client: FlaskClient, headers_for: Headers, patients):
    study = _ingest(web_app, patients[0])
    reader = headers_for(Role.TUMOUR_BOARD)
    pending = client.get(f"/api/studies/{study}/rt", headers=reader)
    assert pending.status_code == 202
    body = pending.get_json()
    assert body["status"] == "computing" and body["job"]["kind"] == "rt_analysis" and body["job"]["status"] == "queued"
    assert pending.headers["Location"].endswith(f"/api/jobs/{body['job']['id']}")
    assert client.get(f"/api/studies/{study}/rt", headers=reader).get_json()["job"]["id"] == body["job"]["id"]

    assert _run_jobs(web_app) == 1
    reply = client.get(f"/api/studies/{study}/rt", headers=reader)
    assert reply.status_code == 200
    (planning_set,) = reply.get_json()["planning_sets"]
    assert planning_set["computed"] and planning_set["inputs"]["dose_uid"] == patients[0].rt_dose.SOPInstanceUID
    assert planning_set["plan"]["prescription_gy"] == 60.0 and planning_set["plan"]["radiation_type"] == "PROTON"
    rois = {roi["name"]: roi for roi in planning_set["dvh"]["rois"]}
    assert "curve" not in rois["PTV"] and rois["PTV"]["metrics"]["D95%[Gy]"] > 55.0
    assert rois["BODY"]["tg263_name"] == "External"
    assert planning_set["goals"]["template"] == "proton_generic" and planning_set["goals"]["goals"]
    records = _audited(web_app, f"/api/studies/{study}/rt")
    assert records and all(r.patient_ids == "ONCO-RTAPI-001" and r.study_uids == study for r in records)

    curves = client.get(f"/api/studies/{study}/rt/dvh?roi=ptv&roi=External", headers=reader)
    assert curves.status_code == 200
    (dvh_set,) = curves.get_json()["planning_sets"]
    assert [roi["name"] for roi in dvh_set["rois"]] == ["BODY", "PTV"]
    ptv = dvh_set["rois"][1]["curve"]
    assert len(ptv["dose_gy"]) == len(ptv["volume_cc"]) == len(ptv["volume_percent"]) > 100
    assert ptv["volume_percent"][0] == pytest.approx(100.0) and ptv["volume_percent"][-1] == pytest.approx(0.0, abs=0.5)
    assert client.get(f"/api/studies/{study}/rt/dvh?roi=Kidney", headers=reader).status_code == 404
    all_rois = client.get(f"/api/studies/{study}/rt/dvh", headers=reader).get_json()["planning_sets"][0]["rois"]
    assert len(all_rois) == 5


def test_recompute_and_permissions(web_app: Flask, client: FlaskClient, headers_for: Headers, patients):
    study = _ingest(web_app, patients[0])
    _run_jobs(web_app)
    physicist = headers_for(Role.PHYSICIST)
    reply = client.post(f"/api/studies/{study}/rt", json={"template": "prostate"}, headers=physicist)
    assert reply.status_code == 202
    job = reply.get_json()["job"]
    assert job["params"] == {"study_instance_uid": study, "template": "prostate", "force": True}
    assert job["created_by"] == "test-physicist"
    assert client.get(f"/api/studies/{study}/rt?template=prostate", headers=physicist).status_code == 202
    assert _run_jobs(web_app) == 1
    done = client.get(f"/api/studies/{study}/rt?template=prostate", headers=physicist)
    assert done.status_code == 200 and done.get_json()["planning_sets"][0]["goals"]["template"] == "prostate"

    assert client.post(f"/api/studies/{study}/rt", json={"template": "nonsense"}, headers=physicist).status_code == 400
    assert client.post(f"/api/studies/{study}/rt", json=[1], headers=physicist).status_code == 400
    assert client.post(f"/api/studies/{study}/rt", json={"dose_uid": 7}, headers=physicist).status_code == 400
    other_dose = {"dose_uid": uid_for("no", "such", "dose")}
    assert client.post(f"/api/studies/{study}/rt", json=other_dose, headers=physicist).status_code == 409
    dvh_url = f"/api/studies/{study}/rt/dvh?dose_uid={other_dose['dose_uid']}"
    assert client.get(dvh_url, headers=physicist).status_code == 404
    assert client.post(f"/api/studies/{study}/rt", headers=headers_for(Role.TUMOUR_BOARD)).status_code == 403
    lone_ct = patients[0].pet_ct[0]
    web_app.extensions["oncopacs.archive"].ingest_dataset(lone_ct, source="test")
    assert client.post(f"/api/studies/{lone_ct.StudyInstanceUID}/rt", headers=physicist).status_code == 409
    assert client.get(
        f"/api/studies/{lone_ct.StudyInstanceUID}/rt", headers=physicist
    ).get_json()["planning_sets"] == []
    unknown = uid_for("no", "such", "study")
    assert client.get(f"/api/studies/{unknown}/rt", headers=physicist).status_code == 404
    assert client.get("/api/studies/not-a-uid/rt", headers=physicist).status_code == 400

    referrer = headers_for(Role.REFERRER)
    for method, url in (("GET", f"/api/studies/{study}/rt"), ("GET", f"/api/studies/{study}/rt/dvh"),
                        ("POST", f"/api/studies/{study}/rt"),
                        ("GET", "/api/metrics/search?structure=Rectum&metric=Mean[Gy]")):
        assert client.open(url, method=method, headers=referrer).status_code == 403, url


def test_metric_search_finds_the_right_patient(web_app: Flask, client: FlaskClient, headers_for: Headers, patients):
    full, low = (_ingest(web_app, patient) for patient in patients)
    assert _run_jobs(web_app) == 2
    reader = headers_for(Role.ONCOLOGIST)
    means = {}
    for study in (full, low):
        rois = client.get(f"/api/studies/{study}/rt", headers=reader).get_json()["planning_sets"][0]["dvh"]["rois"]
        means[study] = {roi["name"]: roi for roi in rois}["Rectum"]["metrics"]["Mean[Gy]"]
    assert means[low] == pytest.approx(0.4 * means[full], rel=1e-3)
    threshold = (means[full] + means[low]) / 2

    def search(query: str):
        reply = client.get(f"/api/metrics/search?structure=Rectum&metric=Mean[Gy]&{query}", headers=reader)
        assert reply.status_code == 200, reply.get_json()
        return reply.get_json()

    above = search(f"gt={threshold}")
    assert above["total"] == 1 and [(r["patient_id"], r["study_instance_uid"]) for r in above["results"]] == [
        ("ONCO-RTAPI-001", full)]
    assert above["results"][0]["value"] == means[full]
    assert [r["patient_id"] for r in search(f"lt={threshold}")["results"]] == ["ONCO-RTAPI-002"]
    assert search(f"between={means[low]},{means[full]}")["total"] == 2
    assert search("gt=1000")["total"] == 0
    # As the "Rectum V70Gy[%] > 15" (structure case-insensitive): the low-dose rectum peaks near 18 Gy.
    v20 = client.get("/api/metrics/search?structure=rectum&metric=V20Gy[%25]&gt=5", headers=reader).get_json()
    assert [r["patient_id"] for r in v20["results"]] == ["ONCO-RTAPI-001"] and v20["results"][0]["value"] > 5
    v10 = client.get("/api/metrics/search?structure=rectum&metric=V10Gy[%25]&gt=5", headers=reader).get_json()
    assert [r["patient_id"] for r in v10["results"]] == ["ONCO-RTAPI-001", "ONCO-RTAPI-002"]  # highest first
    records = _audited(web_app, "/api/metrics/search")
    assert any(r.patient_ids == "ONCO-RTAPI-001" and r.action == "query" for r in records)

    for bad in ("structure=Rectum", "metric=Mean[Gy]", "structure=Rectum&metric=Average",
                "structure=Rectum&metric=Mean[Gy]&gt=lots", "structure=Rectum&metric=Mean[Gy]&between=3",
                "structure=Rectum&metric=Mean[Gy]&between=5,1", "structure=Rectum&metric=Mean[Gy]&lt=nan"):
        assert client.get(f"/api/metrics/search?{bad}", headers=reader).status_code == 400, bad


def test_a_failed_job_is_reported_not_retried(web_app: Flask, client: FlaskClient, headers_for: Headers, patients):
    study = _ingest(web_app, patients[0])
    archive: Archive = web_app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        path = session.scalar(
            select(Instance.file_path).where(Instance.sop_instance_uid == patients[0].rt_dose.SOPInstanceUID)
        )
    archive.storage.path_of(path).write_bytes(b"not the stored dose")
    assert _run_jobs(web_app) == 1
    reply = client.get(f"/api/studies/{study}/rt", headers=headers_for(Role.PHYSICIST))
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["last_job"]["status"] == "failed" and "SHA-256" in body["last_job"]["message"]
    assert body["planning_sets"][0]["computed"] is False and body["planning_sets"][0]["dvh"] is None
    assert _run_jobs(web_app) == 0
