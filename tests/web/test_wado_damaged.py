"""WADO-RS with damaged stored files: the rest is delivered, the damage is said, audited and never shows a path."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from flask import Flask
from pydicom import Dataset

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditEntry, AuditFilter, AuditTrail
from oncopacs.index.query import StoredInstance, find_instances
from oncopacs.phantom import build_benchmark_ct


@pytest.fixture(scope="module")
def base_url(module_live_server: str) -> str:
    return f"{module_live_server}/dicom-web"


@pytest.fixture(scope="module")
def headers(module_headers_for) -> dict[str, str]:
    return module_headers_for("physicist")


def store_series(archive: Archive, prefix: str, n: int) -> list[Dataset]:
    """``n`` small CT slices of one new patient ``{prefix}-00000`` (one study, one series), stored."""
    datasets = list(build_benchmark_ct(n, rows=16, cols=16, prefix=prefix))
    for dataset in datasets:
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return datasets


def stored_file(archive: Archive, dataset: Dataset) -> tuple[StoredInstance, Path]:
    with archive.index.reading() as session:
        (stored,) = find_instances(session, {"SOPInstanceUID": dataset.SOPInstanceUID})
    return stored, archive.storage.path_of(stored.file_path)


def corrupt(archive: Archive, dataset: Dataset) -> None:
    _, path = stored_file(archive, dataset)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def delete(archive: Archive, dataset: Dataset) -> None:
    stored_file(archive, dataset)[1].unlink()


def make_unreadable(archive: Archive, dataset: Dataset) -> None:
    """A directory where the file was: reading it fails with an OSError (chmod would not stop root)."""
    _, path = stored_file(archive, dataset)
    path.unlink()
    path.mkdir()


def series_path(dataset: Dataset) -> str:
    return f"/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"


def instance_path(dataset: Dataset) -> str:
    return f"{series_path(dataset)}/instances/{dataset.SOPInstanceUID}"


def parts_of(reply: requests.Response, base_url: str) -> list[bytes]:
    """The multipart body split by dicomweb-client's own decoder."""
    return [bytes(p) for p in DICOMwebClient(base_url)._decode_multipart_message(reply, stream=False)]


def retrieve_audits(app: Flask, patient_id: str) -> list[AuditEntry]:
    trail: AuditTrail = app.extensions["oncopacs.audit"]
    return list(trail.query(AuditFilter(patient_id=patient_id, action=AuditAction.RETRIEVE), limit=1000).entries)


def assert_no_path(text: str, archive: Archive, *datasets: Dataset) -> None:
    """Neither the data directory nor any stored file's path (absolute or relative) is in ``text``."""
    assert str(archive.storage.root) not in text and ".dcm" not in text
    for dataset in datasets:
        stored, path = stored_file(archive, dataset)
        assert stored.file_path not in text and str(path) not in text


@pytest.fixture
def oncopacs_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="oncopacs"):
        yield caplog


def test_a_series_leaves_damaged_instances_out_and_says_so(
    module_archive: Archive, module_web_app: Flask, base_url: str, headers, oncopacs_log
) -> None:
    datasets = store_series(module_archive, "DMG-SERIES", 6)
    altered, missing = datasets[1], datasets[4]
    corrupt(module_archive, altered)
    delete(module_archive, missing)
    healthy = [d for d in datasets if d not in (altered, missing)]

    reply = requests.get(base_url + series_path(datasets[0]), headers=headers, timeout=30)
    assert reply.status_code == 200
    warning = reply.headers["Warning"]
    assert warning.startswith("299 ") and "2 of 6 instances were left out" in warning
    assert "1 missing" in warning and "1 SHA-256 mismatch" in warning
    assert_no_path(warning, module_archive, *healthy)
    assert altered.SOPInstanceUID not in warning and "DMG-SERIES" not in warning  # no UIDs, no patient data
    parts = parts_of(reply, base_url)
    assert len(parts) == len(datasets) - 2
    expected = {stored_file(module_archive, d)[0].sha256 for d in healthy}
    assert {hashlib.sha256(part).hexdigest() for part in parts} == expected  # byte-identical, as stored

    # dicomweb-client reads the same answer without complaint; metadata leaves the same two out.
    client = DICOMwebClient(base_url, headers=headers)
    got = client.retrieve_series(datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID)
    assert sorted(d.SOPInstanceUID for d in got) == sorted(d.SOPInstanceUID for d in healthy)
    metadata = requests.get(base_url + series_path(datasets[0]) + "/metadata", headers=headers, timeout=30)
    assert metadata.status_code == 200 and "2 of 6 instances were left out" in metadata.headers["Warning"]
    assert len(metadata.json()) == 4

    entries = [e for e in retrieve_audits(module_web_app, "DMG-SERIES-00000") if "/metadata" not in e.detail]
    failures = [e for e in entries if e.outcome == Outcome.SERIOUS_FAILURE]
    assert sorted(e.detail.split("instance ")[1].split(" ")[0] for e in failures[-2:]) == sorted(
        [altered.SOPInstanceUID, missing.SOPInstanceUID]
    )
    assert {e.study_uids for e in failures} == {(datasets[0].StudyInstanceUID,)}
    delivered = entries[-1]
    assert delivered.outcome == Outcome.MINOR_FAILURE and "2 of 6 instances not sent" in delivered.detail
    for entry in entries:
        assert_no_path(entry.detail, module_archive, *datasets[:1])
    logged = [r.getMessage() for r in oncopacs_log.records]
    assert any(altered.SOPInstanceUID in m and "altered" in m for m in logged)
    assert any(missing.SOPInstanceUID in m and "missing" in m for m in logged)
    for message in logged:
        assert str(module_archive.storage.root) not in message and ".dcm" not in message
        assert "Bench^" not in message  # the patient's name


def test_a_study_with_an_unreadable_file_is_delivered_without_it(
    module_archive: Archive, base_url: str, headers
) -> None:
    datasets = store_series(module_archive, "DMG-STUDY", 4)
    make_unreadable(module_archive, datasets[0])  # the first: the body must still start with a whole part
    reply = requests.get(f"{base_url}/studies/{datasets[0].StudyInstanceUID}", headers=headers, timeout=30)
    assert reply.status_code == 200
    assert "1 of 4 instances were left out" in reply.headers["Warning"]
    assert "1 unreadable" in reply.headers["Warning"]
    assert len(parts_of(reply, base_url)) == 3


def test_a_damaged_instance_alone_is_a_json_500_without_a_path(
    module_archive: Archive, module_web_app: Flask, base_url: str, headers
) -> None:
    altered, missing, healthy = store_series(module_archive, "DMG-ALONE", 3)
    corrupt(module_archive, altered)
    delete(module_archive, missing)

    for suffix in ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7FE00010"):
        reply = requests.get(base_url + instance_path(altered) + suffix, headers=headers, timeout=30)
        assert reply.status_code == 500, suffix
        body = reply.json()
        assert "SHA-256 mismatch" in body["detail"] and "other instances are unaffected" in body["detail"], suffix
        assert_no_path(reply.text, module_archive, altered, healthy)
    reply = requests.get(base_url + instance_path(missing), headers=headers, timeout=30)
    assert reply.status_code == 500 and "missing from the storage area" in reply.json()["detail"]
    assert_no_path(reply.text, module_archive, healthy)

    failures = [e for e in retrieve_audits(module_web_app, "DMG-ALONE-00000") if e.outcome == Outcome.SERIOUS_FAILURE]
    assert len(failures) == 7 and all(altered.SOPInstanceUID in e.detail for e in failures[:6])
    assert requests.get(base_url + instance_path(healthy), headers=headers, timeout=30).status_code == 200


def test_a_series_with_every_file_damaged_is_an_error(
    module_archive: Archive, module_web_app: Flask, base_url: str, headers
) -> None:
    datasets = store_series(module_archive, "DMG-ALL", 3)
    corrupt(module_archive, datasets[0])
    delete(module_archive, datasets[1])
    make_unreadable(module_archive, datasets[2])
    for suffix in ("", "/metadata"):
        reply = requests.get(base_url + series_path(datasets[0]) + suffix, headers=headers, timeout=30)
        assert reply.status_code == 500 and reply.headers["Content-Type"] == "application/json"
        detail = reply.json()["detail"]
        assert "none of the 3 instances can be sent" in detail
        assert "1 SHA-256 mismatch" in detail and "1 missing" in detail and "1 unreadable" in detail
        assert "Warning" not in reply.headers
        assert_no_path(reply.text, module_archive, datasets[0])
    failures = [e for e in retrieve_audits(module_web_app, "DMG-ALL-00000") if e.outcome == Outcome.SERIOUS_FAILURE]
    assert len(failures) == 6
