"""``oncopacs fusion propagate | warp-dose | 4d`` on files written to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from pydicom import Dataset, dcmread

from fusion.ct4d import build_derived_series
from fusion.dicom_reg import build_registration_dataset
from fusion.qa import RegistrationQA
from fusion.registration import Registration, RegistrationKind
from fusion.rtstruct_writer import RoiContours, build_rtstruct
from fusion.volume import load_series, read_series_info
from oncopacs.cli import main
from oncopacs.phantom import write_datasets
from oncopacs.phantom.ct4d import Ct4dSpec, build_ct4d_phantom
from oncopacs.phantom.shapes import Sphere, compute_cross_section_polygons
from rt.dose import DoseGrid, build_rt_dose, read_dose
from rt.grid import VoxelGrid
from rt.structures import read_structure_set
from tests.factories import write_files

SHIFT_MM = (6.0, -4.0, 5.0)  # fixed point + shift = moving point
SPHERE_MOVING = (5.0, 3.0, 4.0)


def ct_series(folder: Path, frame: str, series: str) -> list[Dataset]:
    """A CT series (blank water with a bright sphere at the origin) on a small grid, written to ``folder``."""
    zz, yy, xx = np.meshgrid(np.arange(20) * 2.5 - 25.0, np.arange(32) * 2.0 - 32.0, np.arange(32) * 2.0 - 32.0,
                             indexing="ij")
    values = np.where(xx**2 + yy**2 + zz**2 < 100.0, 200.0, 0.0).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetOrigin((-32.0, -32.0, -25.0))
    image.SetSpacing((2.0, 2.0, 2.5))
    template = Dataset()
    template.PatientID, template.PatientName = "CLI1", "Cli^Test"
    template.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    template.FrameOfReferenceUID, template.SeriesInstanceUID = frame, series
    slices = build_derived_series(image, template, "AIP", series_number=2)
    write_files(slices, folder)
    return slices


def sphere_rtstruct(slices: list[Dataset], centre) -> Dataset:
    solid = Sphere(centre, 10.0)
    polygons = tuple(p for ds in slices
                     for p in compute_cross_section_polygons(solid, float(ds.ImagePositionPatient[2]), 64))
    return build_rtstruct(slices, [RoiContours("GTV", polygons, "GTV")])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_cli")
    fixed_slices = ct_series(root / "fixed", "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2")
    moving_slices = ct_series(root / "moving", "1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.4")
    fixed, moving = load_series(root / "fixed"), load_series(root / "moving")
    transform = sitk.Euler3DTransform()
    transform.SetTranslation(SHIFT_MM)
    registration = Registration(transform, RegistrationKind.RIGID, read_series_info(fixed), read_series_info(moving),
                                0.1)
    good = RegistrationQA(1.0, 1.0, 0.0, None, None, "not computed", None, None, 0, True)
    build_registration_dataset(registration, fixed, moving, qa=good).save_as(root / "reg.dcm", enforce_file_format=True)
    build_registration_dataset(registration, fixed, moving).save_as(root / "reg_noqa.dcm", enforce_file_format=True)
    sphere_rtstruct(moving_slices, SPHERE_MOVING).save_as(root / "moving_rs.dcm", enforce_file_format=True)
    reference_centre = tuple(np.subtract(SPHERE_MOVING, SHIFT_MM))
    sphere_rtstruct(fixed_slices, reference_centre).save_as(root / "fixed_rs.dcm", enforce_file_format=True)
    grid = VoxelGrid(origin_mm=(-30.0, -30.0, -20.0), spacing_mm=(3.0, 3.0, 3.0), shape=(14, 21, 21))
    zz, yy, xx = np.meshgrid(grid.z_mm(), grid.y_mm(), grid.x_mm(), indexing="ij")
    dose = 50.0 * np.exp(-((xx - SPHERE_MOVING[0]) ** 2 + (yy - SPHERE_MOVING[1]) ** 2 + (zz - SPHERE_MOVING[2]) ** 2)
                         / (2 * 6.0**2))
    dose_grid = DoseGrid(dose, grid, (1.0, 0, 0, 0, 1.0, 0), "GY", "PHYSICAL", "PLAN",
                         moving_slices[0].FrameOfReferenceUID)
    build_rt_dose(dose_grid, moving_slices[0], summation_type="PLAN").save_as(root / "dose.dcm",
                                                                              enforce_file_format=True)
    return root


def invoke(*args: str):
    return CliRunner().invoke(main, ["fusion", *args], catch_exceptions=False)


def test_propagate_writes_an_rtstruct_on_the_fixed_series_with_dice_above_0_9(pair):
    out = pair / "out" / "propagated.dcm"
    result = invoke("propagate", "--registration", str(pair / "reg.dcm"), "--rtstruct", str(pair / "moving_rs.dcm"),
                    "--fixed", str(pair / "fixed"), "--out", str(out), "--reference", str(pair / "fixed_rs.dcm"),
                    "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["rtstruct_file"] == str(out) and document["rois"][0]["name"] == "GTV"
    assert document["overlap"][0]["dice"] >= 0.9
    written = dcmread(out)
    assert written.FrameOfReferenceUID == "1.2.826.0.1.3680043.8.498.1"
    series = written.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == dcmread(next((pair / "fixed").iterdir())).SeriesInstanceUID
    assert read_structure_set(written).roi("GTV").compute_volume_cc() == pytest.approx(
        Sphere((0, 0, 0), 10.0).volume_cc, rel=0.1)


def test_propagate_refuses_a_structure_set_from_another_frame(pair):
    result = CliRunner().invoke(main, ["fusion", "propagate", "--registration", str(pair / "reg.dcm"), "--rtstruct",
                                       str(pair / "fixed_rs.dcm"), "--fixed", str(pair / "fixed"), "--out",
                                       str(pair / "x.dcm")])
    assert result.exit_code != 0 and "frame of reference" in result.output


def test_warp_dose_moves_the_dose_onto_the_fixed_frame_and_gates_on_qa(pair):
    out = pair / "out" / "warped.dcm"
    args = ["warp-dose", "--dose", str(pair / "dose.dcm"), "--fixed", str(pair / "fixed"), "--out", str(out), "--json"]
    result = invoke(*args, "--registration", str(pair / "reg.dcm"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["courses"] == 1
    warped = read_dose(dcmread(out))
    assert warped.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.1"
    peak = np.unravel_index(np.argmax(warped.dose_gy), warped.dose_gy.shape)
    position = [warped.grid.axis_mm(axis)[peak[2 - axis]] for axis in range(3)]
    np.testing.assert_allclose(position, np.subtract(SPHERE_MOVING, SHIFT_MM), atol=3.0)
    refused = CliRunner().invoke(main, ["fusion", *args, "--registration", str(pair / "reg_noqa.dcm")])
    assert refused.exit_code != 0 and "QA" in refused.output
    overridden = invoke(*args, "--registration", str(pair / "reg_noqa.dcm"), "--override-qa", "--mode", "eqd2",
                        "--fractions", "25")
    assert overridden.exit_code == 0, overridden.output
    assert json.loads(overridden.output)["mode"] == "eqd2"


def test_4d_command_reports_phases_motion_and_itv(tmp_path):
    spec = Ct4dSpec(phases=4, shape=(24, 48, 48), amplitude_mm=(0.0, 3.0, 10.0), supersampling=2)
    phantom = build_ct4d_phantom(spec)
    write_datasets(phantom.all_datasets(), tmp_path / "in")
    result = invoke("4d", str(tmp_path / "in"), "--gtv", "GTV", "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["phases"] == 4
    for axis, truth in zip(("LR", "AP", "SI"), spec.compute_amplitude_mm(), strict=True):
        assert document["amplitude_mm"][axis] == pytest.approx(truth, abs=1.0)
    assert document["itv_cc"] == pytest.approx(spec.compute_swept_volume_cc(), rel=0.1)  # 4 phases: gaps in the sweep
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["AIP", "MINIP", "MIP", "RTSTRUCT_ITV.dcm"]
    structure_set = read_structure_set(dcmread(tmp_path / "out" / "RTSTRUCT_ITV.dcm"))
    assert structure_set.roi_names[0] == "ITV" and len(structure_set.roi_names) == 5
    assert len(list((tmp_path / "out" / "MIP").iterdir())) == spec.shape[0]


def test_4d_command_without_phases_fails_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "note.txt").write_text("not DICOM")
    result = CliRunner().invoke(main, ["fusion", "4d", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "no DICOM files" in result.output
    phantom = build_ct4d_phantom(Ct4dSpec(phases=2, shape=(4, 12, 12), supersampling=1))
    write_datasets(list(phantom.phases[0]), tmp_path / "one")  # a single phase, no structure set
    result = CliRunner().invoke(main, ["fusion", "4d", str(tmp_path / "one"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "Structure Set" in result.output
