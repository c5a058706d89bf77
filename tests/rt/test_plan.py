"""rt.plan: RT Plan / RT Ion Plan summaries on the phantom, synthetic edge cases and real files."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, RTIonPlanStorage, RTPlanStorage

from oncopacs.phantom import build_demo_patient
from oncopacs.phantom.plan import TREATMENT_MACHINE
from rt.errors import DicomInputError
from rt.plan import PlanSummary, read_plan_summary
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def phantom():
    return build_demo_patient()


@pytest.fixture(scope="module")
def phantom_plan(phantom) -> PlanSummary:
    return read_plan_summary(phantom.rt_ion_plan)


def _energies_in_order(control_points) -> list[float]:
    """Independent reference: NominalBeamEnergy runs (omitted = unchanged)."""
    out: list[float] = []
    current = None
    for cp in control_points:
        energy = float(cp.NominalBeamEnergy) if cp.get("NominalBeamEnergy") not in (None, "") else current
        if energy is not None and energy != current:
            out.append(energy)
        current = energy
    return out


# --------------------------------------------------------------------------- phantom
def test_phantom_plan_level(phantom, phantom_plan):
    plan, ds = phantom_plan, phantom.rt_ion_plan
    assert plan.sop_class == "RTIONPLAN" and plan.radiation_type == "PROTON"
    assert plan.label == "PROTON_PTV" and plan.name == "Phantom PBS" and plan.approval_status == "APPROVED"
    assert plan.intent is None  # the phantom writes no PlanIntent
    assert plan.frame_of_reference_uid == ds.FrameOfReferenceUID
    assert plan.referenced_structure_set_uid == phantom.rtstruct.SOPInstanceUID
    assert plan.fractions == 30
    assert plan.prescription_gy == pytest.approx(60.0) and plan.dose_per_fraction_gy == pytest.approx(2.0)
    (ref,) = plan.dose_references
    assert (ref.reference_type, ref.structure_type, ref.description) == ("TARGET", "VOLUME", "PTV")
    assert ref.target_prescription_dose_gy == pytest.approx(60.0) and ref.referenced_roi_number == 2
    json.dumps(plan.to_dict())


def test_phantom_plan_beams(phantom, phantom_plan):
    beams = phantom_plan.beams
    assert [b.number for b in beams] == [1, 2]
    assert [b.name for b in beams] == ["L_LAT_G90", "R_LAT_G270"]
    assert [b.gantry_angle_deg for b in beams] == [90.0, 270.0]
    for beam, item in zip(beams, phantom.rt_ion_plan.IonBeamSequence, strict=True):
        cps = item.IonControlPointSequence
        assert beam.radiation_type == "PROTON" and beam.scan_mode == "MODULATED" and beam.beam_type == "STATIC"
        assert beam.treatment_machine == TREATMENT_MACHINE and beam.treatment_delivery_type == "TREATMENT"
        assert beam.couch_angle_deg == 0.0 and beam.collimator_angle_deg == 0.0
        assert beam.isocentre_mm == pytest.approx(tuple(float(v) for v in cps[0].IsocenterPosition))
        assert beam.control_point_count == 14 and beam.energy_layer_count == 7
        assert list(beam.energy_layers_mev) == [float(cp.NominalBeamEnergy) for cp in cps[::2]]
        assert list(beam.energy_layers_mev) == sorted(beam.energy_layers_mev, reverse=True)  # distal first
        assert 94.0 <= beam.min_energy_mev < beam.max_energy_mev <= 135.0
        assert beam.spot_count == sum(int(cp.NumberOfScanSpotPositions) for cp in cps[::2]) > 0
        assert beam.meterset == pytest.approx(float(item.FinalCumulativeMetersetWeight))
        assert beam.meterset_unit == "MU"  # the phantom's PrimaryDosimeterUnit
        assert beam.beam_dose_gy == pytest.approx(1.0)
        assert beam.range_shifters == () and beam.snout_id is None and beam.lateral_spreading_devices == ()
        assert beam.nominal_energy_mv is None and not beam.has_mlc and beam.technique is None


def test_not_a_plan_raises_naming_the_sop_class(phantom):
    with pytest.raises(DicomInputError, match="RT Structure Set Storage") as caught:
        read_plan_summary(phantom.rtstruct)
    assert caught.value.keyword == "SOPClassUID"
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    with pytest.raises(DicomInputError, match="CT Image Storage"):
        read_plan_summary(ds)
    with pytest.raises(DicomInputError, match="SOPClassUID"):
        read_plan_summary(Dataset())


# --------------------------------------------------------------------------- synthetic edge cases
@pytest.mark.parametrize("sop_class, kind", [(RTPlanStorage, "RTPLAN"), (RTIonPlanStorage, "RTIONPLAN")])
def test_bare_plan_gives_none_and_empty(sop_class, kind):
    ds = Dataset()
    ds.SOPClassUID = sop_class
    plan = read_plan_summary(ds)
    assert plan.sop_class == kind and plan.beams == () and plan.dose_references == ()
    assert plan.fractions is None and plan.prescription_gy is None and plan.dose_per_fraction_gy is None
    assert plan.radiation_type is None and plan.referenced_structure_set_uid is None
    json.dumps(plan.to_dict())


def test_bare_beams_do_not_raise():
    ds = Dataset()
    ds.SOPClassUID = RTIonPlanStorage
    beam = Dataset()
    beam.BeamNumber = 3
    ds.IonBeamSequence = Sequence([beam])
    (summary,) = read_plan_summary(ds).beams
    assert summary.number == 3 and summary.control_point_count == 0 and summary.gantry_angle_deg is None
    assert summary.meterset is None and summary.meterset_unit == "NP" and summary.spot_count is None
    assert summary.energy_layers_mev == () and summary.min_energy_mev is None and summary.isocentre_mm is None


def _photon_arc_plan() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = RTPlanStorage
    beam = Dataset()
    beam.BeamNumber = 1
    beam.BeamType = "DYNAMIC"
    beam.RadiationType = "PHOTON"
    mlc = Dataset()
    mlc.RTBeamLimitingDeviceType = "MLCX"
    mlc.NumberOfLeafJawPairs = 2
    beam.BeamLimitingDeviceSequence = Sequence([mlc])
    cps = []
    for i, (gantry, leaves) in enumerate(((181.0, [-5.0, -5.0, 5.0, 5.0]), (179.0, [-3.0, -4.0, 6.0, 2.0]))):
        cp = Dataset()
        cp.ControlPointIndex = i
        cp.GantryAngle = gantry
        position = Dataset()
        position.RTBeamLimitingDeviceType = "MLCX"
        position.LeafJawPositions = leaves
        cp.BeamLimitingDevicePositionSequence = Sequence([position])
        if i == 0:
            cp.NominalBeamEnergy = 6
            cp.GantryRotationDirection = "CW"
        cps.append(cp)
    beam.ControlPointSequence = Sequence(cps)
    ds.BeamSequence = Sequence([beam])
    group = Dataset()
    group.NumberOfFractionsPlanned = 5
    ref = Dataset()
    ref.ReferencedBeamNumber = 1
    ref.BeamMeterset = 512.5
    ref.BeamDose = 7.0
    group.ReferencedBeamSequence = Sequence([ref])
    ds.FractionGroupSequence = Sequence([group])
    return ds


def test_photon_arc_hints():
    plan = read_plan_summary(_photon_arc_plan())
    (beam,) = plan.beams
    assert plan.radiation_type == "PHOTON" and plan.fractions == 5
    assert plan.prescription_gy is None and plan.dose_per_fraction_gy == pytest.approx(7.0)  # from BeamDose
    assert beam.nominal_energy_mv == 6.0 and beam.nominal_energy_mev is None
    assert beam.has_mlc and beam.mlc_leaf_pairs == 2 and beam.mlc_moves and beam.gantry_rotates
    assert beam.technique == "VMAT" and beam.meterset == 512.5 and beam.meterset_unit == "MU"


def test_ion_energy_carry_forward_and_scalar_weights():
    ds = Dataset()
    ds.SOPClassUID = RTIonPlanStorage
    beam = Dataset()
    beam.BeamNumber = 1
    beam.RadiationType = "PROTON"
    cps = []
    for energy, weights in ((150.0, [1.0, 0.0, 2.0]), (None, [0.0, 0.0, 0.0]), (140.0, 0.5), (None, 0.0),
                            (150.0, [1.0])):
        cp = Dataset()
        if energy is not None:
            cp.NominalBeamEnergy = energy
        cp.ScanSpotMetersetWeights = weights
        cps.append(cp)
    beam.IonControlPointSequence = Sequence(cps)
    ds.IonBeamSequence = Sequence([beam])
    (summary,) = read_plan_summary(ds).beams
    assert summary.energy_layers_mev == (150.0, 140.0, 150.0)  # a revisited energy is a new layer
    assert summary.spot_count == 4  # non-zero weights only


# --------------------------------------------------------------------------- real files
@pytest.fixture(scope="module")
def eclipse_photon_plan() -> PlanSummary:
    folder = shared_data("eclipse-prostate-phantom")
    return read_plan_summary(pydicom.dcmread(next(folder.glob("RP*.dcm"))))


def test_eclipse_photon_plan(eclipse_photon_plan):
    plan = eclipse_photon_plan
    assert plan.sop_class == "RTPLAN" and plan.radiation_type == "PHOTON" and plan.label == "PROS"
    assert plan.fractions == 23 and plan.prescription_gy == pytest.approx(46.0)
    assert plan.dose_per_fraction_gy == pytest.approx(2.0)
    assert plan.approval_status == "UNAPPROVED" and plan.intent is None and plan.frame_of_reference_uid is None
    assert [d.reference_type for d in plan.dose_references] == ["TARGET", "ORGAN_AT_RISK"]
    assert len(plan.beams) == 5
    assert [b.name for b in plan.beams] == ["AP PROS", "RT LAT PROS", "PA PROS", "LT LAT PROS", "CBCT"]
    assert [b.gantry_angle_deg for b in plan.beams] == [0.0, 270.0, 180.0, 90.0, 0.0]
    for beam in plan.beams:
        assert beam.beam_type == "STATIC" and beam.radiation_type == "PHOTON" and beam.nominal_energy_mv == 15.0
        assert beam.control_point_count == 2 and not beam.gantry_rotates and beam.technique == "STATIC"
        assert beam.isocentre_mm == pytest.approx((-1.31333e-4, 0.90895911, -3.333e-6))
    for beam in plan.beams[:4]:
        assert beam.has_mlc and beam.mlc_leaf_pairs == 60 and not beam.mlc_moves
        assert beam.beam_dose_gy == pytest.approx(0.5) and beam.meterset_unit == "MU"
    assert plan.beams[0].meterset == pytest.approx(52.7393266658738)
    assert plan.beams[4].meterset is None and not plan.beams[4].has_mlc  # the CBCT field: jaws only, no MU
    json.dumps(plan.to_dict())


def _dcpt_ion_plan_files() -> list[Path]:
    folder = shared_data("dcpt-proton-phantom")
    files = sorted({*folder.glob("*/RN*.dcm"), *folder.glob("*/RP*.dcm"), *folder.glob("*/ramped*.dcm")})
    return [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID == RTIonPlanStorage]


def test_every_dcpt_ion_plan_parses():
    files = _dcpt_ion_plan_files()
    assert len(files) == 12
    for path in files:
        ds = pydicom.dcmread(path)
        plan = read_plan_summary(ds)
        json.dumps(plan.to_dict())
        assert plan.sop_class == "RTIONPLAN" and plan.radiation_type == "PROTON", path.name
        assert plan.fractions == 1 and plan.beam_count >= 1, path.name
        for beam, item in zip(plan.beams, ds.IonBeamSequence, strict=True):
            cps = item.IonControlPointSequence
            assert beam.radiation_type == "PROTON" and beam.scan_mode == "MODULATED", path.name
            assert beam.control_point_count == len(cps) == int(item.NumberOfControlPoints)
            assert 1 <= beam.energy_layer_count <= 54
            assert list(beam.energy_layers_mev) == _energies_in_order(cps)
            assert beam.control_point_count == 2 * beam.energy_layer_count  # PBS: two control points per layer
            assert beam.min_energy_mev == min(beam.energy_layers_mev)
            assert beam.max_energy_mev == max(beam.energy_layers_mev)
            assert beam.spot_count == sum(int(cp.NumberOfScanSpotPositions) for cp in cps[::2]) > 0
            assert beam.meterset is not None and beam.meterset > 0 and beam.meterset_unit == "MU"
            assert beam.snout_id == "S1" and beam.snout_position_mm is not None


def _read_dcpt(folder: str) -> PlanSummary:
    path = next(p for p in _dcpt_ion_plan_files() if p.parent.name == folder)
    return read_plan_summary(pydicom.dcmread(path))


def test_dcpt_range_shifter_plan():
    plan = _read_dcpt("plan06_sobp_4d")
    (beam,) = plan.beams
    assert plan.label == "4_SOBP_2Gy" and plan.prescription_gy == pytest.approx(2.2)
    (shifter,) = beam.range_shifters
    assert (shifter.number, shifter.shifter_id, shifter.shifter_type, shifter.setting) == (0, "RS_3CM", "BINARY", "IN")
    assert shifter.water_equivalent_thickness_mm == pytest.approx(34.3, abs=1e-4)
    assert shifter.isocentre_to_range_shifter_distance_mm == pytest.approx(135.9, abs=1e-4)
    assert beam.snout_position_mm == pytest.approx(92.9, abs=1e-4)
    assert beam.energy_layer_count == 15 and beam.spot_count == 5775 and beam.meterset == pytest.approx(60606.05)
    assert [d.device_id for d in beam.lateral_spreading_devices] == ["MagnetX", "MagnetY"]


def test_dcpt_eclipse_mono_and_ramp_plans():
    mono = _read_dcpt("plan02_mono")
    (beam,) = mono.beams
    assert mono.intent == "CURATIVE" and beam.energy_layers_mev == (160.0,) and beam.spot_count == 323
    assert beam.isocentre_mm == (0.0, -80.0, 0.0) and beam.range_shifters == ()
    # two TARGET dose references (site 2.2 Gy, point 2.217 Gy): the first one is the prescription
    assert mono.prescription_gy == pytest.approx(2.2)
    ramp = _read_dcpt("plan03_ramp_full")
    assert ramp.prescription_gy is None  # only an ORGAN_AT_RISK dose point
    assert [b.gantry_angle_deg for b in ramp.beams] == [90.0, 270.0]
    assert ramp.dose_per_fraction_gy == pytest.approx(0.943323 + 0.9349596)  # sum of BeamDose
    assert all(b.energy_layer_count == 22 for b in ramp.beams)
