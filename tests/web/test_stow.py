"""STOW-RS over real HTTP with the real dicomweb-client."""

from __future__ import annotations

import hashlib

import pytest
import requests
from dicomweb_client import DICOMwebClient
from flask import Flask
from pydicom import Dataset

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, AuditTrail
from tests.factories import part10_bytes, small_ct_series

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"
SOP_INSTANCE_UID = "00081155"


@pytest.fixture
def base_url(live_server: str) -> str:
    return f"{live_server}/dicom-web"


@pytest.fixture
def headers(headers_for) -> dict[str, str]:
    return headers_for("physicist")


@pytest.fixture
def client(base_url: str, headers: dict[str, str]) -> DICOMwebClient:
    return DICOMwebClient(base_url, headers=headers)


def encode(
    parts: list[bytes], *, quoted: bool = True, boundary: str = "a1b2c3d4-boundary"
) -> tuple[bytes, dict[str, str]]:
    """A STOW body made by dicomweb-client's own encoder (optionally with unquoted parameters)."""
    content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    body = DICOMwebClient._encode_multipart_message(parts, content_type)
    return body, {"Content-Type": content_type if quoted else content_type.replace('"', "")}


def post(base_url: str, headers: dict, parts: list[bytes], path: str = "/studies", **options) -> requests.Response:
    body, content_headers = encode(parts, **options)
    return requests.post(base_url + path, data=body, headers={**headers, **content_headers}, timeout=30)


def failed_items(document: dict) -> list[tuple[str, int]]:
    items = document.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    return [(item.get(SOP_INSTANCE_UID, {}).get("Value", [""])[0], item[FAILURE_REASON]["Value"][0]) for item in items]


def failed_reasons(document: dict) -> dict[str, int]:
    return dict(failed_items(document))


def referenced(document: dict) -> list[str]:
    return [item[SOP_INSTANCE_UID]["Value"][0] for item in document.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])]


def test_client_stores_several_instances(client: DICOMwebClient, headers, base_url) -> None:
    datasets = small_ct_series(3)
    response: Dataset = client.store_instances(datasets)
    assert [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence] == [
        d.SOPInstanceUID for d in datasets
    ]
    assert "FailedSOPSequence" not in response
    assert response.RetrieveURL.endswith(f"/studies/{datasets[0].StudyInstanceUID}")
    for item in response.ReferencedSOPSequence:
        assert item.ReferencedSOPClassUID == datasets[0].SOPClassUID
        # dicomweb-client's chunked POST sends "Host: 127.0.0.1" without the port, so only the path is checked
        path = item.RetrieveURL.split("/dicom-web", 1)[1]
        assert path.endswith(f"/instances/{item.ReferencedSOPInstanceUID}")
        assert requests.get(base_url + path, headers=headers, timeout=10).status_code == 200
    found = client.search_for_instances(datasets[0].StudyInstanceUID)
    assert len(found) == 3


@pytest.mark.parametrize("quoted", [True, False])
def test_stored_bytes_come_back_identical(base_url, headers, quoted: bool) -> None:
    datasets = small_ct_series(2, prefix=f"Q{int(quoted)}")
    parts = [part10_bytes(d) for d in datasets]
    reply = post(base_url, headers, parts, quoted=quoted)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/dicom+json"
    assert referenced(reply.json()) == [d.SOPInstanceUID for d in datasets]
    for dataset, sent in zip(datasets, parts, strict=True):
        url = (
            f"{base_url}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
            f"/instances/{dataset.SOPInstanceUID}"
        )
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        got = requests.get(url, headers={**headers, "Accept": accept}, timeout=10)
        (returned,) = DICOMwebClient(base_url)._decode_multipart_message(got, stream=False)
        assert hashlib.sha256(bytes(returned)).hexdigest() == hashlib.sha256(sent).hexdigest()


def test_identical_resend_is_success(base_url, headers) -> None:
    parts = [part10_bytes(d) for d in small_ct_series(2)]
    assert post(base_url, headers, parts).status_code == 200
    again = post(base_url, headers, parts)
    assert again.status_code == 200 and len(referenced(again.json())) == 2 and FAILED_SOP_SEQUENCE not in again.json()


def test_mix_with_a_truncated_file_is_202(base_url, headers, archive: Archive) -> None:
    good, damaged = small_ct_series(2)
    truncated = part10_bytes(damaged)[:-100]
    reply = post(base_url, headers, [part10_bytes(good), truncated])
    assert reply.status_code == 202
    document = reply.json()
    assert referenced(document) == [good.SOPInstanceUID]
    assert failed_reasons(document) == {damaged.SOPInstanceUID: 0xC000}
    with archive.index.reading() as session:
        from oncopacs.index.query import find_instances

        assert [
            i.sop_instance_uid for i in find_instances(session, {"StudyInstanceUID": good.StudyInstanceUID})
        ] == [good.SOPInstanceUID]


def test_only_bad_parts_is_409(base_url, headers) -> None:
    reply = post(base_url, headers, [b"not dicom at all", part10_bytes(small_ct_series(1)[0])[:400]])
    assert reply.status_code == 409
    reasons = [reason for _, reason in failed_items(reply.json())]
    assert reasons == [0xC000, 0xC000] and REFERENCED_SOP_SEQUENCE not in reply.json()


def test_same_uid_with_other_content_fails_with_0111(base_url, headers) -> None:
    (dataset,) = small_ct_series(1)
    assert post(base_url, headers, [part10_bytes(dataset)]).status_code == 200
    dataset.SeriesDescription = "changed"
    reply = post(base_url, headers, [part10_bytes(dataset)])
    assert reply.status_code == 409 and failed_reasons(reply.json()) == {dataset.SOPInstanceUID: 0x0111}


def test_a_refused_resend_is_audited_with_status_reason_and_patient(base_url, headers, web_app: Flask) -> None:
    (dataset,) = small_ct_series(1, prefix="AUR")
    assert post(base_url, headers, [part10_bytes(dataset)]).status_code == 200
    dataset.SeriesDescription = "changed"
    assert post(base_url, headers, [part10_bytes(dataset)]).status_code == 409
    trail: AuditTrail = web_app.extensions["oncopacs.audit"]
    _, refused = trail.query(AuditFilter(patient_id=dataset.PatientID, action=AuditAction.STORE), limit=10).entries
    assert refused.actor == "test-physicist" and refused.outcome == 8 and refused.patient_ids == (dataset.PatientID,)
    assert refused.detail == ("POST /dicom-web/studies; refused: 0x0111 already stored with different content "
                              f"(first copy kept): SOP Instance {dataset.SOPInstanceUID}")


def test_study_target_refuses_instances_of_another_study(base_url, headers, client) -> None:
    mine, other = small_ct_series(2, studies=2)
    assert mine.StudyInstanceUID != other.StudyInstanceUID
    reply = post(base_url, headers, [part10_bytes(mine), part10_bytes(other)], path=f"/studies/{mine.StudyInstanceUID}")
    assert reply.status_code == 202
    assert referenced(reply.json()) == [mine.SOPInstanceUID]
    assert failed_reasons(reply.json()) == {other.SOPInstanceUID: 0xA900}
    assert reply.json()[RETRIEVE_URL]["Value"][0].endswith(f"/studies/{mine.StudyInstanceUID}")
    response = client.store_instances([other], study_instance_uid=other.StudyInstanceUID)
    assert response.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == other.SOPInstanceUID


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", 'multipart/related; type="application/dicom+json"; boundary=b', "application/json"],
)
def test_wrong_media_type_is_415(base_url, headers, content_type: str) -> None:
    body = part10_bytes(small_ct_series(1)[0])
    reply = requests.post(
        f"{base_url}/studies", data=body, headers={**headers, "Content-Type": content_type}, timeout=10
    )
    assert reply.status_code == 415 and reply.json()["status"] == 415


def test_malformed_body_is_400_and_stores_nothing(base_url, headers, client) -> None:
    (dataset,) = small_ct_series(1, prefix="BROKEN")
    body, content_headers = encode([part10_bytes(dataset)])
    cut = body[: body.rindex(b"\r\n--")]  # no closing boundary
    reply = requests.post(f"{base_url}/studies", data=cut, headers={**headers, **content_headers}, timeout=10)
    assert reply.status_code == 400 and "closing boundary" in reply.json()["detail"]
    assert client.search_for_studies(search_filters={"StudyInstanceUID": dataset.StudyInstanceUID}) == []


def test_body_over_the_limit_is_413(base_url, headers, monkeypatch) -> None:
    from oncopacs.web.dicomweb import stow

    monkeypatch.setattr(stow, "STOW_MAX_BYTES", 1000)
    reply = post(base_url, headers, [part10_bytes(small_ct_series(1)[0])])
    assert reply.status_code == 413


def test_roles(base_url, headers_for) -> None:
    parts = [part10_bytes(small_ct_series(1)[0])]
    assert post(base_url, {}, parts).status_code == 401
    assert post(base_url, headers_for("tumour_board"), parts).status_code == 403
    assert post(base_url, headers_for("referrer"), parts).status_code == 403


def test_stores_are_audited(base_url, headers, web_app: Flask) -> None:
    good, damaged = small_ct_series(2, prefix="AUD")
    assert post(base_url, headers, [part10_bytes(good), part10_bytes(damaged)[:-50]]).status_code == 202
    trail: AuditTrail = web_app.extensions["oncopacs.audit"]
    (entry,) = trail.query(AuditFilter(patient_id=good.PatientID, action=AuditAction.STORE), limit=10).entries
    assert entry.actor == "test-physicist" and entry.outcome == 4  # minor failure: one of two stored
    assert entry.patient_ids == (good.PatientID,) and entry.study_uids == (good.StudyInstanceUID,)
    assert entry.detail.startswith("POST /dicom-web/studies; refused: 0xC000 ")  # the damaged part: status, reason


@pytest.mark.parametrize("cut", [129, 133, 140, 143, 150, 180])
def test_a_file_cut_inside_its_file_meta_is_refused_not_a_500(base_url, headers, cut: int) -> None:
    reply = post(base_url, headers, [part10_bytes(small_ct_series(1)[0])[:cut]])
    assert reply.status_code == 409, reply.text
    assert [reason for _, reason in failed_items(reply.json())] == [0xC000]
