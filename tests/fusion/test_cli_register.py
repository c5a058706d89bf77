"""``oncopacs fusion register`` as a physicist runs it: DICOM folders in, a registration object and JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread

from fusion.dicom_reg import read_registration
from oncopacs.cli import main
from oncopacs.phantom.fusion import build_fusion_ct_series


def write_series(datasets, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for ds in datasets:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, rigid_pair, deformed_pair) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("register")
    return {
        "rigid_fixed": write_series(build_fusion_ct_series(rigid_pair.fixed_hu, rigid_pair.grid, "fixed"), root / "rf"),
        "rigid_moving": write_series(build_fusion_ct_series(rigid_pair.moving_hu, rigid_pair.grid, "moving"),
                                     root / "rm"),
        "def_fixed": write_series(build_fusion_ct_series(deformed_pair.fixed_hu, deformed_pair.grid, "fixed"),
                                  root / "df"),
        "def_moving": write_series(build_fusion_ct_series(deformed_pair.moving_hu, deformed_pair.grid, "moving"),
                                   root / "dm"),
        "root": root,
    }


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_rigid_register_json(folders):
    out = folders["root"] / "out-rigid"
    result = run("fusion", "register", "--fixed", str(folders["rigid_fixed"]), "--moving", str(folders["rigid_moving"]),
                 "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "rigid" and document["seconds"] > 0 and document["qa"]["passed"] is True
    assert document["qa"]["inverse_consistency_method"] == "reverse registration"
    path = Path(document["registration_file"])
    assert path.parent == out and path.exists()
    registration = read_registration(dcmread(path))
    assert registration.moving.series_instance_uid == document["moving_series_uid"]
    assert registration.qa.to_dict() == document["qa"]
    assert "%" in result.stderr  # progress on standard error, JSON alone on standard output


def test_deformable_register_json(folders):
    out = folders["root"] / "out-deformable"
    result = run("fusion", "register", "--fixed", str(folders["def_fixed"]), "--moving", str(folders["def_moving"]),
                 "--deformable", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "deformable" and document["qa"]["folding_percent"] == 0.0
    assert read_registration(dcmread(document["registration_file"])).displacement_field is not None


def test_folder_without_images_fails_with_one_line(folders):
    empty = folders["root"] / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["fusion", "register", "--fixed", str(empty), "--moving",
                                       str(folders["rigid_moving"]), "--out", str(folders["root"] / "x"), "--json"])
    assert result.exit_code != 0 and result.stdout == ""
    assert "no DICOM files" in result.stderr and len(result.stderr.strip().splitlines()) == 1
