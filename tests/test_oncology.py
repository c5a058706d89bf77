"""The oncology summary links CT, RTSTRUCT, RT Ion Plan, RT Dose and PET-CT from the index alone."""

from __future__ import annotations

import copy

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    RTIonPlanStorage,
    SpatialRegistrationStorage,
)

from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.models import Level, Relation
from oncopacs.index.oncology import OncologySummary, find_pet_ct_pairs, summarize_study
from oncopacs.phantom import DemoPatient, build_demo_patient
from oncopacs.uids import uid_for


def _store(archive: Archive, datasets: list[Dataset]) -> None:
    for dataset in datasets:
        assert archive.ingest_dataset(dataset, source="test").acknowledged


def _summary(archive: Archive, study_uid: str) -> OncologySummary:
    with archive.index.reading() as session:
        return summarize_study(session, study_uid)


def _orphan_dose(patient: DemoPatient, key: str, *, keep_structure_set: bool) -> Dataset:
    """A copy of the plan dose, as a new instance whose plan the archive never received."""
    dose = copy.deepcopy(patient.rt_dose)
    dose.SOPInstanceUID = uid_for(key, "sop")
    dose.file_meta.MediaStorageSOPInstanceUID = dose.SOPInstanceUID
    dose.InstanceNumber = 2 if keep_structure_set else 3
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = uid_for(key, "missing plan")
    if not keep_structure_set:
        del dose.ReferencedStructureSetSequence
    return dose


def _registration(patient: DemoPatient) -> Dataset:
    """A spatial registration of the PET-CT's CT onto the planning CT (identity matrices)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ct, pet_ct = patient.planning_ct[0], patient.pet_ct[0]
    ds.SOPClassUID, ds.SOPInstanceUID = SpatialRegistrationStorage, uid_for("reg", "sop")
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "REG", ct.PatientID, ct.PatientName
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ct.StudyInstanceUID, uid_for("reg", "series")
    ds.SeriesNumber, ds.InstanceNumber = 9, 1
    ds.FrameOfReferenceUID = ct.FrameOfReferenceUID
    registrations = []
    for frame in (ct.FrameOfReferenceUID, pet_ct.FrameOfReferenceUID):
        item = Dataset()
        item.FrameOfReferenceUID = frame
        registrations.append(item)
    ds.RegistrationSequence = Sequence(registrations)
    own = Dataset()
    own.SeriesInstanceUID = ct.SeriesInstanceUID
    ds.ReferencedSeriesSequence = Sequence([own])
    other_series = Dataset()
    other_series.SeriesInstanceUID = pet_ct.SeriesInstanceUID
    other_study = Dataset()
    other_study.StudyInstanceUID = pet_ct.StudyInstanceUID
    other_study.ReferencedSeriesSequence = Sequence([other_series])
    ds.StudiesContainingOtherReferencedInstancesSequence = Sequence([other_study])
    return ds


@pytest.fixture
def patient() -> DemoPatient:
    return build_demo_patient("ONCO-TEST-001")


def test_planning_study_links_ct_rtstruct_plan_dose(archive: Archive, patient: DemoPatient):
    _store(archive, patient.all_datasets())
    summary = _summary(archive, patient.rtstruct.StudyInstanceUID)
    ct_uid = patient.planning_ct[0].SeriesInstanceUID
    frame = patient.planning_ct[0].FrameOfReferenceUID

    assert [s.series_instance_uid for s in summary.image_series_by_modality()["CT"]] == [ct_uid]
    assert summary.image_series[0].number_of_instances == len(patient.planning_ct)
    (structure_set,) = summary.structure_sets
    assert structure_set.sop_instance_uid == patient.rtstruct.SOPInstanceUID
    assert structure_set.image_series_uids == (ct_uid,)
    assert structure_set.frame_of_reference_uid == frame
    (plan,) = summary.plans
    assert plan.is_ion_plan and plan.sop_class_uid == RTIonPlanStorage
    assert plan.structure_set_uid == patient.rtstruct.SOPInstanceUID
    (dose,) = summary.doses
    assert dose.plan_uid == patient.rt_ion_plan.SOPInstanceUID
    assert dose.structure_set_uid == patient.rtstruct.SOPInstanceUID
    (chain,) = summary.treatment_planning_sets
    assert chain.frame_of_reference_uid == frame
    assert chain.image_series_uids == (ct_uid,)
    assert chain.structure_set_uid == patient.rtstruct.SOPInstanceUID
    assert chain.plan_uids == (patient.rt_ion_plan.SOPInstanceUID,)
    assert chain.dose_uids == (patient.rt_dose.SOPInstanceUID,)
    assert summary.unresolved_references == ()
    assert summary.pet_ct_pairs == ()


def test_the_dose_a_plan_declares_comes_before_a_dose_check_stored_earlier(archive: Archive):
    """A secondary dose check referencing the plan never displaces the planning system's dose as the first."""
    from oncopacs.analysis.rt import find_planning_sets

    checked = build_demo_patient("ONCO-ORDER-001", with_dose_check=True)
    assert checked.dose_check is not None
    _store(archive, [*checked.planning_ct, checked.rtstruct, checked.rt_ion_plan, checked.dose_check, checked.rt_dose])
    study_uid = checked.rtstruct.StudyInstanceUID
    summary = _summary(archive, study_uid)
    assert [d.sop_instance_uid for d in summary.doses] == [checked.dose_check.SOPInstanceUID,
                                                           checked.rt_dose.SOPInstanceUID]  # stored order
    (chain,) = summary.treatment_planning_sets
    assert chain.dose_uids == (checked.rt_dose.SOPInstanceUID, checked.dose_check.SOPInstanceUID)
    with archive.index.reading() as session:
        sets = find_planning_sets(session, study_uid)
    assert [s.dose_uid for s in sets] == list(chain.dose_uids)
    assert {s.plan_uid for s in sets} == {checked.rt_ion_plan.SOPInstanceUID}


def test_doses_of_a_plan_that_declares_none_keep_their_stored_order(archive: Archive):
    checked = build_demo_patient("ONCO-ORDER-002", with_dose_check=True)
    assert checked.dose_check is not None
    plan = copy.deepcopy(checked.rt_ion_plan)
    del plan.ReferencedDoseSequence
    _store(archive, [*checked.planning_ct, checked.rtstruct, plan, checked.dose_check, checked.rt_dose])
    (chain,) = _summary(archive, checked.rtstruct.StudyInstanceUID).treatment_planning_sets
    assert chain.dose_uids == (checked.dose_check.SOPInstanceUID, checked.rt_dose.SOPInstanceUID)


def test_pet_ct_study_pairs_pt_with_ct_on_its_frame(archive: Archive, patient: DemoPatient):
    _store(archive, patient.all_datasets())
    summary = _summary(archive, patient.pet[0].StudyInstanceUID)
    assert set(summary.image_series_by_modality()) == {"CT", "PT"}
    (pair,) = summary.pet_ct_pairs
    assert pair.pet_series_uid == patient.pet[0].SeriesInstanceUID
    assert pair.ct_series_uid == patient.pet_ct[0].SeriesInstanceUID
    assert pair.frame_of_reference_uid == patient.pet[0].FrameOfReferenceUID
    assert summary.treatment_planning_sets == () and summary.plans == ()


def test_orphan_doses_are_reported_not_hidden(archive: Archive, patient: DemoPatient):
    with_structures = _orphan_dose(patient, "orphan-a", keep_structure_set=True)
    alone = _orphan_dose(patient, "orphan-b", keep_structure_set=False)
    _store(archive, [*patient.planning_ct, patient.rtstruct, with_structures, alone])
    summary = _summary(archive, patient.rtstruct.StudyInstanceUID)

    unresolved = {(u.sop_instance_uid, u.relation, u.level, u.referenced_uid) for u in summary.unresolved_references}
    assert unresolved == {
        (with_structures.SOPInstanceUID, Relation.PLAN, Level.INSTANCE, uid_for("orphan-a", "missing plan")),
        (alone.SOPInstanceUID, Relation.PLAN, Level.INSTANCE, uid_for("orphan-b", "missing plan")),
    }
    assert summary.plans == ()
    first, second = summary.treatment_planning_sets
    # The dose that names the structure set joins its chain; the other stands alone on its frame.
    assert first.structure_set_uid == patient.rtstruct.SOPInstanceUID
    assert first.dose_uids == (with_structures.SOPInstanceUID,)
    assert second.structure_set_uid is None and second.plan_uids == ()
    assert second.dose_uids == (alone.SOPInstanceUID,)
    assert second.image_series_uids == (patient.planning_ct[0].SeriesInstanceUID,)

    data = summary.to_dict()
    assert data["unresolved_references"][0]["relation"] == "plan"
    assert {d["sop_instance_uid"] for d in data["doses"]} == {with_structures.SOPInstanceUID, alone.SOPInstanceUID}


def test_structure_set_whose_images_are_missing(archive: Archive, patient: DemoPatient):
    _store(archive, [patient.rtstruct, patient.rt_ion_plan])
    summary = _summary(archive, patient.rtstruct.StudyInstanceUID)
    (missing,) = [u for u in summary.unresolved_references if u.relation == Relation.IMAGE_SERIES]
    assert missing.referenced_uid == patient.planning_ct[0].SeriesInstanceUID
    assert missing.modality == "RTSTRUCT"
    assert summary.structure_sets[0].image_series_uids == ()
    (chain,) = summary.treatment_planning_sets
    assert chain.plan_uids == (patient.rt_ion_plan.SOPInstanceUID,) and chain.dose_uids == ()


def test_registration_lists_what_it_registers(archive: Archive, patient: DemoPatient):
    registration = _registration(patient)
    _store(archive, [*patient.all_datasets(), registration])
    summary = _summary(archive, patient.rtstruct.StudyInstanceUID)
    (reg,) = summary.registrations
    assert reg.sop_instance_uid == registration.SOPInstanceUID
    assert reg.referenced_series_uids == (patient.planning_ct[0].SeriesInstanceUID, patient.pet_ct[0].SeriesInstanceUID)
    assert reg.frame_of_reference_uids == (
        patient.planning_ct[0].FrameOfReferenceUID, patient.pet_ct[0].FrameOfReferenceUID
    )
    assert summary.unresolved_references == ()
    assert "REG" not in summary.image_series_by_modality()
    assert summary.to_dict()["registrations"][0]["modality"] == "REG"


def test_unknown_study_is_not_found(archive: Archive):
    with archive.index.reading() as session, pytest.raises(NotFoundError):
        summarize_study(session, "1.2.3.4")


def test_pet_ct_pairs_need_a_shared_frame():
    from oncopacs.index.oncology import ImageSeries

    series = [
        ImageSeries("1.1", "PT", "1", "", "9.9", 10),
        ImageSeries("1.2", "CT", "2", "", "9.9", 10),
        ImageSeries("1.3", "CT", "3", "", "8.8", 10),
        ImageSeries("1.4", "PT", "4", "", "", 10),
        ImageSeries("1.5", "CT", "5", "", "", 10),
    ]
    assert [(p.pet_series_uid, p.ct_series_uid) for p in find_pet_ct_pairs(series)] == [("1.1", "1.2")]


def test_real_raystation_plan_dose_and_structures_form_one_chain(archive: Archive):
    from tests.conftest import shared_data

    folder = shared_data("dcpt-proton-phantom", "plan3_ramped_2022_ramp_10cm")
    files = {path.name[:2]: path for path in folder.glob("*.dcm")}
    results = {kind: archive.ingest(path.read_bytes(), source="test") for kind, path in files.items()}
    assert all(r.acknowledged for r in results.values())
    summary = _summary(archive, results["RP"].study_instance_uid)
    (plan,) = summary.plans
    (dose,) = summary.doses
    (structure_set,) = summary.structure_sets
    assert plan.is_ion_plan and plan.structure_set_uid == structure_set.sop_instance_uid
    assert dose.plan_uid == plan.sop_instance_uid
    (chain,) = summary.treatment_planning_sets
    assert (chain.structure_set_uid, chain.plan_uids, chain.dose_uids) == (
        structure_set.sop_instance_uid, (plan.sop_instance_uid,), (dose.sop_instance_uid,))
    # The planning CT was not shipped with the data: the structure set's image series is reported missing.
    (missing,) = summary.unresolved_references
    assert missing.relation == Relation.IMAGE_SERIES and missing.sop_instance_uid == structure_set.sop_instance_uid
