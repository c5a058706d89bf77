"""The treatment course of a plan: RT (Ion) Beams Treatment Records and the dates of the fractions.

:func:`read_treatment_session` reads one RT Beams or RT Ion Beams Treatment Record: the plan it
delivers (ReferencedRTPlanSequence), its TreatmentDate and the fraction number of its beams
(CurrentFractionNumber in the Treatment Session (Ion) Beam Sequence).

:func:`compute_course_dates` gives a plan's first and last treatment day:

- from the treatment records when the archive holds any for the plan (:data:`FROM_RECORDS`): the
  earliest and latest TreatmentDate, and how many distinct fractions were recorded;
- else estimated from the plan (:data:`ESTIMATED`): the first weekday on or after RTPlanDate, then
  one fraction per weekday (Monday to Friday, no holidays) until NumberOfFractionsPlanned — the
  course *as planned*, not as delivered, and said as such;
- else unknown (:data:`UNKNOWN`: no plan date, or no fraction count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from rt.errors import DicomInputError

RT_BEAMS_TREATMENT_RECORD_STORAGE = "1.2.840.10008.5.1.4.1.1.481.4"
RT_ION_BEAMS_TREATMENT_RECORD_STORAGE = "1.2.840.10008.5.1.4.1.1.481.9"
TREATMENT_RECORD_CLASSES = frozenset({RT_BEAMS_TREATMENT_RECORD_STORAGE, RT_ION_BEAMS_TREATMENT_RECORD_STORAGE})

FROM_RECORDS = "treatment records"
ESTIMATED = "estimated from the plan"
UNKNOWN = "unknown"
TREATMENT_WEEKDAYS = 5  # Monday to Friday


@dataclass(frozen=True, slots=True)
class TreatmentSession:
    """One treatment record: the plan it delivers (None: it names none), its date and fraction number."""

    sop_instance_uid: str
    plan_uid: str | None
    treatment_date: date | None
    fraction_number: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"sop_instance_uid": self.sop_instance_uid, "plan_uid": self.plan_uid,
                "treatment_date": self.treatment_date.isoformat() if self.treatment_date else None,
                "fraction_number": self.fraction_number}


@dataclass(frozen=True, slots=True)
class CourseDates:
    """First and last treatment day of a plan and where they come from.

    ``basis`` is :data:`FROM_RECORDS`, :data:`ESTIMATED` or :data:`UNKNOWN`; ``fractions_recorded``
    counts distinct fractions (or treatment days, when records carry no fraction number) in the
    records; ``fractions_planned`` is the plan's NumberOfFractionsPlanned.
    """

    start: date | None
    end: date | None
    basis: str
    fractions_planned: int | None
    fractions_recorded: int = 0

    @property
    def is_estimate(self) -> bool:
        return self.basis == ESTIMATED

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None, "basis": self.basis,
                "fractions_planned": self.fractions_planned, "fractions_recorded": self.fractions_recorded}


def parse_da(value: Any) -> date | None:
    """A DICOM DA (``YYYYMMDD``, or ACR-NEMA ``YYYY.MM.DD``) as a date; None when it is not one."""
    text = str(value or "").strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def read_treatment_session(ds: Dataset) -> TreatmentSession:
    """The plan, TreatmentDate and fraction number of an RT (Ion) Beams Treatment Record.

    Raises :class:`~rt.errors.DicomInputError` (keyword SOPClassUID) for any other SOP class.
    """
    sop_class_uid = str(ds.get("SOPClassUID", "") or "")
    if sop_class_uid not in TREATMENT_RECORD_CLASSES:
        name = UID(sop_class_uid).name if sop_class_uid else "missing"
        raise DicomInputError("SOPClassUID", f"is {name} ({sop_class_uid or 'none'}), not an RT Beams Treatment "
                                             "Record or RT Ion Beams Treatment Record")
    plans = ds.get("ReferencedRTPlanSequence") or []
    plan_uid = str(plans[0].get("ReferencedSOPInstanceUID", "") or "") if plans else ""
    fractions = set()
    for keyword in ("TreatmentSessionBeamSequence", "TreatmentSessionIonBeamSequence"):
        for beam in ds.get(keyword) or []:
            number = beam.get("CurrentFractionNumber")
            if isinstance(number, int) or (isinstance(number, str) and number.strip().isdigit()):
                fractions.add(int(number))
    return TreatmentSession(str(ds.get("SOPInstanceUID", "") or ""), plan_uid or None,
                            parse_da(ds.get("TreatmentDate")), min(fractions) if fractions else None)


def add_treatment_days(first: date, fractions: int) -> date:
    """The day of fraction ``fractions`` when fraction 1 is on ``first`` and one is given per weekday."""
    if fractions < 1:
        raise ValueError(f"fractions must be at least 1, not {fractions}")
    day, left = first, fractions - 1
    while left:
        day += timedelta(days=1)
        if day.weekday() < TREATMENT_WEEKDAYS:
            left -= 1
    return day


def next_treatment_day(day: date) -> date:
    """``day`` when it is a weekday, else the Monday after it."""
    while day.weekday() >= TREATMENT_WEEKDAYS:
        day += timedelta(days=1)
    return day


def compute_course_dates(plan_date: date | None, fractions_planned: int | None,
                         sessions: Sequence[TreatmentSession] = ()) -> CourseDates:
    """First and last treatment day of a plan from its records, else estimated from the plan (module docstring)."""
    days = sorted(s.treatment_date for s in sessions if s.treatment_date is not None)
    if days:
        numbered = {s.fraction_number for s in sessions if s.fraction_number is not None}
        recorded = len(numbered) if numbered else len(set(days))
        return CourseDates(days[0], days[-1], FROM_RECORDS, fractions_planned, recorded)
    if plan_date is None or not fractions_planned or fractions_planned < 1:
        return CourseDates(None, None, UNKNOWN, fractions_planned)
    first = next_treatment_day(plan_date)
    return CourseDates(first, add_treatment_days(first, fractions_planned), ESTIMATED, fractions_planned)


__all__ = ["ESTIMATED", "FROM_RECORDS", "TREATMENT_RECORD_CLASSES", "UNKNOWN", "CourseDates", "TreatmentSession",
           "add_treatment_days", "compute_course_dates", "next_treatment_day", "parse_da", "read_treatment_session"]
