"""rt.course: treatment records read, and a plan's first and last treatment day from records or estimated."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RTBeamsTreatmentRecordStorage

from oncopacs.phantom.pet_followup import COURSES, build_course
from oncopacs.phantom.specs import PatientSpec
from rt.course import (
    ESTIMATED,
    FROM_RECORDS,
    UNKNOWN,
    TreatmentSession,
    add_treatment_days,
    compute_course_dates,
    next_treatment_day,
    parse_da,
    read_treatment_session,
)
from rt.errors import DicomInputError
from rt.plan import read_plan_summary


@pytest.fixture(scope="module")
def responder_course():
    return build_course(PatientSpec("COURSE-T1", "Test^Course"), COURSES["responder"])


def test_phantom_records_name_their_plan_date_and_fraction(responder_course) -> None:
    planning, records = responder_course
    sessions = [read_treatment_session(r) for r in records]
    assert len(sessions) == 30 and {s.plan_uid for s in sessions} == {planning.plan.SOPInstanceUID}
    assert [s.fraction_number for s in sessions] == list(range(1, 31))
    assert sessions[0].treatment_date == date(2024, 2, 19) and sessions[-1].treatment_date == date(2024, 4, 2)
    assert all(s.treatment_date.weekday() < 5 for s in sessions)
    assert date(2024, 3, 29) not in {s.treatment_date for s in sessions}  # Good Friday: no fraction


def test_plan_summary_carries_the_course_context(responder_course) -> None:
    summary = read_plan_summary(responder_course[0].plan)
    assert summary.plan_date == "20240212" and summary.treatment_site == "Lung, right"
    assert summary.diagnosis == "Non-small cell lung cancer, right upper lobe"
    assert summary.to_dict()["plan_date"] == "20240212"


def test_plan_without_course_attributes_reads_none(responder_course) -> None:
    plan = responder_course[0].plan.copy()
    del plan.RTPlanDate, plan.TreatmentSite, plan.AdmittingDiagnosesDescription
    item = Dataset()
    item.CodeMeaning = "Lung"
    plan.TreatmentSiteCodeSequence = [item]
    summary = read_plan_summary(plan)
    assert (summary.plan_date, summary.treatment_site, summary.diagnosis) == (None, "Lung", None)


def test_dates_from_records(responder_course) -> None:
    sessions = [read_treatment_session(r) for r in responder_course[1]]
    dates = compute_course_dates(date(2024, 2, 12), 30, sessions)
    assert (dates.start, dates.end, dates.basis) == (date(2024, 2, 19), date(2024, 4, 2), FROM_RECORDS)
    assert dates.fractions_recorded == 30 and not dates.is_estimate
    # a record repeated (a second beam session of the same fraction) does not count twice
    assert compute_course_dates(None, 30, [*sessions[:3], sessions[2]]).fractions_recorded == 3


def test_records_without_fraction_numbers_count_treatment_days() -> None:
    sessions = [TreatmentSession(str(i), "p", date(2024, 1, 8) + timedelta(days=i // 2), None) for i in range(6)]
    assert compute_course_dates(None, 5, sessions).fractions_recorded == 3


def test_dates_estimated_from_the_plan_date() -> None:
    # plan on Saturday 17 Feb 2024: first fraction Monday 19 Feb, 28 weekday fractions end Wednesday 27 Mar
    dates = compute_course_dates(date(2024, 2, 17), 28)
    assert (dates.start, dates.end, dates.basis) == (date(2024, 2, 19), date(2024, 3, 27), ESTIMATED)
    assert dates.is_estimate and dates.fractions_recorded == 0
    assert compute_course_dates(None, 28).basis == UNKNOWN
    assert compute_course_dates(date(2024, 2, 19), None).start is None


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1)), st.integers(min_value=1, max_value=45))
def test_weekday_fractions(first_day: date, fractions: int) -> None:
    first = next_treatment_day(first_day)
    last = add_treatment_days(first, fractions)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    assert first.weekday() < 5 and last.weekday() < 5
    assert sum(d.weekday() < 5 for d in days) == fractions  # exactly one fraction per weekday in between


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        add_treatment_days(date(2024, 1, 1), 0)
    other = Dataset()
    other.SOPClassUID = CTImageStorage
    with pytest.raises(DicomInputError, match="not an RT Beams Treatment Record"):
        read_treatment_session(other)
    bare = Dataset()
    bare.SOPClassUID, bare.SOPInstanceUID, bare.TreatmentDate = RTBeamsTreatmentRecordStorage, "1.2.3", ""
    session = read_treatment_session(bare)
    assert (session.plan_uid, session.treatment_date, session.fraction_number) == (None, None, None)
    assert parse_da("20240230") is None and parse_da("2024.02.05") == date(2024, 2, 5)
