"""The RT course of patients: each RT (Ion) Plan with its prescription, fractions, site, diagnosis and treatment days.

- **Plan facts** (label, radiation type, prescription with its source, fractions, RTPlanDate, TreatmentSite,
  AdmittingDiagnosesDescription) come from the stored RT analysis (``plan`` results, the
  :meth:`rt.plan.PlanSummary.to_dict` of the plan) when it holds them, else from the stored plan itself.
- **Treatment days** come from the RT (Ion) Beams Treatment Records that reference the plan (their
  TreatmentDate; records are read from the archive, the index does not hold that date), else are *estimated*
  from the plan date (RTPlanDate, else the plan's study date) and the planned fractions, one per weekday
  (:func:`rt.course.compute_course_dates`); :attr:`CoursePlan.dates` says which.
- **Clinical goals**: how many goals of the plan's study's stored ``goals`` results failed (None when none
  was evaluated), and the dose unit those results report (``Gy`` or ``Gy(RBE)``).

Everything is read for one patient or for every patient at once (the tumour board): a few queries, one file
read per plan whose analysis is not stored and per treatment record.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from oncopacs.analysis.results import find_results
from oncopacs.archive.ingest import Archive
from oncopacs.errors import EXPECTED_ERRORS
from oncopacs.index.oncology import StoredPlan, find_plans, find_treatment_records
from rt.course import CourseDates, TreatmentSession, compute_course_dates, parse_da, read_treatment_session
from rt.plan import read_plan_summary

log = logging.getLogger(__name__)

PLAN, GOALS = "plan", "goals"  # the RT analysis result kinds (oncopacs.analysis.rt)
FAILED = "fail"
NOT_EVALUATED = "not_evaluated"
_READ_ERRORS: tuple[type[Exception], ...] = (*EXPECTED_ERRORS, InvalidDicomError, ValueError, KeyError, TypeError,
                                             AttributeError)
#: The keys a stored plan summary needs here; one stored before they existed is read again from the plan.
_COURSE_KEYS = ("plan_date", "treatment_site", "diagnosis")


@dataclass(frozen=True, slots=True)
class CoursePlan:
    """One RT (Ion) Plan of a patient's course (doses in Gy; dates as :class:`datetime.date`).

    ``prescription_text`` is :meth:`rt.plan.Prescription.describe` (the dose and where it came from);
    ``plan_date`` is RTPlanDate, else the study date; ``goals_failed`` is None when no goal was evaluated;
    ``readable`` is False when neither a stored analysis nor the plan itself could be read.
    """

    patient_id: str
    sop_instance_uid: str
    study_instance_uid: str
    study_date: str  # YYYYMMDD
    label: str
    radiation_type: str
    prescription_gy: float | None
    fractions: int | None
    dose_per_fraction_gy: float | None
    prescription_text: str
    treatment_site: str
    diagnosis: str
    plan_date: date | None
    dates: CourseDates
    goals_failed: int | None
    dose_unit: str = "Gy"
    readable: bool = True
    approval_status: str = ""
    beam_count: int | None = None

    def describe_prescription(self) -> str:
        """``60 Gy in 30 fractions (2 Gy per fraction)``; ``no prescription`` when the plan states none."""
        if self.prescription_gy is None:
            return "no prescription" + (f", {self.fractions} fractions" if self.fractions else "")
        text = f"{self.prescription_gy:g} {self.dose_unit}"
        if self.fractions:
            text += f" in {self.fractions} fraction{'s' if self.fractions != 1 else ''}"
            if self.dose_per_fraction_gy:
                text += f" ({round(self.dose_per_fraction_gy, 2):g} {self.dose_unit} per fraction)"
        return text

    def describe_prescription_short(self) -> str:
        """``60 Gy / 30 fx`` (the board's column); ``no prescription`` when the plan states none."""
        if self.prescription_gy is None:
            return "no prescription"
        return f"{self.prescription_gy:g} {self.dose_unit}" + (f" / {self.fractions} fx" if self.fractions else "")

    def to_dict(self) -> dict[str, Any]:
        return {"sop_instance_uid": self.sop_instance_uid, "study_instance_uid": self.study_instance_uid,
                "study_date": self.study_date, "label": self.label, "radiation_type": self.radiation_type,
                "prescription_gy": self.prescription_gy, "fractions": self.fractions,
                "dose_per_fraction_gy": self.dose_per_fraction_gy, "prescription_text": self.prescription_text,
                "prescription": self.describe_prescription(), "treatment_site": self.treatment_site,
                "diagnosis": self.diagnosis, "plan_date": self.plan_date.isoformat() if self.plan_date else None,
                "dates": self.dates.to_dict(), "goals_failed": self.goals_failed, "dose_unit": self.dose_unit,
                "approval_status": self.approval_status, "beam_count": self.beam_count}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _plan_summary(archive: Archive, stored: StoredPlan, cached: dict[str, Any] | None) -> dict[str, Any] | None:
    """The plan's summary document: the stored analysis when it has the course keys, else the plan read again."""
    if cached is not None and all(key in cached for key in _COURSE_KEYS):
        return cached
    try:
        return read_plan_summary(archive.read_instance(stored.sop_instance_uid)).to_dict()
    except _READ_ERRORS as exc:
        log.warning("plan %s could not be read for the course: %s", stored.sop_instance_uid, type(exc).__name__)
        return cached


def _goals_by_study(session: Session, patient_id: str | None) -> dict[str, tuple[int | None, str]]:
    """{StudyInstanceUID: (failed goals or None when none was evaluated, dose unit)} over stored goals results."""
    found: dict[str, tuple[int | None, str]] = {}
    for result in find_results(session, GOALS, patient_id=patient_id or ""):
        document = result.document if isinstance(result.document, dict) else {}
        goals = [g for g in document.get("goals", []) if isinstance(g, dict)]
        evaluated = [g for g in goals if g.get("status") not in (NOT_EVALUATED, None)]
        failed = sum(1 for g in evaluated if g.get("status") == FAILED) if evaluated else None
        unit = _text(document.get("dose_unit")) or "Gy"
        before = found.get(result.study_instance_uid)
        if before is None or (failed is not None and (before[0] is None or failed > before[0])):
            found[result.study_instance_uid] = (failed, unit)
    return found


def read_treatment_sessions(archive: Archive, session: Session, patient_id: str | None = None
                            ) -> dict[str, list[TreatmentSession]]:
    """{plan SOP Instance UID: its treatment sessions} from the stored RT treatment records (unreadable: left out)."""
    sessions: dict[str, list[TreatmentSession]] = defaultdict(list)
    for record in find_treatment_records(session, patient_id):
        try:
            read = read_treatment_session(archive.read_dataset(record.file_path, record.sha256,
                                                               stop_before_pixels=True))
        except _READ_ERRORS as exc:
            log.warning("treatment record %s could not be read: %s", record.sop_instance_uid, type(exc).__name__)
            continue
        plan_uid = read.plan_uid or record.plan_uid
        if plan_uid:
            sessions[plan_uid].append(read)
    return sessions


def read_courses(archive: Archive, session: Session, patient_id: str | None = None
                 ) -> dict[str, tuple[CoursePlan, ...]]:
    """{PatientID: the patient's plans, oldest study first} for ``patient_id`` (None: every patient with a plan)."""
    cached = {_text(r.document.get("sop_instance_uid")): r.document
              for r in find_results(session, PLAN, patient_id=patient_id or "") if isinstance(r.document, dict)}
    goals = _goals_by_study(session, patient_id)
    sessions = read_treatment_sessions(archive, session, patient_id)
    courses: dict[str, list[CoursePlan]] = defaultdict(list)
    for stored in find_plans(session, patient_id):
        summary = _plan_summary(archive, stored, cached.get(stored.sop_instance_uid))
        courses[stored.patient_id].append(build_course_plan(stored, summary, sessions.get(stored.sop_instance_uid, []),
                                                            goals.get(stored.study_instance_uid, (None, "Gy"))))
    return {patient: tuple(plans) for patient, plans in courses.items()}


def build_course_plan(stored: StoredPlan, summary: dict[str, Any] | None, sessions: list[TreatmentSession],
                      goals: tuple[int | None, str]) -> CoursePlan:
    """The course entry of a plan from its summary document (None: unreadable), records and goals."""
    data = summary or {}
    found = data.get("prescription")
    prescription: dict[str, Any] = found if isinstance(found, dict) else {}
    fractions = next((n for n in (data.get("fractions"), prescription.get("fractions"))
                      if isinstance(n, int) and not isinstance(n, bool) and n > 0), None)
    plan_date = parse_da(data.get("plan_date")) or parse_da(stored.study_date)
    beams = data.get("beam_count")
    failed, unit = goals
    return CoursePlan(
        patient_id=stored.patient_id, sop_instance_uid=stored.sop_instance_uid,
        study_instance_uid=stored.study_instance_uid, study_date=stored.study_date,
        label=_text(data.get("label") or data.get("name")) or ("(plan could not be read)" if summary is None else ""),
        radiation_type=_text(data.get("radiation_type")),
        prescription_gy=_number(prescription.get("dose_gy")) if prescription.get("dose_gy") is not None
        else _number(data.get("prescription_gy")),
        fractions=fractions, dose_per_fraction_gy=_number(data.get("dose_per_fraction_gy")),
        prescription_text=_text(prescription.get("text")), treatment_site=_text(data.get("treatment_site")),
        diagnosis=_text(data.get("diagnosis")), plan_date=plan_date,
        dates=compute_course_dates(plan_date, fractions, sessions), goals_failed=failed, dose_unit=unit,
        readable=summary is not None, approval_status=_text(data.get("approval_status")),
        beam_count=beams if isinstance(beams, int) and not isinstance(beams, bool) else None,
    )


__all__ = ["CoursePlan", "build_course_plan", "read_courses", "read_treatment_sessions"]
