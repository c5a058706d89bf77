"""QIDO-RS over real HTTP with the real dicomweb-client, on both index back-ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from dicomweb_client import DICOMwebClient
from flask import Flask
from pydicom import Dataset
from pydicom.uid import CTImageStorage, RTDoseStorage

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.dicomweb.qido import QidoParameterError, parse_qido
from oncopacs.index.query import QueryLevel
from oncopacs.phantom import DemoPatient, build_benchmark_ct, build_demo_patients


@pytest.fixture(scope="module")
def demo(module_archive: Archive) -> list[DemoPatient]:
    """Two demo patients (4 studies) and three one-series CT studies dated 2023-01-01..03, stored once."""
    patients = build_demo_patients(2)
    bench = list(build_benchmark_ct(6, 3, rows=16, cols=16, prefix="QIDO"))
    for dataset in [d for p in patients for d in p.all_datasets()] + bench:
        assert module_archive.ingest_dataset(dataset, source="test").acknowledged
    return patients


@pytest.fixture(scope="module")
def base_url(module_live_server: str, demo) -> str:
    return f"{module_live_server}/dicom-web"


@pytest.fixture(scope="module")
def headers(module_headers_for) -> dict[str, str]:
    return module_headers_for("physicist")


@pytest.fixture(scope="module")
def client(base_url: str, headers: dict[str, str]) -> DICOMwebClient:
    return DICOMwebClient(base_url, headers=headers)


@pytest.fixture
def small_pages(module_web_app: Flask) -> Iterator[int]:
    """The server's maximum page lowered to 10 results for one test."""
    module_web_app.config["QIDO_MAX_RESULTS"] = 10
    yield 10
    del module_web_app.config["QIDO_MAX_RESULTS"]


def values(results: list[dict], keyword_tag: str) -> list:
    return [r[keyword_tag]["Value"][0] for r in results]


def study_uids(results: list[dict]) -> set[str]:
    return set(values(results, "0020000D"))


def plan_study(patient: DemoPatient) -> str:
    return patient.planning_ct[0].StudyInstanceUID


def pet_study(patient: DemoPatient) -> str:
    return patient.pet[0].StudyInstanceUID


# -- studies --------------------------------------------------------------------------------------


def test_all_studies_with_default_attributes_and_types(client: DICOMwebClient, demo) -> None:
    results = client.search_for_studies()
    assert len(results) == 7
    plan = next(r for r in results if r["0020000D"]["Value"] == [plan_study(demo[0])])
    ct = demo[0].planning_ct[0]
    assert plan["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Phantom^Proton"}]}
    assert plan["00100020"] == {"vr": "LO", "Value": ["ONCO-DEMO-001"]}
    assert plan["00080020"] == {"vr": "DA", "Value": ["20240115"]}
    assert plan["00080030"] == {"vr": "TM", "Value": [ct.StudyTime]}
    assert plan["00080050"] == {"vr": "SH", "Value": [ct.AccessionNumber]}
    assert plan["00080061"] == {"vr": "CS", "Value": ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]}
    assert plan["00201206"] == {"vr": "IS", "Value": [4]}
    assert plan["00201208"] == {"vr": "IS", "Value": [len(demo[0].planning_ct) + 3]}
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so only the path is the server's to get right
    assert plan["00081190"]["vr"] == "UR"
    assert plan["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{plan_study(demo[0])}")
    assert plan["00100040"]["vr"] == "CS" and plan["00200010"]["vr"] == "SH"
    parsed = Dataset.from_json(plan)
    assert parsed.PatientName == "Phantom^Proton" and parsed.NumberOfStudyRelatedSeries == 4


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientID": "ONCO-DEMO-002"}, {"d1:plan", "d1:pet"}),
        ({"PatientName": "phantom^p*"}, {"d0:plan", "d0:pet"}),  # wildcard, case-insensitive
        ({"PatientName": "PHANTOM^NEUTRON"}, {"d1:plan", "d1:pet"}),
        ({"PatientName": "*patient0000?"}, {"b0", "b1", "b2"}),
        ({"00100020": "QIDO-00001"}, {"b1"}),  # a tag as the key
        ({"StudyDate": "20230101-20230102"}, {"b0", "b1"}),
        ({"StudyDate": "-20230101"}, {"b0"}),
        ({"StudyDate": "20240116-"}, {"d0:pet", "d1:pet"}),
        ({"StudyDate": "20230103"}, {"b2"}),
        ({"ModalitiesInStudy": "RTDOSE"}, {"d0:plan", "d1:plan"}),
        ({"ModalitiesInStudy": "PT", "PatientID": "ONCO-DEMO-001"}, {"d0:pet"}),
        ({"ModalitiesInStudy": "MR"}, set()),
        ({"PatientID": "nobody"}, set()),
    ],
)
def test_study_matching(client: DICOMwebClient, demo, study_names, filters: dict, expected: set[str]) -> None:
    results = client.search_for_studies(search_filters=filters)
    assert {study_names[uid] for uid in study_uids(results)} == expected


@pytest.fixture(scope="module")
def study_names(demo) -> dict[str, str]:
    names = {}
    for i, patient in enumerate(demo):
        names[plan_study(patient)] = f"d{i}:plan"
        names[pet_study(patient)] = f"d{i}:pet"
    for j, dataset in enumerate(build_benchmark_ct(6, 3, rows=16, cols=16, prefix="QIDO")):
        names.setdefault(dataset.StudyInstanceUID, f"b{j // 2}")
    return names


def test_accession_number_and_uid_lists(client: DICOMwebClient, demo) -> None:
    accession = demo[1].planning_ct[0].AccessionNumber
    assert study_uids(client.search_for_studies(search_filters={"AccessionNumber": accession})) == {plan_study(demo[1])}
    wanted = {plan_study(demo[0]), pet_study(demo[1])}
    repeated = client.search_for_studies(search_filters={"StudyInstanceUID": sorted(wanted)})
    assert study_uids(repeated) == wanted
    comma = client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(sorted(wanted))})
    assert study_uids(comma) == wanted


def test_includefield(client: DICOMwebClient, demo) -> None:
    filters = {"PatientID": "ONCO-DEMO-001"}
    plain = client.search_for_studies(search_filters=filters)
    assert all("00080062" not in r and "00100021" not in r for r in plain)
    with_classes = client.search_for_studies(search_filters=filters, fields=["SOPClassesInStudy", "00100021"])
    pet = next(r for r in with_classes if r["0020000D"]["Value"] == [pet_study(demo[0])])
    assert set(pet["00080062"]["Value"]) == {CTImageStorage, demo[0].pet[0].SOPClassUID}
    assert pet["00100021"] == {"vr": "LO"}  # requested, empty: present without a Value
    everything = client.search_for_studies(search_filters=filters, fields=["all"])
    assert {"00080062", "00100021", "00080061", "00201208", "00081030"} <= set(everything[0])
    instances = client.search_for_instances(plan_study(demo[0]), fields=["all"],
                                            search_filters={"SOPInstanceUID": demo[0].rt_dose.SOPInstanceUID})
    assert instances[0]["00083002"] == {"vr": "UI", "Value": [demo[0].rt_dose.file_meta.TransferSyntaxUID]}


def test_unindexed_includefield_is_ignored_with_a_warning(base_url: str, headers) -> None:
    reply = requests.get(f"{base_url}/studies", params={"includefield": "Manufacturer", "PatientID": "QIDO-00000"},
                         headers=headers, timeout=10)
    assert reply.status_code == 200 and len(reply.json()) == 1
    assert "00080070" not in reply.json()[0]
    assert "299" in reply.headers["Warning"] and "Manufacturer" in reply.headers["Warning"]


# -- series and instances -------------------------------------------------------------------------


def test_series_of_a_study(client: DICOMwebClient, base_url: str, headers, demo) -> None:
    study = plan_study(demo[0])
    results = client.search_for_series(study)
    assert sorted(values(results, "00080060")) == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
    ct = next(r for r in results if r["00080060"]["Value"] == ["CT"])
    series = demo[0].planning_ct[0].SeriesInstanceUID
    assert ct["0020000E"] == {"vr": "UI", "Value": [series]}
    assert ct["00200011"] == {"vr": "IS", "Value": [1]}
    assert ct["00201209"] == {"vr": "IS", "Value": [len(demo[0].planning_ct)]}
    assert ct["0008103E"] == {"vr": "LO", "Value": ["Planning CT"]}
    direct = requests.get(f"{base_url}/studies/{study}/series", params={"Modality": "CT"}, headers=headers, timeout=10)
    assert direct.json()[0]["00081190"]["Value"] == [f"{base_url}/studies/{study}/series/{series}"]
    dose = client.search_for_series(study, search_filters={"Modality": "RTDOSE"})
    assert values(dose, "0020000E") == [demo[0].rt_dose.SeriesInstanceUID]
    one = client.search_for_series(study, search_filters={"SeriesInstanceUID": series})
    assert values(one, "0020000E") == [series]


def test_all_series_carry_their_study(client: DICOMwebClient, demo) -> None:
    results = client.search_for_series(search_filters={"Modality": "PT"})
    assert set(values(results, "0020000E")) == {p.pet[0].SeriesInstanceUID for p in demo}
    assert set(values(results, "00100020")) == {"ONCO-DEMO-001", "ONCO-DEMO-002"}
    assert set(values(results, "0020000D")) == {pet_study(p) for p in demo}


def test_instances(client: DICOMwebClient, demo) -> None:
    ct = demo[0].planning_ct
    results = client.search_for_instances(ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID)
    assert sorted(values(results, "00080018")) == sorted(d.SOPInstanceUID for d in ct)
    first = next(r for r in results if r["00080018"]["Value"] == [ct[0].SOPInstanceUID])
    assert first["00080016"] == {"vr": "UI", "Value": [CTImageStorage]}
    assert first["00200013"] == {"vr": "IS", "Value": [int(ct[0].InstanceNumber)]}
    assert first["00280010"] == {"vr": "US", "Value": [ct[0].Rows]}
    assert first["00280011"] == {"vr": "US", "Value": [ct[0].Columns]}
    assert first["00280008"] == {"vr": "IS"}  # single-frame CT: NumberOfFrames empty
    doses = client.search_for_instances(search_filters={"SOPClassUID": RTDoseStorage})
    assert set(values(doses, "00080018")) == {p.rt_dose.SOPInstanceUID for p in demo}
    assert set(values(doses, "00080060")) == {"RTDOSE"}  # series context of an all-instances search
    structs = client.search_for_instances(plan_study(demo[1]), search_filters={"Modality": "RTSTRUCT"})
    assert values(structs, "00080018") == [demo[1].rtstruct.SOPInstanceUID]


# -- paging ---------------------------------------------------------------------------------------


def test_limit_offset_and_get_remaining(client: DICOMwebClient, demo) -> None:
    ct = demo[1].planning_ct
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    page = client.search_for_instances(study, series, limit=10, offset=25)
    assert len(page) == len(ct) - 25
    everything = client.search_for_instances(study, series, limit=7, get_remaining=True)
    assert sorted(values(everything, "00080018")) == sorted(d.SOPInstanceUID for d in ct)
    assert client.search_for_instances(study, series, offset=len(ct)) == []


def test_server_maximum_page_warns_and_pages(client: DICOMwebClient, base_url: str, headers, demo, small_pages) -> None:
    ct = demo[0].planning_ct
    url = f"{base_url}/studies/{ct[0].StudyInstanceUID}/series/{ct[0].SeriesInstanceUID}/instances"
    reply = requests.get(url, headers=headers, timeout=10)
    assert reply.status_code == 200 and len(reply.json()) == small_pages
    assert reply.headers["Warning"].startswith("299 ") and "Additional results" in reply.headers["Warning"]
    asked = requests.get(url, params={"limit": 5}, headers=headers, timeout=10)
    assert len(asked.json()) == 5 and "Warning" not in asked.headers  # the client's own limit: no warning
    everything = client.search_for_instances(ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID, get_remaining=True)
    assert len({r["00080018"]["Value"][0] for r in everything}) == len(ct)


def test_no_match_is_an_empty_array(base_url: str, headers) -> None:
    reply = requests.get(f"{base_url}/studies", params={"PatientID": "nobody"}, headers=headers, timeout=10)
    assert reply.status_code == 200 and reply.json() == []
    assert reply.headers["Content-Type"].startswith("application/dicom+json")


def test_fuzzymatching_is_answered_with_a_warning(base_url: str, headers) -> None:
    reply = requests.get(f"{base_url}/studies", params={"fuzzymatching": "true", "PatientID": "QIDO-00002"},
                         headers=headers, timeout=10)
    assert reply.status_code == 200 and len(reply.json()) == 1
    assert "fuzzymatching" in reply.headers["Warning"]


# -- access, errors, audit ------------------------------------------------------------------------


def test_credentials_and_role_are_required(base_url: str, module_headers_for) -> None:
    assert requests.get(f"{base_url}/studies", timeout=10).status_code == 401
    referrer = requests.get(f"{base_url}/studies", headers=module_headers_for("referrer"), timeout=10)
    assert referrer.status_code == 403 and referrer.json()["status"] == 403


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/studies", {"PatientFoo": "1"}, "PatientFoo"),
        ("/studies", {"0010ABCD": "1"}, "0010ABCD"),
        ("/studies", {"Modality": "CT"}, "Modality"),  # a series attribute in a study search
        ("/studies", {"Manufacturer": "X"}, "Manufacturer"),  # a real keyword the index cannot match
        ("/studies", {"StudyDate": "2024"}, "StudyDate"),
        ("/studies", {"StudyDate": "20240101-20240131-20240201"}, "StudyDate"),
        ("/studies", {"limit": "ten"}, "limit"),
        ("/studies", {"limit": "0"}, "limit"),
        ("/studies", {"offset": "-1"}, "offset"),
        ("/studies", {"fuzzymatching": "maybe"}, "fuzzymatching"),
        ("/studies", {"includefield": "NoSuchKeyword"}, "includefield"),
        ("/series", {"SeriesNumber": "one"}, "SeriesNumber"),
        ("/instances", {"Rows": "many"}, "Rows"),
    ],
)
def test_bad_parameters_are_400_naming_them(base_url: str, headers, path: str, params: dict, parameter: str) -> None:
    reply = requests.get(base_url + path, params=params, headers=headers, timeout=10)
    assert reply.status_code == 400
    body = reply.json()
    assert body["parameter"] == parameter and body["status"] == 400 and parameter in body["detail"]


def test_path_uid_given_again_as_parameter_is_400(base_url: str, headers, demo) -> None:
    study = plan_study(demo[0])
    reply = requests.get(f"{base_url}/studies/{study}/series", params={"StudyInstanceUID": study},
                         headers=headers, timeout=10)
    assert reply.status_code == 400 and reply.json()["parameter"] == "StudyInstanceUID"
    bad = requests.get(f"{base_url}/studies/1.2,3/series", headers=headers, timeout=10)
    assert bad.status_code == 400


def test_queries_are_audited(client: DICOMwebClient, module_web_app: Flask, demo) -> None:
    client.search_for_studies(search_filters={"PatientID": "ONCO-DEMO-002"})
    trail: AuditTrail = module_web_app.extensions["oncopacs.audit"]
    entries = trail.query(AuditFilter(patient_id="ONCO-DEMO-002", action=AuditAction.QUERY), limit=1000).entries
    entry = next(e for e in reversed(entries) if "PatientID=ONCO-DEMO-002" in e.detail)
    assert entry.actor == "test-physicist" and entry.outcome == 0
    assert entry.patient_ids == ("ONCO-DEMO-002",)
    assert set(entry.study_uids) == {plan_study(demo[1]), pet_study(demo[1])}
    assert entry.detail.startswith("GET /dicom-web/studies?")


# -- parameter parsing ----------------------------------------------------------------------------


def test_parse_defaults_and_keys() -> None:
    query = parse_qido(QueryLevel.SERIES, [("00080060", "CT"), ("Modality", "PT"), ("includefield", "00081030,all")],
                       {"StudyInstanceUID": "1.2.3"})
    assert query.keys == {"Modality": "CT\\PT", "StudyInstanceUID": "1.2.3"}
    assert "StudyDescription" in query.return_keys and "NumberOfSeriesRelatedInstances" in query.return_keys
    assert query.limit is None and query.offset == 0 and not query.fuzzy_matching
    scoped = parse_qido(QueryLevel.IMAGE, [], {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3"})
    assert "PatientID" not in scoped.return_keys and "SOPInstanceUID" in scoped.return_keys
    unscoped = parse_qido(QueryLevel.IMAGE, [("limit", "5"), ("offset", "2")])
    assert {"PatientID", "Modality", "StudyInstanceUID"} <= set(unscoped.return_keys)
    assert (unscoped.limit, unscoped.offset) == (5, 2)


def test_parse_rejects_computed_attributes_as_match_keys() -> None:
    with pytest.raises(QidoParameterError) as caught:
        parse_qido(QueryLevel.STUDY, [("NumberOfStudyRelatedSeries", "3")])
    assert caught.value.parameter == "NumberOfStudyRelatedSeries"
    empty = parse_qido(QueryLevel.STUDY, [("NumberOfStudyRelatedSeries", "")])
    assert "NumberOfStudyRelatedSeries" in empty.return_keys and "NumberOfStudyRelatedSeries" not in empty.keys
