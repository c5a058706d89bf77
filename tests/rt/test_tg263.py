"""rt.tg263: structure names to AAPM TG-263 standard names."""

from __future__ import annotations

import pydicom
import pytest

from rt.structures import read_structure_set
from rt.tg263 import map_structure_names, map_to_tg263
from tests.conftest import shared_data


@pytest.mark.parametrize(
    ("name", "standard", "kind"),
    [
        ("Femoral Head L", "Femur_Head_L", "oar"),
        ("FemoralHeadLt", "Femur_Head_L", "oar"),
        ("Lt Femoral Head", "Femur_Head_L", "oar"),
        ("Femoral Head RT", "Femur_Head_R", "oar"),
        ("FemoralHeadRT", "Femur_Head_R", "oar"),
        ("femur_head_r", "Femur_Head_R", "oar"),
        ("Spinal Cord", "SpinalCord", "oar"),
        ("SpinalCord", "SpinalCord", "oar"),
        ("cord", "SpinalCord", "oar"),
        ("Rectum", "Rectum", "oar"),
        ("Bladder", "Bladder", "oar"),
        ("BODY", "External", "other"),
        ("External", "External", "other"),
        ("Lung L", "Lung_L", "oar"),
        ("Lung_R", "Lung_R", "oar"),
        ("Right Lung", "Lung_R", "oar"),
        ("Lungs", "Lungs", "oar"),
        ("Parotid L", "Parotid_L", "oar"),
        ("ParotidR", "Parotid_R", "oar"),
        ("Brain Stem", "Brainstem", "oar"),
        ("Heart", "Heart", "oar"),
        ("Oesophagus", "Esophagus", "oar"),
        ("Larynx", "Larynx", "oar"),
        ("OpticNrv_L", "OpticNrv_L", "oar"),
        ("Optic Nerve Right", "OpticNrv_R", "oar"),
        ("Chiasm", "OpticChiasm", "oar"),
        ("Kidney_L", "Kidney_L", "oar"),
        ("Kidney Rt", "Kidney_R", "oar"),
        ("Liver", "Liver", "oar"),
        ("Small Bowel", "Bowel_Small", "oar"),
        ("Bowel", "Bowel", "oar"),
        ("Stomach", "Stomach", "oar"),
        ("Duodenum", "Duodenum", "oar"),
        ("PTV", "PTV", "target"),
        ("ptv", "PTV", "target"),
        ("CTV", "CTV", "target"),
        ("GTV", "GTV", "target"),
        ("CTVp", "CTVp", "target"),
        ("PTV_6000", "PTV_6000", "target"),
        ("PTV60", "PTV_6000", "target"),
        ("PTV 60Gy", "PTV_6000", "target"),
        ("PTV_50.4", "PTV_5040", "target"),
        ("PTV_High", "PTV_High", "target"),
        ("PTV 5040cGy", "PTV_5040", "target"),
        ("PTV1", None, "target"),
        ("Lung", None, "other"),  # side unknown
        ("optBladder", None, "other"),
        ("PTV-CTV", None, "other"),
        ("Vessels - left", None, "other"),
        ("X1", None, "other"),
    ],
)
def test_variants(name, standard, kind):
    mapped = map_to_tg263(name)
    assert (mapped.original, mapped.standard, mapped.kind) == (name, standard, kind)
    assert mapped.to_dict() == {"original": name, "standard": standard, "kind": kind}


def test_eclipse_prostate_roi_names():
    folder = shared_data("eclipse-prostate-phantom")
    ss = read_structure_set(pydicom.dcmread(next(folder.glob("RS*.dcm"))))
    assert len(ss.roi_names) == 16
    mapped = {m.original: m for m in map_structure_names(ss.roi_names)}
    assert [m.original for m in map_structure_names(ss.roi_names)] == list(ss.roi_names)
    expected = {
        "BODY": ("External", "other"),
        "Bladder": ("Bladder", "oar"),
        "CTV": ("CTV", "target"),
        "Femoral Head Lt": ("Femur_Head_L", "oar"),
        "Femoral Head RT": ("Femur_Head_R", "oar"),
        "PROS": ("Prostate", "oar"),
        "PTV": ("PTV", "target"),
        "Rectum": ("Rectum", "oar"),
    }
    for name, (standard, kind) in expected.items():
        assert (mapped[name].standard, mapped[name].kind) == (standard, kind), name
    for name in set(ss.roi_names) - set(expected):  # vessels, X1..X3, XApprox, optBladder, optRectum
        assert (mapped[name].standard, mapped[name].kind) == (None, "other"), name
