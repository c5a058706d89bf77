"""C-FIND/QIDO matching on both index back-ends: wildcards, ranges, UID lists, computed attributes."""

from __future__ import annotations

import pytest

from oncopacs.archive.ingest import Archive
from oncopacs.index.query import QueryError, QueryLevel, find, find_instances
from oncopacs.phantom import build_demo_patients
from tests.factories import small_ct_series


@pytest.fixture(scope="module")
def demo_patients():
    return build_demo_patients(2)


@pytest.fixture(scope="module")
def loaded(module_archive: Archive, demo_patients):
    """The two demo patients, stored once per back-end."""
    for patient in demo_patients:
        for dataset in patient.all_datasets():
            module_archive.ingest_dataset(dataset, source="t")
    return demo_patients


def run(archive: Archive, level: QueryLevel, **keys: str):
    with archive.index.reading() as session:
        return [m.values for m in find(session, level, keys)]


def test_patient_level_with_computed_counts(module_archive: Archive, loaded):
    rows = run(module_archive, QueryLevel.PATIENT, PatientID="", NumberOfPatientRelatedStudies="",
               NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="")
    assert len(rows) == 2
    first = loaded[0]
    row = next(r for r in rows if r["PatientID"] == first.patient.patient_id)
    assert row["NumberOfPatientRelatedStudies"] == 2
    assert row["NumberOfPatientRelatedSeries"] == 6
    assert row["NumberOfPatientRelatedInstances"] == len(first.all_datasets())


def test_study_level_modalities_and_counts(module_archive: Archive, loaded):
    rows = run(module_archive, QueryLevel.STUDY, PatientID=loaded[0].patient.patient_id, ModalitiesInStudy="",
               NumberOfStudyRelatedInstances="", NumberOfStudyRelatedSeries="")
    by_modalities = {tuple(r["ModalitiesInStudy"]): r for r in rows}
    assert set(by_modalities) == {("CT", "RTDOSE", "RTPLAN", "RTSTRUCT"), ("CT", "PT")}
    planning = by_modalities[("CT", "RTDOSE", "RTPLAN", "RTSTRUCT")]
    assert planning["NumberOfStudyRelatedInstances"] == len(loaded[0].planning_ct) + 3
    assert planning["NumberOfStudyRelatedSeries"] == 4


def test_modalities_in_study_matching(module_archive: Archive, loaded):
    rows = run(module_archive, QueryLevel.STUDY, ModalitiesInStudy="PT")
    assert len(rows) == 2 and all(r["StudyID"] == "PETCT1" for r in rows)
    rows = run(module_archive, QueryLevel.STUDY, ModalitiesInStudy="RTDOSE\\PT")
    assert len(rows) == 4


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("Phantom^Proton", 1), ("phantom^proton", 1), ("Phantom*", 2), ("*Neutron", 1), ("Phantom^P?oton", 1),
     ("Nobody*", 0), ("*", 2)],
)
def test_person_name_wildcards_ignore_case(module_archive: Archive, loaded, pattern: str, expected: int):
    assert len(run(module_archive, QueryLevel.PATIENT, PatientName=pattern)) == expected


def test_wildcards_are_not_sql_wildcards(archive: Archive):
    for dataset in small_ct_series(2, studies=2, prefix="W"):
        archive.ingest_dataset(dataset, source="t")
    assert run(archive, QueryLevel.PATIENT, PatientID="W_%") == []
    assert len(run(archive, QueryLevel.PATIENT, PatientID="W-*")) == 2


def test_date_ranges(archive: Archive):
    for dataset in small_ct_series(6, studies=6, prefix="D"):  # study dates 20230101..20230106
        archive.ingest_dataset(dataset, source="t")
    dates = lambda **k: sorted(r["StudyDate"] for r in run(archive, QueryLevel.STUDY, **k))  # noqa: E731
    assert dates(StudyDate="20230102-20230104") == ["20230102", "20230103", "20230104"]
    assert dates(StudyDate="-20230102") == ["20230101", "20230102"]
    assert dates(StudyDate="20230105-") == ["20230105", "20230106"]
    assert dates(StudyDate="20230103") == ["20230103"]


def test_time_range_includes_the_whole_upper_unit(archive: Archive):
    for dataset in small_ct_series(3, studies=3, prefix="TM"):  # study times 080000, 090100, 100200
        archive.ingest_dataset(dataset, source="t")
    rows = run(archive, QueryLevel.STUDY, StudyTime="0900-1002")
    assert sorted(r["StudyTime"] for r in rows) == ["090100", "100200"]


def test_malformed_range_is_a_query_error(module_archive: Archive, loaded):
    with pytest.raises(QueryError):
        run(module_archive, QueryLevel.STUDY, StudyDate="2023-01-01")


def test_uid_list_matching(module_archive: Archive, loaded):
    uids = [p.rtstruct.StudyInstanceUID for p in loaded]
    rows = run(module_archive, QueryLevel.STUDY, StudyInstanceUID="\\".join(uids))
    assert sorted(r["StudyInstanceUID"] for r in rows) == sorted(uids)


def test_series_and_image_levels_filter_by_parents(module_archive: Archive, loaded):
    patient = loaded[1]
    study_uid = patient.planning_ct[0].StudyInstanceUID
    series = run(module_archive, QueryLevel.SERIES, StudyInstanceUID=study_uid, NumberOfSeriesRelatedInstances="")
    counts = {r["Modality"]: r["NumberOfSeriesRelatedInstances"] for r in series}
    assert counts == {"CT": len(patient.planning_ct), "RTSTRUCT": 1, "RTPLAN": 1, "RTDOSE": 1}
    images = run(module_archive, QueryLevel.IMAGE, SeriesInstanceUID=patient.rt_dose.SeriesInstanceUID)
    assert [r["SOPInstanceUID"] for r in images] == [patient.rt_dose.SOPInstanceUID]
    assert images[0]["NumberOfFrames"] == patient.rt_dose.NumberOfFrames


def test_limit_and_offset_page_stably(archive: Archive):
    for dataset in small_ct_series(7, studies=7, prefix="P"):
        archive.ingest_dataset(dataset, source="t")
    with archive.index.reading() as session:
        pages = [find(session, QueryLevel.STUDY, {}, limit=3, offset=o) for o in (0, 3, 6)]
    uids = [m.values["StudyInstanceUID"] for page in pages for m in page]
    assert [len(p) for p in pages] == [3, 3, 1] and len(set(uids)) == 7


@pytest.mark.parametrize("level, computed", [
    (QueryLevel.PATIENT, ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances")),
    (QueryLevel.STUDY, ("ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")),
    (QueryLevel.SERIES, ("NumberOfSeriesRelatedInstances",)),
])
def test_computed_attributes_of_a_page_are_those_of_its_own_entities(module_archive: Archive, loaded, level, computed):
    """The grouped queries take the page's entities from the paged query itself (limit and offset included)."""
    keys = dict.fromkeys(computed, "")
    with module_archive.index.reading() as session:
        whole = {m.pk: m.values for m in find(session, level, keys)}
        pages = [find(session, level, keys, limit=2, offset=offset) for offset in range(0, len(whole), 2)]
    paged = [m for page in pages for m in page]
    assert [m.pk for m in paged] == sorted(whole) and len(whole) >= 2
    for match in paged:
        assert {k: match.values[k] for k in computed} == {k: whole[match.pk][k] for k in computed}
    if level != QueryLevel.PATIENT:  # the two demo patients are alike; their studies and series are not
        assert len({str(values[computed[-1]]) for values in whole.values()}) > 1


def test_find_instances_for_retrieve(module_archive: Archive, loaded):
    study_uid = loaded[0].pet[0].StudyInstanceUID
    with module_archive.index.reading() as session:
        instances = find_instances(session, {"StudyInstanceUID": study_uid})
        with pytest.raises(QueryError):
            find_instances(session, {})
    assert len(instances) == len(loaded[0].pet) + len(loaded[0].pet_ct)
    assert all(i.study_instance_uid == study_uid for i in instances)
