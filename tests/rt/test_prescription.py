"""rt.plan prescriptions from real Eclipse, RayStation and pydicom plans (and modified copies), with their source."""

from __future__ import annotations

import copy
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rt.plan import (
    RX_BEAM_DOSE,
    RX_DOSE_REFERENCE,
    RX_FRACTION_GROUP,
    RX_GIVEN,
    RX_NONE,
    Prescription,
    choose_prescription,
    read_plan_summary,
    read_prescription,
)
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def eclipse_plan() -> Dataset:
    """Eclipse RT Plan: DoseReference 1 'PROS' (TARGET, 46 Gy), 23 fractions of 4 x 0.5 Gy beams and a set-up field."""
    return pydicom.dcmread(next(shared_data("eclipse-prostate-phantom").glob("RP*.dcm")))


def raystation_plan(folder: str) -> Dataset:
    return pydicom.dcmread(next(shared_data("dcpt-proton-phantom", folder).glob("RP*.dcm")))


def test_eclipse_target_dose_reference(eclipse_plan):
    rx = read_plan_summary(eclipse_plan).prescription
    assert (rx.dose_gy, rx.source, rx.fractions) == (46.0, RX_DOSE_REFERENCE, 23)
    assert rx.describe() == "46 Gy from plan DoseReference 1 'PROS' TargetPrescriptionDose"
    assert read_plan_summary(eclipse_plan).to_dict()["prescription"]["text"] == rx.describe()


def test_raystation_plan_without_a_target_falls_back_to_beam_doses_with_a_note():
    rx = read_prescription(raystation_plan("plan3_ramped_2022_reference"))
    assert rx.source == RX_BEAM_DOSE and rx.dose_gy == pytest.approx(1.82784) and rx.fractions == 1
    assert "not a stated prescription" in rx.note and "BeamDose sum x 1" in rx.description
    assert read_plan_summary(raystation_plan("plan3_ramped_2022_reference")).prescription_gy is None  # as before


def test_raystation_rbe_plan_and_two_target_references():
    rx = read_prescription(raystation_plan("plan06_sobp_4d"))
    assert (rx.dose_gy, rx.source) == (2.2, RX_DOSE_REFERENCE) and "'Box 2.2 Gy RBE'" in rx.description
    mono = pydicom.dcmread(next(shared_data("dcpt-proton-phantom", "plan02_mono").glob("RN*.dcm")))
    rx = read_prescription(mono)  # Eclipse: SOBP 2.2 Gy and a point 2.217 Gy, both TARGET
    assert rx.dose_gy == pytest.approx(2.2) and "2.21714 Gy) not used" in rx.note


def test_pydicom_plan_target_point():
    rx = read_prescription(pydicom.dcmread(get_testdata_file("rtplan.dcm")))
    assert rx.source == RX_DOSE_REFERENCE and rx.dose_gy == pytest.approx(30.826203) and rx.fractions == 30


def test_without_a_dose_reference_the_beam_doses_give_the_eclipse_prescription(eclipse_plan):
    plan = copy.deepcopy(eclipse_plan)
    del plan.DoseReferenceSequence
    rx = read_prescription(plan)
    assert rx.source == RX_BEAM_DOSE and rx.dose_gy == pytest.approx(4 * 0.5 * 23)  # the set-up field is ignored


def _with_fraction_group_dose(plan: Dataset, dose_gy: float) -> Dataset:
    plan = copy.deepcopy(plan)
    del plan.DoseReferenceSequence[0].TargetPrescriptionDose
    item = Dataset()
    item.ReferencedDoseReferenceNumber = 1
    item.TargetPrescriptionDose = f"{dose_gy:g}"
    plan.FractionGroupSequence[0].ReferencedDoseReferenceSequence = Sequence([item])
    return plan


def test_fraction_group_dose_per_fraction_times_fractions(eclipse_plan):
    rx = read_prescription(_with_fraction_group_dose(eclipse_plan, 2.0))
    assert rx.source == RX_FRACTION_GROUP and rx.dose_gy == pytest.approx(46.0) and rx.note == ""
    assert rx.description == "plan fraction group 1 ReferencedDoseReference 1 TargetPrescriptionDose x 23"


def test_fraction_group_dose_that_is_the_groups_total_is_not_multiplied(eclipse_plan):
    rx = read_prescription(_with_fraction_group_dose(eclipse_plan, 46.0))  # = 4 x 0.5 Gy x 23: a total
    assert rx.source == RX_FRACTION_GROUP and rx.dose_gy == pytest.approx(46.0) and "read as its total" in rx.note


def test_no_prescription_at_all(eclipse_plan):
    plan = copy.deepcopy(eclipse_plan)
    del plan.DoseReferenceSequence
    for item in plan.FractionGroupSequence[0].ReferencedBeamSequence:
        if "BeamDose" in item:
            del item.BeamDose
    rx = read_prescription(plan)
    assert rx.dose_gy is None and rx.source == RX_NONE and "no prescription in the plan" in rx.description


def test_a_given_prescription_overrides_and_says_so(eclipse_plan):
    plan_rx = read_prescription(eclipse_plan)
    given = choose_prescription(plan_rx, 50.0, "--prescription")
    assert (given.dose_gy, given.source, given.description) == (50.0, RX_GIVEN, "--prescription")
    assert given.note == "overrides the plan's 46 Gy (plan DoseReference 1 'PROS' TargetPrescriptionDose)"
    assert choose_prescription(plan_rx, 46.0).note == ""
    assert choose_prescription(plan_rx, None) is plan_rx
    assert choose_prescription(None, None) == Prescription(None, RX_NONE, "no prescription (no RT Plan)")
    with pytest.raises(ValueError, match="positive"):
        choose_prescription(None, -2.0)


@pytest.mark.parametrize("value", ["-5", "0", "NaN"])
def test_a_target_dose_that_is_no_dose_is_ignored_and_named(eclipse_plan, value):
    plan = copy.deepcopy(eclipse_plan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that NaN is no valid DS, as it would on reading such a file
        plan.DoseReferenceSequence[0].TargetPrescriptionDose = value
        rx = read_prescription(plan)
    assert rx.source == RX_BEAM_DOSE and rx.dose_gy == pytest.approx(46.0)
    assert "DoseReference 1 TargetPrescriptionDose" in rx.note and "ignored: not a dose" in rx.note
