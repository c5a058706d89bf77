"""The PET rule and the pet_statistics job: contours on a PET-CT's frame of reference get SUV statistics."""

from __future__ import annotations

import copy

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from oncopacs.analysis.models import MetricValue
from oncopacs.analysis.pet_job import PET_STATISTICS, RULE_ACTOR, enqueue_pet_statistics
from oncopacs.jobs.queue import JobRecord, JobStatus
from oncopacs.phantom.pet_followup import FollowupScan, build_longitudinal_patients
from oncopacs.platform import Platform
from oncopacs.uids import uid_for


@pytest.fixture(scope="module")
def scan() -> FollowupScan:
    """The baseline PET-CT of the first longitudinal phantom: CT, PET, and GTV + Liver contours on the CT."""
    return build_longitudinal_patients()[0].scans[0]


def _ingest(platform: Platform, *datasets: Dataset) -> None:
    for dataset in datasets:
        assert platform.archive.ingest_dataset(dataset, source="test").acknowledged


def _run(platform: Platform) -> list[JobRecord]:
    ran: list[JobRecord] = []
    platform.jobs.new_worker().run_pending(on_job=ran.append)
    return ran


def _pet_jobs(platform: Platform) -> list[JobRecord]:
    return platform.jobs.queue.list(kind=PET_STATISTICS, limit=1000).jobs


def _suvmax(platform: Platform, patient_id: str) -> dict[str, float]:
    with platform.index.reading() as session:
        rows = session.execute(select(MetricValue.structure, MetricValue.value).where(
            MetricValue.patient_id == patient_id, MetricValue.metric == "SUVmax[g/mL]")).all()
    return dict(rows)


def _standard_rtstruct(scan: FollowupScan, *, study_uid: str | None = None) -> Dataset:
    """The scan's structure set as planning systems write it: the frame only in ReferencedFrameOfReferenceSequence,
    a new SOP Instance UID, optionally in another study of the patient."""
    rtstruct = copy.deepcopy(scan.rtstruct)
    del rtstruct.FrameOfReferenceUID
    rtstruct.SOPInstanceUID = uid_for(str(scan.rtstruct.SOPInstanceUID), "standard", study_uid or "")
    if study_uid:
        rtstruct.StudyInstanceUID = study_uid
        rtstruct.SeriesInstanceUID = uid_for(study_uid, "rtstruct-series")
    return rtstruct


def test_a_contoured_pet_series_is_measured_once_when_complete(platform, scan):
    _ingest(platform, *scan.ct, scan.rtstruct)  # contours drawn on the CT, on the PET-CT's frame of reference
    assert not _pet_jobs(platform)  # contours without PET: nothing to measure
    for i, pet_slice in enumerate(scan.pet):  # slices arriving one by one, a worker draining after each
        _ingest(platform, pet_slice)
        assert len(_run(platform)) == (1 if i == len(scan.pet) - 1 else 0)
    (job,) = _pet_jobs(platform)
    assert job.created_by == RULE_ACTOR and job.params == {"pet_series_uid": str(scan.pet[0].SeriesInstanceUID)}
    assert job.status is JobStatus.SUCCEEDED and job.result["skipped"] == []
    (measured,) = job.result["measured"]
    assert measured["status"] == "measured" and measured["structure_set_uid"] == str(scan.rtstruct.SOPInstanceUID)
    found = _suvmax(platform, str(scan.pet[0].PatientID))
    for lesion, truth_suvbw in scan.lesion_suvbw.items():
        assert found[lesion] == pytest.approx(truth_suvbw, rel=0.15)  # partial volume at the edge only lowers it
    assert "Liver" in found

    enqueue_pet_statistics(platform.jobs.queue, str(scan.pet[0].SeriesInstanceUID), "test")
    (again,) = _run(platform)
    assert [m["status"] for m in again.result["measured"]] == ["cached"]  # the same inputs are not stored twice
    assert _suvmax(platform, str(scan.pet[0].PatientID)) == found


def test_contours_arriving_after_the_pet_in_another_study_are_found_by_their_frame(platform, scan):
    _ingest(platform, *scan.ct, *scan.pet)
    assert not _pet_jobs(platform)  # a complete PET without contours: nothing yet
    planning_study = uid_for(str(scan.rtstruct.StudyInstanceUID), "contouring study")
    rtstruct = _standard_rtstruct(scan, study_uid=planning_study)
    _ingest(platform, rtstruct)
    (job,) = _run(platform)
    (measured,) = job.result["measured"]
    assert measured["status"] == "measured" and measured["structure_set_uid"] == str(rtstruct.SOPInstanceUID)

    revised = _standard_rtstruct(scan)  # new contours on the same PET: measured again, one time point kept
    _ingest(platform, revised)
    (job,) = _run(platform)
    (measured,) = job.result["measured"]
    assert measured["status"] == "measured" and measured["structure_set_uid"] == str(revised.SOPInstanceUID)
    with platform.index.reading() as session:
        suvmax_rows = session.scalars(select(MetricValue.id).where(
            MetricValue.metric == "SUVmax[g/mL]", MetricValue.structure == "Liver")).all()
    assert len(suvmax_rows) == 1


def test_a_dynamic_series_queues_nothing_and_is_not_measured(platform, scan):
    dynamic = []
    for pet_slice in scan.pet:
        copied = copy.deepcopy(pet_slice)
        copied.SeriesType = ["DYNAMIC", "IMAGE"]
        dynamic.append(copied)
    _ingest(platform, *scan.ct, scan.rtstruct, *dynamic)
    assert not _pet_jobs(platform)
    enqueue_pet_statistics(platform.jobs.queue, str(scan.pet[0].SeriesInstanceUID), "test")
    (job,) = _run(platform)
    (skipped,) = job.result["skipped"]
    assert skipped["status"] == "not measured" and "DYNAMIC" in skipped["detail"]


def test_a_structure_set_without_lesions_is_reported_not_failed(platform, scan):
    rtstruct = copy.deepcopy(scan.rtstruct)
    for observation in rtstruct.RTROIObservationsSequence:
        observation.RTROIInterpretedType = "ORGAN"
    _ingest(platform, *scan.ct, *scan.pet, rtstruct)
    (job,) = _run(platform)
    assert job.status is JobStatus.SUCCEEDED
    (skipped,) = job.result["skipped"]
    assert skipped["status"] == "not measured" and "no lesion ROI" in skipped["detail"]
    assert not _suvmax(platform, str(scan.pet[0].PatientID))


def test_a_series_the_archive_does_not_hold_is_an_empty_result(platform):
    enqueue_pet_statistics(platform.jobs.queue, "1.2.3.4.5", "test")
    (job,) = _run(platform)
    assert job.status is JobStatus.SUCCEEDED and job.result["measured"] == job.result["skipped"] == []
