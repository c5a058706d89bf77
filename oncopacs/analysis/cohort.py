"""The tumour-board cohort: one row per patient of the archive, read from the index and the stored results.

Per patient:

- **RT course**: the newest of the patient's RT (Ion) Plans (:func:`oncopacs.analysis.course.read_courses`):
  prescription and fractions, first and last treatment day (from treatment records, else estimated from the
  plan), failed clinical goals.
- **Diagnosis**: the AdmittingDiagnosesDescription the newest plan carries that has one ("" when none does: the
  index holds no diagnosis, and a study description names a procedure, not a disease).
- **Site**: the newest plan's TreatmentSite; else the most frequent BodyPartExamined of the patient's series
  (upper case); else :data:`UNKNOWN_SITE`. ``site_source`` says which (:data:`SITE_FROM_PLAN`,
  :data:`SITE_FROM_BODY_PART`, "").
- **Status**, read from what is recorded: ``assessed`` (a ``pet_response`` is stored), ``baseline only``
  (PET time point(s), no response), ``planned`` (an RT plan, no PET result) or ``imaging only``.
- **Latest response**: the newest stored PERCIST/EORTC/RECIST assessment and its follow-up date.
- **Next step** (:func:`decide_next_step`), the first that applies:

  1. ``Review plan: N clinical goal(s) failed`` — the newest plan's stored goals have failures;
  2. ``Discuss progression (PMD)`` — the latest PERCIST category is PMD;
  3. ``No PET time point`` — an RT plan but no quantified PET;
  4. ``Follow-up PET due since <date>`` — :data:`FOLLOW_UP_WEEKS` weeks have passed since the later of
     the last PET time point and the end of RT (PERCIST asks for a response scan well after RT ends);
  5. ``""`` — nothing is due.

- **Pages**: the newest plan's study (plan review) and the newest PET study (PET-CT).

A few aggregate queries whatever the cohort size; files are read only for plans without a stored analysis
and for treatment records.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import date, timedelta

from oncopacs.analysis.course import CoursePlan, read_courses
from oncopacs.analysis.pet import find_last_time_points, find_latest_responses, read_response_category
from oncopacs.archive.ingest import Archive
from oncopacs.index.display import format_date
from oncopacs.index.query import QueryLevel, find
from rt.course import parse_da

ASSESSED, BASELINE_ONLY, PLANNED, IMAGING_ONLY = "assessed", "baseline only", "planned", "imaging only"
UNKNOWN_SITE = "unknown"
SITE_FROM_PLAN, SITE_FROM_BODY_PART = "plan TreatmentSite", "BodyPartExamined"
FOLLOW_UP_WEEKS = 12
PROGRESSION = "PMD"


@dataclass(frozen=True, slots=True)
class CohortPatient:
    """One patient of the cohort; ``study_uid`` is the study a tumour-board report is made for.

    ``response`` is the newest stored PERCIST/EORTC/RECIST assessment document (None when none is stored
    or its JSON is not an object) and ``response_date`` its follow-up's date; ``study_uid`` is that
    response's follow-up study, else the patient's newest study ("" when the patient has no series).
    ``course`` is the newest RT plan (None: no plan); ``plan_study_uid`` / ``pet_study_uid`` the newest study
    with a plan / a PET series ("" when none).
    """

    patient_id: str
    patient_name: str  # DICOM PN
    site: str
    status: str  # ASSESSED, BASELINE_ONLY, PLANNED or IMAGING_ONLY
    last_time_point: date | None  # the newest PET time point
    study_uid: str
    response: dict[str, object] | None
    response_date: date | None = None
    diagnosis: str = ""
    site_source: str = ""
    course: CoursePlan | None = None
    next_step: str = ""
    plan_study_uid: str = ""
    pet_study_uid: str = ""

    @property
    def category(self) -> str:
        """The latest response's category ("" when none is recorded)."""
        return read_response_category(self.response).get("category", "") if self.response else ""


def decide_next_step(course: CoursePlan | None, last_time_point: date | None, category: str, today: date) -> str:
    """The next step for the board (module docstring: the first rule that applies; "" when none does)."""
    if course is not None and course.goals_failed:
        return f"Review plan: {course.goals_failed} clinical goal{'s' if course.goals_failed != 1 else ''} failed"
    if category == PROGRESSION:
        return "Discuss progression (PMD)"
    if course is not None and last_time_point is None:
        return "No PET time point"
    references = [d for d in (last_time_point, course.dates.end if course else None) if d is not None]
    if references:
        due = max(references) + timedelta(weeks=FOLLOW_UP_WEEKS)
        if today >= due:
            return f"Follow-up PET due since {format_date(due.strftime('%Y%m%d'))}"
    return ""


def _diagnosis(plans: tuple[CoursePlan, ...]) -> str:
    return next((p.diagnosis for p in reversed(plans) if p.diagnosis), "")


def find_cohort(archive: Archive, *, today: date | None = None) -> tuple[CohortPatient, ...]:
    """Every patient of the archive, by PatientID, with course, site, diagnosis, response and next step."""
    today = today or date.today()
    with archive.index.reading() as session:
        patients = sorted(((str(m.values["PatientID"]), str(m.values["PatientName"] or ""))
                           for m in find(session, QueryLevel.PATIENT, {})), key=lambda p: p[0])
        series = [m.values for m in find(session, QueryLevel.SERIES, {})]
        last_points = find_last_time_points(session)
        responses = find_latest_responses(session)
        courses = read_courses(archive, session)
    body_parts: dict[str, Counter[str]] = defaultdict(Counter)
    modalities: dict[str, set[str]] = defaultdict(set)
    latest_study: dict[str, tuple[str, str]] = {}  # PatientID -> (StudyDate, StudyInstanceUID)
    latest_pet: dict[str, tuple[str, str]] = {}
    for values in series:
        patient_id, study_date = str(values["PatientID"]), str(values["StudyDate"] or "")
        study = (study_date, str(values["StudyInstanceUID"]))
        if values["BodyPartExamined"]:
            body_parts[patient_id][str(values["BodyPartExamined"]).upper()] += 1
        modalities[patient_id].add(str(values["Modality"]))
        if patient_id not in latest_study or study > latest_study[patient_id]:
            latest_study[patient_id] = study
        if values["Modality"] == "PT" and (patient_id not in latest_pet or study > latest_pet[patient_id]):
            latest_pet[patient_id] = study
    cohort = []
    for patient_id, name in patients:
        response = responses.get(patient_id)
        plans = courses.get(patient_id, ())
        course = plans[-1] if plans else None
        status = (ASSESSED if response is not None else BASELINE_ONLY if patient_id in last_points
                  else PLANNED if "RTPLAN" in modalities[patient_id] else IMAGING_ONLY)
        if course is not None and course.treatment_site:
            site, site_source = course.treatment_site, SITE_FROM_PLAN
        elif body_parts[patient_id]:
            site, site_source = body_parts[patient_id].most_common(1)[0][0], SITE_FROM_BODY_PART
        else:
            site, site_source = UNKNOWN_SITE, ""
        study_uid = response.study_instance_uid if response is not None else latest_study.get(patient_id, ("", ""))[1]
        last_point = parse_da(last_points.get(patient_id))
        patient = CohortPatient(
            patient_id, name, site, status, last_point, study_uid,
            response.document if response is not None else None,
            response_date=parse_da(response.time_point) if response is not None else None,
            diagnosis=_diagnosis(plans), site_source=site_source, course=course,
            plan_study_uid=course.study_instance_uid if course else "",
            pet_study_uid=latest_pet.get(patient_id, ("", ""))[1])
        cohort.append(_with_next_step(patient, today))
    return tuple(cohort)


def _with_next_step(patient: CohortPatient, today: date) -> CohortPatient:
    return replace(patient, next_step=decide_next_step(patient.course, patient.last_time_point, patient.category,
                                                       today))
