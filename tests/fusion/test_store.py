"""Registrations in the archive: the ``registration`` job, the REG object linked to both series, QA rows and metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset
from sqlalchemy import select

from fusion.dicom_reg import (
    DEFORMABLE_SPATIAL_REGISTRATION,
    build_registration_dataset,
    read_registration,
)
from fusion.errors import UnusableRegistrationError
from fusion.qa import RegistrationQA, check_usable
from fusion.registration import Registration, RegistrationKind
from fusion.volume import load_series, read_series_info
from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.analysis.registration import (
    QA_PASSED_METRIC,
    REGISTRATION_QA,
    compute_registration_key,
    load_registration_qa,
    store_registration,
)
from oncopacs.analysis.registration_job import (
    REGISTRATION,
    build_registration_handler,
    install_registration,
)
from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Role
from oncopacs.errors import DicomInputError, NotFoundError
from oncopacs.index.models import Instance, ObjectReference, Relation, Series
from oncopacs.jobs.kinds import JobSystem, open_job_system
from oncopacs.jobs.queue import JobStatus
from oncopacs.phantom.fusion import FusionPair, build_fusion_ct_series
from tests.web.conftest import sqlite_headers_for, sqlite_web_app  # noqa: F401  (fixtures)


def ingest_pair(archive: Archive, pair: FusionPair) -> tuple[list[Dataset], list[Dataset]]:
    """The pair's fixed and moving CT series, ingested; (fixed slices, moving slices)."""
    fixed = build_fusion_ct_series(pair.fixed_hu, pair.grid, "fixed")
    moving = build_fusion_ct_series(pair.moving_hu, pair.grid, "moving")
    for dataset in (*fixed, *moving):
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return fixed, moving


def params_of(fixed: list[Dataset], moving: list[Dataset], **extra) -> dict:
    return {"fixed_series_uid": str(fixed[0].SeriesInstanceUID), "moving_series_uid": str(moving[0].SeriesInstanceUID),
            **extra}


def landmarks(pair: FusionPair, moving_offset_mm: float = 0.0) -> dict:
    fixed_points, moving_points = pair.landmarks_mm(8)
    return {"fixed": fixed_points.tolist(), "moving": (moving_points + moving_offset_mm).tolist()}


@pytest.fixture
def jobs(archive: Archive) -> JobSystem:
    system = open_job_system(archive)
    install_registration(archive, system)
    return system


def run_job(jobs: JobSystem, params: dict):
    job_id = jobs.queue.enqueue(REGISTRATION, params, "test")
    assert jobs.new_worker().run_pending() == 1
    return jobs.queue.get(job_id)


def stored_rows(archive: Archive, sop_instance_uid: str):
    """(REG instance's series UID, {referenced series UIDs}, [QA results], {metric: value})."""
    with archive.index.reading() as session:
        instance = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)).one()
        series = session.scalars(select(Series.series_instance_uid).where(Series.id == instance.series_pk)).one()
        linked = set(session.scalars(select(ObjectReference.referenced_uid).where(
            ObjectReference.instance_pk == instance.id, ObjectReference.relation == Relation.REGISTERED_SERIES)))
        results = session.scalars(select(AnalysisResult).where(AnalysisResult.kind == REGISTRATION_QA,
                                                               AnalysisResult.inputs == sop_instance_uid)).all()
        metrics = {m.metric: m.value for m in session.scalars(select(MetricValue).where(
            MetricValue.result_pk.in_([r.id for r in results])))}
        session.expunge_all()
    return series, linked, results, metrics


def test_registration_job_stores_the_reg_linked_to_both_series_with_its_qa(archive, jobs, rigid_pair):
    fixed, moving = ingest_pair(archive, rigid_pair)
    job = run_job(jobs, params_of(fixed, moving, landmarks_mm=landmarks(rigid_pair)))
    assert job.status == JobStatus.SUCCEEDED, job.message
    assert job.progress == 1.0
    result = job.result
    assert result["kind"] == "rigid" and result["flagged"] is False and result["outcome"] == "stored"
    assert result["patient_id"] == fixed[0].PatientID and result["study_instance_uid"] == fixed[0].StudyInstanceUID

    series_uid, linked, results, metrics = stored_rows(archive, result["sop_instance_uid"])
    assert series_uid == result["series_instance_uid"]
    assert linked == {fixed[0].SeriesInstanceUID, moving[0].SeriesInstanceUID}
    (row,) = results
    assert row.input_key == compute_registration_key(fixed[0].SeriesInstanceUID, moving[0].SeriesInstanceUID,
                                                     result["sop_instance_uid"])
    assert (row.patient_id, row.study_instance_uid, row.time_point) == (
        fixed[0].PatientID, fixed[0].StudyInstanceUID, fixed[0].StudyDate)
    document = json.loads(row.result_json)
    assert document["qa"]["passed"] is True and document["flagged"] is False
    assert document["qa"]["inverse_consistency_method"] == "reverse registration"
    assert metrics["jacobian_min"] == pytest.approx(1.0, abs=1e-3) and metrics["folding[%]"] == 0.0
    assert metrics["inverse_consistency[mm]"] < 1.0 and metrics["TRE[mm]"] < 1.0
    assert metrics[QA_PASSED_METRIC] == 1.0

    # The stored object reads back through the archive (SHA-256 checked) as the same registration.
    (reg,) = archive.read_series(result["series_instance_uid"])
    registration = read_registration(reg)
    assert registration.qa.to_dict() == document["qa"]
    fixed_points, moving_points = rigid_pair.landmarks_mm(8)
    assert np.abs(registration.map_points_mm(fixed_points) - moving_points).max() < 1.5
    with archive.index.reading() as session:
        assert load_registration_qa(session, result["sop_instance_uid"]) == document


def test_a_registration_failing_qa_is_stored_flagged_and_refused_for_dose(archive, jobs, rigid_pair):
    fixed, moving = ingest_pair(archive, rigid_pair)
    job = run_job(jobs, params_of(fixed, moving, landmarks_mm=landmarks(rigid_pair, moving_offset_mm=6.0)))
    assert job.status == JobStatus.SUCCEEDED, job.message  # flagged, but stored
    assert job.result["flagged"] is True
    _, linked, (row,), metrics = stored_rows(archive, job.result["sop_instance_uid"])
    assert len(linked) == 2
    document = json.loads(row.result_json)
    assert document["flagged"] is True and document["qa"]["passed"] is False
    assert any("TRE" in failure for failure in document["qa"]["failures"])
    assert metrics["TRE[mm]"] > 2.0 and metrics[QA_PASSED_METRIC] == 0.0
    (reg,) = archive.read_series(job.result["series_instance_uid"])
    with pytest.raises(UnusableRegistrationError, match="failed QA"):
        check_usable(read_registration(reg).qa, override=False)


def test_deformable_job_reports_progress_and_stores_a_deformable_reg(archive, deformed_pair):
    fixed, moving = ingest_pair(archive, deformed_pair)
    calls: list[tuple[float, str]] = []
    result = build_registration_handler(archive)(params_of(fixed, moving, deformable=True),
                                                 lambda fraction, message: calls.append((fraction, message)))
    assert result["kind"] == "deformable" and result["flagged"] is False
    fractions = [fraction for fraction, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(calls) > 10 and any("demons" in message.lower() for _, message in calls)
    _, linked, (row,), metrics = stored_rows(archive, result["sop_instance_uid"])
    assert len(linked) == 2 and metrics["folding[%]"] == 0.0
    assert json.loads(row.result_json)["qa"]["inverse_consistency_method"] == "field inversion"
    (reg,) = archive.read_series(result["series_instance_uid"])
    assert reg.SOPClassUID == DEFORMABLE_SPATIAL_REGISTRATION


def test_job_with_missing_series_or_bad_params_fails_with_a_reason(archive, jobs):
    missing = run_job(jobs, {"fixed_series_uid": "1.2.3", "moving_series_uid": "1.2.4"})
    assert missing.status == JobStatus.FAILED and "1.2.3 is not in the archive" in missing.message
    bad = run_job(jobs, {"fixed_series_uid": "1.2.3", "moving_series_uid": "1.2.4", "deformable": "yes"})
    assert bad.status == JobStatus.FAILED and "deformable must be true or false" in bad.message
    absent = run_job(jobs, {"moving_series_uid": "1.2.4"})
    assert absent.status == JobStatus.FAILED and "fixed_series_uid" in absent.message


def small_registration(qa: RegistrationQA | None) -> Dataset:
    """A registration dataset (a 2 mm shift) between two tiny CT series of another patient."""
    from oncopacs.phantom.geometry import centred_grid

    grid = centred_grid((4, 8, 8), (4.0, 4.0, 4.0))
    hu = np.zeros(grid.shape, dtype=np.float32)
    fixed = load_series(build_fusion_ct_series(hu, grid, "small-fixed"))
    moving = load_series(build_fusion_ct_series(hu, grid, "small-moving"))
    transform = sitk.Euler3DTransform()
    transform.SetTranslation((2.0, 0.0, 0.0))
    registration = Registration(transform, RegistrationKind.RIGID, read_series_info(fixed), read_series_info(moving),
                                0.1)
    return build_registration_dataset(registration, fixed, moving, qa=qa)


def test_storing_again_replaces_the_qa_row_and_a_reg_without_qa_is_refused(archive):
    good = RegistrationQA(1.0, 1.0, 0.0, None, None, "not computed", None, None, 0, True)
    dataset = small_registration(good)
    first = store_registration(archive, dataset, source="test")
    again = store_registration(archive, dataset, source="test")
    assert (first.registration.outcome, again.registration.outcome) == ("stored", "duplicate")
    assert again.input_key == first.input_key
    _, _, results, metrics = stored_rows(archive, first.registration.sop_instance_uid)
    assert [r.id for r in results] == [again.result_id]
    assert set(metrics) == {"jacobian_min", "jacobian_max", "folding[%]", QA_PASSED_METRIC}  # IC/TRE not computed
    with pytest.raises(DicomInputError, match="QA"):
        store_registration(archive, small_registration(None), source="test")
    with pytest.raises(NotFoundError):
        archive.read_series("1.2.3.4")


def test_post_api_jobs_starts_a_registration(sqlite_web_app, sqlite_headers_for, rigid_pair):  # noqa: F811
    archive = sqlite_web_app.extensions["oncopacs.archive"]
    fixed, moving = ingest_pair(archive, rigid_pair)
    client = sqlite_web_app.test_client()
    response = client.post("/api/jobs", json={"kind": REGISTRATION, "params": params_of(fixed, moving)},
                           headers=sqlite_headers_for(Role.PHYSICIST))
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    assert sqlite_web_app.extensions["oncopacs.jobs"].new_worker().run_pending() == 1
    done = client.get(f"/api/jobs/{job_id}", headers=sqlite_headers_for(Role.PHYSICIST)).get_json()
    assert done["status"] == "succeeded", done
    assert done["result"]["fixed_series_uid"] == fixed[0].SeriesInstanceUID and done["result"]["flagged"] is False
