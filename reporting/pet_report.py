"""PET response data: the patient's PET time points, SUV/SUL/MTV/TLG per lesion, the timeline and PERCIST category.

Numbers come only from cached analysis results: kind ``pet_timepoint`` (one per time point; its
metric values, e.g. ``SULpeak[g/mL]`` per structure, fill the quantification table) and kind
``pet_response`` (the category, read from ``percist.category``, ``percist_category`` or
``category`` of its JSON). The timeline (``timeline``: hottest-lesion values, change from baseline,
liver reference, PERCIST per time point) and the RT course (``course``) are those of the response
dashboard (:func:`oncopacs.analysis.timeline.read_patient_timeline`), and the trend chart is drawn from
them. The PET studies of the patient are listed from the index either way. Where no result exists the
report says so.
"""

from __future__ import annotations

from typing import Any

from oncopacs.analysis.pet import read_response_category
from oncopacs.analysis.timeline import read_patient_timeline
from oncopacs.index.oncology import find_patient_series
from reporting.key_images import build_mip_png
from reporting.sources import CachedResult, read_results
from reporting.subject import read_subject
from reporting.types import ReportContent, ReportRequest

#: Metrics shown first, in this order, when present (matched by the name before the bracket).
METRIC_ORDER = ("SUVmax", "SUVmean", "SUVpeak", "SULmax", "SULpeak", "SULmean", "MTV", "TLG")


def _metric_key(metric: str) -> tuple[int, str]:
    base = metric.split("[", 1)[0]
    return (METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER), metric)


def _details(data: Any) -> list[tuple[str, str]]:
    """Scalar fields of a response result worth printing beside the category (changes, flags)."""
    if not isinstance(data, dict):
        return []
    shown = []
    for key, value in data.items():
        if isinstance(value, bool | int | float | str) and key not in {"category", "percist_category", "criteria"}:
            shown.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
    return shown[:12]


def _time_points(results: list[CachedResult]) -> tuple[list[dict[str, Any]], list[str]]:
    points, metrics = [], set()
    for result in results:
        structures: dict[str, dict[str, float]] = {}
        for structure, metric, value in result.metrics:
            structures.setdefault(structure or "(whole body)", {})[metric] = value
            metrics.add(metric)
        points.append({"time_point": result.time_point, "study_uid": result.study_uid,
                       "rows": [{"structure": name, "values": values} for name, values in structures.items()]})
    return points, sorted(metrics, key=_metric_key)


def _pet_studies(session, patient_id: str) -> list[dict[str, str]]:
    return [{"study_uid": s.study_instance_uid, "date": s.study_date, "description": s.study_description,
             "series_uid": s.series_instance_uid} for s in find_patient_series(session, patient_id, "PT")]


def gather_pet_response(request: ReportRequest) -> ReportContent:
    """Data of the PET response report of the patient of ``request.study_uid``."""
    archive = request.archive
    with archive.index.reading() as session:
        subject = read_subject(session, request.study_uid)
        studies = _pet_studies(session, subject.patient_id)
        timepoints = read_results(session, "pet_timepoint", patient_id=subject.patient_id)
        responses = read_results(session, "pet_response", patient_id=subject.patient_id)
    timeline = read_patient_timeline(archive, subject.patient_id)
    points, metrics = _time_points(timepoints)
    response = responses[-1] if responses else None
    category = read_response_category(response.data) if response else {}
    key_image = None
    key_series = next((s for s in reversed(studies) if s["study_uid"] == request.study_uid), None) or (
        studies[-1] if studies else None)
    if key_series is not None:
        key_image = {"series_uid": key_series["series_uid"], "date": key_series["date"],
                     "png_base64": build_mip_png(archive, key_series["series_uid"])}
    if category:
        conclusion = f"{category['criteria']}: {category['category']}"
    elif points:
        conclusion = f"{len(points)} PET time point(s) quantified; no response category assessed yet."
    else:
        conclusion = "No PET quantification or response assessment is in the archive yet."
    data = {
        "subject": subject.to_dict(),
        "pet_studies": studies,
        "metrics": metrics,
        "time_points": points,
        "timeline": [p.to_dict() for p in timeline.points] if timeline else [],
        "course": [plan.to_dict() for plan in timeline.plans] if timeline else [],
        "response": {"criteria": "", "category": "", **category, "time_point": response.time_point if response else "",
                     "details": _details(response.data) if response else []},
        "key_image": key_image,
    }
    return ReportContent(subject, conclusion, data)
