"""PET-CT scans sent one by one are analysed on arrival: each becomes a time point and each follow-up is assessed."""

from __future__ import annotations

import pytest

from fusion.pet.suv import SuvType
from oncopacs.analysis.cohort import find_cohort
from oncopacs.analysis.pet import (
    PET_RESPONSE,
    assess_response,
    find_stored_time_points,
    measure_time_point,
    read_stored_time_point,
)
from oncopacs.analysis.results import find_results
from oncopacs.analysis.timeline import BASELINE, read_patient_timeline
from oncopacs.jobs.queue import JobStatus
from oncopacs.phantom.pet_followup import build_longitudinal_patient
from oncopacs.platform import Platform


@pytest.fixture(scope="module")
def responder():
    return build_longitudinal_patient("ARRIVE-1", "Test^Arrival", "responder")


def _send(platform: Platform, scan) -> None:
    for dataset in scan.all_datasets():
        assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
    ran = []
    platform.jobs.new_worker().run_pending(on_job=ran.append)
    assert ran and all(job.status is JobStatus.SUCCEEDED for job in ran), [job.message for job in ran]


def test_scans_arriving_out_of_order_get_their_percist_category(platform: Platform, responder) -> None:
    baseline, mid, follow = responder.scans
    _send(platform, baseline)
    with platform.index.reading() as session:
        assert find_results(session, PET_RESPONSE, patient_id="ARRIVE-1") == []  # a baseline alone: nothing to assess
    _send(platform, follow)  # the follow-up arrives before the mid-treatment scan
    _send(platform, mid)
    with platform.index.reading() as session:
        stored = {r.time_point: r.document for r in find_results(session, PET_RESPONSE, patient_id="ARRIVE-1")}
    assert {day: doc["percist"]["category"] for day, doc in stored.items()} == {"20240318": "PMR", "20240506": "CMR"}
    assert {doc["baseline"]["date"] for doc in stored.values()} == {"2024-02-05"}  # both against the baseline
    # the same categories as measuring the scans directly (what `oncopacs pet response` and the demo do)
    direct = [measure_time_point(scan.pet, scan.rtstruct).time_point for scan in responder.scans]
    assert [assess_response(direct[: n + 1]).percist.category.value for n in (1, 2)] == ["PMR", "CMR"]
    timeline = read_patient_timeline(platform.archive, "ARRIVE-1")
    assert [p.category for p in timeline.points] == [BASELINE, "PMR", "CMR"]
    assert timeline.points[2].basis  # the reasons PERCIST gives, shown beside the category
    (row,) = [p for p in find_cohort(platform.archive) if p.patient_id == "ARRIVE-1"]
    assert row.category == "CMR" and row.status == "assessed"


def test_a_stored_time_point_reads_back(platform: Platform, responder) -> None:
    _send(platform, responder.scans[0])
    with platform.index.reading() as session:
        (stored,) = find_stored_time_points(session, "ARRIVE-1", SuvType.BW)
        assert find_stored_time_points(session, "ARRIVE-1", SuvType.LBM) == []
    measured = measure_time_point(responder.scans[0].pet, responder.scans[0].rtstruct)
    assert stored.time_point == measured.time_point
    assert stored.series_instance_uid == str(responder.scans[0].pet[0].SeriesInstanceUID)
    assert len(stored.inputs) == len(responder.scans[0].pet)
    assert read_stored_time_point({"time_point": {"date": "not a date"}}) is None
    assert read_stored_time_point(None) is None
