"""WADO-RS over real HTTP with the real dicomweb-client: instances, frames, rendered, thumbnails."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from flask import Flask
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.phantom import DemoPatient, build_demo_patient
from tests.factories import part10_bytes

JPEG_FILE = "SC_rgb_jpeg_dcmtk.dcm"  # JPEG baseline, YBR
RLE_FILE = "MR_small_RLE.dcm"
RLE_MULTIFRAME_FILE = "SC_rgb_rle_2frame.dcm"
IMPLICIT_DOSE_FILE = "rtdose.dcm"  # implicit VR little endian, 15 frames
TEST_FILES = (JPEG_FILE, RLE_FILE, RLE_MULTIFRAME_FILE, IMPLICIT_DOSE_FILE, "CT_small.dcm")


@pytest.fixture(scope="module")
def stored(module_archive: Archive) -> dict[str, bytes]:
    """A demo patient and pydicom's compressed test files, stored once; SOP Instance UID -> stored bytes."""
    patient = build_demo_patient("WADO-001")
    files = {}
    for dataset in [*patient.planning_ct[:3], patient.rt_dose, patient.rtstruct]:
        files[dataset.SOPInstanceUID] = part10_bytes(dataset)
    for name in TEST_FILES:
        files[uids_of(name)[2]] = read_test_file_bytes(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rtdose.dcm's references have UIDs with leading zeros
        for data in files.values():
            assert module_archive.ingest(data, source="test").acknowledged
    return files


def read_test_file_bytes(name: str) -> bytes:
    """A pydicom test file as stored: unchanged, but rtdose.dcm gets the File Meta SOP Instance UID it lacks."""
    if name != IMPLICIT_DOSE_FILE:
        return Path(get_testdata_file(name)).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its UIDs have components with leading zeros
        dataset = dcmread(get_testdata_file(name))
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def patient() -> DemoPatient:
    return build_demo_patient("WADO-001")


@pytest.fixture(scope="module")
def base_url(module_live_server: str, stored) -> str:
    return f"{module_live_server}/dicom-web"


@pytest.fixture(scope="module")
def headers(module_headers_for) -> dict[str, str]:
    return module_headers_for("physicist")


@pytest.fixture(scope="module")
def client(base_url: str, headers: dict[str, str]) -> DICOMwebClient:
    return DICOMwebClient(base_url, headers=headers)


def uids_of(name_or_dataset: str | Dataset) -> tuple[str, str, str]:
    if isinstance(name_or_dataset, str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(read_test_file_bytes(name_or_dataset)), stop_before_pixels=True)
    else:
        ds = name_or_dataset
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def instance_path(name_or_dataset: str | Dataset) -> str:
    study, series, sop = uids_of(name_or_dataset)
    return f"/studies/{study}/series/{series}/instances/{sop}"


def get_parts(
    base_url: str, path: str, headers: dict, accept: str | None = None
) -> tuple[requests.Response, list[bytes]]:
    """GET ``path`` and split the multipart body with dicomweb-client's own decoder."""
    reply = requests.get(base_url + path, headers={**headers, **({"Accept": accept} if accept else {})}, timeout=30)
    if reply.status_code != 200:
        return reply, []
    return reply, [bytes(p) for p in DICOMwebClient(base_url)._decode_multipart_message(reply, stream=False)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- instances ----------------------------------------------------------------------------------


def test_study_retrieved_byte_identical_as_stored(base_url, headers, stored, patient) -> None:
    study = patient.planning_ct[0].StudyInstanceUID
    reply, parts = get_parts(
        base_url, f"/studies/{study}", headers, 'multipart/related; type="application/dicom"; transfer-syntax=*'
    )
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    expected = {
        uid: data
        for uid, data in stored.items()
        if dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID == study
    }
    assert sorted(sha256(p) for p in parts) == sorted(sha256(d) for d in expected.values())
    boundary = reply.headers["Content-Type"].split("boundary=")[1]
    assert reply.content.rstrip(b"\r\n").endswith(f"--{boundary}--".encode())
    assert reply.content.count(b"Content-Location: " + base_url.encode()) == len(expected)


def test_dicomweb_client_retrieves_instances_series_and_study(client, stored, patient) -> None:
    ct = patient.planning_ct[0]
    instance = client.retrieve_instance(*uids_of(ct))
    assert instance.SOPInstanceUID == ct.SOPInstanceUID
    assert instance.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert part10_bytes(instance) == stored[ct.SOPInstanceUID]
    series = client.retrieve_series(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert sorted(d.SOPInstanceUID for d in series) == sorted(d.SOPInstanceUID for d in patient.planning_ct[:3])
    study = client.retrieve_study(ct.StudyInstanceUID, media_types=(("application/dicom", "*"),))
    assert {d.Modality for d in study} == {"CT", "RTDOSE", "RTSTRUCT"}


@pytest.mark.parametrize("name", [JPEG_FILE, RLE_FILE])
def test_compressed_instance_as_stored_and_as_explicit_little_endian(base_url, headers, client, stored, name) -> None:
    original = dcmread(get_testdata_file(name))
    reply, parts = get_parts(
        base_url, instance_path(name), headers, 'multipart/related; type="application/dicom"; transfer-syntax=*'
    )
    assert parts == [stored[original.SOPInstanceUID]]
    assert f"transfer-syntax={original.file_meta.TransferSyntaxUID}".encode() in reply.content[:400]
    syntax = str(original.file_meta.TransferSyntaxUID)
    same = client.retrieve_instance(*uids_of(name), media_types=(("application/dicom", syntax),))
    assert same.file_meta.TransferSyntaxUID == syntax

    assert client.retrieve_instance(*uids_of(name)).file_meta.TransferSyntaxUID == syntax  # the client's default: *
    decoded = client.retrieve_instance(*uids_of(name), media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not decoded["PixelData"].is_undefined_length
    np.testing.assert_array_equal(decoded.pixel_array, original.pixel_array)
    assert decoded.PatientID == original.PatientID


def test_implicit_vr_instance_is_transcoded_when_explicit_is_asked(base_url, headers, stored) -> None:
    name = IMPLICIT_DOSE_FILE
    reply, parts = get_parts(base_url, instance_path(name), headers, 'multipart/related; type="application/dicom"')
    assert reply.status_code == 200 and b"transfer-syntax=1.2.840.10008.1.2.1\r\n" in reply.content[:400]
    explicit = dcmread(io.BytesIO(parts[0]))
    original = dcmread(io.BytesIO(read_test_file_bytes(name)))
    assert original.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert explicit.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and not explicit.is_implicit_VR
    np.testing.assert_array_equal(explicit.pixel_array, original.pixel_array)
    _, as_stored = get_parts(base_url, instance_path(name), headers)  # no Accept: as stored
    assert as_stored == [stored[original.SOPInstanceUID]]


def test_unsatisfiable_accept_is_406_json(base_url, headers, patient) -> None:
    path = instance_path(patient.planning_ct[0])
    for accept in ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90',
                   "application/pdf", 'multipart/related; type="image/jpeg"'):
        reply, _ = get_parts(base_url, path, headers, accept)
        assert reply.status_code == 406, accept
        assert reply.json()["status"] == 406 and "Accept" in reply.json()["detail"]


def test_unknown_and_malformed_uids(base_url, headers, patient) -> None:
    ct = patient.planning_ct[0]
    assert requests.get(f"{base_url}/studies/1.2.3.999", headers=headers, timeout=10).status_code == 404
    missing = requests.get(
        f"{base_url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/1.2.3",
        headers=headers, timeout=10,
    )
    assert missing.status_code == 404 and missing.json()["status"] == 404
    assert requests.get(f"{base_url}/studies/1.2,1.3", headers=headers, timeout=10).status_code == 400


# -- frames -------------------------------------------------------------------------------------


def test_native_frames_of_a_multiframe_dose(client, patient) -> None:
    dose = patient.rt_dose
    frame_bytes = dose.Rows * dose.Columns * 4
    frames = client.retrieve_instance_frames(*uids_of(dose), frame_numbers=[1, 20, int(dose.NumberOfFrames)])
    for number, data in zip([1, 20, int(dose.NumberOfFrames)], frames, strict=True):
        assert bytes(data) == dose.PixelData[(number - 1) * frame_bytes : number * frame_bytes]


def test_encapsulated_frames_as_stored_and_decoded(base_url, headers, client) -> None:
    name = RLE_MULTIFRAME_FILE
    original = dcmread(get_testdata_file(name))
    compressed = list(generate_frames(original.PixelData, number_of_frames=2))
    as_stored = client.retrieve_instance_frames(
        *uids_of(name), frame_numbers=[2, 1], media_types=(("image/dicom-rle", "1.2.840.10008.1.2.5"),)
    )
    assert [bytes(f) for f in as_stored] == [compressed[1], compressed[0]]

    reply, parts = get_parts(base_url, instance_path(name) + "/frames/1,2", headers,
                             'multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert parts == compressed
    assert b"Content-Type: image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5" in reply.content
    assert reply.headers["Content-Type"].startswith('multipart/related; type="image/dicom-rle"')

    decoded = client.retrieve_instance_frames(*uids_of(name), frame_numbers=[2])  # octet-stream, explicit VR LE
    assert bytes(decoded[0]) == original.pixel_array[1].astype("<u1").tobytes()


def test_jpeg_frame_as_stored(client) -> None:
    original = dcmread(get_testdata_file(JPEG_FILE))
    (frame,) = client.retrieve_instance_frames(
        *uids_of(JPEG_FILE), frame_numbers=[1], media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),)
    )
    assert bytes(frame) == next(generate_frames(original.PixelData, number_of_frames=1))
    assert Image.open(io.BytesIO(bytes(frame))).size == (original.Columns, original.Rows)


def test_bad_frame_numbers(base_url, headers, patient) -> None:
    path = instance_path(patient.rt_dose) + "/frames/"
    assert requests.get(base_url + path + "0", headers=headers, timeout=10).status_code == 400
    assert requests.get(base_url + path + "1,x", headers=headers, timeout=10).status_code == 400
    too_far = requests.get(
        base_url + path + f"1,{int(patient.rt_dose.NumberOfFrames) + 1}", headers=headers, timeout=10
    )
    assert too_far.status_code == 404 and "frame" in too_far.json()["detail"]
    no_pixels = requests.get(base_url + instance_path(patient.rtstruct) + "/frames/1", headers=headers, timeout=10)
    assert no_pixels.status_code == 400


# -- rendered and thumbnails --------------------------------------------------------------------


def _window_by_hand(hu: np.ndarray, c: float, w: float) -> np.ndarray:
    y = ((hu - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(hu <= c - 0.5 - (w - 1) / 2, 0, np.where(hu > c - 0.5 + (w - 1) / 2, 255, y))
    return np.rint(y).astype(np.uint8)


def test_rendered_ct_png_has_the_window_values(client, patient) -> None:
    ct = patient.planning_ct[1]
    png = client.retrieve_instance_rendered(*uids_of(ct), media_types=("image/png",), params={"window": "40,400"})
    pixels = np.asarray(Image.open(io.BytesIO(png)))
    stored = np.frombuffer(ct.PixelData, dtype="<i2" if ct.PixelRepresentation else "<u2").reshape(ct.Rows, ct.Columns)
    hu = stored * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    np.testing.assert_array_equal(pixels, _window_by_hand(hu, 40, 400))
    assert len(np.unique(pixels)) > 2  # the phantom has tissue inside the window, not just air and bone


def test_rendered_defaults_to_jpeg_and_honours_viewport(base_url, headers, patient) -> None:
    rendered_url = base_url + instance_path(patient.planning_ct[0]) + "/rendered"
    reply = requests.get(rendered_url, params={"viewport": "32,32", "quality": "80"}, headers=headers, timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(reply.content)).size == (32, 32)
    bad = requests.get(rendered_url, params={"window": "40"}, headers=headers, timeout=10)
    assert bad.status_code == 400
    refused = requests.get(rendered_url, headers={**headers, "Accept": "application/pdf"}, timeout=10)
    assert refused.status_code == 406


def test_rendered_rt_dose_frame_in_gy(client, patient) -> None:
    dose = patient.rt_dose
    frame = int(dose.NumberOfFrames) // 2 + 1
    png = client.retrieve_instance_frames_rendered(*uids_of(dose), frame_numbers=[frame], media_types=("image/png",),
                                                   params={"window": "30,60,LINEAR_EXACT"})
    pixels = np.asarray(Image.open(io.BytesIO(png)))
    stored = np.frombuffer(dose.PixelData, dtype="<u4").reshape(
        int(dose.NumberOfFrames), dose.Rows, dose.Columns
    )[frame - 1]
    dose_gy = stored * float(dose.DoseGridScaling)
    expected = np.clip(np.rint(((dose_gy - 30) / 60 + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)


def test_rendered_frame_out_of_range_is_404(base_url, headers, patient) -> None:
    path = instance_path(patient.rt_dose) + f"/frames/{int(patient.rt_dose.NumberOfFrames) + 1}/rendered"
    assert requests.get(base_url + path, headers=headers, timeout=10).status_code == 404


@pytest.mark.parametrize("level", ["study", "series", "instance", "frame"])
def test_thumbnails(base_url, headers, patient, level) -> None:
    dose = patient.rt_dose
    paths = {
        "study": f"/studies/{dose.StudyInstanceUID}/thumbnail",
        "series": f"/studies/{dose.StudyInstanceUID}/series/{dose.SeriesInstanceUID}/thumbnail",
        "instance": instance_path(dose) + "/thumbnail",
        "frame": instance_path(dose) + "/frames/3/thumbnail",
    }
    reply = requests.get(base_url + paths[level], headers=headers, timeout=10)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(reply.content))
    assert image.format == "JPEG" and max(image.size) == 128


def test_study_thumbnail_is_the_middle_ct_slice(base_url, headers, patient) -> None:
    """The planning study's first series is the CT (3 slices stored): its middle slice, as PNG."""
    study = patient.planning_ct[0].StudyInstanceUID
    reply = requests.get(
        f"{base_url}/studies/{study}/thumbnail", headers={**headers, "Accept": "image/png"}, timeout=10
    )
    middle = requests.get(base_url + instance_path(patient.planning_ct[1]) + "/thumbnail",
                          params={"accept": "image/png"}, headers=headers, timeout=10)
    assert reply.headers["Content-Type"] == "image/png" and reply.content == middle.content


# -- access and audit ---------------------------------------------------------------------------


def test_roles(base_url, module_headers_for, patient) -> None:
    path = base_url + instance_path(patient.planning_ct[0])
    assert requests.get(path, timeout=10).status_code == 401
    assert requests.get(path, headers=module_headers_for("referrer"), timeout=10).status_code == 403
    assert requests.get(path + "/rendered", headers=module_headers_for("referrer"), timeout=10).status_code == 403
    assert requests.get(path, headers=module_headers_for("tumour_board"), timeout=10).status_code == 200


def test_retrievals_are_audited(client, module_web_app: Flask, patient) -> None:
    dose = patient.rt_dose
    client.retrieve_instance_frames(*uids_of(dose), frame_numbers=[2])
    trail: AuditTrail = module_web_app.extensions["oncopacs.audit"]
    entries = trail.query(AuditFilter(patient_id="WADO-001", action=AuditAction.RETRIEVE), limit=1000).entries
    entry = next(e for e in reversed(entries) if e.detail.endswith("/frames/2"))
    assert entry.actor == "test-physicist" and entry.outcome == 0
    assert entry.patient_ids == ("WADO-001",) and entry.study_uids == (dose.StudyInstanceUID,)


# -- integrity (a fresh archive per test) -------------------------------------------------------


def _corrupt(archive: Archive, sop_uid: str) -> None:
    path = next(p for p in archive.storage.root.rglob(f"{sop_uid}.dcm"))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_file_is_an_error_never_bad_bytes(
    web_app: Flask, archive: Archive, live_server: str, headers_for
) -> None:
    patient = build_demo_patient("WADO-002")
    for ct in patient.planning_ct[:3]:
        assert archive.ingest_dataset(ct, source="test").acknowledged
    damaged = patient.planning_ct[2]  # the last of the series
    _corrupt(archive, damaged.SOPInstanceUID)
    base = f"{live_server}/dicom-web"
    headers = headers_for("physicist")
    reply = requests.get(base + instance_path(damaged), headers=headers, timeout=10)
    assert reply.status_code == 500 and "SHA-256" in reply.json()["detail"]
    assert requests.get(base + instance_path(damaged) + "/rendered", headers=headers, timeout=10).status_code == 500
    assert requests.get(base + instance_path(damaged) + "/frames/1", headers=headers, timeout=10).status_code == 500

    # The series comes whole but for the damaged instance, and says so (tests/web/test_wado_damaged.py has more).
    series = f"{base}/studies/{damaged.StudyInstanceUID}/series/{damaged.SeriesInstanceUID}"
    reply = requests.get(series, headers=headers, timeout=10)
    assert reply.status_code == 200 and "1 of 3 instances were left out" in reply.headers["Warning"]
    assert len(list(DICOMwebClient(base)._decode_multipart_message(reply, stream=False))) == 2
    good = requests.get(base + instance_path(patient.planning_ct[0]), headers=headers, timeout=10)
    assert good.status_code == 200  # the server goes on serving
