"""Which dashboard applies to which study (oncopacs.web.navigation), from the oncology summary alone."""

from __future__ import annotations

from oncopacs.index.oncology import (
    Dose,
    ImageSeries,
    LinkedObject,
    OncologySummary,
    Plan,
    StructureSet,
    TreatmentPlanningSet,
    find_pet_ct_pairs,
)
from oncopacs.web.navigation import Page, patient_pages, study_pages

STUDY = "1.2.3.4"
FRAME = "1.2.3.9"


def ct(uid: str = "1.2.3.5", description: str = "Planning CT") -> ImageSeries:
    return ImageSeries(uid, "CT", "1", description, FRAME, 30)


def summary(images=(), structure_sets=(), plans=(), doses=(), sets=(), registrations=()) -> OncologySummary:
    return OncologySummary(STUDY, tuple(images), tuple(structure_sets), tuple(plans), tuple(doses),
                           tuple(registrations), (), (), tuple(sets), find_pet_ct_pairs(images), ())


def pages(s: OncologySummary) -> list[Page]:
    return [link.page for link in study_pages(s)]


RTSTRUCT = StructureSet("1.2.3.6", "1.2.3.60", FRAME, ("1.2.3.5",))


def test_a_planning_set_with_a_plan_or_a_dose_gets_plan_review():
    with_plan = summary([ct()], [RTSTRUCT], [Plan("1.2.3.7", "1.2.3.70", "1.2.840.10008.5.1.4.1.1.481.8", True, FRAME,
                                                  "1.2.3.6")],
                        sets=[TreatmentPlanningSet(FRAME, ("1.2.3.5",), "1.2.3.6", ("1.2.3.7",), ())])
    with_dose = summary([ct()], [RTSTRUCT], doses=[Dose("1.2.3.8", "1.2.3.80", FRAME, None, "1.2.3.6")],
                        sets=[TreatmentPlanningSet(FRAME, ("1.2.3.5",), "1.2.3.6", (), ("1.2.3.8",))])
    assert pages(with_plan) == [Page.PLAN] and pages(with_dose) == [Page.PLAN]
    assert study_pages(with_plan)[0].href == f"/dashboards/plan/{STUDY}"
    assert study_pages(with_plan)[0].label == "Plan review"


def test_a_bare_structure_set_on_an_fdg_study_is_no_plan():
    fdg = [ct("1.2.3.5", "CT for attenuation correction"), ImageSeries("1.2.3.11", "PT", "2", "PET FDG AC", FRAME, 30)]
    bare = summary(fdg, [RTSTRUCT], sets=[TreatmentPlanningSet(FRAME, ("1.2.3.5",), "1.2.3.6", (), ())])
    assert pages(bare) == [Page.PET]


def test_a_dose_without_a_structure_set_is_no_plan_review():
    lone = summary([ct()], doses=[Dose("1.2.3.8", "1.2.3.80", FRAME, None, None)],
                   sets=[TreatmentPlanningSet(FRAME, ("1.2.3.5",), None, (), ("1.2.3.8",))])
    assert pages(lone) == []


def test_four_d_ct_phases_or_a_registration_get_the_review():
    phases = [ct(f"1.2.3.{20 + i}", f"4D CT {10 * i}%") for i in range(2)]
    assert pages(summary(phases)) == [Page.REVIEW]
    assert pages(summary(phases[:1])) == []  # one phase-like series is no 4D CT
    registration = LinkedObject("1.2.3.30", "1.2.3.31", "REG", ("1.2.3.5", "1.2.3.40"), (FRAME,))
    assert pages(summary([ct()], registrations=[registration])) == [Page.REVIEW]
    assert pages(summary([ct()])) == []


def test_a_patient_has_the_response_page_and_the_board():
    links = patient_pages("ONCO 1/2")
    assert [(link.page, link.href) for link in links] == [(Page.RESPONSE, "/dashboards/response/ONCO%201%2F2"),
                                                          (Page.BOARD, "/dashboards/board/")]
