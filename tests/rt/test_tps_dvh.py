"""rt.tps_dvh: reading an RT Dose's DVHSequence and comparing it with our DVH."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from oncopacs.phantom import build_demo_patient
from rt.dose import read_dose
from rt.dvh import compute_dvh, compute_metric, compute_roi_dvh
from rt.errors import DicomInputError
from rt.structures import read_structure_set
from rt.tps_dvh import build_dvh_item, compare_with_tps, read_tps_dvhs
from tests.conftest import shared_data

METRICS = ("Mean[Gy]", "Max[Gy]", "Min[Gy]", "D98%[Gy]", "D95%[Gy]", "D50%[Gy]", "D2%[Gy]", "V60Gy[%]", "V30Gy[cc]")


@pytest.fixture(scope="module")
def phantom_dvhs():
    p = build_demo_patient()
    ss = read_structure_set(p.rtstruct)
    dose = read_dose(p.rt_dose)
    return p, ss, {name: compute_roi_dvh(ss, name, dose, bin_width_gy=0.1) for name in ("PTV", "Rectum")}


def rt_dose_with(items):
    ds = Dataset()
    ds.Modality = "RTDOSE"
    ds.DVHSequence = Sequence(items)
    return ds


@pytest.mark.parametrize(
    ("dvh_type", "volume_units", "scaling"),
    [("CUMULATIVE", "CM3", 1.0), ("CUMULATIVE", "PERCENT", 0.01), ("DIFFERENTIAL", "CM3", 0.001),
     ("DIFFERENTIAL", "PERCENT", 1.0)],
)
def test_round_trip_of_phantom_dvhs(phantom_dvhs, tmp_path, dvh_type, volume_units, scaling):
    p, ss, dvhs = phantom_dvhs
    items = [build_dvh_item(dvh, ss.roi(name).number, dvh_type=dvh_type, volume_units=volume_units,
                            dose_scaling=scaling)
             for name, dvh in dvhs.items()]
    path = tmp_path / "RD.dcm"
    ds = p.rt_dose.copy()
    ds.DVHSequence = Sequence(items)
    ds.save_as(path, enforce_file_format=True)
    tps = read_tps_dvhs(pydicom.dcmread(path))
    assert set(tps) == {ss.roi(name).number for name in dvhs}
    for name, ours in dvhs.items():
        item = tps[ss.roi(name).number]
        assert (item.dvh_type, item.volume_units) == (dvh_type, volume_units)
        assert item.to_dict()["roi_number"] == ss.roi(name).number
        theirs = item.to_dvh(volume_cc=ours.volume_cc)
        assert theirs.volume_cc == pytest.approx(ours.volume_cc, rel=1e-8)
        np.testing.assert_allclose(theirs.cumulative_volume_cc[: ours.cumulative_volume_cc.size],
                                   ours.cumulative_volume_cc[: theirs.cumulative_volume_cc.size], rtol=1e-8, atol=1e-9)
        for row in compare_with_tps(ours, item, METRICS):
            tolerance = 1e-6 * max(1.0, abs(row.tps))  # same bins: agreement to the printed precision
            assert abs(row.difference) <= tolerance, row.to_dict()


def test_comparison_within_bin_tolerance_of_a_coarser_tps_dvh(phantom_dvhs):
    """A TPS DVH in 0.5 Gy bins vs ours in 0.1 Gy bins: dose metrics within one 0.5 Gy bin."""
    p, ss, dvhs = phantom_dvhs
    dose = read_dose(p.rt_dose)
    coarse = compute_roi_dvh(ss, "PTV", dose, bin_width_gy=0.5)
    item = build_dvh_item(coarse, ss.roi("PTV").number, volume_units="PERCENT")
    item.DVHMinimumDose = item.DVHMeanDose = item.DVHMaximumDose = ""  # let to_dvh estimate them
    tps = read_tps_dvhs(rt_dose_with([item]))[ss.roi("PTV").number]
    for row in compare_with_tps(dvhs["PTV"], tps, METRICS):
        limit = 0.5 if row.metric.endswith("[Gy]") else 2.0  # Gy, or % / cc for V metrics
        assert abs(row.difference) <= limit, row.to_dict()


def test_non_uniform_bins_are_resampled():
    """Cumulative 10 cc: 0-1 Gy width 1 (10 cc), 1-3 Gy width 2 (6 cc), 3-3.5 Gy (2 cc)."""
    ref = Dataset()
    ref.ReferencedROINumber = 7
    item = Dataset()
    item.DVHReferencedROISequence = Sequence([ref])
    item.DVHType, item.DoseUnits, item.DVHVolumeUnits, item.DVHDoseScaling = "CUMULATIVE", "GY", "CM3", "1"
    item.DVHData = ["1", "10", "2", "6", "0.5", "2"]
    tps = read_tps_dvhs(rt_dose_with([item]))[7]
    dvh = tps.to_dvh()
    assert dvh.bin_width_gy == pytest.approx(0.5)
    assert dvh.volume_cc == 10.0 and dvh.max_gy == pytest.approx(3.5) and dvh.min_gy == 0.0
    assert dvh.compute_volume_at_dose_cc(2.0) == pytest.approx(4.0)  # 6 -> 2 cc linearly over 1..3 Gy
    assert dvh.mean_gy == pytest.approx((4 * 0.5 + 4 * 2.0 + 2 * 3.25) / 10.0)


def test_empty_and_unsupported_sequences():
    assert read_tps_dvhs(Dataset()) == {}
    assert read_tps_dvhs(rt_dose_with([])) == {}
    dvh = compute_dvh(np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]), 1.0, bin_width_gy=1.0)
    item = build_dvh_item(dvh, 1)
    item.DoseUnits = "RELATIVE"
    with pytest.raises(DicomInputError, match="DoseUnits"):
        read_tps_dvhs(rt_dose_with([item]))
    item = build_dvh_item(dvh, 1, volume_units="PERCENT")
    tps = read_tps_dvhs(rt_dose_with([item]))[1]
    with pytest.raises(DicomInputError, match="PERCENT"):
        tps.to_dvh()
    assert compute_metric(tps.to_dvh(volume_cc=4.0), "Mean[Gy]") == pytest.approx(2.5)
    del item.DVHReferencedROISequence
    with pytest.raises(DicomInputError):
        read_tps_dvhs(rt_dose_with([item]))


def test_shared_rt_doses_carry_no_dvh_sequence():
    """The DCPT RayStation RT Doses hold no DVHSequence (checked for every RD file): reading gives {}."""
    folder = shared_data("dcpt-proton-phantom")
    files = sorted(folder.glob("*/RD*.dcm"))
    assert files
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert read_tps_dvhs(ds) == {}, path
