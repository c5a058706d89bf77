"""A clinical-size RT case for DVH benchmarks: 512 x 512 x 150 CT, 25 structures, 2.5 mm dose grid.

Geometry (LPS, mm): planning CT 512 x 512 pixels of 1 mm, 150 slices of 2 mm centred on the
origin (z in [-150, 150]); RT Dose 133 x 133 x 121 voxels of 2.5 mm covering the whole body.
The dose is the phantom's radial model (:mod:`oncopacs.phantom.dose_model`) centred on the PTV
with a 38 mm plateau and an 88 mm fall-off radius, so many structures lie in the gradient.

The 25 structures (:func:`build_clinical_anatomy`) are spheres, z-axis cylinders, spherical
shells (contoured as an outer polygon and an inner hole) and axis-aligned ellipsoids of
4..160 mm, all with closed-form truth (:class:`~oncopacs.phantom.truth.PhantomTruth`):
ellipsoids and cylinders lie wholly inside the dose plateau or outside the dose support.
CT pixels hold only the body cylinder (one shared pixel buffer): a DVH needs the CT's
geometry and UIDs, not its organs, and this keeps building the case fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from oncopacs.phantom.activity import build_default_pet_phantom
from oncopacs.phantom.anatomy import (
    HU_AIR,
    HU_BONE,
    HU_WATER,
    PhantomAnatomy,
    Structure,
)
from oncopacs.phantom.ct import CT_RESCALE_INTERCEPT, build_ct_slice
from oncopacs.phantom.dose import build_rt_dose
from oncopacs.phantom.dose_model import RadialDoseModel
from oncopacs.phantom.geometry import ImageGrid, centred_grid
from oncopacs.phantom.plan import build_rt_ion_plan
from oncopacs.phantom.rtstruct import build_rtstruct
from oncopacs.phantom.shapes import Cylinder, Ellipsoid, Shell, Solid, Sphere
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.phantom.truth import PhantomTruth
from oncopacs.uids import uid_for

#: Planning CT: 512 x 512 pixels of 1 mm, 150 slices of 2 mm.
CLINICAL_CT_GRID = centred_grid((150, 512, 512), (1.0, 1.0, 2.0))
#: RT Dose: 2.5 mm voxels over the whole body (x, y within ±166.25 mm, z within ±151.25 mm).
CLINICAL_DOSE_GRID = centred_grid((121, 133, 133), (2.5, 2.5, 2.5))
#: The plan dose: 63.6 Gy within 38 mm of the PTV centre, falling linearly to 0 at 88 mm.
CLINICAL_DOSE_MODEL = RadialDoseModel(centre_mm=(0.0, 0.0, 0.0), dmax_gy=63.6, plateau_radius_mm=38.0,
                                      falloff_radius_mm=88.0)


@dataclass(frozen=True)
class ClinicalCase:
    """RTSTRUCT and RT Dose of the clinical-size case, the CT slices they reference, and the truth."""

    planning_ct: tuple[Dataset, ...]
    rtstruct: Dataset
    rt_dose: Dataset
    truth: PhantomTruth


def build_clinical_anatomy(ct_grid: ImageGrid = CLINICAL_CT_GRID) -> PhantomAnatomy:
    """25 structures of varied shape and size (BODY first).

    Cylinders end on CT slab edges and the small lesions (radius <= 9 mm) sit at heights where
    their 2 mm contour stacks keep within 3 % of the analytic volumes.
    """
    dz = ct_grid.spacing_mm[2]
    z_lo, z_hi = float(ct_grid.z_mm()[0] - dz / 2.0), float(ct_grid.z_mm()[-1] + dz / 2.0)
    body = Cylinder((0.0, 0.0), 160.0, z_lo, z_hi)
    shapes: list[tuple[str, Solid, str]] = [
        ("BODY", body, "EXTERNAL"),
        ("PTV", Sphere((0.0, 0.0, 0.0), 40.0), "PTV"),
        ("CTV", Sphere((0.0, 0.0, 0.0), 34.0), "CTV"),
        ("GTV", Sphere((4.0, -3.0, 2.0), 20.0), "GTV"),
        ("Bladder", Sphere((0.0, -62.0, 35.0), 30.0), "ORGAN"),
        ("Rectum", Sphere((0.0, 58.0, -8.0), 18.0), "ORGAN"),
        ("SpinalCord", Cylinder((0.0, 115.0), 6.0, z_lo, z_hi), "ORGAN"),
        ("Femur_Head_L", Sphere((80.0, 10.0, -25.0), 24.0), "ORGAN"),
        ("Femur_Head_R", Sphere((-80.0, 10.0, -25.0), 24.0), "ORGAN"),
        ("Ring_PTV", Shell((0.0, 0.0, 0.0), 45.0, 58.0), "AVOIDANCE"),
        ("Cyst_Wall", Shell((35.0, -25.0, 45.0), 9.0, 15.0), "ORGAN"),
        ("Lesion_R4", Sphere((50.0, 0.0, 0.5), 4.0), "GTV"),
        ("Lesion_R5", Sphere((0.0, 48.0, 21.0), 5.0), "GTV"),
        ("Lesion_R6", Sphere((-52.0, 8.0, -11.0), 6.0), "GTV"),
        ("Lesion_R7", Sphere((30.0, 40.0, -39.0), 7.0), "GTV"),
        ("Lesion_R8", Sphere((-40.0, -40.0, 31.0), 8.0), "GTV"),
        ("Prostate", Sphere((0.0, 25.0, -20.0), 22.0), "ORGAN"),
        ("SeminalVes", Sphere((0.0, 45.0, 15.0), 12.0), "ORGAN"),
        ("Kidney_L", Ellipsoid((85.0, 85.0, 90.0), (30.0, 22.0, 55.0)), "ORGAN"),
        ("Kidney_R", Ellipsoid((-85.0, 85.0, 90.0), (30.0, 22.0, 55.0)), "ORGAN"),
        ("Boost", Ellipsoid((0.0, 0.0, 0.0), (14.0, 10.0, 18.0)), "PTV"),
        ("Bowel", Sphere((35.0, -60.0, 60.0), 35.0), "ORGAN"),
        ("PenileBulb", Sphere((0.0, 30.0, -67.0), 9.0), "ORGAN"),
        ("Body_Ring", Shell((0.0, 0.0, 0.0), 120.0, 130.0), "AVOIDANCE"),
        ("Femur_Shaft_L", Cylinder((100.0, 10.0), 12.0, z_lo, -60.0), "ORGAN"),
    ]
    structures = tuple(
        Structure(i + 1, name, solid, kind, ((37 * i) % 256, (91 * i + 60) % 256, (53 * i + 120) % 256), 20.0)
        for i, (name, solid, kind) in enumerate(shapes)
    )
    return PhantomAnatomy(body=body, bone=Cylinder((0.0, 100.0), 10.0, z_lo, z_hi), structures=structures)


def _body_pixels(grid: ImageGrid, anatomy: PhantomAnatomy) -> bytes:
    """uint16 bytes (HU + 1024) of one axial slice: air, water body, bone rod (the same on every slice)."""
    xx, yy = grid.compute_slice_xy_mm()
    z = float(grid.z_mm()[grid.nz // 2])
    hu = np.full(xx.shape, HU_AIR)
    hu[anatomy.body.contains(xx, yy, z)] = HU_WATER
    hu[anatomy.bone.contains(xx, yy, z)] = HU_BONE
    return (hu - CT_RESCALE_INTERCEPT).astype("<u2").tobytes()


def build_clinical_case(
    ct_grid: ImageGrid = CLINICAL_CT_GRID,
    dose_grid: ImageGrid = CLINICAL_DOSE_GRID,
    dose_model: RadialDoseModel = CLINICAL_DOSE_MODEL,
    patient_id: str = "ONCO-CLINICAL-001",
) -> ClinicalCase:
    """The clinical-size case (deterministic; UIDs derive from ``patient_id``)."""
    patient = PatientSpec(patient_id, "Phantom^Clinical")
    anatomy = build_clinical_anatomy(ct_grid)
    study = make_study_spec(patient, "planning", study_id="PLAN1", description="Clinical-size DVH case")
    for_uid = uid_for(patient_id, "for", "planning")

    def series(key: str, number: int, description: str, modality: str):
        return make_series_spec(study, key, series_number=number, description=description, modality=modality,
                                frame_of_reference_uid=for_uid)

    ct_series = series("ct", 1, "Planning CT", "CT")
    pixels = _body_pixels(ct_grid, anatomy)
    ct = [build_ct_slice(patient, study, ct_series, ct_grid, k, pixels) for k in range(ct_grid.nz)]
    rtstruct = build_rtstruct(patient, study, series("rtstruct", 2, "Structures", "RTSTRUCT"), anatomy, ct)
    plan = build_rt_ion_plan(patient, study, series("rtplan", 3, "Proton plan", "RTPLAN"), anatomy, rtstruct,
                             prescription_gy=60.0, fractions=30)
    dose = build_rt_dose(patient, study, series("rtdose", 4, "Plan dose", "RTDOSE"), dose_grid, dose_model, plan,
                         rtstruct)
    truth = PhantomTruth(anatomy=anatomy, dose_model=dose_model, ct_grid=ct_grid, dose_grid=dose_grid,
                         pet=build_default_pet_phantom(anatomy.body), weight_kg=75.0, prescription_gy=60.0,
                         fractions=30)
    return ClinicalCase(tuple(ct), rtstruct, dose, truth)
