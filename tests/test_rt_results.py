"""RT results in the archive: inputs found in the index, files read through storage, results cached by input key."""

from __future__ import annotations

import copy
import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import func, select

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.analysis.rt import (
    MetricBounds,
    PlanningSet,
    analyse_planning_set,
    find_planning_sets,
    load_results,
    search_metrics,
)
from oncopacs.archive.ingest import Archive
from oncopacs.errors import IntegrityError
from oncopacs.index.models import Instance
from oncopacs.phantom import DemoPatient, build_demo_patient, centred_grid
from oncopacs.uids import uid_for
from rt.analysis import choose_template, standard_metrics
from rt.dose import build_rt_dose
from rt.errors import RTError
from rt.structures import read_structure_set
from tests.conftest import shared_data
from tests.rt.helpers import read_nrrd_dose
from tests.rt.test_real_data import read_eclipse_table

#: 2 mm contour planes and a 3 mm dose grid covering every organ (as tests/rt/test_dvh.py's fine phantom).
FINE_CT = centred_grid((75, 100, 100), (2.0, 2.0, 2.0))
WIDE_DOSE = centred_grid((61, 61, 61), (3.0, 3.0, 3.0))


@pytest.fixture(scope="module")
def phantom() -> DemoPatient:
    return build_demo_patient("ONCO-RTRES-001", ct_grid=FINE_CT, dose_grid=WIDE_DOSE)


def _store(archive: Archive, *datasets: Dataset) -> None:
    for dataset in datasets:
        assert archive.ingest_dataset(dataset, source="test").acknowledged


def _sets(archive: Archive, study_uid: str) -> tuple[PlanningSet, ...]:
    with archive.index.reading() as session:
        return find_planning_sets(session, study_uid)


def _rows(archive: Archive) -> list[tuple[int, str, str]]:
    with archive.index.reading() as session:
        return list(session.execute(select(AnalysisResult.id, AnalysisResult.kind, AnalysisResult.input_key)
                                    .order_by(AnalysisResult.id)).all())


def close(value: float, truth: float) -> bool:
    """Within 1 % or 0.1 Gy (the rt tolerances for the phantom)."""
    return abs(value - truth) <= max(0.01 * abs(truth), 0.1)


def _scaled_dose(dose: Dataset, factor: float, key: str) -> Dataset:
    """A copy of ``dose`` as a new instance whose dose is ``factor`` times the original."""
    scaled = copy.deepcopy(dose)
    scaled.SOPInstanceUID = uid_for(key, "dose")
    scaled.file_meta.MediaStorageSOPInstanceUID = scaled.SOPInstanceUID
    scaled.DoseGridScaling = f"{float(dose.DoseGridScaling) * factor:.10g}"
    return scaled


def test_phantom_results_match_the_closed_form(archive: Archive, phantom: DemoPatient):
    _store(archive, phantom.rtstruct, phantom.rt_ion_plan, phantom.rt_dose)
    (planning_set,) = _sets(archive, phantom.rt_dose.StudyInstanceUID)
    assert (planning_set.dose_uid, planning_set.structure_set_uid, planning_set.plan_uid) == (
        phantom.rt_dose.SOPInstanceUID, phantom.rtstruct.SOPInstanceUID, phantom.rt_ion_plan.SOPInstanceUID)
    assert analyse_planning_set(archive, planning_set) is True
    with archive.index.reading() as session:
        results = load_results(session, planning_set)
    assert results.complete
    truth = phantom.truth
    rois = {roi["name"]: roi for roi in results.dvh["rois"]}
    assert set(rois) == set(truth.anatomy.structure_names)
    for name in ("PTV", "Bladder", "Rectum"):
        roi = rois[name]
        assert roi["uncovered_volume_cc"] == 0.0 and roi["tg263_name"] == name
        assert roi["volume_cc"] == pytest.approx(truth.compute_volume_cc(name), rel=0.02)
        metrics = roi["metrics"]
        assert close(metrics["Mean[Gy]"], truth.compute_mean_dose_gy(name)), name
        for x in (95, 50, 2):
            assert close(metrics[f"D{x}%[Gy]"], truth.compute_dose_at_volume_gy(name, x)), (
                name,
                x,
                metrics[f"D{x}%[Gy]"],
            )
        for dose_gy in (10, 20, 30, 40, 50):
            assert metrics[f"V{dose_gy}Gy[%]"] / 100.0 == pytest.approx(
                truth.compute_cumulative_dvh_fraction(name, dose_gy), abs=0.01
            ), (name, dose_gy)
        curve = roi["curve"]
        assert curve["dose_gy"][0] == 0.0 and curve["volume_percent"][0] == pytest.approx(100.0)
        assert np.all(np.diff(curve["volume_cc"]) <= 1e-9)  # cumulative: never increasing
    # With the plan's 60 Gy prescription the relative metrics are there; the plan summary and goals too.
    assert results.dvh["prescription_gy"] == 60.0 and "V95%[%]" in rois["PTV"]["metrics"]
    assert results.plan["radiation_type"] == "PROTON" and results.plan["fractions"] == 30
    assert results.goals["template"] == "proton_generic" and results.goals["choice"] == "ion plan"
    assert sum(results.goals["counts"].values()) == len(results.goals["goals"]) > 0
    # The spinal cord sticks out of the dose grid: the uncovered part is reported, not dropped.
    cord = rois["SpinalCord"]
    assert cord["metrics"]["Max[Gy]"] == truth.compute_max_dose_gy("SpinalCord") == 0.0
    assert cord["uncovered_volume_cc"] > 1.0 and "outside the dose grid" in cord["note"]
    assert cord["volume_cc"] == pytest.approx(truth.compute_contour_volume_cc("SpinalCord"), rel=0.02)

    # Every metric is searchable under the TG-263 name.
    with archive.index.reading() as session:
        stored = session.scalars(
            select(MetricValue).where(MetricValue.structure == "Rectum", MetricValue.metric == "Mean[Gy]")
        ).all()
        assert [m.value for m in stored] == [rois["Rectum"]["metrics"]["Mean[Gy]"]]
        assert stored[0].patient_id == "ONCO-RTRES-001"
        external = session.scalar(
            select(func.count()).select_from(MetricValue).where(MetricValue.structure == "External")
        )
        assert external == len(rois["BODY"]["metrics"]) > 0


def test_same_inputs_are_cached_and_a_new_dose_gets_its_own_key(archive: Archive, phantom: DemoPatient):
    _store(archive, phantom.rtstruct, phantom.rt_ion_plan, phantom.rt_dose)
    (first,) = _sets(archive, phantom.rt_dose.StudyInstanceUID)
    assert analyse_planning_set(archive, first) is True
    rows = _rows(archive)
    assert sorted(kind for _pk, kind, _key in rows) == ["dvh", "goals", "plan"]
    assert analyse_planning_set(archive, first) is False  # cache hit: nothing recomputed or rewritten
    assert _rows(archive) == rows

    _store(archive, _scaled_dose(phantom.rt_dose, 0.5, "half dose"))
    sets = _sets(archive, phantom.rt_dose.StudyInstanceUID)
    second = next(s for s in sets if s.dose_uid != first.dose_uid)
    assert len(sets) == 2 and second.plan_uid == first.plan_uid
    assert analyse_planning_set(archive, second) is True
    assert analyse_planning_set(archive, first) is False  # the first dose's results are still cached
    keys = {(kind, key) for _pk, kind, key in _rows(archive)}
    assert len([k for k in keys if k[0] == "dvh"]) == 2 and len([k for k in keys if k[0] == "plan"]) == 1
    with archive.index.reading() as session:
        one, two = load_results(session, first), load_results(session, second)
        total, matches = search_metrics(session, "rectum", "Mean[Gy]", MetricBounds())
    mean_one = {r["name"]: r for r in one.dvh["rois"]}["Rectum"]["metrics"]["Mean[Gy]"]
    mean_two = {r["name"]: r for r in two.dvh["rois"]}["Rectum"]["metrics"]["Mean[Gy]"]
    assert mean_two == pytest.approx(mean_one / 2, rel=1e-3)
    assert total == 2 and [m.value for m in matches] == [mean_one, mean_two]
    assert matches[1].inputs == tuple(sorted(second.uids))

    # force recomputes the same key in place.
    assert analyse_planning_set(archive, first, force=True) is True
    assert len(_rows(archive)) == 5


def test_a_recompute_with_a_template_keeps_the_dvh_and_adds_its_goals(archive: Archive, phantom: DemoPatient):
    _store(archive, phantom.rtstruct, phantom.rt_ion_plan, phantom.rt_dose)
    (planning_set,) = _sets(archive, phantom.rt_dose.StudyInstanceUID)
    analyse_planning_set(archive, planning_set)
    assert analyse_planning_set(archive, planning_set, template="prostate") is True
    with archive.index.reading() as session:
        auto, prostate = load_results(session, planning_set), load_results(session, planning_set, "prostate")
    assert auto.complete and prostate.complete and auto.dvh == prostate.dvh
    assert (auto.goals["template"], prostate.goals["template"]) == ("proton_generic", "prostate")
    rectum = next(g for g in prostate.goals["goals"] if g["goal"]["metric"] == "V50Gy[%]")
    assert rectum["roi_name"] == "Rectum" and rectum["status"] == "pass"


def test_an_altered_file_is_refused(archive: Archive, phantom: DemoPatient):
    _store(archive, phantom.rtstruct, phantom.rt_ion_plan, phantom.rt_dose)
    (planning_set,) = _sets(archive, phantom.rt_dose.StudyInstanceUID)
    with archive.index.reading() as session:
        file_path = session.scalar(select(Instance.file_path).where(Instance.sop_instance_uid == planning_set.dose_uid))
    stored = archive.storage.path_of(file_path)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256"):
        analyse_planning_set(archive, planning_set)
    assert _rows(archive) == []


def test_a_relative_dose_is_refused(archive: Archive, phantom: DemoPatient):
    relative = copy.deepcopy(phantom.rt_dose)
    relative.DoseUnits = "RELATIVE"
    _store(archive, phantom.rtstruct, phantom.rt_ion_plan, relative)
    (planning_set,) = _sets(archive, relative.StudyInstanceUID)
    with pytest.raises(RTError, match="DoseUnits is RELATIVE"):
        analyse_planning_set(archive, planning_set)


def test_metric_set_and_template_choice():
    metrics = standard_metrics(63.6, 60.0)
    assert {"Mean[Gy]", "D95%[Gy]", "D2%[Gy]", "D50%[Gy]", "V60Gy[%]", "V60Gy[cc]", "V95%[%]"} <= set(metrics)
    assert "V65Gy[%]" not in metrics  # above the 63.6 Gy maximum
    without_prescription = standard_metrics(40.0, None)
    assert without_prescription[-2:] == ("V40Gy[%]", "V40Gy[cc]") and "V95%[%]" not in without_prescription
    eclipse = read_structure_set(pydicom.dcmread(next(shared_data("eclipse-prostate-phantom").glob("RS*.dcm"))))
    choice = choose_template(None, None, eclipse)
    assert (choice.template.name, choice.reason) == ("prostate", "structures")
    assert choose_template("lung", None, eclipse).reason == "requested"


@pytest.fixture(scope="module")
def eclipse_datasets() -> tuple[Dataset, Dataset, Dataset]:
    """Eclipse's structure set and plan, and its dose (exported as NRRD) written back as an RT Dose of that plan."""
    folder = shared_data("eclipse-prostate-phantom")
    structures = pydicom.dcmread(next(folder.glob("RS*.dcm")))
    plan = pydicom.dcmread(next(folder.glob("RP*.dcm")))
    dose = build_rt_dose(
        read_nrrd_dose(folder / "aux" / "EclipseProstate_Dose.nrrd"),
        plan,
        summation_type="PLAN",
        series_description="Eclipse plan dose (from the NRRD export)",
    )
    dose.FrameOfReferenceUID = structures.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = plan.SOPClassUID, plan.SOPInstanceUID
    dose.ReferencedRTPlanSequence = Sequence([reference])
    return structures, plan, dose


def test_eclipse_prostate_through_the_archive_agrees_with_eclipse(archive: Archive, eclipse_datasets):
    """The real Eclipse files ingested and analysed: volume within 3 %, mean / D95 / D50 within 2 % of Eclipse's."""
    structures, plan, dose = eclipse_datasets
    _store(archive, structures, plan, dose)
    (planning_set,) = _sets(archive, plan.StudyInstanceUID)
    assert planning_set.plan_uid == plan.SOPInstanceUID and planning_set.structure_set_uid == structures.SOPInstanceUID
    assert analyse_planning_set(archive, planning_set) is True
    with archive.index.reading() as session:
        results = load_results(session, planning_set)
    rois = {roi["name"]: roi for roi in results.dvh["rois"]}
    assert len(rois) == 16 and rois["CTV"]["note"] == "no closed planar contour"
    for name in ("PTV", "Bladder", "Rectum"):
        table_dose, table_percent, table_cc = read_eclipse_table(name)
        metrics = rois[name]["metrics"]
        assert rois[name]["uncovered_volume_cc"] == 0.0
        assert rois[name]["volume_cc"] == pytest.approx(table_cc, rel=0.03)
        table_mean = float(np.sum(-np.diff(table_percent) / 100.0 * (table_dose[1:] + table_dose[:-1]) / 2.0))
        assert metrics["Mean[Gy]"] == pytest.approx(table_mean, rel=0.02)
        for x in (95, 50):
            assert metrics[f"D{x}%[Gy]"] == pytest.approx(float(np.interp(-x, -table_percent, table_dose)), rel=0.02)
    assert results.plan["radiation_type"] == "PHOTON" and results.plan["fractions"] == 23
    assert results.dvh["prescription_gy"] == results.plan["prescription_gy"] == pytest.approx(46.0)
    assert rois["PROS"]["tg263_name"] == "Prostate" and rois["Femoral Head Lt"]["tg263_name"] == "Femur_Head_L"
    goals = results.goals
    assert goals["template"] == "prostate" and goals["counts"].get("fail", 0) == 0
    ptv = next(g for g in goals["goals"] if g["goal"]["metric"] == "D95%[%]")
    assert ptv["roi_name"] == "PTV" and ptv["measured_value"] == pytest.approx(
        100.0 * rois["PTV"]["metrics"]["D95%[Gy]"] / 46.0, abs=0.01
    )
    stored = json.loads(json.dumps(results.dvh))  # JSON-clean (no numpy scalars)
    assert stored == results.dvh


def test_eclipse_goals_name_the_matched_rois_and_the_prescription_source(archive: Archive, eclipse_datasets):
    """Eclipse's 'Femoral Head Lt'/'Femoral Head RT' meet the prostate template's Femur_Head_L/_R; 46 Gy from RP."""
    structures, plan, dose = eclipse_datasets
    _store(archive, structures, plan, dose)
    (planning_set,) = _sets(archive, plan.StudyInstanceUID)
    analyse_planning_set(archive, planning_set)
    with archive.index.reading() as session:
        results = load_results(session, planning_set)
    text = "46 Gy from plan DoseReference 1 'PROS' TargetPrescriptionDose"
    assert results.dvh["prescription"]["text"] == results.goals["prescription"]["text"] == text
    assert results.plan["prescription"]["source"] == "dose_reference"
    goals = {g["template_roi"]: g for g in results.goals["goals"]}
    for template_roi, name in (("Femur_Head_L", "Femoral Head Lt"), ("Femur_Head_R", "Femoral Head RT")):
        goal = goals[template_roi]
        assert (goal["roi_name"], goal["match_rule"], goal["matched_spelling"]) == (name, "TG-263", template_roi)
        assert goal["status"] == "pass" and goal["measured_value"] is not None
    assert results.goals["dose_unit"] == results.dvh["dose_unit"] == "Gy" and results.goals["dose_problem"] == ""


@pytest.fixture(scope="module")
def raystation_rbe() -> dict[str, Dataset]:
    """RayStation plan03_ramp_full: structure set, plan (its PatientID aligned with the others: the shared data's known
    quirk), the EFFECTIVE plan dose and the EFFECTIVE dose of beam 1."""
    folder = shared_data("dcpt-proton-phantom", "plan03_ramp_full")
    plan = pydicom.dcmread(next(folder.glob("ramped*.dcm")))
    structures = pydicom.dcmread(next(folder.glob("RS*.dcm")))
    plan.PatientID, plan.PatientName = structures.PatientID, structures.PatientName
    out = {"rtstruct": structures, "rtplan": plan}
    for path in folder.glob("RD*.dcm"):
        ds = pydicom.dcmread(path)
        groups = ds.ReferencedRTPlanSequence[0].get("ReferencedFractionGroupSequence") or []
        beams = [int(b.ReferencedBeamNumber) for g in groups for b in g.ReferencedBeamSequence]
        out[ds.DoseSummationType + "".join(f" {b}" for b in beams)] = ds
    return out


def test_raystation_effective_doses_are_stored_in_gy_rbe_and_a_beam_dose_is_not_judged(archive: Archive,
                                                                                          raystation_rbe):
    _store(archive, raystation_rbe["rtstruct"], raystation_rbe["rtplan"], raystation_rbe["PLAN"],
           raystation_rbe["BEAM 1"])
    sets = {s.dose_uid: s for s in _sets(archive, raystation_rbe["rtstruct"].StudyInstanceUID)}
    plan_set, beam_set = sets[raystation_rbe["PLAN"].SOPInstanceUID], sets[raystation_rbe["BEAM 1"].SOPInstanceUID]
    assert plan_set.plan_uid == beam_set.plan_uid == raystation_rbe["rtplan"].SOPInstanceUID
    for planning_set in (plan_set, beam_set):
        analyse_planning_set(archive, planning_set)  # an ion plan: proton_generic
    with archive.index.reading() as session:
        plan_results = load_results(session, plan_set)
        beam_results = load_results(session, beam_set)
    assert plan_results.dvh["dose_unit"] == plan_results.dvh["dose"]["dose_unit"] == "Gy(RBE)"
    assert plan_results.dvh["dose"]["dose_type"] == "EFFECTIVE" and plan_results.goals["dose_unit"] == "Gy(RBE)"
    rx = plan_results.goals["prescription"]
    assert rx["source"] == "beam_dose" and rx["dose_gy"] == pytest.approx(0.943323 + 0.9349596)
    assert "not a stated prescription" in rx["note"]
    assert plan_results.goals["template"] == "proton_generic"
    absolute = [g for g in plan_results.goals["goals"] if g["goal"]["unit"] == "Gy"]
    assert absolute and all(g["unit"] == "Gy(RBE)" for g in absolute)
    body = [g for g in plan_results.goals["goals"] if g["roi_name"] == "External"]  # template BODY: RayStation's
    assert body and body[0]["match_rule"] == "TG-263" and body[0]["measured_value"] is not None
    cube = {r["name"]: r for r in plan_results.dvh["rois"]}["Cube101010"]
    assert 1.9 < cube["metrics"]["Mean[Gy]"] < 2.2  # RBE-weighted, labelled by the document's dose_unit

    assert beam_results.dvh["dose"]["summation_note"].startswith("BEAM dose: the dose of one or more beams (beam 1)")
    problem = beam_results.goals["dose_problem"]
    assert problem == "a BEAM dose (beam 1) is not the plan dose: clinical goals are not judged on it"
    assert {r["name"] for r in beam_results.dvh["rois"] if r["metrics"]} >= {"Cube101010"}  # its DVHs are there
    found = [g for g in beam_results.goals["goals"] if g["roi_name"]]
    assert found and all(g["status"] == "not_evaluated" and g["reason"] == problem for g in found)
