"""Tumour-board summary data: per patient, the RT course, the latest response and the open questions.

The RT course lists every RT (Ion) Plan of the patient (cached ``plan`` results, else read from
the stored plan with :mod:`rt.plan`) and the conclusions of approved plan evaluation reports.
The latest response is the newest ``pet_response`` result. Open questions are those given by the
user (option ``questions``) plus gaps found in the record (no response assessed, no approved plan
evaluation).
"""

from __future__ import annotations

from typing import Any

from oncopacs.analysis.pet import read_response_category
from oncopacs.index.oncology import find_patient_plans
from oncopacs.reports.store import find_final_reports
from reporting.sources import read_results
from reporting.subject import read_subject
from reporting.types import ReportContent, ReportRequest
from rt.plan import read_plan_summary


def _plans(request: ReportRequest, session, patient_id: str) -> list[dict[str, Any]]:
    cached = {r.data.get("sop_instance_uid"): r.data for r in read_results(session, "plan", patient_id=patient_id)
              if isinstance(r.data, dict) and isinstance(r.data.get("beams"), list)}
    plans = []
    for stored in find_patient_plans(session, patient_id):
        sop_uid, study_uid = stored.sop_instance_uid, stored.study_instance_uid
        date, description = stored.study_date, stored.study_description
        summary = cached.get(sop_uid) or read_plan_summary(request.archive.read_instance(sop_uid)).to_dict()
        plans.append({"sop_instance_uid": sop_uid, "study_uid": study_uid, "date": date, "study": description,
                      "label": summary.get("label") or summary.get("name") or "",
                      "radiation_type": summary.get("radiation_type") or "",
                      "prescription_gy": summary.get("prescription_gy"), "fractions": summary.get("fractions"),
                      "beams": summary.get("beam_count") or len(summary.get("beams", [])),
                      "approval_status": summary.get("approval_status") or ""})
    return plans


def gather_tumour_board(request: ReportRequest) -> ReportContent:
    """Data of the tumour-board summary of the patient of ``request.study_uid`` (option ``questions``)."""
    with request.archive.index.reading() as session:
        subject = read_subject(session, request.study_uid)
        plans = _plans(request, session, subject.patient_id)
        evaluations = [
            {"report_id": r.id, "version": r.version, "approved_by": r.approved_by,
             "approved_at": r.approved_at.isoformat() if r.approved_at else "", "conclusion": r.conclusion}
            for r in find_final_reports(session, subject.patient_id, "plan")
        ]
        responses = read_results(session, "pet_response", patient_id=subject.patient_id)
        timepoints = read_results(session, "pet_timepoint", patient_id=subject.patient_id)
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
    course = "; ".join(
        f"{p['label']} {p['prescription_gy']:g} Gy/{p['fractions']} fx" if p["prescription_gy"] and p["fractions"]
        else p["label"] for p in plans) or "no RT plan"
    response_text = f"{category['criteria']}: {category['category']}" if category else "response not assessed"
    conclusion = f"RT course: {course}. Latest response: {response_text}."
    data = {
        "subject": subject.to_dict(),
        "plans": plans,
        "plan_evaluations": evaluations,
        "response": {"criteria": "", "category": "", **category, "time_point": latest.time_point if latest else ""},
        "pet_time_points": [t.time_point for t in timepoints],
        "questions": questions,
        "gaps": gaps,
    }
    return ReportContent(subject, conclusion, data)
