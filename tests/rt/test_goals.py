"""rt.goals: shipped clinical goal templates and their evaluation on the phantom."""

from __future__ import annotations

import json

import pytest

from oncopacs.phantom import build_demo_patient
from rt.dose import read_dose
from rt.dvh import compute_roi_dvh
from rt.errors import RTError
from rt.goals import (
    FAIL,
    NOT_EVALUATED,
    PASS,
    WITHIN_TOLERANCE,
    evaluate_goals,
    list_templates,
    load_template,
    parse_template,
    read_template,
)
from rt.structures import read_structure_set

RX_GY = 60.0


@pytest.fixture(scope="module")
def dvhs():
    p = build_demo_patient()
    ss, dose = read_structure_set(p.rtstruct), read_dose(p.rt_dose)
    return {name: compute_roi_dvh(ss, name, dose) for name in ("BODY", "PTV", "Bladder", "Rectum")}


def goal(**overrides) -> dict:
    return {"roi": "PTV", "metric": "D95%[%]", "comparator": ">=", "value": 95, **overrides}


def template(*goals: dict) -> dict:
    return {"name": "custom", "goals": list(goals)}


def test_every_shipped_template_loads_and_validates():
    names = list_templates()
    assert {"prostate", "lung", "head_and_neck", "proton_generic"} <= set(names)
    for name in names:
        t = load_template(name)
        assert t.name == name and t.goals
        assert json.loads(json.dumps(t.to_dict()))["goals"][0]["metric"] == t.goals[0].metric
        for g in t.goals:
            assert g.source and g.description


def test_prostate_template_ptv_coverage_passes_on_phantom(dvhs):
    results = evaluate_goals(load_template("prostate"), dvhs, RX_GY)
    coverage = next(r for r in results if r.goal.roi == "PTV" and r.goal.metric == "D95%[%]")
    assert coverage.status == PASS and coverage.roi_name == "PTV"
    assert coverage.unit == "%" and coverage.measured_value == pytest.approx(100.7, abs=1.0)  # truth 60.42 Gy
    femoral = next(r for r in results if r.goal.roi == "Femur_Head_L")
    assert femoral.status == NOT_EVALUATED and "not found" in femoral.reason and femoral.measured_value is None
    rectum = [r for r in results if r.goal.roi == "Rectum"]
    assert rectum and all(r.status == PASS for r in rectum)
    assert all(r.to_dict()["status"] == r.status for r in results)


def test_strict_goal_fails_and_tolerance_band(dvhs):
    t = parse_template(
        template(
            goal(metric="D95%[Gy]", value=61.0),  # D95 ~ 60.5 Gy (truth 60.42): fails, no tolerance
            goal(metric="D95%[Gy]", value=61.0, tolerance=59.0),  # within tolerance
            goal(metric="D95%[Gy]", value=61.0, tolerance=60.8),  # misses both
            goal(roi="rectum", metric="Mean[Gy]", comparator="<", value=20.0),  # case-insensitive ROI
        )
    )
    statuses = [r.status for r in evaluate_goals(t, dvhs, RX_GY)]
    assert statuses == [FAIL, WITHIN_TOLERANCE, FAIL, PASS]


def test_aliases_missing_roi_and_missing_prescription(dvhs):
    t = parse_template(
        template(
            goal(roi="PTV_High", aliases=["ptv"], metric="Max[Gy]", comparator="<=", value=70),
            goal(roi="Lungs", aliases=["Lung_Total"], metric="V20Gy[%]", comparator="<=", value=35),
            goal(),  # needs the prescription
        )
    )
    results = evaluate_goals(t, dvhs, None)
    assert results[0].status == PASS and results[0].roi_name == "PTV" and results[0].unit == "Gy"
    assert results[1].status == NOT_EVALUATED and "Lungs" in results[1].reason
    assert results[2].status == NOT_EVALUATED and "prescription" in results[2].reason


def test_uncovered_roi_volume_is_noted(dvhs):
    t = parse_template(template(goal(roi="Bladder", metric="Mean[Gy]", comparator="<=", value=40)))
    (result,) = evaluate_goals(t, dvhs, RX_GY)
    assert result.status == PASS and "outside the dose grid" in result.note


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (goal(comparator="=="), "unknown comparator"),
        (goal(metric="D95[Gy]"), "malformed metric"),
        (goal(metric="V20Gy[Gy]"), "volume"),
        (goal(value="95"), "value"),
        (goal(tolerance=97), "stricter"),
        (goal(priority=0), "priority"),
        (goal(colour="red"), "unknown keys"),
    ],
)
def test_malformed_goal_names_file_and_goal(tmp_path, bad, message):
    path = tmp_path / "site.json"
    path.write_text(json.dumps(template(goal(), bad)))
    with pytest.raises(RTError, match=message) as info:
        read_template(path)
    assert "site.json" in str(info.value) and "goal #2" in str(info.value)


def test_unknown_or_invalid_template_name():
    with pytest.raises(RTError, match="no goal template"):
        load_template("pancreas")
    with pytest.raises(RTError, match="invalid"):
        load_template("../errors")


def test_unavailable_roi_dose_unit_and_dose_problem(dvhs):
    t = parse_template(template(goal(roi="SpinalCord", aliases=["Cord"], metric="Max[Gy]", comparator="<=", value=45),
                                goal(roi="PTV", metric="Mean[Gy]", comparator=">=", value=50)))
    cord, ptv = evaluate_goals(t, dvhs, RX_GY, unavailable={"Spinal Cord": "lies entirely outside the dose grid"},
                               dose_unit="Gy(RBE)")
    assert cord.status == NOT_EVALUATED and (cord.roi_name, cord.match_rule) == ("Spinal Cord", "TG-263")
    assert cord.reason == "ROI 'Spinal Cord' lies entirely outside the dose grid" and cord.unit == "Gy(RBE)"
    assert ptv.status == PASS and ptv.unit == "Gy(RBE)" and ptv.to_dict()["template_roi"] == "PTV"
    (beam,) = evaluate_goals(parse_template(template(goal())), dvhs, RX_GY, dose_problem="a BEAM dose")
    assert beam.status == NOT_EVALUATED and beam.reason == "a BEAM dose" and beam.roi_name == "PTV"
    assert beam.unit == "%"
