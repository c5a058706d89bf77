"""Tumour-board summary data: per patient, the RT course, the latest response, the timeline and the open questions.

The RT course (``course``: every RT (Ion) Plan with prescription, fractions, treatment days and where they come
from, clinical goals) and the response timeline (``timeline``) are those of the response dashboard
(:func:`oncopacs.analysis.timeline.read_patient_timeline`), with the diagnosis and site the tumour board shows
(the newest plan's AdmittingDiagnosesDescription and TreatmentSite); the chart is drawn from the timeline.
The conclusions of approved plan evaluation reports are listed. The latest response is the newest
``pet_response`` result. Open questions are those given by the user (option ``questions``) plus gaps found
in the record (no response assessed, no approved plan evaluation).
"""

from __future__ import annotations

from oncopacs.analysis.pet import read_response_category
from oncopacs.analysis.timeline import read_patient_timeline
from oncopacs.reports.store import find_final_reports
from reporting.sources import read_results
from reporting.subject import read_subject
from reporting.types import ReportContent, ReportRequest


def gather_tumour_board(request: ReportRequest) -> ReportContent:
    """Data of the tumour-board summary of the patient of ``request.study_uid`` (option ``questions``)."""
    with request.archive.index.reading() as session:
        subject = read_subject(session, request.study_uid)
        evaluations = [
            {"report_id": r.id, "version": r.version, "approved_by": r.approved_by,
             "approved_at": r.approved_at.isoformat() if r.approved_at else "", "conclusion": r.conclusion}
            for r in find_final_reports(session, subject.patient_id, "plan")
        ]
        responses = read_results(session, "pet_response", patient_id=subject.patient_id)
        timepoints = read_results(session, "pet_timepoint", patient_id=subject.patient_id)
    timeline = read_patient_timeline(request.archive, subject.patient_id)
    plans = timeline.plans if timeline else ()
    latest = responses[-1] if responses else None
    category = read_response_category(latest.data) if latest else {}
    questions = [str(q).strip() for q in request.options.get("questions", ()) if str(q).strip()]
    gaps = []
    if not plans:
        gaps.append("No RT plan of this patient is in the archive.")
    elif not evaluations:
        gaps.append("No approved plan evaluation report yet.")
    if not category:
        gaps.append("No PET response assessment yet.")
    gaps += [f"Plan {p.label}: {p.goals_failed} clinical goal(s) failed." for p in plans if p.goals_failed]
    course = "; ".join(
        f"{p.label} {p.prescription_gy:g} Gy/{p.fractions} fx" if p.prescription_gy and p.fractions
        else p.label for p in plans) or "no RT plan"
    response_text = f"{category['criteria']}: {category['category']}" if category else "response not assessed"
    conclusion = f"RT course: {course}. Latest response: {response_text}."
    newest = plans[-1] if plans else None
    data = {
        "subject": subject.to_dict(),
        "diagnosis": next((p.diagnosis for p in reversed(plans) if p.diagnosis), ""),
        "site": newest.treatment_site if newest else "",
        "course": [p.to_dict() for p in plans],
        "plan_evaluations": evaluations,
        "response": {"criteria": "", "category": "", **category, "time_point": latest.time_point if latest else ""},
        "pet_time_points": [t.time_point for t in timepoints],
        "timeline": [p.to_dict() for p in timeline.points] if timeline else [],
        "questions": questions,
        "gaps": gaps,
    }
    return ReportContent(subject, conclusion, data)
