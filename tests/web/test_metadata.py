"""WADO-RS metadata and bulk data over real HTTP with the real dicomweb-client, on both index back-ends."""

from __future__ import annotations

import gzip
from urllib.parse import urlsplit

import pytest
import requests
from dicomweb_client import DICOMwebClient
from flask import Flask
from pydicom import Dataset, dcmread, examples
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000Lossless

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.index.query import find_instances
from oncopacs.phantom import DemoPatient, build_benchmark_ct, build_demo_patient

AVAILABLE_TRANSFER_SYNTAX = "00083002"


@pytest.fixture(scope="module")
def demo(module_archive: Archive) -> DemoPatient:
    """One demo patient (planning CT, RTSTRUCT, RT Ion Plan, RT Dose, PET-CT), stored once per back-end."""
    patient = build_demo_patient("META-001", "Meta^Data")
    for dataset in patient.all_datasets():
        assert module_archive.ingest_dataset(dataset, source="test").acknowledged
    return patient


@pytest.fixture(scope="module")
def base_url(module_live_server: str, demo) -> str:
    return f"{module_live_server}/dicom-web"


@pytest.fixture(scope="module")
def headers(module_headers_for) -> dict[str, str]:
    return module_headers_for("physicist")


@pytest.fixture(scope="module")
def client(base_url: str, headers: dict[str, str]) -> DICOMwebClient:
    return DICOMwebClient(base_url, headers=headers)


def on_live_server(uri: str, base_url: str) -> str:
    """``uri`` on the live server: dicomweb-client sends ``Host`` without the port, so URIs it caused lack it."""
    return base_url.split("/dicom-web")[0] + urlsplit(uri).path


def decode(document: dict, client: DICOMwebClient, base_url: str, fetched: list[str] | None = None) -> Dataset:
    """pydicom's reading of a metadata document, with every BulkDataURI retrieved by the client."""
    document = dict(document)
    document.pop(AVAILABLE_TRANSFER_SYNTAX)

    def fetch(_tag: str, _vr: str, uri: str) -> bytes:
        if fetched is not None:
            fetched.append(uri)
        (value,) = client.retrieve_bulkdata(on_live_server(uri, base_url))
        return bytes(value)  # the client gives a bytearray

    return Dataset.from_json(document, bulk_data_uri_handler=fetch)


def read_stored(archive: Archive, dataset: Dataset) -> Dataset:
    """The dataset as the archive holds it (its file, read back), which metadata must reproduce."""
    with archive.index.reading() as session:
        (stored,) = find_instances(session, {"SOPInstanceUID": dataset.SOPInstanceUID})
    return dcmread(archive.storage.path_of(stored.file_path))


def uids(dataset: Dataset) -> tuple[str, str, str]:
    return dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID


@pytest.mark.parametrize("which", ["ct", "rtstruct", "plan", "dose", "pet"])
def test_instance_metadata_equals_the_stored_dataset(
    client: DICOMwebClient, module_archive: Archive, base_url: str, demo, which: str
) -> None:
    built = {"ct": demo.planning_ct[3], "rtstruct": demo.rtstruct, "plan": demo.rt_ion_plan,
             "dose": demo.rt_dose, "pet": demo.pet[7]}[which]
    stored = read_stored(module_archive, built)
    study, series, instance = uids(stored)
    document = client.retrieve_instance_metadata(study, series, instance)
    assert document[AVAILABLE_TRANSFER_SYNTAX] == {"vr": "UI", "Value": [stored.file_meta.TransferSyntaxUID]}
    fetched: list[str] = []
    assert decode(document, client, base_url, fetched) == stored
    if "PixelData" in stored:
        assert document["7FE00010"]["vr"] == "OW" and "Value" not in document["7FE00010"]
        assert fetched == [document["7FE00010"]["BulkDataURI"]]
        assert fetched[0].endswith(f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/7FE00010")


def test_series_and_study_metadata(client: DICOMwebClient, module_archive: Archive, base_url: str, demo) -> None:
    ct = demo.planning_ct
    series_documents = client.retrieve_series_metadata(ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID)
    assert len(series_documents) == len(ct)
    by_uid = {d["00080018"]["Value"][0]: d for d in series_documents}
    assert set(by_uid) == {d.SOPInstanceUID for d in ct}
    assert decode(by_uid[ct[-1].SOPInstanceUID], client, base_url) == read_stored(module_archive, ct[-1])
    study_documents = client.retrieve_study_metadata(ct[0].StudyInstanceUID)
    assert {d["00080060"]["Value"][0] for d in study_documents} == {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
    assert len(study_documents) == len(ct) + 3


def test_bulk_data_uris_are_absolute_for_the_host_asked(base_url: str, headers, demo) -> None:
    study, series, instance = uids(demo.pet[0])
    reply = requests.get(f"{base_url}/studies/{study}/series/{series}/instances/{instance}/metadata",
                         headers=headers, timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("application/dicom+json")
    uri = reply.json()[0]["7FE00010"]["BulkDataURI"]
    assert uri == f"{base_url}/studies/{study}/series/{series}/instances/{instance}/bulkdata/7FE00010"
    multipart = requests.get(uri, headers={**headers, "Accept": 'multipart/related; type="application/octet-stream"'},
                             timeout=10)
    assert multipart.status_code == 200
    assert multipart.headers["Content-Type"].startswith('multipart/related; type="application/octet-stream"; boundary=')
    single = requests.get(uri, headers={**headers, "Accept": "application/octet-stream"}, timeout=10)
    assert single.headers["Content-Type"] == "application/octet-stream"
    assert single.content == demo.pet[0].PixelData


def test_unknown_uids_are_404_json(base_url: str, headers, demo) -> None:
    study, series, instance = uids(demo.rt_dose)
    for path in (
        "/studies/1.2.3.4/metadata",
        f"/studies/{study}/series/1.2.3.4/metadata",
        f"/studies/{study}/series/{series}/instances/1.2.3.4/metadata",
        f"/studies/{study}/series/{demo.planning_ct[0].SeriesInstanceUID}/instances/{instance}/metadata",
        f"/studies/{study}/series/{series}/instances/{instance}/bulkdata/00100010",  # not binary
        f"/studies/{study}/series/{series}/instances/{instance}/bulkdata/300C0002/9/00081155",  # no such item
    ):
        reply = requests.get(base_url + path, headers=headers, timeout=10)
        assert reply.status_code == 404, path
        assert reply.json()["status"] == 404
    malformed = requests.get(f"{base_url}/studies/{study}/series/{series}/instances/{instance}/bulkdata/7FE0",
                             headers=headers, timeout=10)
    assert malformed.status_code == 400 and "bulk data path" in malformed.json()["detail"]


def test_credentials_and_role_are_required(base_url: str, module_headers_for, demo) -> None:
    study = demo.rt_dose.StudyInstanceUID
    assert requests.get(f"{base_url}/studies/{study}/metadata", timeout=10).status_code == 401
    reply = requests.get(f"{base_url}/studies/{study}/metadata", headers=module_headers_for("referrer"), timeout=10)
    assert reply.status_code == 403


def test_retrievals_are_audited(client: DICOMwebClient, module_web_app: Flask, base_url: str, demo) -> None:
    study, series, instance = uids(demo.rt_dose)
    document = client.retrieve_instance_metadata(study, series, instance)
    client.retrieve_bulkdata(on_live_server(document["7FE00010"]["BulkDataURI"], base_url))
    trail: AuditTrail = module_web_app.extensions["oncopacs.audit"]
    entries = trail.query(AuditFilter(patient_id="META-001", action=AuditAction.RETRIEVE), limit=10_000).entries
    details = [e.detail for e in entries if e.study_uids == (study,) and e.actor == "test-physicist"]
    assert f"GET /dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata" in details
    assert f"GET /dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/7FE00010" in details


def test_damaged_file_is_refused(module_archive: Archive, base_url: str, headers) -> None:
    (dataset,) = build_benchmark_ct(1, rows=16, cols=16, prefix="DAMAGED")
    assert module_archive.ingest_dataset(dataset, source="test").acknowledged
    study, series, instance = uids(dataset)
    with module_archive.index.reading() as session:
        (stored,) = find_instances(session, {"SOPInstanceUID": instance})
    path = module_archive.storage.path_of(stored.file_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    reply = requests.get(f"{base_url}/studies/{study}/series/{series}/instances/{instance}/metadata",
                         headers=headers, timeout=10)
    assert reply.status_code == 500 and instance in reply.json()["detail"]


def test_compressed_pixel_data_comes_back_as_its_frames(
    client: DICOMwebClient, module_archive: Archive, base_url: str, headers
) -> None:
    path = examples.get_path("jpeg2k")
    assert module_archive.ingest(path.read_bytes(), source="test").acknowledged
    original = dcmread(path)
    document = client.retrieve_instance_metadata(*uids(original))
    assert document["7FE00010"]["vr"] == "OB"
    assert document[AVAILABLE_TRANSFER_SYNTAX]["Value"] == [JPEG2000Lossless]
    uri = on_live_server(document["7FE00010"]["BulkDataURI"], base_url)
    assert client.retrieve_bulkdata(uri) == list(generate_frames(original.PixelData, number_of_frames=1))
    reply = requests.get(uri, headers=headers, timeout=10)
    assert f"Content-Type: application/octet-stream; transfer-syntax={JPEG2000Lossless}".encode() in reply.content


def test_metadata_is_gzipped_for_a_client_that_asks_and_frames_are_sent_as_stored(
        base_url: str, headers: dict[str, str], demo: DemoPatient):
    """A viewer's largest wait before its first image is the series metadata: sent gzipped when accepted."""
    ct = demo.planning_ct[0]
    series = f"{base_url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    plain = requests.get(f"{series}/metadata", headers={**headers, "Accept-Encoding": "identity"}, timeout=30)
    zipped = requests.get(f"{series}/metadata", headers={**headers, "Accept-Encoding": "gzip"}, stream=True,
                          timeout=30)
    raw = zipped.raw.read(decode_content=False)
    assert "Content-Encoding" not in plain.headers and zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert gzip.decompress(raw) == plain.content and len(raw) * 5 < len(plain.content)
    frame = requests.get(f"{series}/instances/{ct.SOPInstanceUID}/frames/1",
                         headers={**headers, "Accept-Encoding": "gzip",
                                  "Accept": "multipart/related; type=application/octet-stream"}, timeout=30)
    assert frame.status_code == 200 and "Content-Encoding" not in frame.headers
