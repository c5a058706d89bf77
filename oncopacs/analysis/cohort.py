"""The tumour-board cohort: one row per patient of the archive, read from the index alone (no file is opened).

A patient's site is the most frequent BodyPartExamined of their series (upper case; :data:`UNKNOWN_SITE`
when none is recorded). Their status is read from what is recorded: ``assessed`` (a ``pet_response`` is
stored), ``baseline only`` (PET time point(s), no response), ``planned`` (an RT plan, no PET result) or
``imaging only`` (none of these). The PET facts come from :mod:`oncopacs.analysis.pet`, the patients and
series from :func:`oncopacs.index.query.find`; a few aggregate queries, whatever the cohort size.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from oncopacs.analysis.pet import find_last_time_points, find_latest_responses
from oncopacs.index.dates import format_iso_date
from oncopacs.index.db import IndexDatabase
from oncopacs.index.query import QueryLevel, find

ASSESSED, BASELINE_ONLY, PLANNED, IMAGING_ONLY = "assessed", "baseline only", "planned", "imaging only"
UNKNOWN_SITE = "unknown"


@dataclass(frozen=True, slots=True)
class CohortPatient:
    """One patient of the cohort; ``study_uid`` is the study a tumour-board report is made for.

    ``response`` is the newest stored PERCIST/EORTC/RECIST assessment document (None when none is stored
    or its JSON is not an object); ``study_uid`` is that response's follow-up study, else the patient's
    newest study ("" when the patient has no series).
    """

    patient_id: str
    patient_name: str
    site: str
    status: str  # ASSESSED, BASELINE_ONLY, PLANNED or IMAGING_ONLY
    last_time_point: str  # ISO date (YYYY-MM-DD) of the newest PET time point, "" when none
    study_uid: str
    response: dict[str, object] | None


def find_cohort(index: IndexDatabase) -> tuple[CohortPatient, ...]:
    """Every patient of the archive, by PatientID, with site, status, newest PET time point and response."""
    with index.reading() as session:
        patients = sorted(((str(m.values["PatientID"]), str(m.values["PatientName"] or ""))
                           for m in find(session, QueryLevel.PATIENT, {})), key=lambda p: p[0])
        series = [m.values for m in find(session, QueryLevel.SERIES, {})]
        last_points = find_last_time_points(session)
        responses = find_latest_responses(session)
    sites: dict[str, Counter[str]] = defaultdict(Counter)
    modalities: dict[str, set[str]] = defaultdict(set)
    latest_study: dict[str, tuple[str, str]] = {}  # PatientID -> (StudyDate, StudyInstanceUID)
    for values in series:
        patient_id, study_date = str(values["PatientID"]), str(values["StudyDate"] or "")
        if values["BodyPartExamined"]:
            sites[patient_id][str(values["BodyPartExamined"]).upper()] += 1
        modalities[patient_id].add(str(values["Modality"]))
        if patient_id not in latest_study or study_date > latest_study[patient_id][0]:
            latest_study[patient_id] = (study_date, str(values["StudyInstanceUID"]))
    cohort = []
    for patient_id, name in patients:
        response = responses.get(patient_id)
        status = (ASSESSED if response is not None else BASELINE_ONLY if patient_id in last_points
                  else PLANNED if "RTPLAN" in modalities[patient_id] else IMAGING_ONLY)
        site = sites[patient_id].most_common(1)[0][0] if sites[patient_id] else UNKNOWN_SITE
        study_uid = response.study_instance_uid if response is not None else latest_study.get(patient_id, ("", ""))[1]
        cohort.append(CohortPatient(patient_id, name, site, status, format_iso_date(last_points.get(patient_id, "")),
                                    study_uid, response.document if response is not None else None))
    return tuple(cohort)
