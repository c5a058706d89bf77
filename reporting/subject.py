"""Who and what a report is about: the patient and study as the index holds them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from oncopacs.errors import NotFoundError
from oncopacs.index.display import format_person_name
from oncopacs.index.query import PatientStudy, find_patient_study


@dataclass(frozen=True, slots=True)
class ReportSubject(PatientStudy):
    """Patient and study identification (DICOM formats: names ``Family^Given``, dates YYYYMMDD)."""

    @property
    def display_name(self) -> str:
        """``FAMILY, Given Middle`` from the DICOM PN (:func:`oncopacs.index.display.format_person_name`)."""
        return format_person_name(self.patient_name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportSubject:
        return cls(**{name: str(data.get(name, "")) for name in cls.__dataclass_fields__})


def read_subject(session, study_uid: str) -> ReportSubject:
    """The patient and study of ``study_uid``; NotFoundError when the archive does not hold it."""
    found = find_patient_study(session, study_uid)
    if found is None:
        raise NotFoundError(f"study {study_uid} is not in the archive")
    return ReportSubject(**asdict(found))
