"""Deterministic synthetic DICOM phantoms with closed-form truth (for the demo, tests, benchmarks).

Entry points: :func:`build_demo_patient`, :func:`build_demo_patients`, :func:`write_datasets`
and, for load tests, :func:`build_benchmark_ct`. Coordinates are LPS, mm; doses Gy;
volumes cc; activity concentrations Bq/mL.
"""

from oncopacs.phantom.activity import PetPhantom
from oncopacs.phantom.anatomy import PhantomAnatomy, Structure
from oncopacs.phantom.benchmark import build_benchmark_ct, build_ct_instances
from oncopacs.phantom.dose_model import RadialDoseModel
from oncopacs.phantom.geometry import ImageGrid, centred_grid
from oncopacs.phantom.patient import (
    DEFAULT_CT_GRID,
    DEFAULT_DOSE_GRID,
    DEFAULT_PET_GRID,
    DemoPatient,
    build_demo_patient,
    build_demo_patients,
)
from oncopacs.phantom.shapes import Cylinder, Sphere
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.phantom.truth import PhantomTruth
from oncopacs.phantom.writer import write_datasets

__all__ = [
    "DEFAULT_CT_GRID",
    "DEFAULT_DOSE_GRID",
    "DEFAULT_PET_GRID",
    "Cylinder",
    "DemoPatient",
    "ImageGrid",
    "PatientSpec",
    "PetPhantom",
    "PhantomAnatomy",
    "PhantomTruth",
    "RadialDoseModel",
    "SeriesSpec",
    "Sphere",
    "Structure",
    "StudySpec",
    "build_benchmark_ct",
    "build_ct_instances",
    "build_demo_patient",
    "build_demo_patients",
    "centred_grid",
    "write_datasets",
]
