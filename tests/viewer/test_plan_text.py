"""Goals, reasons, prescriptions and beams in the words the plan page and the plan report both use."""

from __future__ import annotations

import numpy as np

from oncopacs.viewer.plan_text import (
    beam_rows,
    colour_on_white,
    count_statuses,
    describe_counts,
    describe_goal,
    describe_metric,
    describe_prescription,
    describe_reason,
    describe_tolerance,
    describe_value,
    goal_rows,
)
from rt.dvh import compute_dvh
from rt.goals import ClinicalGoal, GoalTemplate, evaluate_goals


def _goal(metric: str, comparator: str, value: float, tolerance: float | None = None) -> dict:
    return ClinicalGoal("PTV", metric, comparator, value, tolerance).to_dict()


def test_goals_read_as_people_write_them():
    assert describe_goal(_goal("Max[%]", "<=", 110)) == "Max ≤ 110 %"
    assert describe_goal(_goal("D95%[%]", ">=", 95)) == "D95% ≥ 95 %"
    assert describe_goal(_goal("Mean[Gy]", "<", 20.5), "Gy(RBE)") == "Mean < 20.5 Gy(RBE)"
    assert describe_goal(_goal("V70Gy[%]", "<=", 20), "Gy(RBE)") == "V70 Gy(RBE) ≤ 20 %"
    assert describe_goal(_goal("D2cc[Gy]", "<=", 50)) == "D2cc ≤ 50 Gy"
    assert describe_goal(_goal("V20Gy[cc]", ">", 2.5)) == "V20 Gy > 2.5 cc"
    assert describe_tolerance(_goal("Max[%]", "<=", 110, 115)) == "≤ 115 %"
    assert describe_tolerance(_goal("Max[%]", "<=", 110)) == ""
    assert describe_metric("Max[Gy]", "Gy(RBE)") == ("Max", "Gy(RBE)")
    assert describe_value(57.312, "Gy(RBE)") == "57.31 Gy(RBE)" and describe_value(101.25, "%") == "101.2 %"
    assert describe_value(None, "%") == "—"


def test_reasons_for_people_not_engine_messages():
    assert describe_reason({"reason": "ROI 'CTV' (or aliases ['CTV_High']) not found"}) == \
        "no structure CTV in the structure set"
    outside = "ROI 'SpinalCord' lies entirely outside the dose grid (11.86 cc): not evaluable"
    assert describe_reason({"reason": outside}) == "outside the dose grid"
    assert describe_reason({"reason": "ROI 'X' has no closed planar contour: not evaluable"}) == \
        "the structure has no closed contour"
    assert describe_reason({"reason": "2 cc exceeds the volume of ROI 'Lens' (0.2 cc)"}) == \
        "the structure (0.2 cc) is smaller than 2 cc"
    assert describe_reason({"reason": "'D95%[%]' is relative to the prescription; pass prescription_gy > 0"}) == \
        "needs a prescription dose"
    assert describe_reason({"reason": "", "note": "2.9e+03 cc of BODY lies outside the dose grid"}) == \
        "2900 cc of BODY outside the dose grid"
    assert "not_" not in describe_reason({"reason": "something not_evaluable"})


def test_goal_rows_of_an_evaluated_template_in_the_dose_unit():
    template = GoalTemplate("t", (ClinicalGoal("PTV", "D95%[%]", ">=", 95.0, 93.0),
                                  ClinicalGoal("SpinalCord", "Max[Gy]", "<=", 45.0),
                                  ClinicalGoal("Lens", "Max[Gy]", "<=", 7.0)))
    ptv = compute_dvh(np.ones(100), np.linspace(58.0, 62.0, 100), 1.0, roi_name="PTV")  # D95% ~ 97 %
    cord = compute_dvh(np.ones(10), np.full(10, 50.0), 1.0, roi_name="SpinalCord")  # max 50 Gy(RBE) > 45
    results = evaluate_goals(template, {"PTV": ptv, "SpinalCord": cord}, 60.0, dose_unit="Gy(RBE)",
                             unavailable={"Lens": "lies entirely outside the dose grid (0.1 cc): not evaluable"})
    document = {"dose_unit": "Gy(RBE)", "goals": [r.to_dict() for r in results]}
    rows = goal_rows(document)
    assert [r.goal for r in rows] == ["D95% ≥ 95 %", "Max ≤ 45 Gy(RBE)", "Max ≤ 7 Gy(RBE)"]
    assert [r.status_text for r in rows] == ["Pass", "Fail", "Not evaluated"]
    assert rows[1].measured.endswith("Gy(RBE)") and rows[1].roi == "SpinalCord"
    assert rows[2].reason == "outside the dose grid" and rows[0].reason == ""
    counts = count_statuses(rows)
    assert counts == {"pass": 1, "within_tolerance": 0, "fail": 1, "not_evaluated": 1}
    assert describe_counts(counts) == "1 pass · 0 within tolerance · 1 fail · 1 not evaluated"
    assert goal_rows(None) == ()


def test_the_prescription_in_the_dose_unit():
    assert describe_prescription(60.0, 30, "Gy(RBE)") == "60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)"
    assert describe_prescription(8.0, 1, "Gy", "plan DoseReference 1") == \
        "8 Gy in 1 fraction (8 Gy per fraction), from plan DoseReference 1"
    assert describe_prescription(None, 30) == "no prescription recorded"


def test_beam_rows_with_mu_energies_snout_and_range_shifters():
    plan = {"beams": [
        {"number": 1, "name": "G90", "treatment_machine": "PBS1", "gantry_angle_deg": 90.0, "couch_angle_deg": 0.0,
         "meterset": 197.058, "meterset_unit": "MU", "beam_dose_gy": 1.0, "energy_layers_mev": [99.8, 131.6],
         "energy_layer_count": 2, "min_energy_mev": 99.8, "max_energy_mev": 131.6, "spot_count": 363,
         "snout_id": "SNOUT_M", "snout_position_mm": 300.0,
         "range_shifters": [{"id": "RS_5cm", "water_equivalent_thickness_mm": 50.0}]},
        {"number": 2, "name": "AP", "gantry_angle_deg": 0.0, "meterset": 101.0, "meterset_unit": "MU",
         "nominal_energy_mv": 6.0, "technique": "IMRT", "range_shifters": []},
    ]}
    ion, photon = beam_rows(plan, "Gy(RBE)")
    assert (ion.meterset, ion.energy, ion.spots) == ("197.1 MU", "99.8–131.6 MeV (2 layers)", "363")
    assert ion.snout == "SNOUT_M at 300 mm" and ion.range_shifter == "RS_5cm (50 mm WET)"
    assert ion.beam_dose == "1 Gy(RBE)" and ion.gantry_deg == "90°"
    assert (photon.energy, photon.meterset, photon.range_shifter, photon.couch_deg) == ("6 MV IMRT", "101.0 MU", "", "")
    assert beam_rows(None) == ()


def test_contour_colours_darkened_for_paper():
    assert colour_on_white((255, 0, 0)) == (255, 0, 0)
    yellow = colour_on_white((255, 255, 0))
    assert yellow[0] == yellow[1] < 200 and yellow[2] == 0
