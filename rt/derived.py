"""What an object OncoPACS derives (summed dose, propagated contours, MIP, registration) copies from its source.

A derived object belongs to its source's patient and study (PS3.3 C.7.1.1 Patient, C.7.2.1 General
Study modules), so every writer copies the same attributes: :data:`PATIENT_STUDY_KEYWORDS`, plus
what its own IOD takes from the source (a frame of reference, a patient position).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

#: Patient and study attributes a derived object takes from its source, character set first.
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
)
#: The Frame of Reference module's attributes (PS3.3 C.7.4.1).
FRAME_OF_REFERENCE_KEYWORDS = ("FrameOfReferenceUID", "PositionReferenceIndicator")


def copy_patient_study(source: Dataset, target: Dataset, *, also: Iterable[str] = ()) -> Dataset:
    """Copy the patient and study attributes ``source`` has (and those named in ``also``) onto ``target``."""
    for keyword in (*PATIENT_STUDY_KEYWORDS, *also):
        element = source.data_element(keyword) if keyword in source else None
        if element is not None:
            setattr(target, keyword, element.value)
    return target
