"""The ingest rule queues one rt_analysis job when a planning set completes, and the job computes it."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import func, select

from oncopacs.analysis.models import AnalysisResult
from oncopacs.analysis.rt_job import RT_ANALYSIS, RULE_ACTOR, install_rt_analysis
from oncopacs.archive.ingest import Archive
from oncopacs.jobs.kinds import JobSystem, open_job_system
from oncopacs.jobs.queue import JobStatus
from oncopacs.phantom import DemoPatient, build_demo_patient
from oncopacs.uids import uid_for
from tests.factories import small_ct_series


@pytest.fixture(scope="module")
def demo() -> DemoPatient:
    return build_demo_patient("ONCO-RULE-001")


@pytest.fixture
def jobs(archive: Archive) -> JobSystem:
    system = open_job_system(archive)
    archive.subscribe(install_rt_analysis(archive, system))
    return system


def _ingest(archive: Archive, *datasets) -> None:
    for dataset in datasets:
        assert archive.ingest_dataset(dataset, source="test").acknowledged


def _rt_jobs(jobs: JobSystem):
    return jobs.queue.list(kind=RT_ANALYSIS).jobs


def _results(archive: Archive) -> int:
    with archive.index.reading() as session:
        return session.scalar(select(func.count()).select_from(AnalysisResult)) or 0


def test_a_lone_ct_queues_nothing(archive: Archive, jobs: JobSystem):
    _ingest(archive, *small_ct_series(3))
    assert jobs.queue.list().total == 0


def test_exactly_one_job_when_the_set_completes(archive: Archive, jobs: JobSystem, demo: DemoPatient):
    _ingest(archive, *demo.planning_ct[:2], demo.rtstruct, demo.rt_ion_plan)
    assert _rt_jobs(jobs) == ()  # no dose yet
    _ingest(archive, demo.rt_dose)
    (job,) = _rt_jobs(jobs)
    assert job.status == JobStatus.QUEUED and job.created_by == RULE_ACTOR
    assert job.params == {"study_instance_uid": demo.rt_dose.StudyInstanceUID}
    _ingest(archive, demo.rtstruct, demo.rt_dose, demo.planning_ct[2])  # duplicates and images: nothing new
    assert len(_rt_jobs(jobs)) == 1
    assert _results(archive) == 0  # nothing is computed on ingest

    assert jobs.new_worker().run_pending() == 1
    done = jobs.queue.get(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.message
    assert done.result["planning_sets"] == [{
        "dose_uid": demo.rt_dose.SOPInstanceUID, "structure_set_uid": demo.rtstruct.SOPInstanceUID,
        "plan_uid": demo.rt_ion_plan.SOPInstanceUID, "computed": True}]
    assert _results(archive) == 3  # dvh, goals, plan

    # A new dose of the same plan changes the inputs: one more job, which computes only the new set.
    second = copy.deepcopy(demo.rt_dose)
    second.SOPInstanceUID = uid_for("rule", "second dose")
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    _ingest(archive, second)
    assert len(_rt_jobs(jobs)) == 2
    assert jobs.new_worker().run_pending() == 1
    latest = _rt_jobs(jobs)[0]
    assert latest.status == JobStatus.SUCCEEDED
    assert sorted(s["computed"] for s in latest.result["planning_sets"]) == [False, True]


def test_the_structure_set_arriving_last_completes_the_set(archive: Archive, jobs: JobSystem, demo: DemoPatient):
    _ingest(archive, demo.rt_dose, demo.rt_ion_plan)
    assert _rt_jobs(jobs) == ()  # the dose's structure set is missing
    _ingest(archive, demo.rtstruct)
    assert len(_rt_jobs(jobs)) == 1


def test_a_dose_without_any_structure_set_queues_nothing(archive: Archive, jobs: JobSystem, demo: DemoPatient):
    dose = copy.deepcopy(demo.rt_dose)
    del dose.ReferencedStructureSetSequence
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = uid_for("rule", "missing plan")
    _ingest(archive, demo.rtstruct, dose)
    assert _rt_jobs(jobs) == ()
