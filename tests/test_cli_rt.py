"""``oncopacs rt …`` as a physicist runs it: JSON on stdout, one-line errors, non-zero exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncopacs.cli import main
from oncopacs.phantom import build_demo_patient, write_datasets


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    patient = build_demo_patient()
    folder = tmp_path_factory.mktemp("rt")
    rtstruct, rtdose, rtplan = write_datasets([patient.rtstruct, patient.rt_dose, patient.rt_ion_plan], folder)
    return {"rtstruct": rtstruct, "rtdose": rtdose, "rtplan": rtplan}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_dvh_json_reports_metrics_and_uncovered_rois(plan_files):
    result = run("rt", "dvh", "--rtstruct", str(plan_files["rtstruct"]), "--rtdose", str(plan_files["rtdose"]),
                 "--prescription", "60", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    rois = {roi["name"]: roi for roi in document["rois"]}
    assert set(rois) == {"BODY", "PTV", "Bladder", "Rectum", "SpinalCord"}
    ptv = rois["PTV"]
    assert 110 < ptv["volume_cc"] < 116 and ptv["uncovered_volume_cc"] == 0
    assert 59.0 < ptv["metrics"]["D95%[Gy]"] < 61.0 and ptv["metrics"]["Max[Gy]"] == pytest.approx(63.6, abs=0.01)
    assert "V60Gy[%]" in ptv["metrics"]
    assert ptv["dvh"]["volume_cc"][0] == pytest.approx(ptv["volume_cc"], rel=1e-3)
    assert rois["SpinalCord"]["note"] == "entirely outside the dose grid" and rois["SpinalCord"]["metrics"] == {}
    assert rois["Bladder"]["uncovered_volume_cc"] > 5  # its cap lies beyond the dose grid: reported, not dropped


def test_dvh_selected_roi_and_metric(plan_files):
    result = run("rt", "dvh", "--rtstruct", str(plan_files["rtstruct"]), "--rtdose", str(plan_files["rtdose"]),
                 "--roi", "Rectum", "--metric", "V20Gy[cc]", "--metric", "Mean[Gy]", "--json")
    (rectum,) = json.loads(result.stdout)["rois"]
    assert list(rectum["metrics"]) == ["V20Gy[cc]", "Mean[Gy]"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--metric", "Bogus"), "malformed DVH metric 'Bogus'"), (("--roi", "Heart"), "Heart")],
)
def test_dvh_errors_are_one_line(plan_files, extra, message):
    result = run("rt", "dvh", "--rtstruct", str(plan_files["rtstruct"]), "--rtdose", str(plan_files["rtdose"]), *extra)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_file_is_named(plan_files, tmp_path: Path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    result = run("rt", "dvh", "--rtstruct", str(junk), "--rtdose", str(plan_files["rtdose"]))
    assert result.exit_code != 0 and str(junk) in result.stderr


def test_plan_summary_json_and_table(plan_files):
    result = run("rt", "plan", str(plan_files["rtplan"]), "--json")
    plan = json.loads(result.stdout)
    assert plan["sop_class"] == "RTIONPLAN" and plan["radiation_type"] == "PROTON"
    assert plan["fractions"] == 30 and plan["prescription_gy"] == pytest.approx(60.0)
    assert [beam["gantry_angle_deg"] for beam in plan["beams"]] == [90.0, 270.0]
    table = run("rt", "plan", str(plan_files["rtplan"]))
    assert table.exit_code == 0 and "30 fraction(s), 60 Gy" in table.stdout


def test_plan_of_a_structure_set_is_refused(plan_files):
    result = run("rt", "plan", str(plan_files["rtstruct"]))
    assert result.exit_code == 2 and "not an RT Plan" in result.stderr


def test_goals_with_a_shipped_template(plan_files):
    result = run("rt", "goals", "--rtstruct", str(plan_files["rtstruct"]), "--rtdose", str(plan_files["rtdose"]),
                 "--template", "prostate", "--prescription", "60", "--json")
    assert result.exit_code == 0, result.stderr
    goals = json.loads(result.stdout)["goals"]
    statuses = {(g["goal"]["roi"], g["goal"]["metric"]): g["status"] for g in goals}
    assert any(roi == "PTV" for roi, _ in statuses) and all(
        s in {"pass", "within_tolerance", "fail", "not_evaluated"} for s in statuses.values())
    femoral = [g for g in goals if "Femur" in g["goal"]["roi"]]
    assert femoral and all(g["status"] == "not_evaluated" and g["reason"] for g in femoral)
    unknown = run("rt", "goals", "--rtstruct", str(plan_files["rtstruct"]), "--rtdose", str(plan_files["rtdose"]),
                  "--template", "kidney")
    assert unknown.exit_code != 0 and "no goal template 'kidney'" in unknown.stderr


def test_sum_writes_an_rt_dose_that_reads_back_doubled(plan_files, tmp_path: Path):
    import numpy as np
    from pydicom import dcmread

    from rt.dose import read_dose

    out = tmp_path / "sum.dcm"
    result = run("rt", "sum", str(plan_files["rtdose"]), str(plan_files["rtdose"]), "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summed, single = read_dose(dcmread(out)), read_dose(dcmread(plan_files["rtdose"]))
    assert np.allclose(summed.dose_gy, 2 * single.dose_gy, atol=2 * float(single.dose_gy.max()) * 1e-6)
    assert json.loads(result.stdout)["max_dose_gy"] == pytest.approx(2 * 63.6, abs=0.01)


def test_gamma_of_a_dose_with_itself_passes_everywhere(plan_files):
    result = run("rt", "gamma", str(plan_files["rtdose"]), str(plan_files["rtdose"]), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["pass_rate_percent"] == 100.0 and document["number_evaluated"] > 0


def test_a_structure_below_2_cc_is_reported_with_its_d2cc_not_evaluable(plan_files, tmp_path: Path):
    """A 0.9 cc node among the organs: every ROI is reported and the command succeeds; D2cc says why it is absent."""
    import copy

    import numpy as np
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.rt.helpers import sphere_contours

    rtstruct = dcmread(plan_files["rtstruct"])
    ptv_number = next(r.ROINumber for r in rtstruct.StructureSetROISequence if r.ROIName == "PTV")
    ptv = next(c for c in rtstruct.ROIContourSequence if c.ReferencedROINumber == ptv_number)
    centre = np.concatenate([np.reshape(c.ContourData, (-1, 3)) for c in ptv.ContourSequence]).mean(axis=0)
    number = max(r.ROINumber for r in rtstruct.StructureSetROISequence) + 1
    roi = copy.deepcopy(rtstruct.StructureSetROISequence[0])
    roi.ROINumber, roi.ROIName = number, "Node"
    contours = Dataset()
    contours.ReferencedROINumber, contours.ROIDisplayColor = number, [255, 255, 0]
    contours.ContourSequence = Sequence(sphere_contours(tuple(float(v) for v in centre), 6.0, 2.0))
    observation = copy.deepcopy(rtstruct.RTROIObservationsSequence[0])
    observation.ObservationNumber = observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = "GTV"
    rtstruct.StructureSetROISequence.append(roi)
    rtstruct.ROIContourSequence.append(contours)
    rtstruct.RTROIObservationsSequence.append(observation)
    path = tmp_path / "rtstruct-with-node.dcm"
    rtstruct.save_as(path, enforce_file_format=True)

    result = run("rt", "dvh", "--rtstruct", str(path), "--rtdose", str(plan_files["rtdose"]), "--json")
    assert result.exit_code == 0, result.stderr
    rois = {roi["name"]: roi for roi in json.loads(result.stdout)["rois"]}
    assert {"BODY", "PTV", "Node"} <= set(rois)
    node = rois["Node"]
    assert 0.8 < node["volume_cc"] < 1.0 and node["metrics"]["D2cc[Gy]"] is None
    assert node["not_evaluable"]["D2cc[Gy]"].startswith("2 cc exceeds the volume of ROI 'Node'")
    assert node["metrics"]["D95%[Gy]"] > 55.0  # the other metrics of the node are there
    assert rois["PTV"]["metrics"]["D2cc[Gy]"] > 60.0 and rois["PTV"]["not_evaluable"] == {}

    text = run("rt", "dvh", "--rtstruct", str(path), "--rtdose", str(plan_files["rtdose"]))
    assert text.exit_code == 0 and "n/e Node D2cc[Gy]: 2 cc exceeds the volume" in text.stdout
    assert run("rt", "dvh", "--rtstruct", str(path), "--rtdose", str(plan_files["rtdose"]),
               "--metric", "D95").exit_code == 2  # a malformed metric is still the caller's error
