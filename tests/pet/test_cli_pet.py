"""``oncopacs pet …`` on written PET-CT folders: one JSON document, one-line errors, non-zero exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread

from oncopacs.cli import main
from oncopacs.phantom import write_datasets


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, responder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pet")
    out = {}
    for scan in responder.scans:
        write_datasets(scan.all_datasets(), root / scan.spec.label)
        out[scan.spec.label] = root / scan.spec.label
    return out


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_suv_json_from_rtstruct_in_folder(folders, responder) -> None:
    result = run("pet", "suv", "--pet", str(folders["baseline"]), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["suv_type"] == "bw"
    rois = {roi["name"]: roi for roi in document["rois"]}
    assert set(rois) == {"GTV", "Liver"}
    assert rois["GTV"]["SUVmax"] == pytest.approx(responder.scans[0].lesion_suvbw["GTV"], rel=0.005)
    assert rois["Liver"]["SUVmax"] == pytest.approx(responder.scans[0].liver_suvbw, rel=0.005)
    # edge voxels are weighted by their share of the contour and hold background: the mean is a little lower
    assert rois["Liver"]["SUVmean"] == pytest.approx(responder.scans[0].liver_suvbw, rel=0.04)
    for key in ("SUVmean", "SUVpeak", "MTV_cc", "TLG", "SULpeak"):
        assert isinstance(rois["GTV"][key], float)


def test_suv_lbm_roi_and_seed(folders) -> None:
    result = run("pet", "suv", "--pet", str(folders["baseline"]), "--roi", "GTV", "--seed", "0,0,0",
                 "--suv", "lbm", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    gtv, seed = document["rois"]
    assert document["suv_type"] == "lbm" and gtv["name"] == "GTV" and seed["name"] == "seed1"
    assert seed["SUVmax"] == pytest.approx(gtv["SUVmax"])
    assert gtv["SUVpeak"] == pytest.approx(gtv["SULpeak"])  # SUL is SUVlbm


def test_response_json_categories(folders) -> None:
    result = run("pet", "response", "--baseline", str(folders["baseline"]), "--followup",
                 str(folders["mid-treatment"]), "--cycles", "2", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["categories"] == {"PERCIST 1.0": "PMR", "EORTC 1999": "PMR", "RECIST": "SD"}
    assert document["percist"]["SULpeak_change_percent"] < -30
    assert document["ct"][0]["name"] == "GTV" and document["ct"][0]["volume_change_percent"] < 0
    text = run("pet", "response", "--baseline", str(folders["baseline"]), "--followup", str(folders["follow-up"]))
    assert text.exit_code == 0 and "CMR" in text.stdout


def test_errors_are_one_line_and_non_zero(folders, tmp_path) -> None:
    missing = run("pet", "suv", "--pet", str(tmp_path / "nothing"), "--json")
    assert missing.exit_code != 0 and "no such file" in missing.stderr and missing.stdout == ""
    pet_only = tmp_path / "pet"
    pet_only.mkdir()
    for path in sorted((folders["baseline"]).rglob("PT_*.dcm")):
        ds = dcmread(path)
        del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
        ds.save_as(pet_only / path.name, enforce_file_format=True)
    result = run("pet", "suv", "--pet", str(pet_only), "--seed", "0,0,0", "--json")
    assert result.exit_code != 0
    assert "RadionuclideTotalDose" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    no_rois = run("pet", "suv", "--pet", str(pet_only))
    assert no_rois.exit_code != 0
