"""The synthetic phantom: determinism, DICOM validity, references and analytic truth."""

from __future__ import annotations

import math
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage, RTIonPlanStorage, RTStructureSetStorage

from oncopacs.phantom import (
    DemoPatient,
    build_benchmark_ct,
    build_demo_patient,
    build_demo_patients,
    centred_grid,
    write_datasets,
)
from oncopacs.phantom.plan import compute_energy_for_range_mev
from oncopacs.phantom.truth import compute_sphere_ball_overlap_mm3

COMMON_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDescription", "Modality", "FrameOfReferenceUID", "Manufacturer",
    "InstanceNumber",
)


@pytest.fixture(scope="module")
def demo() -> DemoPatient:
    return build_demo_patient()


@pytest.fixture(scope="module")
def written(demo: DemoPatient, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_datasets(demo.all_datasets(), tmp_path_factory.mktemp("demo"))


def _ct_z(ds: pydicom.Dataset) -> float:
    return float(ds.ImagePositionPatient[2])


def _decoded_dose(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dose Gy (nz, ny, nx), x, y, z voxel-centre axes) read from the RT Dose header."""
    dose = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    x = x0 + dx * np.arange(int(ds.Columns))
    y = y0 + dy * np.arange(int(ds.Rows))
    z = z0 + np.array([float(v) for v in ds.GridFrameOffsetVector])
    return dose, x, y, z


def _trilinear(dose: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a regular grid at (n, 3) points (mm); 0 outside."""
    f = (pts - [x[0], y[0], z[0]]) / [x[1] - x[0], y[1] - y[0], z[1] - z[0]]
    i0 = np.floor(f).astype(int)
    t = f - i0
    out = np.zeros(len(pts))
    for cx in (0, 1):
        for cy in (0, 1):
            for cz in (0, 1):
                ix, iy, iz = i0[:, 0] + cx, i0[:, 1] + cy, i0[:, 2] + cz
                ok = (ix >= 0) & (ix < len(x)) & (iy >= 0) & (iy < len(y)) & (iz >= 0) & (iz < len(z))
                w = (t[:, 0] if cx else 1 - t[:, 0]) * (t[:, 1] if cy else 1 - t[:, 1])
                w = w * (t[:, 2] if cz else 1 - t[:, 2])
                out[ok] += w[ok] * dose[iz[ok], iy[ok], ix[ok]]
    return out


def _lattice_points(solid, step_mm: float) -> np.ndarray:
    """Cell centres (n, 3) of a step_mm lattice that fall inside ``solid`` (mm)."""
    if hasattr(solid, "centre_mm"):
        c, r = np.asarray(solid.centre_mm), solid.radius_mm
        lo, hi = c - r, c + r
    else:
        cx, cy = solid.centre_xy_mm
        r = solid.radius_mm
        lo = np.array([cx - r, cy - r, solid.z_min_mm])
        hi = np.array([cx + r, cy + r, solid.z_max_mm])
    axes = [np.arange(a + step_mm / 2, b, step_mm) for a, b in zip(lo, hi, strict=True)]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij")
    inside = solid.contains(xx, yy, zz)
    return np.stack([xx[inside], yy[inside], zz[inside]], axis=1)


# --- determinism and DICOM validity ---------------------------------------------------------


def test_two_builds_are_identical(demo: DemoPatient, written: list[Path], tmp_path: Path) -> None:
    again = build_demo_patient()
    assert [d.SOPInstanceUID for d in again.all_datasets()] == [d.SOPInstanceUID for d in demo.all_datasets()]
    paths = write_datasets(again.all_datasets(), tmp_path)
    assert [p.relative_to(tmp_path) for p in paths] == [p.relative_to(written[0].parents[3]) for p in written]
    for a, b in zip(paths, written, strict=True):
        assert a.read_bytes() == b.read_bytes(), a


def test_demo_is_small_and_complete(demo: DemoPatient, written: list[Path]) -> None:
    assert len(written) == len(demo.all_datasets()) == len({d.SOPInstanceUID for d in demo.all_datasets()})
    assert sum(p.stat().st_size for p in written) < 5_000_000
    assert {p.parent.name for p in written} == {"CT_001", "RTSTRUCT_002", "RTPLAN_003", "RTDOSE_004", "PT_002"}
    assert written[0].name == "CT_0001.dcm"


def test_every_file_round_trips(demo: DemoPatient, written: list[Path]) -> None:
    for original, path in zip(demo.all_datasets(), written, strict=False):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == original.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == original.SOPInstanceUID
        for keyword in COMMON_KEYWORDS:
            assert keyword in ds, (keyword, ds.Modality)
        assert ds.Manufacturer == "OncoPACS phantom"
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        if "PixelData" in ds:
            assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_patients_are_distinct() -> None:
    a, b = build_demo_patients(2)
    assert a.patient.patient_id != b.patient.patient_id and a.patient.name != b.patient.name
    uids_a = {d.SOPInstanceUID for d in a.all_datasets()} | {d.StudyInstanceUID for d in a.all_datasets()}
    uids_b = {d.SOPInstanceUID for d in b.all_datasets()} | {d.StudyInstanceUID for d in b.all_datasets()}
    assert not uids_a & uids_b
    assert a.truth.lesion_suvbw != b.truth.lesion_suvbw  # different weights


@pytest.mark.dcmtk
def test_dcmdump_reads_every_file(written: list[Path]) -> None:
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump not installed")
    result = subprocess.run(["dcmdump", "-q", *map(str, written)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "E:" not in result.stderr and "W:" not in result.stderr


# --- reference integrity ---------------------------------------------------------------------


def test_rtstruct_references_the_planning_ct(demo: DemoPatient) -> None:
    rs = demo.rtstruct
    ct_by_uid = {ct.SOPInstanceUID: ct for ct in demo.planning_ct}
    for_item = rs.ReferencedFrameOfReferenceSequence[0]
    assert for_item.FrameOfReferenceUID == demo.planning_ct[0].FrameOfReferenceUID
    study_item = for_item.RTReferencedStudySequence[0]
    assert study_item.ReferencedSOPInstanceUID == rs.StudyInstanceUID == demo.planning_ct[0].StudyInstanceUID
    series_item = study_item.RTReferencedSeriesSequence[0]
    assert series_item.SeriesInstanceUID == demo.planning_ct[0].SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series_item.ContourImageSequence] == list(ct_by_uid)

    names = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    assert set(names.values()) == {"BODY", "PTV", "Bladder", "Rectum", "SpinalCord"}
    kinds = {names[o.ReferencedROINumber]: o.RTROIInterpretedType for o in rs.RTROIObservationsSequence}
    assert kinds == {"BODY": "EXTERNAL", "PTV": "PTV", "Bladder": "ORGAN", "Rectum": "ORGAN", "SpinalCord": "ORGAN"}
    for roi in rs.ROIContourSequence:
        assert roi.ContourSequence, names[roi.ReferencedROINumber]
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            ct = ct_by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            pts = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            assert len(pts) == contour.NumberOfContourPoints
            assert np.all(pts[:, 2] == _ct_z(ct))


def test_contours_carry_the_analytic_areas(demo: DemoPatient) -> None:
    truth = demo.truth
    names = {r.ROINumber: r.ROIName for r in demo.rtstruct.StructureSetROISequence}
    dz = truth.ct_grid.spacing_mm[2]
    for roi in demo.rtstruct.ROIContourSequence:
        name = names[roi.ReferencedROINumber]
        solid = truth.anatomy.structure(name).solid
        total = 0.0
        for contour in roi.ContourSequence:
            pts = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            area = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
            r = solid.cross_section(pts[0, 2])[2]
            assert area == pytest.approx(math.pi * r * r, rel=1e-4)
            total += area * dz / 1000.0
        assert total == pytest.approx(truth.compute_contour_volume_cc(name), rel=1e-4)
        assert total == pytest.approx(truth.compute_volume_cc(name), rel=0.02)


def test_plan_dose_and_frames_of_reference(demo: DemoPatient) -> None:
    plan, dose, rs = demo.rt_ion_plan, demo.rt_dose, demo.rtstruct
    assert plan.SOPClassUID == RTIonPlanStorage
    ref = plan.ReferencedStructureSetSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (RTStructureSetStorage, rs.SOPInstanceUID)
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPClassUID == RTIonPlanStorage
    planning = {d.FrameOfReferenceUID for d in (*demo.planning_ct, rs, plan, dose)}
    petct = {d.FrameOfReferenceUID for d in (*demo.pet_ct, *demo.pet)}
    assert len(planning) == len(petct) == 1 and planning != petct
    assert {d.StudyInstanceUID for d in (*demo.planning_ct, rs, plan, dose)} == {rs.StudyInstanceUID}
    assert {d.StudyInstanceUID for d in (*demo.pet_ct, *demo.pet)} == {demo.pet[0].StudyInstanceUID}
    assert dose.FrameIncrementPointer == 0x3004000C and dose.NumberOfFrames == len(dose.GridFrameOffsetVector)
    # a proton plan's dose as proton planning systems write it: RBE-weighted (constant RBE 1.1), read as Gy(RBE)
    assert (dose.DoseUnits, dose.DoseType, dose.DoseSummationType) == ("GY", "EFFECTIVE", "PLAN")
    assert "RBE 1.1" in dose.DoseComment
    (declared,) = plan.ReferencedDoseSequence  # the plan names its planning-system dose
    assert (declared.ReferencedSOPClassUID, declared.ReferencedSOPInstanceUID) == (RTDoseStorage, dose.SOPInstanceUID)
    assert demo.dose_check is None  # only on request (the demo's first patient)


def test_an_independent_dose_check_is_a_second_plan_dose_two_percent_lower(demo: DemoPatient) -> None:
    checked = build_demo_patient(with_dose_check=True)
    check, dose, plan = checked.dose_check, checked.rt_dose, checked.rt_ion_plan
    assert check is not None and dose.SOPInstanceUID == demo.rt_dose.SOPInstanceUID  # the rest is unchanged
    assert checked.all_datasets() == [*demo.all_datasets()[:len(demo.planning_ct) + 3], check,
                                      *demo.all_datasets()[len(demo.planning_ct) + 3:]]
    assert check.SeriesInstanceUID != dose.SeriesInstanceUID and check.SOPInstanceUID != dose.SOPInstanceUID
    assert (check.SeriesNumber, check.SeriesDescription) == (5, "Independent dose check")
    assert check.DoseComment.startswith("Independent dose check") and "2 %" in check.DoseComment
    assert (check.DoseUnits, check.DoseType, check.DoseSummationType) == ("GY", "EFFECTIVE", "PLAN")
    assert check.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in plan.ReferencedDoseSequence] == [dose.SOPInstanceUID]
    assert check.StudyInstanceUID == dose.StudyInstanceUID and check.FrameOfReferenceUID == dose.FrameOfReferenceUID
    checked_gy, planned_gy = _decoded_dose(check)[0], _decoded_dose(dose)[0]
    assert np.allclose(checked_gy, 0.98 * planned_gy, atol=1e-6)
    assert checked_gy.max() == pytest.approx(0.98 * demo.truth.dose_model.dmax_gy)
    only_first = build_demo_patients(2, dose_check_ids=("ONCO-DEMO-001",))
    assert [p.dose_check is not None for p in only_first] == [True, False]


def test_plan_is_a_plausible_proton_plan(demo: DemoPatient) -> None:
    plan = demo.rt_ion_plan
    target = plan.DoseReferenceSequence[0]
    ptv_number = demo.truth.anatomy.ptv.roi_number
    assert target.ReferencedROINumber == ptv_number and float(target.TargetPrescriptionDose) == 60.0
    group = plan.FractionGroupSequence[0]
    assert group.NumberOfFractionsPlanned == 30 and group.NumberOfBeams == len(plan.IonBeamSequence) == 2
    metersets = {r.ReferencedBeamNumber: float(r.BeamMeterset) for r in group.ReferencedBeamSequence}
    for beam in plan.IonBeamSequence:
        assert (beam.RadiationType, beam.ScanMode) == ("PROTON", "MODULATED")
        cps = beam.IonControlPointSequence
        assert beam.NumberOfControlPoints == len(cps) >= 4
        assert [float(cp.CumulativeMetersetWeight) for cp in cps][-1] == float(beam.FinalCumulativeMetersetWeight)
        assert metersets[beam.BeamNumber] == pytest.approx(float(beam.FinalCumulativeMetersetWeight))
        weights = sum(sum(cp.ScanSpotMetersetWeights) for cp in cps)
        assert weights == pytest.approx(float(beam.FinalCumulativeMetersetWeight), abs=1e-3)
        energies = [float(cp.NominalBeamEnergy) for cp in cps]
        assert 70.0 < min(energies) < max(energies) < 230.0
        for cp in cps:
            n_spots = cp.NumberOfScanSpotPositions
            assert len(cp.ScanSpotPositionMap) == 2 * n_spots == 2 * len(cp.ScanSpotMetersetWeights)
        assert [float(v) for v in cps[0].IsocenterPosition] == [0.0, 0.0, 0.0]
    assert compute_energy_for_range_mev(100.0) == pytest.approx(115.6, abs=1.0)  # ~10 cm in water


# --- dose and DVH truth ----------------------------------------------------------------------


def test_dose_grid_equals_analytic_dose_at_voxel_centres(demo: DemoPatient) -> None:
    dose, x, y, z = _decoded_dose(demo.rt_dose)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    expected = demo.truth.dose_model.compute_dose_gy(xx, yy, zz)
    assert np.max(np.abs(dose - expected)) <= 0.5e-6 + 1e-12
    assert dose.max() == pytest.approx(demo.truth.dose_model.dmax_gy)


@pytest.mark.parametrize("name", ["PTV", "Bladder", "Rectum", "SpinalCord", "BODY"])
def test_closed_form_dvh_matches_direct_sampling(demo: DemoPatient, name: str) -> None:
    """Sampling the analytic dose on a fine lattice inside the structure reproduces the truth."""
    truth = demo.truth
    solid = truth.anatomy.structure(name).solid
    pts = _lattice_points(solid, 2.0 if name == "BODY" else 0.6)
    d = truth.dose_model.compute_dose_gy(pts[:, 0], pts[:, 1], pts[:, 2])
    for level in (0.0, 5.0, 20.0, 40.0, 50.0, 55.0, 60.0, 62.0, 63.0, 63.6, 64.0):
        assert np.mean(d >= level) == pytest.approx(truth.compute_cumulative_dvh_fraction(name, level), abs=0.01)
    assert d.mean() == pytest.approx(truth.compute_mean_dose_gy(name), abs=0.1)
    assert d.max() <= truth.compute_max_dose_gy(name) + 1e-9
    assert d.min() >= truth.compute_min_dose_gy(name) - 1e-9
    assert d.max() == pytest.approx(truth.compute_max_dose_gy(name), abs=0.5)
    assert np.percentile(d, 5) == pytest.approx(truth.compute_dose_at_volume_gy(name, 95), abs=0.1)
    assert len(pts) * (2.0 if name == "BODY" else 0.6) ** 3 / 1000 == pytest.approx(
        truth.compute_volume_cc(name), rel=0.01
    )


def test_ptv_closed_forms(demo: DemoPatient) -> None:
    truth, m = demo.truth, demo.truth.dose_model
    big_r, r0, r1, dmax = 30.0, m.plateau_radius_mm, m.falloff_radius_mm, m.dmax_gy
    assert truth.compute_volume_cc("PTV") == pytest.approx(4 / 3 * math.pi * big_r**3 / 1000)
    assert truth.compute_mean_dose_gy("PTV") == pytest.approx(
        dmax / (r1 - r0) * ((big_r**4 - r0**4) / (4 * big_r**3) + (r1 - big_r)), rel=1e-12
    )
    d95 = dmax * (r1 - big_r * 0.95 ** (1 / 3)) / (r1 - r0)
    assert truth.compute_dose_at_volume_gy("PTV", 95) == pytest.approx(d95, rel=1e-12)
    assert truth.compute_cumulative_dvh_fraction("PTV", 61.0) == pytest.approx(
        ((r1 - 61.0 / dmax * (r1 - r0)) / big_r) ** 3, rel=1e-12
    )
    assert truth.compute_dose_at_volume_gy("PTV", 95) >= truth.prescription_gy  # D95 covers the prescription
    assert truth.compute_max_dose_gy("SpinalCord") == 0.0
    assert compute_sphere_ball_overlap_mm3(10.0, 10.0, 0.0) == pytest.approx(4 / 3 * math.pi * 1000)
    # lens volume is continuous where the two balls just touch and where one swallows the other
    assert compute_sphere_ball_overlap_mm3(10.0, 5.0, 14.999999) == pytest.approx(0.0, abs=1e-6)
    assert compute_sphere_ball_overlap_mm3(10.0, 5.0, 5.000001) == pytest.approx(4 / 3 * math.pi * 125, rel=1e-6)


def _grid_dvh_errors(patient: DemoPatient) -> tuple[float, float, float]:
    """(max |ΔV(>=d)| for 59.5..62 Gy, |Δmean| Gy, |ΔD95| Gy) of the PTV, RT Dose vs truth."""
    truth = patient.truth
    dose, x, y, z = _decoded_dose(patient.rt_dose)
    pts = _lattice_points(truth.anatomy.ptv.solid, 0.75)
    d = _trilinear(dose, x, y, z, pts)
    dv = max(
        abs(np.mean(d >= level) - truth.compute_cumulative_dvh_fraction("PTV", level))
        for level in (59.5, 60.0, 60.5, 61.0, 62.0)
    )
    return (
        dv,
        abs(d.mean() - truth.compute_mean_dose_gy("PTV")),
        abs(np.percentile(d, 5) - truth.compute_dose_at_volume_gy("PTV", 95)),
    )


def test_numerical_ptv_dvh_from_the_dose_grid(demo: DemoPatient) -> None:
    """Fine sampling of the PTV through the 3 mm RT Dose grid agrees with the closed form.

    Trilinear interpolation rounds off the plateau edge (r0 = 28 mm, inside the 30 mm PTV) over
    about one voxel, so doses just below Dmax read up to ~1 Gy low (3 mm grid: |ΔV| ≈ 0.035,
    |ΔDmean| ≈ 0.16 Gy, |ΔD95| ≈ 0.23 Gy). Halving the spacing must shrink the errors
    (roughly as h^2 for the mean dose).
    """
    dv, dmean, d95 = _grid_dvh_errors(demo)
    assert dv < 0.05 and dmean < 0.25 and d95 < 0.35
    fine = build_demo_patient(dose_grid=centred_grid((81, 81, 81), (1.5, 1.5, 1.5)))
    dv_fine, dmean_fine, d95_fine = _grid_dvh_errors(fine)
    assert dv_fine < dv / 2 and dmean_fine < dmean / 2
    assert dv_fine < 0.015 and dmean_fine < 0.08 and d95_fine < 0.15


# --- PET and SUV truth -----------------------------------------------------------------------


def test_pet_pixels_scale_to_the_known_activity(demo: DemoPatient) -> None:
    pet = demo.truth.pet
    seen = set()
    for ds in demo.pet:
        assert ds.Units == "BQML" and ds.DecayCorrection == "START"
        assert {"ATTN", "DECY"} <= set(ds.CorrectedImage)
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        values = ds.pixel_array * slope + intercept
        x0, y0, z = (float(v) for v in ds.ImagePositionPatient)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        yy, xx = np.meshgrid(y0 + dy * np.arange(ds.Rows), x0 + dx * np.arange(ds.Columns), indexing="ij")
        expected = pet.compute_activity_bqml(xx, yy, z)
        assert np.max(np.abs(values - expected)) <= slope / 2 + 1e-9
        seen |= set(np.unique(expected).tolist())
    assert seen == {0.0, pet.background_bqml, pet.liver_bqml, pet.lesion_bqml}


def test_suv_truth_matches_the_pet_header(demo: DemoPatient) -> None:
    ds = demo.pet[len(demo.pet) // 2]
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    assert rp.Radiopharmaceutical == "Fluorodeoxyglucose" and float(rp.RadionuclideHalfLife) == 6586.2
    injected = datetime.strptime(rp.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S")
    series = datetime.strptime(ds.SeriesDate + ds.SeriesTime, "%Y%m%d%H%M%S")
    elapsed = (series - injected).total_seconds()
    assert elapsed == 3600.0
    decayed = float(rp.RadionuclideTotalDose) * math.exp(-math.log(2) * elapsed / float(rp.RadionuclideHalfLife))
    weight_g = float(ds.PatientWeight) * 1000.0
    truth = demo.truth
    assert truth.lesion_suvbw == pytest.approx(truth.pet.lesion_bqml * weight_g / decayed, rel=1e-12)
    assert truth.background_suvbw == pytest.approx(truth.pet.background_bqml * weight_g / decayed, rel=1e-12)
    assert truth.liver_suvbw == pytest.approx(2 * truth.background_suvbw)
    # the lesion centre voxel reads the lesion activity, hence the lesion SUV
    centre = demo.truth.pet.lesion.centre_mm
    nearest = min(demo.pet, key=lambda s: abs(_ct_z(s) - centre[2]))
    x0, y0, _ = (float(v) for v in nearest.ImagePositionPatient)
    dy, dx = (float(v) for v in nearest.PixelSpacing)
    j, i = round((centre[1] - y0) / dy), round((centre[0] - x0) / dx)
    value = nearest.pixel_array[j, i] * float(nearest.RescaleSlope)
    assert value * weight_g / decayed == pytest.approx(truth.lesion_suvbw, rel=1e-4)


# --- benchmark generator ---------------------------------------------------------------------


def test_benchmark_ct_spreads_instances_over_studies() -> None:
    first = list(build_benchmark_ct(23, 5, rows=32, cols=32))
    again = list(build_benchmark_ct(23, 5, rows=32, cols=32))
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    assert len({d.SOPInstanceUID for d in first}) == 23
    per_study: dict[str, list[pydicom.Dataset]] = {}
    for d in first:
        per_study.setdefault(d.StudyInstanceUID, []).append(d)
    assert sorted(len(v) for v in per_study.values()) == [4, 4, 5, 5, 5]
    assert len({d.PatientID for d in first}) == 5
    for series in per_study.values():
        assert [d.InstanceNumber for d in series] == list(range(1, len(series) + 1))
        assert len({_ct_z(d) for d in series}) == len(series)
    assert first[0].pixel_array.shape == (32, 32)
    assert len(list(build_benchmark_ct(10, 4, rows=8, cols=8, n_patients=2))) == 10


def test_response_patients_have_an_rt_course(tmp_path: Path) -> None:
    from pydicom.uid import RTDoseStorage, RTIonBeamsTreatmentRecordStorage

    from oncopacs.phantom.pet_followup import build_longitudinal_patient, build_longitudinal_patients

    responder, progressor = build_longitudinal_patients()
    for patient in (responder, progressor):
        planning = patient.planning
        assert planning is not None
        on_plan = [*planning.ct, planning.rtstruct, planning.plan, planning.dose]
        assert {d.FrameOfReferenceUID for d in on_plan} == {planning.ct[0].FrameOfReferenceUID}
        assert {d.StudyInstanceUID for d in on_plan} == {planning.plan.StudyInstanceUID}
        assert planning.plan.SOPClassUID == RTIonPlanStorage and planning.dose.SOPClassUID == RTDoseStorage
        structure_set = planning.plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
        assert structure_set == planning.rtstruct.SOPInstanceUID
        assert planning.dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == planning.plan.SOPInstanceUID
        assert all(d.AdmittingDiagnosesDescription for d in on_plan) and planning.plan.TreatmentSite
        # planned after the baseline PET, which stays the patient's first study
        assert planning.plan.RTPlanDate > patient.scans[0].spec.date
    assert len(responder.records) == 30 and progressor.records == ()
    assert {r.SOPClassUID for r in responder.records} == {RTIonBeamsTreatmentRecordStorage}
    assert {r.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID for r in responder.records} == {
        responder.planning.plan.SOPInstanceUID}
    assert "FrameOfReferenceUID" not in responder.records[0]
    assert progressor.planning.plan.FractionGroupSequence[0].NumberOfFractionsPlanned == 28
    # deterministic, files that round-trip, and no course unless asked for (the PET tests' patients)
    again = build_longitudinal_patients()[0]
    assert [d.SOPInstanceUID for d in again.all_datasets()] == [d.SOPInstanceUID for d in responder.all_datasets()]
    written = write_datasets([*responder.records[:2], responder.planning.plan], tmp_path)
    assert pydicom.dcmread(written[0]).TreatmentDate == "20240219"
    bare = build_longitudinal_patient("X-1", "Test^X")
    assert bare.planning is None and len(bare.all_datasets()) == len(responder.all_datasets()) - len(
        [*responder.planning.all_datasets(), *responder.records])
