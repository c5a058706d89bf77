"""The PET rule and the pet_statistics job: contours on a PET-CT's frame of reference get SUV statistics."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import select

from oncopacs.analysis.models import MetricValue
from oncopacs.analysis.pet import find_contoured_pet
from oncopacs.analysis.pet_job import PET_STATISTICS, RULE_ACTOR, enqueue_pet_statistics
from oncopacs.jobs.queue import JobRecord, JobStatus
from oncopacs.phantom.pet_followup import FollowupScan, build_longitudinal_patients
from oncopacs.platform import Platform


@pytest.fixture(scope="module")
def scan() -> FollowupScan:
    """The baseline PET-CT of the first longitudinal phantom: CT, PET, and GTV + Liver contours on the CT."""
    return build_longitudinal_patients()[0].scans[0]


def _ingest(platform: Platform, *datasets) -> None:
    for dataset in datasets:
        assert platform.archive.ingest_dataset(dataset, source="test").acknowledged


def _run(platform: Platform) -> list[JobRecord]:
    ran: list[JobRecord] = []
    platform.jobs.new_worker().run_pending(on_job=ran.append)
    return ran


def _suvmax(platform: Platform, patient_id: str) -> dict[str, float]:
    with platform.index.reading() as session:
        rows = session.execute(select(MetricValue.structure, MetricValue.value).where(
            MetricValue.patient_id == patient_id, MetricValue.metric == "SUVmax[g/mL]")).all()
    return dict(rows)


def test_contours_on_a_pet_ct_queue_suv_statistics_measured_once_the_series_is_complete(platform, scan):
    study_uid = str(scan.rtstruct.StudyInstanceUID)
    _ingest(platform, *scan.ct, *scan.pet[:-1])
    assert not platform.jobs.queue.list(kind=PET_STATISTICS).jobs  # PET without contours: nothing to measure

    _ingest(platform, scan.rtstruct)  # contours drawn on the CT, on the PET-CT's frame of reference
    (queued,) = platform.jobs.queue.list(kind=PET_STATISTICS).jobs
    assert queued.created_by == RULE_ACTOR and queued.params == {"study_instance_uid": study_uid}
    (job,) = _run(platform)
    assert job.status is JobStatus.SUCCEEDED and job.result["measured"] == []
    (skipped,) = job.result["skipped"]
    assert (
        skipped["status"] == "incomplete"
        and skipped["detail"] == f"{len(scan.pet) - 1} of {len(scan.pet)} slices stored"
    )

    _ingest(platform, scan.pet[-1])  # the last slice: the rule queues the job again
    (job,) = _run(platform)
    (measured,) = job.result["measured"]
    assert measured["status"] == "measured" and measured["pet_series_uid"] == str(scan.pet[0].SeriesInstanceUID)
    found = _suvmax(platform, str(scan.pet[0].PatientID))
    for lesion, truth_suvbw in scan.lesion_suvbw.items():
        assert found[lesion] == pytest.approx(truth_suvbw, rel=0.15)  # partial volume at the edge only lowers it
    assert "Liver" in found

    enqueue_pet_statistics(platform.jobs.queue, study_uid, "test")
    (again,) = _run(platform)
    assert [m["status"] for m in again.result["measured"]] == ["cached"]  # the same inputs are not stored twice
    with platform.index.reading() as session:
        assert len(find_contoured_pet(session, study_uid)) == 1
    assert _suvmax(platform, str(scan.pet[0].PatientID)) == found


def test_a_structure_set_without_lesions_is_reported_not_failed(platform, scan):
    rtstruct = copy.deepcopy(scan.rtstruct)
    for observation in rtstruct.RTROIObservationsSequence:
        observation.RTROIInterpretedType = "ORGAN"
    _ingest(platform, *scan.ct, *scan.pet, rtstruct)
    (job,) = _run(platform)
    assert job.status is JobStatus.SUCCEEDED
    (skipped,) = job.result["skipped"]
    assert skipped["status"] == "not measured" and "no lesion ROI" in skipped["detail"]
    with platform.index.reading() as session:
        assert not session.scalars(select(MetricValue.id).where(MetricValue.metric == "SUVmax[g/mL]")).all()
