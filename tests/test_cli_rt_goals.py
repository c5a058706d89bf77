"""``oncopacs rt goals`` / ``rt dvh`` on files planning systems wrote: matched names, the plan's prescription,
Gy(RBE), beam and fraction doses, refused grids."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from oncopacs.cli import main
from oncopacs.phantom import build_demo_patient, write_datasets
from rt.dose import build_rt_dose
from tests.conftest import shared_data
from tests.rt.helpers import read_nrrd_dose

RAMP = "plan03_ramp_full"  # RayStation: EFFECTIVE PLAN dose, two EFFECTIVE BEAM doses, 2-beam plan without a target
REFERENCE = "plan3_ramped_2022_reference"  # RayStation: PHYSICAL PLAN dose of a 1-beam plan


def run(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def goals_json(*args: str | Path) -> dict:
    result = run("rt", "goals", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def eclipse(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eclipse's RTSTRUCT and RTPLAN, and its dose (exported as NRRD) written back as an RT Dose of that plan."""
    folder = shared_data("eclipse-prostate-phantom")
    structures = next(folder.glob("RS*.dcm"))
    plan_path = next(folder.glob("RP*.dcm"))
    plan = pydicom.dcmread(plan_path)
    dose = build_rt_dose(read_nrrd_dose(folder / "aux" / "EclipseProstate_Dose.nrrd"), plan, summation_type="PLAN")
    dose.FrameOfReferenceUID = pydicom.dcmread(structures).ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = plan.SOPClassUID, plan.SOPInstanceUID
    dose.ReferencedRTPlanSequence = Sequence([reference])
    out = tmp_path_factory.mktemp("eclipse") / "RD.dcm"
    dose.save_as(out, enforce_file_format=True)
    return {"rtstruct": structures, "rtplan": plan_path, "rtdose": out}


def raystation(folder: str, pattern: str) -> Path:
    return next(shared_data("dcpt-proton-phantom", folder).glob(pattern))


def ramp_dose(summation: str, beam: int | None = None) -> Path:
    for path in sorted(shared_data("dcpt-proton-phantom", RAMP).glob("RD*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        groups = ds.ReferencedRTPlanSequence[0].get("ReferencedFractionGroupSequence") or []
        beams = [int(b.ReferencedBeamNumber) for g in groups for b in g.ReferencedBeamSequence]
        if ds.DoseSummationType == summation and (beam is None or beams == [beam]):
            return path
    raise AssertionError(f"no {summation} dose {beam} in {RAMP}")


@pytest.fixture
def cube_template(tmp_path: Path) -> Path:
    """Goals on RayStation's water-phantom ROIs, the cube spelt another way."""
    path = tmp_path / "cube.json"
    path.write_text(json.dumps({"name": "cube", "goals": [
        {"roi": "Cube_101010", "metric": "Mean[Gy]", "comparator": "<=", "value": 3},
        {"roi": "Cube101010", "metric": "D95%[%]", "comparator": ">=", "value": 95},
    ]}))
    return path


def test_eclipse_femoral_heads_are_matched_and_the_plan_gives_46_gy(eclipse):
    document = goals_json("--rtstruct", eclipse["rtstruct"], "--rtdose", eclipse["rtdose"], "--template", "prostate",
                          "--rtplan", eclipse["rtplan"])
    assert document["prescription_gy"] == 46.0 and document["prescription"]["source"] == "dose_reference"
    assert document["prescription"]["text"] == "46 Gy from plan DoseReference 1 'PROS' TargetPrescriptionDose"
    goals = {g["template_roi"]: g for g in document["goals"]}
    left, right = goals["Femur_Head_L"], goals["Femur_Head_R"]
    assert (left["roi_name"], left["match_rule"], left["matched_spelling"]) == ("Femoral Head Lt", "TG-263",
                                                                                "Femur_Head_L")
    assert (right["roi_name"], right["match_rule"]) == ("Femoral Head RT", "TG-263")
    assert left["status"] == right["status"] == "pass" and left["measured_value"] is not None
    ptv = next(g for g in document["goals"] if g["goal"]["metric"] == "D95%[%]")
    assert ptv["status"] == "pass" and 95.0 < ptv["measured_value"] < 101.0  # relative to the plan's 46 Gy
    assert goals["PenileBulb"]["status"] == "not_evaluated" and "not found" in goals["PenileBulb"]["reason"]
    assert document["dose"]["dose_unit"] == "Gy" and document["dose"]["dose_problem"] == ""

    text = run("rt", "goals", "--rtstruct", eclipse["rtstruct"], "--rtdose", eclipse["rtdose"], "--template",
               "prostate", "--rtplan", eclipse["rtplan"])
    assert text.exit_code == 0
    assert "prescription: 46 Gy from plan DoseReference 1 'PROS' TargetPrescriptionDose" in text.stdout
    assert "Femoral Head Lt" in text.stdout and "Femur_Head_L by TG-263 'Femur_Head_L'" in text.stdout


def test_prescription_option_overrides_the_plan_and_says_so(eclipse):
    document = goals_json("--rtstruct", eclipse["rtstruct"], "--rtdose", eclipse["rtdose"], "--template", "prostate",
                          "--rtplan", eclipse["rtplan"], "--prescription", "50")
    rx = document["prescription"]
    assert (rx["dose_gy"], rx["source"], rx["description"]) == (50.0, "given", "--prescription")
    assert rx["note"] == "overrides the plan's 46 Gy (plan DoseReference 1 'PROS' TargetPrescriptionDose)"
    without_plan = goals_json("--rtstruct", eclipse["rtstruct"], "--rtdose", eclipse["rtdose"], "--template",
                              "prostate")
    assert without_plan["prescription_gy"] is None
    ptv = next(g for g in without_plan["goals"] if g["goal"]["metric"] == "D95%[%]")
    assert ptv["status"] == "not_evaluated" and "prescription" in ptv["reason"]
    for bad in ("-5", "nan", "inf"):
        refused = run("rt", "goals", "--rtstruct", eclipse["rtstruct"], "--rtdose", eclipse["rtdose"], "--template",
                      "prostate", "--prescription", bad)
        assert refused.exit_code == 2 and "--prescription" in refused.stderr and "Traceback" not in refused.stderr


def test_a_plan_the_dose_does_not_reference_gives_no_prescription(eclipse):
    other = raystation("plan06_sobp_4d", "RP*.dcm")
    document = goals_json("--rtstruct", eclipse["rtstruct"], "--rtdose", eclipse["rtdose"], "--template", "prostate",
                          "--rtplan", other)
    assert document["prescription_gy"] is None
    assert document["prescription"]["description"].startswith("no prescription: the RT Dose references RT Plan")


def test_a_roi_outside_the_dose_grid_is_not_evaluable_not_missing(tmp_path: Path):
    patient = build_demo_patient()  # its SpinalCord lies entirely outside the dose grid
    rtstruct, rtdose, rtplan = write_datasets([patient.rtstruct, patient.rt_dose, patient.rt_ion_plan], tmp_path)
    document = goals_json("--rtstruct", rtstruct, "--rtdose", rtdose, "--template", "lung", "--rtplan", rtplan)
    cord = [g for g in document["goals"] if g["template_roi"] == "SpinalCord"]
    assert cord and all(g["status"] == "not_evaluated" and g["roi_name"] == "SpinalCord" for g in cord)
    assert cord[0]["reason"].startswith("ROI 'SpinalCord' lies entirely outside the dose grid (")
    assert cord[0]["reason"].endswith("cc): not evaluable") and "not found" not in cord[0]["reason"]
    assert document["prescription"]["text"].startswith("60 Gy from plan DoseReference")


def test_effective_dose_is_shown_in_gy_rbe(cube_template):
    args = ("--rtstruct", raystation(RAMP, "RS*.dcm"), "--rtdose", ramp_dose("PLAN"), "--template", cube_template,
            "--rtplan", raystation(RAMP, "ramped*.dcm"))
    document = goals_json(*args)
    assert document["dose_unit"] == document["dose"]["dose_unit"] == "Gy(RBE)"
    mean, coverage = document["goals"]
    assert mean["unit"] == "Gy(RBE)" and mean["status"] == "pass" and 1.9 < mean["measured_value"] < 2.2
    assert (mean["roi_name"], mean["match_rule"]) == ("Cube101010", "spelling") and coverage["unit"] == "%"
    rx = document["prescription"]
    assert rx["source"] == "beam_dose" and rx["dose_gy"] == pytest.approx(0.943323 + 0.9349596)
    assert "not a stated prescription" in rx["note"]
    text = run("rt", "goals", *args)
    assert "dose: Gy(RBE) (EFFECTIVE, PLAN)" in text.stdout and " Gy(RBE)  Cube_101010 by spelling" in text.stdout
    dvh = json.loads(run("rt", "dvh", *args[:4], "--json").stdout)
    assert dvh["dose_unit"] == "Gy(RBE)" and dvh["dose"]["dose_type"] == "EFFECTIVE"


def test_a_beam_dose_is_said_to_be_no_plan_dose(cube_template):
    document = goals_json("--rtstruct", raystation(RAMP, "RS*.dcm"), "--rtdose", ramp_dose("BEAM", 2), "--template",
                          cube_template, "--rtplan", raystation(RAMP, "ramped*.dcm"))
    assert document["dose"]["dose_problem"] == ("a BEAM dose (beam 2) is not the plan dose: clinical goals are not "
                                                "judged on it")
    assert all(g["status"] == "not_evaluated" and g["reason"] == document["dose"]["dose_problem"]
               and g["roi_name"] == "Cube101010" for g in document["goals"])
    text = run("rt", "goals", "--rtstruct", raystation(RAMP, "RS*.dcm"), "--rtdose", ramp_dose("BEAM", 2),
               "--template", cube_template)
    assert "note: a BEAM dose (beam 2) is not the plan dose" in text.stdout


def _modified(path: Path, out: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_fraction_dose_counts_only_when_scaled(tmp_path: Path, cube_template):
    fraction = _modified(raystation(REFERENCE, "RD*.dcm"), tmp_path / "fraction.dcm", DoseSummationType="FRACTION")
    args = ("--rtstruct", raystation(REFERENCE, "RS*.dcm"), "--rtdose", fraction, "--template", cube_template)
    once = goals_json(*args)
    assert all(g["status"] == "not_evaluated" for g in once["goals"])
    assert "give the number of fractions" in once["dose"]["dose_problem"]
    scaled = goals_json(*args, "--fractions", "2")
    mean = scaled["goals"][0]
    assert scaled["dose"]["fractions_applied"] == 2 and scaled["dose"]["dose_problem"] == ""
    assert mean["status"] in ("pass", "fail") and mean["measured_value"] is not None
    plan_dose = goals_json("--rtstruct", raystation(REFERENCE, "RS*.dcm"), "--rtdose",
                           raystation(REFERENCE, "RD*.dcm"), "--template", cube_template)
    assert mean["measured_value"] == pytest.approx(2 * plan_dose["goals"][0]["measured_value"], rel=1e-6)
    refused = run("rt", "goals", "--rtstruct", raystation(REFERENCE, "RS*.dcm"), "--rtdose",
                  raystation(REFERENCE, "RD*.dcm"), "--template", cube_template, "--fractions", "2")
    assert refused.exit_code == 2 and "only a FRACTION dose is scaled" in refused.stderr


def test_refused_grids_are_one_line_errors_naming_the_element(tmp_path: Path, cube_template):
    source = raystation(REFERENCE, "RD*.dcm")
    offsets = [float(v) for v in pydicom.dcmread(source, stop_before_pixels=True).GridFrameOffsetVector]
    uneven = _modified(source, tmp_path / "uneven.dcm",
                       GridFrameOffsetVector=[f"{v + (1.0 if i > 50 else 0.0):g}" for i, v in enumerate(offsets)])
    relative = _modified(source, tmp_path / "relative.dcm", DoseUnits="RELATIVE")
    centigray = _modified(source, tmp_path / "cgy.dcm", DoseUnits="CGY")
    for path, message in ((uneven, "GridFrameOffsetVector is not uniformly spaced"),
                          (relative, "DoseUnits is RELATIVE"), (centigray, "DoseUnits is 'CGY', not a DICOM value")):
        for command in ("goals", "dvh"):
            extra = ("--template", cube_template) if command == "goals" else ()
            result = run("rt", command, "--rtstruct", raystation(REFERENCE, "RS*.dcm"), "--rtdose", path, *extra)
            assert result.exit_code == 2 and message in result.stderr, (command, path.name, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_two_equally_good_names_are_ambiguous_not_missing(eclipse, tmp_path: Path):
    """Eclipse's Rectum and optRectum renamed Rectum_1 and Rectum_2: no guess between them."""
    structures = pydicom.dcmread(eclipse["rtstruct"])
    for roi in structures.StructureSetROISequence:
        roi.ROIName = {"Rectum": "Rectum_1", "optRectum": "Rectum_2"}.get(roi.ROIName, roi.ROIName)
    renamed = tmp_path / "RS-renamed.dcm"
    structures.save_as(renamed, enforce_file_format=True)
    document = goals_json("--rtstruct", renamed, "--rtdose", eclipse["rtdose"], "--template", "prostate",
                          "--rtplan", eclipse["rtplan"])
    rectum = [g for g in document["goals"] if g["template_roi"] == "Rectum"]
    assert rectum and all(g["status"] == "not_evaluated" and g["roi_name"] is None for g in rectum)
    assert rectum[0]["reason"] == "ROI 'Rectum' is ambiguous: ['Rectum_1', 'Rectum_2'] match by trailing number"
    bladder = next(g for g in document["goals"] if g["template_roi"] == "Bladder")
    assert bladder["status"] == "pass"  # its own helper optBladder is not a candidate


def test_the_template_option_names_every_shipped_template():
    """The help lists the shipped templates by name (it once pointed to a --list option that did not exist)."""
    from rt.goals import list_templates

    help_text = " ".join(run("rt", "goals", "--help").output.split())
    assert "--list" not in help_text
    assert f"({', '.join(list_templates())})" in help_text


@pytest.mark.parametrize("plan_folder", ["plan06_sobp_4d", "plan01_sobp"])
def test_plan_text_shows_the_beam_line_devices_the_json_holds(plan_folder):
    """Snout, range shifters and spreading devices, and the energy range, in the text as in --json (rounded)."""
    folder = shared_data("dcpt-proton-phantom") / plan_folder
    plan_path = next(path for path in sorted(folder.glob("*.dcm"))
                     if pydicom.dcmread(path, stop_before_pixels=True).Modality == "RTPLAN")
    data = json.loads(run("rt", "plan", plan_path, "--json").stdout)
    text = run("rt", "plan", plan_path).stdout
    for beam in data["beams"]:
        assert f"snout {beam['snout_id']} at {round(beam['snout_position_mm'], 1):g} mm" in text
        assert f"{round(beam['min_energy_mev'], 1):g}-{round(beam['max_energy_mev'], 1):g} MeV" in text
        assert f"meterset {beam['meterset']:.1f} MU" in text
        for shifter in beam["range_shifters"]:
            assert f"range shifter {shifter['id']} ({shifter['type']}" in text
        for device in beam["lateral_spreading_devices"]:
            assert f"spreading {device['id']} ({device['type']})" in text
        if not beam["range_shifters"]:
            assert "no range shifter" in text
