"""A complete demo patient: planning CT, RTSTRUCT, RT Ion Plan, RT Dose and a PET-CT study.

Everything derives deterministically from the arguments (UIDs via :func:`oncopacs.uids.uid_for`
from the patient ID; fixed dates and times), so two builds give identical bytes.

Studies: "PLAN1" (20240115 08:30; CT #1, RTSTRUCT #2, RTPLAN #3, RTDOSE #4 on one frame of
reference; with ``with_dose_check`` also RTDOSE #5, an independent dose check of the plan) and
"PETCT1" (20240122 09:50; CT #1, PT #2 on a second frame of reference whose geometry coincides
with the planning one, i.e. the registration between them is the identity).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pydicom.dataset import Dataset

from oncopacs.phantom.activity import build_default_pet_phantom
from oncopacs.phantom.anatomy import PhantomAnatomy, build_default_anatomy
from oncopacs.phantom.ct import build_ct_series
from oncopacs.phantom.dose import build_dose_check, build_rt_dose, make_rt_dose_uid
from oncopacs.phantom.dose_model import RadialDoseModel
from oncopacs.phantom.geometry import ImageGrid, centred_grid
from oncopacs.phantom.pet import build_pet_series
from oncopacs.phantom.plan import build_rt_ion_plan
from oncopacs.phantom.rtstruct import build_rtstruct
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.phantom.truth import PhantomTruth
from oncopacs.uids import uid_for

#: Planning CT: 64 x 64 pixels of 4 mm, 30 slices of 5 mm, centred on the origin.
DEFAULT_CT_GRID = centred_grid((30, 64, 64), (4.0, 4.0, 5.0))
#: RT Dose: 41^3 voxels of 3 mm covering the dose support (|r| <= 60 mm).
DEFAULT_DOSE_GRID = centred_grid((41, 41, 41), (3.0, 3.0, 3.0))
#: PET: 40 x 40 pixels of 6.4 mm, 30 slices of 5 mm.
DEFAULT_PET_GRID = centred_grid((30, 40, 40), (6.4, 6.4, 5.0))

_DEMO_NAMES = ("Phantom^Proton", "Phantom^Neutron", "Phantom^Positron", "Phantom^Photon", "Phantom^Muon")


@dataclass(frozen=True)
class PlanningStudy:
    """A planning study: CT (#1), RTSTRUCT (#2), RT Ion Plan (#3) and RT Dose (#4) on one frame of reference.

    ``dose_check`` (#5, None when not built) is an independent dose check of the plan; the plan's
    ReferencedDoseSequence names the planning system's dose (#4).
    """

    anatomy: PhantomAnatomy
    dose_model: RadialDoseModel
    ct: tuple[Dataset, ...]
    rtstruct: Dataset
    plan: Dataset
    dose: Dataset
    dose_check: Dataset | None = None

    def all_datasets(self) -> list[Dataset]:
        return [*self.ct, self.rtstruct, self.plan, self.dose, *([self.dose_check] if self.dose_check else [])]


def build_planning_study(
    patient: PatientSpec,
    *,
    ct_grid: ImageGrid = DEFAULT_CT_GRID,
    dose_grid: ImageGrid = DEFAULT_DOSE_GRID,
    prescription_gy: float = 60.0,
    fractions: int = 30,
    study_date: str = "20240115",
    study_time: str = "083000",
    diagnosis: str = "",
    treatment_site: str = "",
    with_dose_check: bool = False,
) -> PlanningStudy:
    """The planning study "PLAN1" of ``patient`` (UIDs from the patient ID; dates DA, times TM).

    The dose is the default :class:`RadialDoseModel` (about 63.6 Gy at the PTV centre) whatever the
    prescription, so another prescription gives a plan whose goals relative to it may fail.
    ``diagnosis`` is written as AdmittingDiagnosesDescription of every object, ``treatment_site`` as the
    plan's TreatmentSite (both left out when empty). ``with_dose_check`` adds an independent dose check
    (:func:`oncopacs.phantom.dose.build_dose_check`, 2 % below the plan dose) as RT Dose series #5.
    """
    anatomy = build_default_anatomy(ct_grid)
    dose_model = RadialDoseModel(centre_mm=anatomy.ptv.solid.centre_mm)  # type: ignore[union-attr]
    plan_study = make_study_spec(patient, "planning", study_id="PLAN1", description="Proton therapy planning",
                                 study_date=study_date, study_time=study_time, admitting_diagnoses=diagnosis)
    plan_for = uid_for(patient.patient_id, "for", "planning")

    def plan_series(key: str, number: int, description: str, modality: str):
        return make_series_spec(
            plan_study, key, series_number=number, description=description,
            modality=modality, frame_of_reference_uid=plan_for,
        )

    planning_ct = build_ct_series(patient, plan_study, plan_series("ct", 1, "Planning CT", "CT"), ct_grid, anatomy)
    rtstruct = build_rtstruct(
        patient, plan_study, plan_series("rtstruct", 2, "Structures", "RTSTRUCT"), anatomy, planning_ct
    )
    dose_series = plan_series("rtdose", 4, "Plan dose", "RTDOSE")
    plan = build_rt_ion_plan(
        patient, plan_study, plan_series("rtplan", 3, "Proton plan", "RTPLAN"), anatomy, rtstruct,
        prescription_gy=prescription_gy, fractions=fractions, treatment_site=treatment_site,
        dose_uid=make_rt_dose_uid(dose_series),
    )
    dose = build_rt_dose(patient, plan_study, dose_series, dose_grid, dose_model, plan, rtstruct)
    dose_check = None
    if with_dose_check:
        check_series = plan_series("dosecheck", 5, "Independent dose check", "RTDOSE")
        dose_check = build_dose_check(patient, plan_study, check_series, dose_grid, dose_model, plan, rtstruct)
    return PlanningStudy(anatomy, dose_model, tuple(planning_ct), rtstruct, plan, dose, dose_check)


@dataclass(frozen=True)
class DemoPatient:
    """The datasets of one demo patient and the analytic truth they were built from."""

    patient: PatientSpec
    planning_ct: tuple[Dataset, ...]
    rtstruct: Dataset
    rt_ion_plan: Dataset
    rt_dose: Dataset
    pet_ct: tuple[Dataset, ...]
    pet: tuple[Dataset, ...]
    truth: PhantomTruth
    dose_check: Dataset | None = None  # an independent dose check of the plan (``with_dose_check``)

    def all_datasets(self) -> list[Dataset]:
        """Planning CT, RTSTRUCT, plan, dose (then the dose check), then the PET-CT's CT and PET slices."""
        check = [self.dose_check] if self.dose_check else []
        return [*self.planning_ct, self.rtstruct, self.rt_ion_plan, self.rt_dose, *check, *self.pet_ct, *self.pet]


def build_demo_patient(
    patient_id: str = "ONCO-DEMO-001",
    name: str = "Phantom^Proton",
    *,
    sex: str = "M",
    birth_date: str = "19580312",
    weight_kg: float = 75.0,
    height_m: float = 1.75,
    ct_grid: ImageGrid = DEFAULT_CT_GRID,
    dose_grid: ImageGrid = DEFAULT_DOSE_GRID,
    pet_grid: ImageGrid = DEFAULT_PET_GRID,
    prescription_gy: float = 60.0,
    fractions: int = 30,
    with_dose_check: bool = False,
) -> DemoPatient:
    """Build one demo patient (UIDs depend only on ``patient_id``; grids in mm; ``with_dose_check``: its
    planning study also holds an independent dose check of the plan)."""
    patient = PatientSpec(patient_id, name, birth_date, sex, weight_kg, height_m)
    planning = build_planning_study(patient, ct_grid=ct_grid, dose_grid=dose_grid, prescription_gy=prescription_gy,
                                    fractions=fractions, with_dose_check=with_dose_check)
    anatomy, dose_model = planning.anatomy, planning.dose_model
    planning_ct, rtstruct, plan, dose = planning.ct, planning.rtstruct, planning.plan, planning.dose
    pet_phantom = build_default_pet_phantom(anatomy.body)

    pet_study = make_study_spec(
        patient, "petct", study_id="PETCT1", description="FDG PET-CT staging",
        study_date=pet_phantom.scan_date, study_time="095000",
    )
    pet_for = uid_for(patient_id, "for", "petct")
    pet_ct_series = make_series_spec(
        pet_study, "ct", series_number=1, description="CT for attenuation correction",
        modality="CT", frame_of_reference_uid=pet_for,
    )
    pt_series = make_series_spec(
        pet_study, "pt", series_number=2, description="PET FDG AC", modality="PT",
        frame_of_reference_uid=pet_for, series_time=pet_phantom.series_time,
    )
    pet_ct = build_ct_series(patient, pet_study, pet_ct_series, ct_grid, anatomy)
    pet = build_pet_series(patient, pet_study, pt_series, pet_grid, pet_phantom)

    truth = PhantomTruth(
        anatomy=anatomy, dose_model=dose_model, ct_grid=ct_grid, dose_grid=dose_grid, pet=pet_phantom,
        weight_kg=weight_kg, prescription_gy=prescription_gy, fractions=fractions,
    )
    return DemoPatient(patient, planning_ct, rtstruct, plan, dose, tuple(pet_ct), tuple(pet), truth,
                       planning.dose_check)


def build_demo_patients(n: int = 2, *, dose_check_ids: Collection[str] = ()) -> list[DemoPatient]:
    """``n`` distinct demo patients ONCO-DEMO-001... with different names, sexes and weights.

    The patients named in ``dose_check_ids`` also get an independent dose check of their plan.
    """
    patients = []
    for i in range(n):
        name = _DEMO_NAMES[i] if i < len(_DEMO_NAMES) else f"Phantom^Number{i + 1}"
        patients.append(
            build_demo_patient(
                f"ONCO-DEMO-{i + 1:03d}",
                name,
                sex="MF"[i % 2],
                birth_date=f"{1958 + i % 30}0312",
                weight_kg=75.0 + 5.0 * (i % 6) - (10.0 if i % 2 else 0.0),
                height_m=1.75 - (0.10 if i % 2 else 0.0),
                with_dose_check=f"ONCO-DEMO-{i + 1:03d}" in dose_check_ids,
            )
        )
    return patients
