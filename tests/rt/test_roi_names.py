"""rt.roi_names: a template's ROI found among the names planning systems export, and which rule found it."""

from __future__ import annotations

import pydicom
import pytest

from rt.goals import find_roi_match, load_template
from rt.roi_names import (
    ALIAS,
    CASE,
    EXACT,
    SPELLING,
    TG263,
    TRAILING_NUMBER,
    AmbiguousROIError,
    compute_spelling_key,
    is_helper_structure,
    match_roi_name,
)
from rt.structures import read_structure_set
from tests.conftest import shared_data

PROSTATE = load_template("prostate")
HEAD_AND_NECK = load_template("head_and_neck")
LUNG = load_template("lung")


def goal_of(template, roi: str):
    return next(g for g in template.goals if g.roi == roi)


# (template, template ROI, exported name, rule or None when it must not match). The names are spellings
# Eclipse, RayStation, Pinnacle and Monaco users export (vendor defaults and common local habits).
SPELLINGS = [
    (PROSTATE, "Femur_Head_L", "Femoral Head Lt", TG263),  # Eclipse (the shared prostate phantom)
    (PROSTATE, "Femur_Head_R", "Femoral Head RT", TG263),  # Eclipse, capitals as exported
    (PROSTATE, "Femur_Head_L", "FemoralHead_L", TG263),  # RayStation
    (PROSTATE, "Femur_Head_L", "LT_FEMORAL_HEAD", TG263),  # Pinnacle
    (PROSTATE, "Femur_Head_R", "Femur Head Right", TG263),  # Monaco
    (PROSTATE, "Femur_Head_L", "femur_head_l", CASE),
    (PROSTATE, "Femur_Head_L", "Femur_Head_L", EXACT),
    (PROSTATE, "Femur_Head_L", "Femur_Lt", SPELLING),  # the alias Femur_L, side spelt Lt
    (PROSTATE, "Femur_Head_L", "Femur_R", None),  # the other side never matches
    (PROSTATE, "Femur_Head_R", "Femur_L", None),
    (PROSTATE, "Femur_Head_R", "Femoral Head Lt", None),
    (PROSTATE, "Femur_Head_L", "FemoralHeads", None),
    (PROSTATE, "Rectum", "RECTUM", CASE),
    (PROSTATE, "Rectum", "Rectum_1", TRAILING_NUMBER),  # Eclipse's copy of a structure
    (PROSTATE, "Rectum", "optRectum", None),  # Eclipse optimisation structure
    (PROSTATE, "Rectum", "zRectum_opt", None),
    (PROSTATE, "Rectum", "Rectum_PRV5", None),
    (PROSTATE, "Bladder", "Bladder2", TRAILING_NUMBER),
    (PROSTATE, "Bladder", "optBladder", None),
    (PROSTATE, "Bladder", "Ring_Bladder", None),
    (PROSTATE, "PenileBulb", "Penile Bulb", TG263),
    (PROSTATE, "PTV", "PTV", EXACT),
    (PROSTATE, "PTV", "ptv", CASE),
    (PROSTATE, "PTV", "PTV 78Gy", TG263),  # the alias PTV_7800 in TG-263 form
    (PROSTATE, "PTV", "PTV_High", TG263),  # TG-263 form of the alias PTV_High
    (PROSTATE, "PTV", "PTV1", ALIAS),
    (PROSTATE, "Rectum", "Rect", ALIAS),
    (PROSTATE, "PenileBulb", "Bulb", ALIAS),
    (HEAD_AND_NECK, "Larynx", "Glottis", ALIAS),
    (HEAD_AND_NECK, "Larynx", "glottis_2", TRAILING_NUMBER),
    (PROSTATE, "PTV", "PTV_low", None),  # another dose level
    (PROSTATE, "PTV", "PTV2", None),  # a target number is not dropped
    (PROSTATE, "PTV", "zPTV_opt", None),  # helper structure
    (PROSTATE, "PTV", "PTV_opt", None),
    (PROSTATE, "PTV", "PTV-CTV", None),
    (HEAD_AND_NECK, "Parotid_L", "Lt Parotid", TG263),
    (HEAD_AND_NECK, "Parotid_L", "L_Parotid", TG263),
    (HEAD_AND_NECK, "Parotid_L", "PAROTID_LT", TG263),
    (HEAD_AND_NECK, "Parotid_L", "ParotidLeft", TG263),
    (HEAD_AND_NECK, "Parotid_L", "Parotid_R", None),
    (HEAD_AND_NECK, "Parotid_R", "Parotid Right", TG263),
    (HEAD_AND_NECK, "Parotid_R", "Rt_Parotid", TG263),
    (HEAD_AND_NECK, "Parotid_R", "Parotid_L", None),
    (HEAD_AND_NECK, "SpinalCord", "Spinal Cord", TG263),
    (HEAD_AND_NECK, "SpinalCord", "SPINAL_CORD", TG263),
    (HEAD_AND_NECK, "SpinalCord", "SpinalCord_PRV05", None),
    (HEAD_AND_NECK, "Brainstem", "Brain Stem", TG263),
    (HEAD_AND_NECK, "Cochlea_L", "Cochlea Left 1", TRAILING_NUMBER),
    (HEAD_AND_NECK, "Cochlea_L", "Cochlea_R", None),
    (HEAD_AND_NECK, "OpticChiasm", "Optic_Chiasm", TG263),
    (HEAD_AND_NECK, "Larynx", "OPTIC_NERVE_L", None),
    (HEAD_AND_NECK, "Cavity_Oral", "Oral Cavity", TG263),
    (LUNG, "BrachialPlex_L", "Brachial Plexus Lt", TG263),
    (LUNG, "BrachialPlex_L", "BRACHIAL_PLEXUS_R", None),
    (LUNG, "Lungs", "Lung Total", TG263),
    (LUNG, "Lungs", "Lung_L", None),
    (LUNG, "Heart", "Heart_PRV", None),
    (LUNG, "Esophagus", "Oesophagus", TG263),
]


@pytest.mark.parametrize(("template", "roi", "name", "rule"), SPELLINGS,
                         ids=[f"{roi}<-{name}" for _t, roi, name, _r in SPELLINGS])
def test_real_world_spellings(template, roi, name, rule):
    match = find_roi_match(goal_of(template, roi), (name,))
    if rule is None:
        assert match is None, match
        return
    assert match is not None and (match.template_roi, match.roi_name, match.rule) == (roi, name, rule)
    assert match.spelling  # the template name, alias or TG-263 name that matched


def test_the_best_rule_wins_over_a_helper_or_a_spelling():
    names = ("zPTV_opt", "PTV_low", "PTV", "ptv_1", "Rectum_1", "RECTUM", "optRectum")
    assert match_roi_name("PTV", ["PTV_High"], names).roi_name == "PTV"
    assert match_roi_name("Rectum", ["Rectum_Wall"], names).rule == CASE
    assert match_roi_name("Rectum", [], ("Rectum_1", "optRectum")).roi_name == "Rectum_1"


def test_alias_order_breaks_ties_and_equal_spellings_are_ambiguous():
    ptv = goal_of(PROSTATE, "PTV")  # aliases PTV_High, PTV1, ...
    assert find_roi_match(ptv, ("PTV1", "PTV_High")).roi_name == "PTV_High"
    both = r"'Femur_Head_L' is ambiguous: \['Femoral Head Lt', 'L Femoral Head'\]"
    with pytest.raises(AmbiguousROIError, match=both):
        find_roi_match(goal_of(PROSTATE, "Femur_Head_L"), ("Femoral Head Lt", "L Femoral Head"))
    with pytest.raises(AmbiguousROIError, match="trailing number"):
        match_roi_name("Rectum", [], ("Rectum_1", "Rectum_2"))


def test_spelling_keys_and_helpers():
    assert compute_spelling_key("FemoralHeadLt") == compute_spelling_key("Lt_Femoral_Head") == ("femoralhead", "L")
    assert compute_spelling_key("Femur_R") == ("femur", "R") != compute_spelling_key("Femur_L")
    assert compute_spelling_key("Heart") == ("heart", "")  # "rt" inside a word is not a side
    assert compute_spelling_key("PTV1", drop_number=True) == ("ptv1", "")
    assert compute_spelling_key("Rectum_01", drop_number=True) == ("rectum", "")
    helpers = ("zPTV_opt", "z_Rectum", "optBladder", "Ring PTV", "_avoid", "PTV_opt", "dummy")
    assert all(is_helper_structure(name) for name in helpers)
    organs = ("OpticNerve_L", "OPTIC_CHIASM", "Zygoma", "Temporal Lobe L", "PTV", "Bladder")
    assert not any(is_helper_structure(name) for name in organs)


def test_eclipse_prostate_structure_set_matches_every_prostate_goal_it_can():
    """Eclipse's own names: the femoral heads by TG-263, the helpers optBladder/optRectum never."""
    ss = read_structure_set(pydicom.dcmread(next(shared_data("eclipse-prostate-phantom").glob("RS*.dcm"))))
    found = {goal.roi: find_roi_match(goal, ss.roi_names) for goal in PROSTATE.goals}
    assert {roi: (m.roi_name, m.rule) if m else None for roi, m in found.items()} == {
        "PTV": ("PTV", EXACT), "Rectum": ("Rectum", EXACT), "Bladder": ("Bladder", EXACT),
        "Femur_Head_L": ("Femoral Head Lt", TG263), "Femur_Head_R": ("Femoral Head RT", TG263),
        "PenileBulb": None,
    }
    assert found["Femur_Head_L"].to_dict() == {"template_roi": "Femur_Head_L", "roi_name": "Femoral Head Lt",
                                               "rule": TG263, "spelling": "Femur_Head_L"}
