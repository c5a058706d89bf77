"""Who, which study and which series a phantom dataset belongs to (plain values, no DICOM)."""

from __future__ import annotations

from dataclasses import dataclass

from oncopacs.uids import uid_for


@dataclass(frozen=True)
class PatientSpec:
    """Patient demographics.

    birth_date: DICOM DA ``YYYYMMDD``; sex: ``M``, ``F`` or ``O``;
    weight_kg: body weight, kg (PatientWeight); height_m: body height, m (PatientSize).
    """

    patient_id: str
    name: str
    birth_date: str = "19580312"
    sex: str = "M"
    weight_kg: float = 75.0
    height_m: float = 1.75


@dataclass(frozen=True)
class StudySpec:
    """One study: UID, ID, accession number, description and its fixed date/time (DA, TM)."""

    study_instance_uid: str
    study_id: str
    accession_number: str
    description: str
    study_date: str = "20240115"
    study_time: str = "083000"
    referring_physician_name: str = "Referrer^Phantom"
    admitting_diagnoses: str = ""  # AdmittingDiagnosesDescription ("" leaves it out)


@dataclass(frozen=True)
class SeriesSpec:
    """One series: UID, number, description, modality, frame of reference and date/time (DA, TM)."""

    series_instance_uid: str
    series_number: int
    description: str
    modality: str
    frame_of_reference_uid: str
    series_date: str
    series_time: str


def make_study_spec(
    patient: PatientSpec,
    key: str,
    *,
    study_id: str,
    description: str,
    study_date: str = "20240115",
    study_time: str = "083000",
    admitting_diagnoses: str = "",
) -> StudySpec:
    """A study whose UID and accession number derive only from the patient ID and ``key``."""
    accession = f"A{abs(hash_text(patient.patient_id + '/' + key)) % 10**10:010d}"
    return StudySpec(
        study_instance_uid=uid_for(patient.patient_id, "study", key),
        study_id=study_id,
        accession_number=accession,
        description=description,
        study_date=study_date,
        study_time=study_time,
        admitting_diagnoses=admitting_diagnoses,
    )


def make_series_spec(
    study: StudySpec,
    key: str,
    *,
    series_number: int,
    description: str,
    modality: str,
    frame_of_reference_uid: str,
    series_time: str | None = None,
) -> SeriesSpec:
    """A series whose UID derives only from the study UID and ``key``."""
    return SeriesSpec(
        series_instance_uid=uid_for(study.study_instance_uid, "series", key),
        series_number=series_number,
        description=description,
        modality=modality,
        frame_of_reference_uid=frame_of_reference_uid,
        series_date=study.study_date,
        series_time=series_time or study.study_time,
    )


def hash_text(text: str) -> int:
    """A stable (process-independent) 64-bit hash of ``text`` (FNV-1a), unlike built-in ``hash``."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
