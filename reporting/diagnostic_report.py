"""FHIR R4 DiagnosticReport with the PDF and the ImagingStudy, as one transaction Bundle (conventions §4).

The Bundle holds the ImagingStudy (identifier ``urn:dicom:uid`` / ``urn:oid:<StudyInstanceUID>``)
and the DiagnosticReport (status, code, subject by patient identifier, effective time, issued,
conclusion, ``presentedForm`` with the base64 PDF, its size and SHA-1, and the ImagingStudy
reference), each created with ``ifNoneExist`` on its identifier so that a resend creates no
duplicate. Built as plain JSON and validated with ``fhir.resources`` (R4B models).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from reporting.subject import ReportSubject
from reporting.types import CODE_SYSTEM

PATIENT_ID_SYSTEM = "urn:oncopacs:patient-id"  # the identifier system when the patient has no issuer
REPORT_ID_SYSTEM = "urn:oncopacs:report"
DICOM_UID_SYSTEM = "urn:dicom:uid"


@dataclass(frozen=True, slots=True)
class FhirReport:
    """What the DiagnosticReport carries."""

    identifier: str  # stable per delivery: ``ifNoneExist`` makes a resend a no-op
    report_id: int
    version: int
    amended: bool
    code: str
    title: str
    conclusion: str
    subject: ReportSubject
    approved_at: datetime
    pdf: bytes


def _effective(subject: ReportSubject) -> str | None:
    date, time = subject.study_date, (subject.study_time or "").split(".")[0]
    if len(date) != 8 or not date.isdigit():
        return None
    if len(time) >= 4 and time[:4].isdigit():
        seconds = time[4:6] if len(time) >= 6 else "00"
        return f"{date[:4]}-{date[4:6]}-{date[6:]}T{time[:2]}:{time[2:4]}:{seconds}Z"
    return f"{date[:4]}-{date[4:6]}-{date[6:]}"


def build_bundle(report: FhirReport) -> dict[str, Any]:
    """The transaction Bundle (plain JSON), validated against the R4B models (ValueError if invalid)."""
    subject = report.subject
    patient = {"identifier": {"system": subject.issuer_of_patient_id or PATIENT_ID_SYSTEM, "value": subject.patient_id}}
    study_identifier = f"urn:oid:{subject.study_instance_uid}"
    study_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, subject.study_instance_uid)}"
    report_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{REPORT_ID_SYSTEM}:{report.identifier}')}"
    issued = report.approved_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    diagnostic_report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": REPORT_ID_SYSTEM, "value": report.identifier}],
        "status": "amended" if report.amended else "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": report.code, "display": report.title}],
                 "text": report.title},
        "subject": patient,
        "issued": issued,
        "imagingStudy": [{"reference": study_url}],
        "conclusion": report.conclusion,
        "presentedForm": [{
            "contentType": "application/pdf",
            "data": base64.b64encode(report.pdf).decode("ascii"),
            "title": f"{report.title} (report {report.report_id} v{report.version})",
            "creation": issued,
            "size": len(report.pdf),
            "hash": base64.b64encode(hashlib.sha1(report.pdf).digest()).decode("ascii"),
        }],
    }
    effective = _effective(subject)
    if effective:
        diagnostic_report["effectiveDateTime"] = effective
    imaging_study = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": study_identifier}],
        "status": "available",
        "subject": patient,
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": study_url, "resource": imaging_study,
             "request": {"method": "POST", "url": "ImagingStudy",
                         "ifNoneExist": f"identifier={DICOM_UID_SYSTEM}|{study_identifier}"}},
            {"fullUrl": report_url, "resource": diagnostic_report,
             "request": {"method": "POST", "url": "DiagnosticReport",
                         "ifNoneExist": f"identifier={REPORT_ID_SYSTEM}|{report.identifier}"}},
        ],
    }
    validate_bundle(bundle)
    return bundle


def validate_bundle(bundle: dict[str, Any]) -> Bundle:
    """The Bundle as R4B models; ValueError (pydantic's ValidationError) when it is not valid FHIR."""
    return Bundle.model_validate(bundle)
