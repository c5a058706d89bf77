"""RT Dose variants on real files and modified copies: EFFECTIVE (RBE) labels, DoseUnits, DoseSummationType, frames."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from rt.analysis import assess_dose
from rt.dose import check_absolute_dose, read_dose, scale_fraction_dose
from rt.errors import DicomInputError, GeometryError, RTError
from rt.plan import read_plan_summary
from rt.summation import compute_dose_sum, compute_eqd2_map
from tests.conftest import shared_data

RAMP = "plan03_ramp_full"  # RayStation: EFFECTIVE PLAN dose and two EFFECTIVE BEAM doses of a 2-beam plan
REFERENCE = "plan3_ramped_2022_reference"  # RayStation: PHYSICAL PLAN dose of a 1-beam plan


def dicom(folder: str, pattern: str = "RD*.dcm") -> list[Path]:
    return sorted(shared_data("dcpt-proton-phantom", folder).glob(pattern))


def dose_of(path: Path) -> Dataset:
    return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def ramp_doses() -> dict[str, Dataset]:
    """{"PLAN": ..., "BEAM 1": ..., "BEAM 2": ...} of plan03_ramp_full."""
    out = {}
    for path in dicom(RAMP):
        ds = dose_of(path)
        groups = ds.ReferencedRTPlanSequence[0].get("ReferencedFractionGroupSequence", [])
        beams = [b.ReferencedBeamNumber for g in groups for b in g.ReferencedBeamSequence]
        out[ds.DoseSummationType + "".join(f" {b}" for b in beams)] = ds
    return out


@pytest.fixture(scope="module")
def pydicom_rtdose() -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its ReferencedSOPInstanceUID is not a valid UID
        ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
        ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = "1.2.123.456.78.9.123.4567.89012345678901"
    return ds


def test_effective_dose_is_labelled_gy_rbe(ramp_doses):
    plan = read_dose(ramp_doses["PLAN"])
    assert (plan.dose_type, plan.dose_summation_type, plan.dose_unit) == ("EFFECTIVE", "PLAN", "Gy(RBE)")
    assert plan.summation_note == "" and plan.plan_dose_problem == ""
    assert plan.to_dict()["dose_unit"] == "Gy(RBE)"
    physical = read_dose(dose_of(dicom(REFERENCE)[0]))
    assert (physical.dose_type, physical.dose_unit) == ("PHYSICAL", "Gy")


def test_a_beam_dose_is_not_the_plan_dose(ramp_doses):
    beam = read_dose(ramp_doses["BEAM 1"])
    assert beam.referenced_beam_numbers == (1,) and beam.referenced_plan_uid
    assert beam.summation_note == "BEAM dose: the dose of one or more beams (beam 1), not the plan dose"
    assert beam.plan_dose_problem == "a BEAM dose (beam 1) is not the plan dose: clinical goals are not judged on it"
    plan = read_plan_summary(pydicom.dcmread(dicom(RAMP, "ramped*.dcm")[0]))
    assert assess_dose(beam, plan).problem == beam.plan_dose_problem  # beam 2 of the plan is missing
    total = read_dose(ramp_doses["PLAN"])
    assert compute_dose_sum([beam, read_dose(ramp_doses["BEAM 2"])]).max_dose_gy == pytest.approx(
        total.max_dose_gy, rel=0.02)  # the two beams add up to RayStation's plan dose


def test_a_beam_dose_of_every_beam_of_its_own_plan_is_the_plan_dose():
    ds = dose_of(dicom(REFERENCE)[0])  # PLAN dose of a one-beam plan, rewritten as that beam's BEAM dose
    ds.DoseSummationType = "BEAM"
    group = Dataset()
    group.ReferencedFractionGroupNumber = 1
    beam = Dataset()
    beam.ReferencedBeamNumber = 1
    group.ReferencedBeamSequence = [beam]
    ds.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence = [group]
    dose = read_dose(ds)
    plan = read_plan_summary(pydicom.dcmread(dicom(REFERENCE, "RP*.dcm")[0]))
    role = assess_dose(dose, plan)
    assert role.problem == "" and role.note == "BEAM dose of every treatment beam of its plan (1): the plan dose"
    other_plan = read_plan_summary(pydicom.dcmread(dicom("plan06_sobp_4d", "RP*.dcm")[0]))
    assert assess_dose(dose, other_plan).problem  # not its plan: still a beam dose


def test_a_fraction_dose_is_scaled_only_when_asked():
    ds = dose_of(dicom(REFERENCE)[0])
    ds.DoseSummationType = "FRACTION"
    fraction = read_dose(ds)
    assert "give the number of fractions" in fraction.plan_dose_problem
    course = scale_fraction_dose(fraction, 23)
    assert course.max_dose_gy == pytest.approx(23 * fraction.max_dose_gy)
    assert course.plan_dose_problem == "" and course.summation_note == "FRACTION dose x 23 fractions, as asked"
    assert fraction.max_dose_gy == pytest.approx(read_dose(ds).max_dose_gy)  # the original is untouched
    with pytest.raises(GeometryError, match="only a FRACTION dose"):
        scale_fraction_dose(read_dose(dose_of(dicom(REFERENCE)[0])), 23)
    with pytest.raises(ValueError, match=">= 1"):
        scale_fraction_dose(fraction, 0)


@pytest.mark.parametrize("kind", ["FRACTION_SESSION", "BEAM_SESSION", "CONTROL_POINT", "BRACHY"])
def test_other_parts_of_a_plan_are_not_the_plan_dose(kind):
    ds = dose_of(dicom(REFERENCE)[0])
    ds.DoseSummationType = kind
    assert f"a {kind} dose" in read_dose(ds).plan_dose_problem


def test_multi_plan_and_unknown_summation_types():
    ds = dose_of(dicom(REFERENCE)[0])
    ds.DoseSummationType = "MULTI_PLAN"
    assert read_dose(ds).plan_dose_problem == "" and "several plans" in read_dose(ds).summation_note
    ds.DoseSummationType = "WHOLE_COURSE"
    assert "'WHOLE_COURSE' is not a DICOM value" in read_dose(ds).plan_dose_problem


def test_pydicom_relative_beam_dose_is_refused_for_gy(pydicom_rtdose):
    dose = read_dose(pydicom_rtdose)  # pydicom's own test RT Dose: RELATIVE, BEAM
    assert (dose.dose_units, dose.dose_unit, dose.dose_summation_type) == ("RELATIVE", "RELATIVE", "BEAM")
    with pytest.raises(DicomInputError, match=r"DoseUnits is RELATIVE .*need GY"):
        check_absolute_dose(dose)
    as_gy = copy.deepcopy(pydicom_rtdose)
    as_gy.DoseUnits = "GY"
    check_absolute_dose(read_dose(as_gy))
    assert read_dose(as_gy).plan_dose_problem.startswith("a BEAM dose (beam 1)")


@pytest.mark.parametrize(("units", "message"), [("CGY", "'CGY', not a DICOM value"), (None, "DoseUnits missing")])
def test_dose_units_other_than_gy_or_relative_are_refused(units, message):
    ds = dose_of(dicom(REFERENCE)[0])
    if units is None:
        del ds.DoseUnits
    else:
        ds.DoseUnits = units
    with pytest.raises(DicomInputError, match=message):
        check_absolute_dose(read_dose(ds))


def test_dose_grid_scaling_is_applied_as_stored_no_cgy_guess():
    ds = dose_of(dicom(REFERENCE)[0])
    gy = read_dose(ds).max_dose_gy
    ds.DoseGridScaling = f"{float(ds.DoseGridScaling) * 100:.8g}"  # a TPS that meant cGy would still say GY
    assert read_dose(ds).max_dose_gy == pytest.approx(100 * gy, rel=1e-6)


def test_non_uniform_grid_frame_offsets_are_refused_naming_the_element():
    ds = dose_of(dicom(REFERENCE)[0])
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[60:] = [v + 1.0 for v in offsets[60:]]  # one 3 mm gap among 2 mm steps
    ds.GridFrameOffsetVector = [f"{v:g}" for v in offsets]
    with pytest.raises(GeometryError, match=r"GridFrameOffsetVector is not uniformly spaced \(frame steps 2, 3 mm\)"):
        read_dose(ds)


def test_descending_uniform_frame_offsets_still_read():
    ds = dose_of(dicom(REFERENCE)[0])
    reference = read_dose(ds)
    flipped = copy.deepcopy(ds)
    n = int(ds.NumberOfFrames)
    step = float(ds.GridFrameOffsetVector[1])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    flipped.ImagePositionPatient = [x, y, z + step * (n - 1)]
    flipped.GridFrameOffsetVector = [f"{-k * step:g}" for k in range(n)]
    flipped.PixelData = np.ascontiguousarray(ds.pixel_array[::-1]).tobytes()
    again = read_dose(flipped)
    assert again.grid == reference.grid and np.array_equal(again.dose_gy, reference.dose_gy)


def test_physical_and_effective_doses_are_not_added(ramp_doses):
    effective = read_dose(ramp_doses["PLAN"])
    physical = read_dose(ramp_doses["BEAM 1"])
    from dataclasses import replace

    with pytest.raises(RTError, match=r"different DoseType: \['Gy', 'Gy\(RBE\)'\]"):
        compute_dose_sum([effective, replace(physical, dose_type="PHYSICAL")])


def test_eqd2_is_labelled_as_such(ramp_doses):
    physical = read_dose(dose_of(dicom(REFERENCE)[0]))
    assert compute_eqd2_map(physical, 1, {}, 10.0).dose_unit == "Gy(EQD2)"
