"""rt on files written by real planning systems (Eclipse, RayStation) from ../shared/data."""

from __future__ import annotations

import csv
import re

import numpy as np
import pydicom
import pytest

from rt.dose import read_dose
from rt.dvh import compute_metric, compute_roi_dvh
from rt.structures import read_structure_set
from tests.conftest import shared_data
from tests.rt.helpers import read_nrrd_dose

ECLIPSE_ROIS = (
    "BODY", "Bladder", "CTV", "Femoral Head Lt", "Femoral Head RT", "PROS", "PTV", "Rectum",
    "Vessels - left", "Vessels - right", "X1", "X2", "X3", "XApprox", "optBladder", "optRectum",
)


@pytest.fixture(scope="module")
def eclipse_structures():
    folder = shared_data("eclipse-prostate-phantom")
    return read_structure_set(pydicom.dcmread(next(folder.glob("RS*.dcm"))))


def test_eclipse_rtstruct_parses(eclipse_structures):
    ss = eclipse_structures
    assert ss.roi_names == ECLIPSE_ROIS
    assert ss.roi("BODY").interpreted_type == "EXTERNAL" and ss.roi("PTV").number == 13
    assert not ss.roi("CTV").contours  # listed ROI without contours
    assert len(ss.roi("BODY").planes()) == 92 and ss.roi("Rectum").compute_plane_spacing_mm() == pytest.approx(2.5)
    for name, eclipse_cc in (("PTV", 48.6), ("Bladder", 116.8), ("Rectum", 30.3)):
        assert ss.roi(name).compute_volume_cc() == pytest.approx(eclipse_cc, rel=0.03)


def read_eclipse_table(roi_column: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(dose Gy, cumulative % volume, volume cc) of one ROI from Eclipse's exported DVH table."""
    path = shared_data("eclipse-prostate-phantom", "aux", "EclipseProstate_DvhTable_Eclipse.csv")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    j = header.index(f"{roi_column}_DvhArray Dose (Gy)")
    volume_cc = float(re.search(r"% of ([\d.]+) cc", header[j + 1]).group(1))
    pairs = [(float(r[j]), float(r[j + 1])) for r in rows[1:] if len(r) > j + 1 and r[j] and r[j + 1]]
    dose, percent = np.array(pairs).T
    return dose, percent, volume_cc


@pytest.mark.parametrize(("roi", "column"), [("PTV", "PTV"), ("Bladder", "Bladder"), ("Rectum", "Rectum")])
def test_dvh_agrees_with_eclipse(eclipse_structures, roi, column):
    """DVH from the NRRD export of the Eclipse dose vs Eclipse's own table: volume 3 %, D95/D50/mean 2 %."""
    dose = read_nrrd_dose(shared_data("eclipse-prostate-phantom", "aux", "EclipseProstate_Dose.nrrd"))
    dvh = compute_roi_dvh(eclipse_structures, roi, dose)
    table_dose, table_percent, table_cc = read_eclipse_table(column)
    assert dvh.uncovered_volume_cc == 0.0
    assert dvh.volume_cc == pytest.approx(table_cc, rel=0.03)
    table_mean = float(np.sum(-np.diff(table_percent) / 100.0 * (table_dose[1:] + table_dose[:-1]) / 2.0))
    assert dvh.mean_gy == pytest.approx(table_mean, rel=0.02)
    for x in (95.0, 50.0):
        eclipse_dx = float(np.interp(-x, -table_percent, table_dose))
        assert compute_metric(dvh, f"D{x:g}%[Gy]") == pytest.approx(eclipse_dx, rel=0.02)


def test_raystation_files_parse():
    folder = shared_data("dcpt-proton-phantom", "plan3_ramped_2022_ramp_10cm")
    ss = read_structure_set(pydicom.dcmread(next(folder.glob("RS*.dcm"))))
    assert "Cube101010" in ss.roi_names and "External" in ss.roi_names
    dose = read_dose(pydicom.dcmread(next(folder.glob("RD*.dcm"))))
    assert dose.dose_gy.shape == (113, 110, 113)  # frames, rows, columns
    assert (dose.dose_type, dose.dose_summation_type, dose.dose_units) == ("PHYSICAL", "PLAN", "GY")
    assert dose.spacing_mm[2] == pytest.approx(2.0) and dose.max_dose_gy > 0.0
    dvh = compute_roi_dvh(ss, "Cube101010", dose)
    # A 10 cm cube contoured on 21 planes z = -50..50 mm: the slab convention (each plane stands
    # for +-2.5 mm) gives 10 x 10 x 10.5 cm; RayStation itself would report 1000 cc.
    assert ss.roi("Cube101010").compute_volume_cc() == pytest.approx(1050.0, rel=1e-3)
    assert dvh.total_volume_cc == pytest.approx(1050.0, rel=0.01)
    assert dvh.uncovered_volume_cc == pytest.approx(0.0, abs=1.0)


@pytest.mark.parametrize("folder", ["plan03_ramp_full", "plan06_sobp_4d", "plan3_ramped_2022_reference"])
def test_raystation_doses_parse(folder):
    for path in shared_data("dcpt-proton-phantom", folder).glob("RD*.dcm"):
        dose = read_dose(pydicom.dcmread(path))
        assert dose.dose_gy.ndim == 3 and np.isfinite(dose.dose_gy).all() and dose.max_dose_gy > 0.0
