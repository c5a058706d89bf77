"""rt.compare: plan-vs-plan DVH metric comparison."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from oncopacs.phantom import build_demo_patient
from rt.compare import compare_plans
from rt.dose import read_dose
from rt.errors import GeometryError, MetricError
from rt.structures import read_structure_set

METRICS = ["Mean[Gy]", "Max[Gy]", "D95%[Gy]", "V20Gy[%]", "D95%[%]"]


@pytest.fixture(scope="module")
def setup():
    p = build_demo_patient()
    return read_structure_set(p.rtstruct), read_dose(p.rt_dose)


def test_dose_against_itself_gives_zero_deltas(setup):
    ss, dose = setup
    comparison = compare_plans(ss, dose, dose, ["PTV", "Rectum"], METRICS, prescription_gy=60.0)
    assert len(comparison.metrics) == 2 * len(METRICS)
    for m in comparison.metrics:
        assert m.delta == 0.0, m
    data = json.loads(json.dumps(comparison.to_dict()))
    ptv = data["rois"][0]
    assert ptv["roi_name"] == "PTV" and ptv["dvh"]["volume_a_cc"] == ptv["dvh"]["volume_b_cc"]
    assert len(ptv["dvh"]["dose_gy"]) == len(ptv["dvh"]["volume_a_percent"])
    assert ptv["metrics"][0] == {"roi_name": "PTV", "metric": "Mean[Gy]", "unit": "Gy", "a": ptv["metrics"][0]["a"],
                                 "b": ptv["metrics"][0]["a"], "delta": 0.0, "error": ""}


def test_scaled_dose_scales_mean(setup):
    ss, dose = setup
    boosted = replace(dose, dose_gy=dose.dose_gy * 1.1)
    comparison = compare_plans(ss, dose, boosted, ["PTV", "Rectum"], ["Mean[Gy]", "Max[Gy]"])
    for roi in ("PTV", "Rectum"):
        mean = comparison.get(roi, "Mean[Gy]")
        assert mean.value_b == pytest.approx(1.1 * mean.value_a, rel=1e-9)
        assert mean.delta == pytest.approx(0.1 * mean.value_a, rel=1e-9)
    arrays = comparison.roi("PTV").compute_dvh_arrays()
    assert arrays["volume_b_cc"].size == arrays["dose_gy"].size > arrays["volume_a_cc"].nonzero()[0].size


def test_unevaluable_rois_and_metrics_are_reported(setup):
    ss, dose = setup
    comparison = compare_plans(ss, dose, dose, ["SpinalCord", "Femur_Head_L", "Rectum"], ["D2000cc[Gy]", "V95%[%]"])
    assert "outside the dose grid" in comparison.roi("SpinalCord").error
    assert "no ROI" in comparison.roi("Femur_Head_L").error
    assert comparison.roi("SpinalCord").to_dict()["dvh"] == {}
    big = comparison.get("Rectum", "D2000cc[Gy]")
    assert big.value_a is None and big.delta is None and "exceeds" in big.error
    assert "prescription" in comparison.get("Rectum", "V95%[%]").error


def test_frames_of_reference_must_match(setup):
    ss, dose = setup
    with pytest.raises(GeometryError, match="frame of reference"):
        compare_plans(ss, dose, replace(dose, frame_of_reference_uid="1.2.3"), ["PTV"], ["Mean[Gy]"])
    with pytest.raises(GeometryError, match="frame of reference"):
        other = replace(dose, frame_of_reference_uid="1.2.3")
        compare_plans(ss, other, other, ["PTV"], ["Mean[Gy]"])
    with pytest.raises(MetricError):
        compare_plans(ss, dose, dose, ["PTV"], ["D95[Gy]"])
