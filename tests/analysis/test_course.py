"""The RT course and the tumour board's next step: plans with treatment days from records or from the plan."""

from __future__ import annotations

from datetime import date

import pytest

from oncopacs.analysis.cohort import FOLLOW_UP_WEEKS, decide_next_step
from oncopacs.analysis.course import CoursePlan, build_course_plan, read_courses
from oncopacs.analysis.timeline import compute_change_percent
from oncopacs.index.oncology import StoredPlan, find_plans, find_treatment_records
from oncopacs.phantom.pet_followup import COURSES, build_course
from oncopacs.phantom.specs import PatientSpec
from oncopacs.platform import open_archive
from rt.course import ESTIMATED, FROM_RECORDS, CourseDates


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    from oncopacs.settings import Settings

    archive = open_archive(Settings(data_dir=tmp_path_factory.mktemp("course") / "data"))
    for patient_id, scenario in (("COURSE-A", "responder"), ("COURSE-B", "progressor")):
        planning, records = build_course(PatientSpec(patient_id, f"Test^{scenario}"), COURSES[scenario])
        for dataset in [*planning.all_datasets(), *records]:
            assert archive.ingest_dataset(dataset, source="test").acknowledged
    yield archive
    archive.close()


def test_records_and_plans_are_found_in_the_index(archive) -> None:
    with archive.index.reading() as session:
        plans = find_plans(session)
        records = find_treatment_records(session)
        only_b = find_treatment_records(session, "COURSE-B")
    assert {p.patient_id for p in plans} == {"COURSE-A", "COURSE-B"}
    assert len(records) == 30 and only_b == []
    plan_a = next(p for p in plans if p.patient_id == "COURSE-A")
    assert {r.plan_uid for r in records} == {plan_a.sop_instance_uid}  # ReferencedRTPlanSequence, as indexed


def test_course_reads_plans_never_analysed(archive) -> None:
    with archive.index.reading() as session:
        courses = read_courses(archive, session)
    (a,), (b,) = courses["COURSE-A"], courses["COURSE-B"]
    assert (a.dates.start, a.dates.end, a.dates.basis) == (date(2024, 2, 19), date(2024, 4, 2), FROM_RECORDS)
    assert a.dates.fractions_recorded == 30 and a.treatment_site == "Lung, right"
    assert a.describe_prescription() == "60 Gy in 30 fractions (2 Gy per fraction)"
    assert a.describe_prescription_short() == "60 Gy / 30 fx"
    assert a.prescription_text == "60 Gy from plan DoseReference 1 'PTV' TargetPrescriptionDose"
    assert a.goals_failed is None  # no RT analysis stored: no goal evaluated
    # no treatment record: the planned span from the plan date (Monday 19 Feb 2024), one fraction per weekday
    assert (b.dates.start, b.dates.end, b.dates.basis) == (date(2024, 2, 19), date(2024, 3, 27), ESTIMATED)
    assert b.diagnosis == "Oesophageal adenocarcinoma, distal third" and b.fractions == 28


def test_a_summary_stored_before_the_course_keys_is_read_again(archive) -> None:
    with archive.index.reading() as session:
        stored = next(p for p in find_plans(session) if p.patient_id == "COURSE-A")
    old = {"label": "OLD", "fractions": 30, "prescription_gy": 60.0}  # an analysis stored before plan_date existed
    plan = build_course_plan(stored, old, [], (2, "Gy(RBE)"))
    assert plan.label == "OLD" and plan.plan_date == date(2024, 2, 12)  # the study date: the summary has no RTPlanDate
    assert plan.goals_failed == 2 and plan.describe_prescription_short() == "60 Gy(RBE) / 30 fx"
    unreadable = build_course_plan(StoredPlan("1.2", "1.3", "20240101", "", "X"), None, [], (None, "Gy"))
    assert not unreadable.readable and unreadable.label == "(plan could not be read)"


def _plan(end: date, failed: int | None = 0) -> CoursePlan:
    dates = CourseDates(date(2024, 1, 8), end, ESTIMATED, 30)
    return CoursePlan("P", "1.1", "1.2", "20240105", "PLAN", "PHOTON", 60.0, 30, 2.0, "", "", "", date(2024, 1, 5),
                      dates, failed)


def test_next_step_rules_in_order() -> None:
    today = date(2024, 9, 2)
    rt_end = date(2024, 2, 16)
    assert decide_next_step(_plan(rt_end, failed=2), date(2024, 8, 30), "PMD", today) == \
        "Review plan: 2 clinical goals failed"
    assert decide_next_step(_plan(rt_end), date(2024, 8, 30), "PMD", today) == "Discuss progression (PMD)"
    assert decide_next_step(_plan(rt_end), None, "", today) == "No PET time point"
    # 12 weeks after the later of the last PET (1 Mar) and the end of RT (16 Feb): due since 24 May 2024
    assert decide_next_step(_plan(rt_end), date(2024, 3, 1), "PMR", today) == "Follow-up PET due since 24 May 2024"
    assert decide_next_step(_plan(rt_end), date(2024, 8, 1), "CMR", today) == ""
    # RT ending after the last PET moves the due date
    late = _plan(date(2024, 7, 1))
    assert decide_next_step(late, date(2024, 3, 1), "", today) == ""
    assert decide_next_step(None, None, "", today) == ""  # imaging only: nothing is due
    assert FOLLOW_UP_WEEKS == 12


def test_change_percent() -> None:
    assert compute_change_percent(4.0, 1.0) == pytest.approx(-75.0)
    assert compute_change_percent(None, 1.0) is None and compute_change_percent(0.0, 1.0) is None
