"""rt.indices: HI, Paddick/RTOG CI and gEUD against closed forms on toy DVHs and the phantom."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncopacs.phantom import build_demo_patient, centred_grid
from rt.dose import read_dose
from rt.dvh import compute_dvh, compute_roi_dvh
from rt.errors import MetricError, RTError
from rt.indices import (
    compute_conformity_indices,
    compute_geud_gy,
    compute_homogeneity_index,
    compute_isodose_volume_cc,
    compute_paddick_ci,
    compute_rtog_ci,
)
from rt.structures import read_structure_set

PTV_RADIUS_MM, R0_MM, R1_MM, DMAX_GY = 30.0, 28.0, 58.0, 63.6


def ball_cc(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


def isodose_radius_mm(dose_gy: float) -> float:
    """r(d) = r1 - d / Dmax (r1 - r0): the ball receiving >= d."""
    return R1_MM - dose_gy / DMAX_GY * (R1_MM - R0_MM)


@pytest.fixture(scope="module")
def phantom():
    """2 mm CT planes (contours close to the sphere) and a 3 mm dose grid, as in test_dvh."""
    return build_demo_patient(ct_grid=centred_grid((75, 100, 100), (2.0, 2.0, 2.0)),
                              dose_grid=centred_grid((61, 61, 61), (3.0, 3.0, 3.0)))


@pytest.fixture(scope="module")
def ptv_and_dose(phantom):
    dose = read_dose(phantom.rt_dose)
    return compute_roi_dvh(read_structure_set(phantom.rtstruct), "PTV", dose), dose


# -- toy DVHs with exact values ---------------------------------------------------------------------


def toy_dvh():
    """1 cc at 10.25 Gy and 3 cc at 20.25 Gy (bin centres of 0.5 Gy bins)."""
    return compute_dvh(np.array([1.0, 3.0]), np.array([10.25, 20.25]), 1.0, bin_width_gy=0.5, roi_name="Toy")


@pytest.mark.parametrize("a", [1.0, 2.0, 8.0, -4.0, 0.5])
def test_geud_of_toy_dvh_is_exact(a):
    expected = ((1.0 * 10.25**a + 3.0 * 20.25**a) / 4.0) ** (1.0 / a)
    assert compute_geud_gy(toy_dvh(), a) == pytest.approx(expected, rel=1e-12)


def test_geud_limits_on_toy_dvh():
    dvh = toy_dvh()
    assert compute_geud_gy(dvh, 1.0) == pytest.approx(dvh.mean_gy, rel=1e-12)
    # (3/4)^(1/a) and (1/4)^(1/a) -> 1: within 0.2 % at |a| = 1000.
    assert compute_geud_gy(dvh, 1000.0) == pytest.approx(20.25, rel=2e-3)
    assert compute_geud_gy(dvh, -1000.0) == pytest.approx(10.25, rel=2e-3)
    with pytest.raises(MetricError):
        compute_geud_gy(dvh, 0.0)


def test_geud_of_a_dvh_reaching_zero_dose():
    dvh = compute_dvh(np.ones(2), np.array([0.0, 10.0]), 1.0, bin_width_gy=0.5)
    # Bin centres 0.25 Gy and 10.25 Gy clipped to Max = 10 Gy.
    assert compute_geud_gy(dvh, -2.0) == pytest.approx(((0.25**-2 + 10.0**-2) / 2.0) ** -0.5)
    assert compute_geud_gy(dvh, 1.0) == pytest.approx(5.125)  # Mean 5 Gy, off by half a bin


def test_homogeneity_index_of_toy_dvh():
    """100 voxels of 1 cc at 1..100 Gy (bin centres): D2 = 99, D98 = 3, D50 = 51 Gy on the linear DVH."""
    doses = np.arange(1, 101) - 0.5
    dvh = compute_dvh(np.ones(100), doses, 1.0, bin_width_gy=1.0)
    d2, d98, d50 = (dvh.compute_dose_at_volume_gy(v) for v in (2.0, 98.0, 50.0))
    assert (d2, d98, d50) == pytest.approx((98.0, 2.0, 50.0))
    assert compute_homogeneity_index(dvh) == pytest.approx((98.0 - 2.0) / 50.0)


def test_conformity_indices_of_toy_dvh():
    dvh = compute_dvh(np.ones(10), np.array([0.25] * 2 + [60.25] * 8), 1.0, bin_width_gy=0.5, roi_name="T")
    indices = compute_conformity_indices(dvh, 60.0, isodose_volume_cc=16.0)
    # TV = 10, TV_PIV = 8, PIV = 16: Paddick 64 / 160, RTOG 1.6.
    assert indices.paddick_ci == pytest.approx(0.4)
    assert indices.rtog_ci == pytest.approx(1.6)
    assert (indices.coverage, indices.selectivity) == pytest.approx((0.8, 0.5))
    assert indices.to_dict()["paddick_ci"] == pytest.approx(0.4)
    assert compute_paddick_ci(dvh, 60.0, 16.0) == pytest.approx(0.4)
    assert compute_rtog_ci(dvh, 16.0) == pytest.approx(1.6)
    with pytest.raises(RTError, match="exceeds"):
        compute_conformity_indices(dvh, 60.0, isodose_volume_cc=4.0)
    with pytest.raises(MetricError):
        compute_conformity_indices(dvh, 0.0, isodose_volume_cc=4.0)


# -- the phantom: PTV sphere R = 30 mm, 63.6 Gy plateau to 28 mm, 0 Gy at 58 mm ----------------------


def test_ptv_homogeneity_index_matches_truth(phantom, ptv_and_dose):
    ptv, _ = ptv_and_dose
    truth = phantom.truth
    d2, d98, d50 = (truth.compute_dose_at_volume_gy("PTV", x) for x in (2.0, 98.0, 50.0))
    expected = (d2 - d98) / d50
    # Closed form: D2 = D50 = 63.6 Gy (plateau), D98 at r = 30 * 0.98^(1/3) mm.
    assert expected == pytest.approx(
        (DMAX_GY - DMAX_GY * (R1_MM - PTV_RADIUS_MM * 0.98 ** (1 / 3)) / (R1_MM - R0_MM)) / DMAX_GY, rel=1e-9
    )
    assert compute_homogeneity_index(ptv) == pytest.approx(expected, abs=0.01)


def test_ptv_geud_limits(ptv_and_dose):
    ptv, _ = ptv_and_dose
    assert compute_geud_gy(ptv, 1.0) == pytest.approx(ptv.mean_gy, abs=ptv.bin_width_gy)
    assert compute_geud_gy(ptv, 500.0) == pytest.approx(ptv.max_gy, rel=0.005)
    assert compute_geud_gy(ptv, -20000.0) == pytest.approx(ptv.min_gy, rel=0.01)
    # Monotone in a.
    values = [compute_geud_gy(ptv, a) for a in (-20.0, -5.0, 1.0, 5.0, 20.0)]
    assert values == sorted(values)


@pytest.mark.parametrize("prescription_gy", [30.0, 45.0, 50.0])
def test_paddick_ci_for_a_spherical_isodose(ptv_and_dose, prescription_gy):
    """Isodose ball r(d) > R contains the whole PTV: TV_PIV = TV, Paddick = (R / r)^3 = 1 / RTOG."""
    ptv, dose = ptv_and_dose
    r = isodose_radius_mm(prescription_gy)
    assert r > PTV_RADIUS_MM
    piv = compute_isodose_volume_cc(dose, prescription_gy)
    assert piv == pytest.approx(ball_cc(r), rel=0.02)
    indices = compute_conformity_indices(ptv, prescription_gy, piv)
    assert indices.coverage == pytest.approx(1.0, abs=1e-3)
    assert indices.paddick_ci == pytest.approx((PTV_RADIUS_MM / r) ** 3, rel=0.03)
    assert indices.rtog_ci == pytest.approx((r / PTV_RADIUS_MM) ** 3, rel=0.03)


def test_isodose_volume_needs_a_positive_level(ptv_and_dose):
    with pytest.raises(ValueError):
        compute_isodose_volume_cc(ptv_and_dose[1], 0.0)
