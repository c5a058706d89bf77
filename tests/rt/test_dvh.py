"""rt.dvh: DVHs and TG-263 metrics against the phantom's closed-form truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from oncopacs.phantom import Sphere, build_demo_patient, centred_grid
from oncopacs.phantom.truth import compute_dose_at_volume_gy, compute_mean_dose_gy
from rt.dose import read_dose
from rt.dvh import compute_dvh, compute_metric, compute_metrics, compute_roi_dvh
from rt.errors import GeometryError, MetricError, RTError
from rt.structures import read_structure_set
from tests.rt.helpers import build_structure_set, reorient_dose, sphere_contours

#: 2 mm CT planes (contours close to the solids) and a 3 mm dose grid covering every organ.
FINE_CT = centred_grid((75, 100, 100), (2.0, 2.0, 2.0))
WIDE_DOSE = centred_grid((61, 61, 61), (3.0, 3.0, 3.0))


@pytest.fixture(scope="module")
def fine_phantom():
    return build_demo_patient(ct_grid=FINE_CT, dose_grid=WIDE_DOSE)


@pytest.fixture(scope="module")
def phantom():
    return build_demo_patient()


def close(value: float, truth: float) -> bool:
    """Within 1 % or 0.1 Gy."""
    return abs(value - truth) <= max(0.01 * abs(truth), 0.1)


# -- compute_dvh and the metric parser on hand-made data ---------------------------------------------


def uniform_dvh():
    """Ten 1 cc voxels with doses 1..10 Gy; the last one half inside the ROI."""
    weights = np.ones(10)
    weights[-1] = 0.5
    return compute_dvh(weights, np.arange(1.0, 11.0), 1.0, bin_width_gy=0.5, roi_name="Toy")


def test_compute_dvh_volumes_and_statistics():
    dvh = uniform_dvh()
    assert dvh.volume_cc == pytest.approx(9.5)
    assert (dvh.min_gy, dvh.max_gy) == (1.0, 10.0)
    assert dvh.mean_gy == pytest.approx((45.0 + 5.0) / 9.5)
    assert dvh.differential_volume_cc.sum() == pytest.approx(9.5)
    assert dvh.cumulative_volume_cc[0] == pytest.approx(9.5)
    assert dvh.compute_volume_at_dose_cc(5.0) == pytest.approx(5.5)  # 5..9 Gy + half of 10 Gy
    assert dvh.compute_volume_at_dose_cc(10.5) == 0.0
    assert dvh.to_dict()["volume_cc"] == pytest.approx(9.5)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("Mean[Gy]", 50.0 / 9.5),
        ("Max[Gy]", 10.0),
        ("Min[Gy]", 1.0),
        ("V5Gy[cc]", 5.5),
        ("V5Gy[%]", 100 * 5.5 / 9.5),
        ("V50%[cc]", 5.5),  # 50 % of 10 Gy
        ("V95%[%]", 100 * 0.5 / 9.5),
        ("D0.5cc[Gy]", 10.0),
        ("D1.5cc[Gy]", 9.0),
        ("D0.03cc[Gy]", 10.0),
        ("Max[%]", 100.0),
        # 2 cc hottest: 10 Gy (0.5 cc), 9 Gy (1 cc), then 0.5 cc of the 8 Gy voxel, whose 1 cc is
        # spread uniformly over its bin [8, 8.5) Gy -> 8.25 Gy.
        ("D2cc[%]", 82.5),
    ],
)
def test_metrics(metric, expected):
    assert compute_metric(uniform_dvh(), metric, prescription_gy=10.0) == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize(
    "metric", ["D95", "D95%", "d95%[Gy]", "V20[%]", "Mean", "Mean[cc]", "D95%[cc]", "V20Gy[Gy]", "DVH", "D-5%[Gy]", ""]
)
def test_malformed_metrics_raise(metric):
    with pytest.raises(MetricError):
        compute_metric(uniform_dvh(), metric)


def test_relative_metrics_need_a_prescription_and_volumes_must_fit():
    dvh = uniform_dvh()
    with pytest.raises(MetricError, match="prescription"):
        compute_metric(dvh, "V95%[%]")
    with pytest.raises(MetricError, match="exceeds the volume"):
        compute_metric(dvh, "D20cc[Gy]")
    assert compute_metrics(dvh, ["Max[Gy]", "Min[Gy]"]) == {"Max[Gy]": 10.0, "Min[Gy]": 1.0}


def test_compute_dvh_rejects_bad_input():
    with pytest.raises(GeometryError):
        compute_dvh(np.ones(3), np.ones(4), 1.0)
    with pytest.raises(GeometryError, match="NaN"):
        compute_dvh(np.ones(2), np.array([1.0, np.nan]), 1.0)
    with pytest.raises(RTError, match="no volume"):
        compute_dvh(np.zeros(2), np.ones(2), 1.0)


# -- against the phantom's closed-form truth -----------------------------------------------------------

CASES = [
    ("PTV", ["D95", "D50", "D2"]),
    ("Bladder", ["D2", "D10"]),
    ("Rectum", ["D50", "D20", "D2"]),
]


@pytest.mark.parametrize(("name", "dx"), CASES)
def test_dvh_matches_analytic_truth(fine_phantom, name, dx):
    truth = fine_phantom.truth
    ss = read_structure_set(fine_phantom.rtstruct)
    dvh = compute_roi_dvh(ss, name, read_dose(fine_phantom.rt_dose))
    assert dvh.uncovered_volume_cc == 0.0
    assert dvh.volume_cc == pytest.approx(truth.compute_volume_cc(name), rel=0.02)
    assert close(dvh.mean_gy, truth.compute_mean_dose_gy(name))
    assert close(compute_metric(dvh, "Mean[Gy]"), truth.compute_mean_dose_gy(name))
    for metric in dx:
        value = compute_metric(dvh, f"{metric}%[Gy]")
        assert close(value, truth.compute_dose_at_volume_gy(name, float(metric[1:]))), (metric, value)
    # (Near the PTV's 63.6 Gy plateau edge the cumulative DVH is steep and the 3 mm grid's
    # trilinear interpolation rounds the kink: V60Gy is 95.7 % vs 97.0 %, so check 10..50 Gy.)
    for dose_gy in (10.0, 20.0, 30.0, 40.0, 50.0):
        fraction = compute_metric(dvh, f"V{dose_gy:g}Gy[%]") / 100.0
        assert fraction == pytest.approx(truth.compute_cumulative_dvh_fraction(name, dose_gy), abs=0.01)


def test_small_structure_dvh(fine_phantom):
    """A 6 mm-radius lesion in the fall-off (1 mm planes, 2.1 Gy/mm): volume 3 %, mean 1 %, D_x 2 %.

    Across such lesions the D95/D50/D2 errors are 0.1-0.5 Gy at 25-50 Gy, dominated by how the
    contour stack and a <= 0.75 mm sampling represent a 0.1 mm-thick cold shell.
    """
    centre, radius = (40.0, 0.0, 0.0), 6.0
    ss = read_structure_set(build_structure_set({"Lesion": sphere_contours(centre, radius, 1.0)}))
    dose = replace(read_dose(fine_phantom.rt_dose), frame_of_reference_uid="")  # hand-made RTSTRUCT: no shared FoR
    dvh = compute_roi_dvh(ss, "Lesion", dose)
    assert dvh.uncovered_volume_cc == 0.0
    assert dvh.volume_cc == pytest.approx(4.0 / 3.0 * np.pi * radius**3 / 1000.0, rel=0.03)
    lesion, model = Sphere(centre, radius), fine_phantom.truth.dose_model
    assert close(dvh.mean_gy, compute_mean_dose_gy(lesion, model))
    for percent in (95.0, 50.0, 2.0):
        value = compute_metric(dvh, f"D{percent:g}%[Gy]")
        assert value == pytest.approx(compute_dose_at_volume_gy(lesion, model, percent / 100.0), rel=0.02)


def test_truncated_dose_grid_reports_uncovered_volume(phantom):
    """The default 41^3 x 3 mm dose grid (|x|, |y|, |z| <= 61.5 mm) cuts the Bladder's anterior cap."""
    ss = read_structure_set(phantom.rtstruct)
    dvh = compute_roi_dvh(ss, "Bladder", read_dose(phantom.rt_dose))
    # Cap of the R = 25 mm sphere centred at y = -50 beyond y = -61.5: height 13.5 mm.
    cap_cc = np.pi * 13.5**2 * (3 * 25.0 - 13.5) / 3.0 / 1000.0
    assert dvh.uncovered_volume_cc == pytest.approx(cap_cc, rel=0.03)
    assert dvh.total_volume_cc == pytest.approx(phantom.truth.compute_contour_volume_cc("Bladder"), rel=0.01)
    assert compute_roi_dvh(ss, "PTV", read_dose(phantom.rt_dose)).uncovered_volume_cc == 0.0
    with pytest.raises(GeometryError, match="entirely outside"):
        compute_roi_dvh(ss, "SpinalCord", read_dose(phantom.rt_dose))


def test_frame_of_reference_mismatch_is_rejected(phantom):
    ss = read_structure_set(phantom.rtstruct)
    dose = replace(read_dose(phantom.rt_dose), frame_of_reference_uid="1.2.3")
    with pytest.raises(GeometryError, match="frame of reference"):
        compute_roi_dvh(ss, "PTV", dose)


@pytest.mark.parametrize(("orientation", "reverse_frames"), [("FFS", False), ("HFP", False), ("FFP", True)])
def test_dvh_independent_of_dose_orientation(fine_phantom, orientation, reverse_frames):
    ss = read_structure_set(fine_phantom.rtstruct)
    reference = compute_roi_dvh(ss, "Rectum", read_dose(fine_phantom.rt_dose))
    flipped = compute_roi_dvh(ss, "Rectum", read_dose(reorient_dose(fine_phantom.rt_dose, orientation, reverse_frames)))
    assert flipped.mean_gy == pytest.approx(reference.mean_gy, abs=1e-9)
    assert flipped.volume_cc == pytest.approx(reference.volume_cc, abs=1e-9)
    np.testing.assert_allclose(flipped.cumulative_volume_cc, reference.cumulative_volume_cc, atol=1e-9)


# -- the plane sampler: boundary-only refinement, dose reconstruction, the clinical-size case ----------


def test_trapezoid_quantiles_are_the_spread_of_a_linear_dose():
    from rt.dvh import _trapezoid_quantiles

    a, b = np.array([1.0, 0.5, 2.0, 0.0]), np.array([0.5, 0.5, 0.0, 0.0])
    q = _trapezoid_quantiles(a, b, 1000)
    np.testing.assert_allclose(q.mean(axis=1), 0.0, atol=1e-12)  # symmetric: the pixel keeps its mean dose
    rng = np.random.default_rng(1)
    for row, (ai, bi) in zip(q, zip(a, b, strict=True), strict=True):
        sampled = np.sort(rng.uniform(-ai, ai, 200_000) + rng.uniform(-bi, bi, 200_000))
        assert np.max(np.abs(np.quantile(sampled, (np.arange(1000) + 0.5) / 1000) - row)) < 0.02 * max(ai + bi, 1e-3)
    assert np.all(np.abs(q[3]) == 0.0)


def test_boundary_refinement_converges(fine_phantom):
    """Boundary pixels split 4 x 4 and 8 samples per whole pixel (defaults) agree with 12 x 12 and 32.

    Within 0.5 % or 0.1 Gy.
    """
    ss, dose = read_structure_set(fine_phantom.rtstruct), read_dose(fine_phantom.rt_dose)
    for name in ("Rectum", "PTV"):
        default = compute_roi_dvh(ss, name, dose)
        fine = compute_roi_dvh(ss, name, dose, supersampling=12, full_samples=32)
        assert default.volume_cc == pytest.approx(fine.volume_cc, rel=2e-3)
        assert default.mean_gy == pytest.approx(fine.mean_gy, abs=0.02)
        for metric in ("D95%[Gy]", "D50%[Gy]", "D2%[Gy]"):
            reference = compute_metric(fine, metric)
            assert compute_metric(default, metric) == pytest.approx(reference, abs=max(0.1, 0.005 * reference)), metric


def test_reconstruction_never_overshoots_a_plateau(fine_phantom):
    """Limited slopes: no sample above the grid's maximum (63.6 Gy plateau) nor below 0 Gy."""
    ss, dose = read_structure_set(fine_phantom.rtstruct), read_dose(fine_phantom.rt_dose)
    for name in ("PTV", "BODY", "Bladder"):
        dvh = compute_roi_dvh(ss, name, dose)
        assert dvh.max_gy <= dose.max_dose_gy + 1e-9 and dvh.min_gy >= 0.0


@pytest.fixture(scope="module")
def clinical_case():
    """The clinical-size case's 25 structures and 2.5 mm dose, on a coarser 4 mm-pixel CT (2 mm planes)."""
    from oncopacs.phantom.clinical import build_clinical_case

    return build_clinical_case(ct_grid=centred_grid((150, 128, 128), (4.0, 4.0, 2.0)))


def test_clinical_case_every_roi_within_tolerance(clinical_case):
    """All 25 ROIs (spheres, shells, ellipsoids, cylinders; radii 4-160 mm): volume 2 % (small 3 %),
    mean / D95 / D50 / D2 within 1 % or 0.1 Gy of the closed form (0.3 Gy for lesions <= 8 mm)."""
    ss, dose, truth = read_structure_set(clinical_case.rtstruct), read_dose(clinical_case.rt_dose), clinical_case.truth
    assert len(ss.rois) == 25
    for roi in ss.rois:
        dvh = compute_roi_dvh(ss, roi.name, dose)
        small = truth.compute_volume_cc(roi.name) < 3.5
        assert dvh.uncovered_volume_cc == 0.0
        assert dvh.volume_cc == pytest.approx(truth.compute_volume_cc(roi.name), rel=0.03 if small else 0.02), roi.name
        floor = 0.3 if small else 0.1
        pairs = [(dvh.mean_gy, truth.compute_mean_dose_gy(roi.name), "mean")] + [
            (compute_metric(dvh, f"D{x}%[Gy]"), truth.compute_dose_at_volume_gy(roi.name, x), f"D{x}")
            for x in (95, 50, 2)
        ]
        for value, expected, label in pairs:
            assert abs(value - expected) <= max(0.01 * abs(expected), floor), (roi.name, label, value, expected)


# -- the vectorised sampler: shells, small spheres, max dose over the structure --------------------------


def shell_contours(centre, inner: float, outer: float, plane_spacing: float) -> list:
    """A spherical shell: per plane the outer circle and, where the hole reaches, the inner one (even-odd hole)."""
    items = sphere_contours(centre, outer, plane_spacing)
    items += sphere_contours(centre, inner, plane_spacing)
    return items


@pytest.fixture(scope="module")
def fine_dose(fine_phantom):
    return replace(read_dose(fine_phantom.rt_dose), frame_of_reference_uid="")  # hand-made RTSTRUCTs: no shared FoR


def test_max_dose_in_a_shell_is_a_dose_the_shell_receives(fine_phantom, fine_dose):
    """A shell around the dose centre in the fall-off: its maximum is at its inner surface, never the hole's dose."""
    from oncopacs.phantom.shapes import Shell
    from oncopacs.phantom.truth import compute_max_dose_gy

    centre, inner, outer = (0.0, 0.0, 0.0), 45.0, 58.0
    model = fine_phantom.truth.dose_model
    ss = read_structure_set(build_structure_set({"Ring": shell_contours(centre, inner, outer, 2.0)}))
    dvh = compute_roi_dvh(ss, "Ring", fine_dose)
    truth_max = compute_max_dose_gy(Shell(centre, inner, outer), model)
    assert dvh.max_gy <= truth_max + 0.3  # samples lie in the shell, within 0.15 mm of it at 2.1 Gy/mm
    assert dvh.max_gy >= truth_max - 0.5
    exact = 4.0 / 3.0 * np.pi * (outer**3 - inner**3) / 1000.0
    assert dvh.volume_cc == pytest.approx(exact, rel=0.01)
    assert close(dvh.mean_gy, compute_mean_dose_gy(Shell(centre, inner, outer), model))


@pytest.mark.parametrize("radius", [4.0, 5.0, 7.0])
def test_small_sphere_volume_is_the_contour_stack_volume(fine_dose, radius):
    """Small spheres off the grid's axes: the DVH volume is the exact polygon-stack volume (area x plane spacing)."""
    centre = (31.3, -17.6, 3.3)
    ss = read_structure_set(build_structure_set({"Small": sphere_contours(centre, radius, 1.0)}))
    dvh = compute_roi_dvh(ss, "Small", fine_dose)
    # (the in-plane area is integrated on 4 scanlines per 3 mm pixel row: within 0.5 % for r >= 4 mm)
    assert dvh.total_volume_cc == pytest.approx(ss.roi("Small").compute_volume_cc(), rel=5e-3)
    assert dvh.volume_cc == pytest.approx(4.0 / 3.0 * np.pi * radius**3 / 1000.0, rel=0.03)


def test_off_centre_sphere_in_a_gradient_d50(fine_phantom, fine_dose):
    """D50 / mean of an 8 mm sphere off the dose centre, in the linear fall-off, off the dose-grid's pixel centres."""
    centre, radius = (-28.7, 33.1, -6.4), 8.0
    lesion, model = Sphere(centre, radius), fine_phantom.truth.dose_model
    ss = read_structure_set(build_structure_set({"Lesion": sphere_contours(centre, radius, 2.0)}))
    dvh = compute_roi_dvh(ss, "Lesion", fine_dose)
    assert close(dvh.mean_gy, compute_mean_dose_gy(lesion, model))
    assert compute_metric(dvh, "D50%[Gy]") == pytest.approx(compute_dose_at_volume_gy(lesion, model, 0.5), abs=0.2)
    assert dvh.max_gy <= fine_dose.max_dose_gy


def test_dose_outside_its_support_is_skipped_but_counted(fine_phantom, fine_dose):
    """Cells far from any dose add their volume at 0 Gy; the BODY beyond the grid is reported as uncovered."""
    support = fine_dose.compute_support()
    assert support is not None and fine_dose.compute_near_dose_mask().shape == fine_dose.dose_gy.shape
    ss = read_structure_set(fine_phantom.rtstruct)
    dvh = compute_roi_dvh(ss, "BODY", read_dose(fine_phantom.rt_dose))
    assert dvh.total_volume_cc == pytest.approx(ss.roi("BODY").compute_volume_cc(), rel=1e-3)
    assert dvh.uncovered_volume_cc > 0.0 and dvh.min_gy == 0.0
    assert dvh.mean_gy * dvh.volume_cc == pytest.approx(  # all dose inside the body lies in the grid
        fine_phantom.truth.compute_mean_dose_gy("BODY") * fine_phantom.truth.compute_volume_cc("BODY"), rel=0.01)


def test_sphere_across_the_edge_of_the_dose_support(fine_phantom, fine_dose):
    """A 12 mm sphere straddling the fall-off's end (dose max(0, linear), a kink between dose pixels):
    the pixels beside undosed ones keep their inner slope, so the low-dose DVH and the mean stay on
    the closed form (a symmetric limiter smears 2-3 % of the volume from 1-3 Gy to below 1 Gy)."""
    from oncopacs.phantom.truth import compute_cumulative_dvh_fraction

    model = fine_phantom.truth.dose_model
    centre = (model.falloff_radius_mm - 2.0, 0.0, -1.7)
    lesion = Sphere(centre, 12.0)
    ss = read_structure_set(build_structure_set({"Edge": sphere_contours(centre, 12.0, 2.0)}))
    dvh = compute_roi_dvh(ss, "Edge", fine_dose)
    assert dvh.mean_gy == pytest.approx(compute_mean_dose_gy(lesion, model), abs=0.05)
    for dose_gy in (1.0, 2.0, 3.0):
        expected = 100.0 * compute_cumulative_dvh_fraction(lesion, model, dose_gy)
        assert compute_metric(dvh, f"V{dose_gy:g}Gy[%]") == pytest.approx(expected, abs=1.0), dose_gy


@pytest.mark.parametrize(("centre", "radius"), [((0.0, 20.0, -40.0), 9.0), ((12.3, -25.1, 30.7), 6.0),
                                                ((-30.2, 18.4, -20.5), 9.0)])
def test_small_sphere_tail_doses_on_interpolated_sections(fine_dose, fine_phantom, centre, radius):
    """Small ROIs are sampled on shape-interpolated sections, not slabs: D2 / D50 / D98 within 0.05 Gy
    (one slab per plane puts the near-maximum 0.06-0.27 Gy off at a sphere's tapering ends)."""
    lesion, model = Sphere(centre, radius), fine_phantom.truth.dose_model
    ss = read_structure_set(build_structure_set({"Lesion": sphere_contours(centre, radius, 2.0)}))
    dvh = compute_roi_dvh(ss, "Lesion", fine_dose)
    for x in (2, 50, 98):
        expected = compute_dose_at_volume_gy(lesion, model, x / 100.0)
        assert compute_metric(dvh, f"D{x}%[Gy]") == pytest.approx(expected, abs=0.05), x
