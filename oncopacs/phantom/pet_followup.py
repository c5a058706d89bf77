"""Longitudinal FDG PET-CT phantoms: baseline, mid-treatment and follow-up scans with known activities.

Each time point is its own study ("PET1", "PET2", "PET3") with a CT for attenuation correction (#1),
the PET (#2, BQML decay corrected to START, as :mod:`oncopacs.phantom.pet`) and an RTSTRUCT (#3)
contoured on that CT (same frame of reference as the PET) with BODY, the lesion(s) ("GTV",
"GTV_2" for a new lesion) and "Liver". CT and PET share one small grid (40 x 40 x 20 voxels of
6.4 x 6.4 x 5 mm) so the demo stays fast.

Scenarios (activity concentrations at series start, Bq/mL; liver 6000, background 3000):

- ``responder``: lesion 25000 / R 15 mm -> 12000 / R 12 mm -> 5000 / R 8 mm (PERCIST PMR then CMR);
- ``progressor``: lesion 20000 / R 12 mm -> 28000 / R 15 mm -> 32000 / R 18 mm plus a new lesion
  GTV_2 (20000 / R 10 mm) at follow-up (PERCIST PMD).

Each scenario also has an RT course (:data:`COURSES`): a planning study "PLAN1" (planning CT, RTSTRUCT,
RT Ion Plan, RT Dose: :func:`oncopacs.phantom.patient.build_planning_study`) dated after the baseline PET,
with the diagnosis (AdmittingDiagnosesDescription) and treatment site (TreatmentSite) of the course.
The responder's 60 Gy in 30 fractions has an RT Ion Beams Treatment Record per fraction (series #5 of the
planning study; weekdays from 19 Feb 2024, no treatment on Good Friday and Easter Monday, last on 2 Apr
2024); the progressor's 50.4 Gy in 28 fractions has none (its dates are estimated from the plan), and its
dose (about 63.6 Gy at the PTV centre, 126 % of the prescription) fails the plan's hot-spot goal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
from pydicom.dataset import Dataset

from oncopacs.phantom.activity import PetPhantom
from oncopacs.phantom.anatomy import (
    HU_WATER,
    PhantomAnatomy,
    Structure,
    build_default_anatomy,
)
from oncopacs.phantom.ct import build_ct_series
from oncopacs.phantom.geometry import ImageGrid, centred_grid
from oncopacs.phantom.patient import PlanningStudy, build_planning_study
from oncopacs.phantom.pet import build_pet_series
from oncopacs.phantom.record import build_treatment_records
from oncopacs.phantom.rtstruct import build_rtstruct
from oncopacs.phantom.shapes import Sphere
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.phantom.truth import compute_suvbw
from oncopacs.uids import uid_for

#: CT and PET grid of every follow-up study: 40 x 40 pixels of 6.4 mm, 20 slices of 5 mm (z within ±47.5 mm).
FOLLOWUP_GRID = centred_grid((20, 40, 40), (6.4, 6.4, 5.0))
LIVER = Sphere((-55.0, -10.0, 10.0), 30.0)
NEW_LESION_CENTRE_MM = (45.0, 20.0, -20.0)


@dataclass(frozen=True)
class LesionState:
    """One lesion at one time point: name, radius (mm), activity concentration (Bq/mL), centre (mm)."""

    name: str
    radius_mm: float
    activity_bqml: float
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ScanSpec:
    """One scheduled scan: label, study date (DA), injection and series times (TM) and the lesions."""

    label: str
    date: str
    lesions: tuple[LesionState, ...]
    injection_time: str = "090000"
    series_time: str = "100000"


SCENARIOS: dict[str, tuple[ScanSpec, ...]] = {
    "responder": (
        ScanSpec("baseline", "20240205", (LesionState("GTV", 15.0, 25000.0),)),
        ScanSpec("mid-treatment", "20240318", (LesionState("GTV", 12.0, 12000.0),), "091000", "101000"),
        ScanSpec("follow-up", "20240506", (LesionState("GTV", 8.0, 5000.0),), "090500", "100500"),
    ),
    "progressor": (
        ScanSpec("baseline", "20240212", (LesionState("GTV", 12.0, 20000.0),)),
        ScanSpec("mid-treatment", "20240325", (LesionState("GTV", 15.0, 28000.0),)),
        ScanSpec("follow-up", "20240513", (LesionState("GTV", 18.0, 32000.0),
                                           LesionState("GTV_2", 10.0, 20000.0, NEW_LESION_CENTRE_MM))),
    ),
}


@dataclass(frozen=True)
class CourseSpec:
    """The RT course of a scenario: plan date (DA), prescription (Gy) in fractions, diagnosis, site, and the
    treatment days recorded (DA; empty: no treatment record is sent)."""

    plan_date: str
    prescription_gy: float
    fractions: int
    diagnosis: str
    treatment_site: str
    treatment_days: tuple[str, ...] = ()


def _weekdays(first: str, count: int, skipped: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``count`` weekdays (DA) from ``first`` on, leaving out ``skipped``."""
    day = date(int(first[:4]), int(first[4:6]), int(first[6:]))
    days: list[str] = []
    while len(days) < count:
        text = day.strftime("%Y%m%d")
        if day.weekday() < 5 and text not in skipped:
            days.append(text)
        day += timedelta(days=1)
    return tuple(days)


COURSES: dict[str, CourseSpec] = {
    "responder": CourseSpec("20240212", 60.0, 30, "Non-small cell lung cancer, right upper lobe", "Lung, right",
                            _weekdays("20240219", 30, skipped=("20240329", "20240401"))),
    "progressor": CourseSpec("20240219", 50.4, 28, "Oesophageal adenocarcinoma, distal third", "Oesophagus"),
}


@dataclass(frozen=True)
class MultiLesionPetPhantom(PetPhantom):
    """A :class:`PetPhantom` with further lesions painted over it (Bq/mL, each a sphere)."""

    extra_lesions: tuple[tuple[Sphere, float], ...] = ()

    def compute_activity_bqml(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        c = PetPhantom.compute_activity_bqml(self, x, y, z)
        for sphere, activity in self.extra_lesions:
            c[sphere.contains(x, y, z)] = activity
        return c


@dataclass(frozen=True)
class FollowupScan:
    """The datasets of one time point and its truth (lesion SUVbw per lesion name, g/mL)."""

    spec: ScanSpec
    ct: tuple[Dataset, ...]
    pet: tuple[Dataset, ...]
    rtstruct: Dataset
    phantom: PetPhantom
    lesion_suvbw: dict[str, float] = field(default_factory=dict)
    liver_suvbw: float = 0.0

    def all_datasets(self) -> list[Dataset]:
        return [*self.ct, *self.pet, self.rtstruct]


@dataclass(frozen=True)
class LongitudinalPatient:
    """A patient with a PET-CT at every time point of a scenario, and the planning study and treatment records
    of its RT course (None / empty when built without)."""

    patient: PatientSpec
    scenario: str
    scans: tuple[FollowupScan, ...]
    planning: PlanningStudy | None = None
    records: tuple[Dataset, ...] = ()

    def all_datasets(self) -> list[Dataset]:
        """The planning study and its records, then each time point's CT, PET and RTSTRUCT."""
        course = [*self.planning.all_datasets(), *self.records] if self.planning else []
        return [*course, *(ds for scan in self.scans for ds in scan.all_datasets())]


def _anatomy(grid: ImageGrid, lesions: tuple[LesionState, ...]) -> PhantomAnatomy:
    base = build_default_anatomy(grid)
    structures = [Structure(1, "BODY", base.body, "EXTERNAL", (0, 255, 0), HU_WATER)]
    for i, lesion in enumerate(lesions):
        structures.append(Structure(2 + i, lesion.name, Sphere(lesion.centre_mm, lesion.radius_mm), "GTV",
                                    (255, 0, 64 * i), 40.0))
    structures.append(Structure(2 + len(lesions), "Liver", LIVER, "ORGAN", (160, 80, 0), 60.0))
    return PhantomAnatomy(body=base.body, bone=base.bone, structures=tuple(structures))


def build_followup_scan(patient: PatientSpec, spec: ScanSpec, number: int, grid: ImageGrid = FOLLOWUP_GRID
                        ) -> FollowupScan:
    """The CT, PET and RTSTRUCT of one time point (UIDs from the patient ID and ``spec.label``)."""
    anatomy = _anatomy(grid, spec.lesions)
    first, *others = spec.lesions
    phantom = MultiLesionPetPhantom(
        body=anatomy.body, lesion=Sphere(first.centre_mm, first.radius_mm), liver=LIVER,
        lesion_bqml=first.activity_bqml, scan_date=spec.date, injection_time=spec.injection_time,
        series_time=spec.series_time,
        extra_lesions=tuple((Sphere(lesion.centre_mm, lesion.radius_mm), lesion.activity_bqml) for lesion in others),
    )
    study = make_study_spec(patient, f"pet-{spec.label}", study_id=f"PET{number}",
                            description=f"FDG PET-CT {spec.label}", study_date=spec.date,
                            study_time=spec.series_time)
    frame = uid_for(patient.patient_id, "for", f"pet-{spec.label}")

    def series(key: str, n: int, description: str, modality: str, time: str | None = None):
        return make_series_spec(study, key, series_number=n, description=description, modality=modality,
                                frame_of_reference_uid=frame, series_time=time)

    ct = build_ct_series(patient, study, series("ct", 1, "CT for attenuation correction", "CT"), grid, anatomy)
    pet = build_pet_series(patient, study, series("pt", 2, "PET FDG AC", "PT", spec.series_time), grid, phantom)
    rtstruct = build_rtstruct(patient, study, series("rtstruct", 3, "Lesion contours", "RTSTRUCT"), anatomy, ct)

    def suv(activity: float) -> float:
        return compute_suvbw(activity, patient.weight_kg, phantom.injected_dose_bq, phantom.uptake_seconds,
                             phantom.half_life_s)

    return FollowupScan(spec, tuple(ct), tuple(pet), rtstruct, phantom,
                        {lesion.name: suv(lesion.activity_bqml) for lesion in spec.lesions}, suv(phantom.liver_bqml))


def build_course(patient: PatientSpec, course: CourseSpec) -> tuple[PlanningStudy, tuple[Dataset, ...]]:
    """The planning study of ``course`` and its treatment records (series #5 "Treatment records")."""
    planning = build_planning_study(patient, prescription_gy=course.prescription_gy, fractions=course.fractions,
                                    study_date=course.plan_date, study_time="140000", diagnosis=course.diagnosis,
                                    treatment_site=course.treatment_site)
    if not course.treatment_days:
        return planning, ()
    study = make_study_spec(patient, "planning", study_id="PLAN1", description="Proton therapy planning",
                            study_date=course.plan_date, study_time="140000", admitting_diagnoses=course.diagnosis)
    series = make_series_spec(study, "rtrecord", series_number=5, description="Treatment records",
                              modality="RTRECORD", frame_of_reference_uid="")
    days = [date(int(d[:4]), int(d[4:6]), int(d[6:])) for d in course.treatment_days]
    return planning, tuple(build_treatment_records(patient, study, series, planning.plan, days))


def build_longitudinal_patient(patient_id: str, name: str, scenario: str = "responder", *, sex: str = "M",
                               weight_kg: float = 78.0, height_m: float = 1.78,
                               with_course: bool = False) -> LongitudinalPatient:
    """A patient with the baseline, mid-treatment and follow-up PET-CT of ``scenario`` (see module docstring),
    and with ``with_course`` its RT course (:data:`COURSES`)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"no scenario {scenario!r}; have {', '.join(SCENARIOS)}")
    patient = PatientSpec(patient_id, name, "19610704", sex, weight_kg, height_m)
    scans = tuple(build_followup_scan(patient, spec, i + 1) for i, spec in enumerate(SCENARIOS[scenario]))
    if not with_course:
        return LongitudinalPatient(patient, scenario, scans)
    planning, records = build_course(patient, COURSES[scenario])
    return LongitudinalPatient(patient, scenario, scans, planning, records)


def build_longitudinal_patients() -> list[LongitudinalPatient]:
    """The demo's response patients, each with its RT course: ONCO-RESP-001 (responder, man) and ONCO-RESP-002
    (progressor, woman)."""
    return [
        build_longitudinal_patient("ONCO-RESP-001", "Phantom^Responder", "responder", with_course=True),
        build_longitudinal_patient("ONCO-RESP-002", "Phantom^Progressor", "progressor", sex="F", weight_kg=64.0,
                                   height_m=1.66, with_course=True),
    ]
