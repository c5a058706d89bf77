"""The DIMSE server driven by dcmtk's real clients (echoscu, storescu, getscu, findscu, movescu).

Every test runs against an in-process server on SQLite and on PostgreSQL (``dimse_server``).
Round trips compare the dataset bytes (everything after the File Meta group): the archive keeps
what it received, and what it sends back must be exactly that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, RLELossless
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage, RTIonPlanStorage

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import count_indexed
from oncopacs.archive.part10 import build_part10, dataset_offset
from oncopacs.index.models import Instance
from oncopacs.phantom import build_benchmark_ct, build_demo_patient, write_datasets
from oncopacs.settings import RemoteAE, Settings
from tests.conftest import dcmtk_tool, free_port

pytestmark = pytest.mark.dcmtk

AE_TITLE = "ONCOPACS"
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.8.498.77.1.1"  # a private storage SOP class nobody knows
RETIRED_NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.5"  # known to dcmtk, not accepted by the archive


# -- helpers --------------------------------------------------------------------------------


def run_dcmtk(tool: str, *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a dcmtk client (Nagle off); stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        [dcmtk_tool(tool), *args],
        cwd=cwd,
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def dataset_bytes(data: bytes) -> bytes:
    """The dataset part of a Part 10 file (everything after the File Meta group)."""
    return data[dataset_offset(data) :]


def read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def by_sop_uid(paths) -> dict[str, bytes]:
    """SOP Instance UID -> dataset bytes of each file."""
    return {str(read_header(p).SOPInstanceUID): dataset_bytes(p.read_bytes()) for p in paths}


def store_response_statuses(output: str) -> list[str]:
    """What storescu -v printed for each Store Response: 'Success', 'Unknown Status: 0x111', ..."""
    return re.findall(r"Received Store Response \(([^)]*)\)", output)


def storescu(host: str, port: int, *inputs: Path | str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """storescu proposing only the SOP classes (and syntaxes) of the files given."""
    return run_dcmtk(
        "storescu", "-v", "-R", "+sd", "+r", "-aec", AE_TITLE, *options, host, str(port), *map(str, inputs)
    )


def assert_stored(result: subprocess.CompletedProcess, expected: int) -> None:
    statuses = store_response_statuses(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert statuses == ["Success"] * expected, result.stdout[-3000:]


def echo_ok(host: str, port: int, called: str = AE_TITLE) -> bool:
    return run_dcmtk("echoscu", "-aec", called, host, str(port), timeout=30).returncode == 0


def key_args(keys) -> list[str]:
    """``-k`` options for dcmtk's query/retrieve clients."""
    return [arg for key in keys for arg in ("-k", key)]


def getscu(
    host: str, port: int, out_dir: Path, *keys: str, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """A Study Root C-GET; ``+B`` writes what arrives bit for bit (no re-encoding by dcmtk)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return run_dcmtk(
        "getscu", "-v", "+B", "-S", "-aec", AE_TITLE, *options, *key_args(keys), "-od", str(out_dir), host, str(port)
    )


def findscu(host: str, port: int, work_dir: Path, model: str, *keys: str) -> list[Dataset]:
    """A C-FIND (``model`` -P or -S); the response identifiers, read from findscu's ``-X`` files."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    result = run_dcmtk("findscu", "-v", model, "-aec", AE_TITLE, "-X", *key_args(keys), host, str(port), cwd=work_dir)
    assert result.returncode == 0, result.stdout[-3000:]
    return [pydicom.dcmread(p) for p in sorted(work_dir.glob("rsp*.dcm"))]


def uid_keys(header: Dataset, level: str) -> list[str]:
    keys = [f"QueryRetrieveLevel={level}", f"StudyInstanceUID={header.StudyInstanceUID}"]
    if level in ("SERIES", "IMAGE"):
        keys.append(f"SeriesInstanceUID={header.SeriesInstanceUID}")
    if level == "IMAGE":
        keys.append(f"SOPInstanceUID={header.SOPInstanceUID}")
    return keys


def pynetdicom_store(
    host: str, port: int, path: Path, sop_class: str = CTImageStorage, syntax: str = ExplicitVRLittleEndian
) -> int:
    """C-STORE the file's dataset bytes exactly as they are (no parsing on the client side).

    The Affected SOP Class/Instance UIDs come from the file's File Meta group, so the request can
    carry identities that the dataset does not (or is too broken to) match. Returns the status.
    """
    ae = AE(ae_title="PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=AE_TITLE)
    assert assoc.is_established, "the archive refused the association"
    try:
        previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes, unparsed
        try:
            reply = assoc.send_c_store(path)
        finally:
            pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
        assert reply is not None and "Status" in reply, "no C-STORE response (association dropped?)"
        assert assoc.is_established, "the archive dropped the association after answering"
        return int(reply.Status)
    finally:
        assoc.release()


def write_file(path: Path, ds: Dataset) -> Path:
    """Write ``ds`` as Part 10 (explicit VR little endian), even when it is deliberately invalid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values we mean to write
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


# -- test data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoFiles:
    root: Path  # the demo patient's files (CT, RTSTRUCT, RT Ion Plan, RT Dose, PET-CT)
    paths: list[Path]
    headers: dict[Path, Dataset]
    other_root: Path  # a second patient (not Phantom*), another study date
    other_paths: list[Path]

    @property
    def dataset_bytes(self) -> dict[str, bytes]:
        return by_sop_uid(self.paths)

    def studies(self) -> dict[str, list[Dataset]]:
        result: dict[str, list[Dataset]] = defaultdict(list)
        for header in self.headers.values():
            result[str(header.StudyInstanceUID)].append(header)
        return result


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    base = tmp_path_factory.mktemp("dcmtk-input")
    paths = write_datasets(build_demo_patient().all_datasets(), base / "demo")
    other = write_datasets(build_benchmark_ct(4, 1, rows=32, cols=32, prefix="OTHER"), base / "other")
    return DemoFiles(base / "demo", paths, {p: read_header(p) for p in paths}, base / "other", other)


@pytest.fixture
def loaded_server(dimse_server: tuple[str, int], demo_files: DemoFiles) -> tuple[str, int]:
    """The DIMSE server with the demo patient and the other patient stored through storescu."""
    host, port = dimse_server
    assert_stored(
        storescu(host, port, demo_files.root, demo_files.other_root),
        len(demo_files.paths) + len(demo_files.other_paths),
    )
    return host, port


@dataclass
class StoreSCP:
    ae_title: str
    port: int
    out_dir: Path
    process: subprocess.Popen


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """dcmtk's storescp on loopback as AE DEST, accepting every syntax, writing bit-preserved files."""
    out_dir = tmp_path / "storescp"
    out_dir.mkdir()
    port = free_port()
    log = open(tmp_path / "storescp.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [dcmtk_tool("storescp"), "-v", "-aet", "DEST", "+xa", "+B", "-od", str(out_dir), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while not echo_ok("127.0.0.1", port, called="DEST"):
            assert process.poll() is None, (tmp_path / "storescp.log").read_text()
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.1)
        yield StoreSCP("DEST", port, out_dir, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture
def move_server(settings: Settings, archive: Archive, storescp: StoreSCP) -> Iterator[tuple[str, int]]:
    """A DIMSE server that knows DEST (the storescp) as a C-MOVE destination."""
    from oncopacs.dimse.server import start_dimse

    server = start_dimse(settings.with_overrides(remote_aes=(RemoteAE("DEST", "127.0.0.1", storescp.port),)), archive)
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()


# -- C-ECHO, C-STORE and C-GET --------------------------------------------------------------


def test_echoscu_succeeds(dimse_server: tuple[str, int]) -> None:
    host, port = dimse_server
    result = run_dcmtk("echoscu", "-v", "-aec", AE_TITLE, host, str(port))
    assert result.returncode == 0, result.stdout
    assert "Received Echo Response (Success)" in result.stdout


def test_storescu_then_getscu_round_trip_is_byte_identical(
    loaded_server: tuple[str, int], demo_files: DemoFiles, archive: Archive, tmp_path: Path
) -> None:
    host, port = loaded_server
    assert count_indexed(archive) == len(demo_files.paths) + len(demo_files.other_paths)
    sent = demo_files.dataset_bytes
    received: dict[str, bytes] = {}
    for study_uid, headers in demo_files.studies().items():
        out_dir = tmp_path / "get" / study_uid
        result = getscu(host, port, out_dir, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}")
        assert result.returncode == 0, result.stdout[-3000:]
        assert f"Number of Completed Suboperations : {len(headers)}" in result.stdout, result.stdout[-3000:]
        assert "Number of Failed Suboperations    : 0" in result.stdout
        files = list(out_dir.iterdir())
        assert len(files) == len(headers)
        received.update(by_sop_uid(files))
    modalities = {str(h.Modality) for h in demo_files.headers.values()}
    assert {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE", "PT"} <= modalities
    assert RTIonPlanStorage in {h.SOPClassUID for h in demo_files.headers.values()}
    assert received.keys() == sent.keys()
    different = [uid for uid in sent if received[uid] != sent[uid]]
    assert not different, f"{len(different)} retrieved instances differ from what was sent"


@pytest.fixture
def compressed_files(demo_files: DemoFiles, tmp_path: Path) -> dict[str, Path]:
    """A PET slice in RLE Lossless and a CT slice in JPEG Lossless SV1, made by dcmtk."""
    pet = next(p for p, h in demo_files.headers.items() if h.Modality == "PT")
    ct = next(p for p, h in demo_files.headers.items() if h.Modality == "CT")
    out = tmp_path / "compressed"
    out.mkdir()
    files = {RLELossless: out / "pet_rle.dcm", JPEGLosslessSV1: out / "ct_jpeg.dcm"}
    for tool, source, target in (("dcmcrle", pet, files[RLELossless]), ("dcmcjpeg", ct, files[JPEGLosslessSV1])):
        result = run_dcmtk(tool, str(source), str(target))
        assert result.returncode == 0, result.stdout
    for syntax, path in files.items():
        assert read_header(path).file_meta.TransferSyntaxUID == syntax
    return files


def test_compressed_transfer_syntaxes_are_stored_and_moved_unchanged(
    move_server: tuple[str, int], storescp: StoreSCP, compressed_files: dict[str, Path], archive: Archive
) -> None:
    host, port = move_server
    # -xr/-xs: propose RLE / JPEG lossless (storescu cannot decompress, so it must send as is).
    for syntax, option in ((RLELossless, "-xr"), (JPEGLosslessSV1, "-xs")):
        assert_stored(storescu(host, port, compressed_files[syntax], options=(option,)), 1)
    with archive.index.reading() as session:
        stored = dict(session.query(Instance.sop_instance_uid, Instance.transfer_syntax_uid).all())
    for syntax, path in compressed_files.items():
        header = read_header(path)
        assert stored[str(header.SOPInstanceUID)] == syntax
        result = run_dcmtk(
            "movescu", "-v", "-S", "-aec", AE_TITLE, "-aem", "DEST", *key_args(uid_keys(header, "IMAGE")),
            host, str(port),
        )
        assert result.returncode == 0, result.stdout[-3000:]
    received = {str(read_header(p).SOPInstanceUID): p for p in storescp.out_dir.iterdir()}
    for syntax, path in compressed_files.items():
        uid = str(read_header(path).SOPInstanceUID)
        assert read_header(received[uid]).file_meta.TransferSyntaxUID == syntax
        assert dataset_bytes(received[uid].read_bytes()) == dataset_bytes(path.read_bytes())


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLosslessSV1])
def test_getscu_gets_compressed_instances_decompressed_when_it_asks_for_uncompressed(
    dimse_server: tuple[str, int], compressed_files: dict[str, Path], tmp_path: Path, syntax: str
) -> None:
    import numpy as np

    host, port = dimse_server
    path = compressed_files[syntax]
    assert_stored(storescu(host, port, path, options=("-xr",) if syntax == RLELossless else ("-xs",)), 1)
    out_dir = tmp_path / "get"
    # getscu's default proposal for its storage SCP contexts is uncompressed only.
    result = getscu(host, port, out_dir, *uid_keys(read_header(path), "IMAGE"))
    assert "Number of Completed Suboperations : 1" in result.stdout, result.stdout[-3000:]
    [received] = list(out_dir.iterdir())
    got, sent = pydicom.dcmread(received), pydicom.dcmread(path)
    assert not got.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(got.pixel_array, sent.pixel_array)


# -- C-FIND ---------------------------------------------------------------------------------


def test_findscu_at_every_level_and_matching_kind(
    loaded_server: tuple[str, int], demo_files: DemoFiles, tmp_path: Path
) -> None:
    host, port = loaded_server
    headers = list(demo_files.headers.values())
    studies = demo_files.studies()
    series: dict[str, list[Dataset]] = defaultdict(list)
    for header in headers:
        series[str(header.SeriesInstanceUID)].append(header)
    patient_id = str(headers[0].PatientID)
    other_patient = str(read_header(demo_files.other_paths[0]).PatientID)
    work = tmp_path / "find"

    # Patient Root, PATIENT level: wildcard on the name; computed counts.
    found = findscu(
        host, port, work, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=Phantom*", "PatientID",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
    )
    assert [str(r.PatientID) for r in found] == [patient_id]
    assert found[0].PatientName == headers[0].PatientName
    assert int(found[0].NumberOfPatientRelatedStudies) == len(studies) == 2
    assert int(found[0].NumberOfPatientRelatedSeries) == len(series)
    assert int(found[0].NumberOfPatientRelatedInstances) == len(headers)
    # Universal matching returns both patients.
    found = findscu(host, port, work, "-P", "QueryRetrieveLevel=PATIENT", "PatientID")
    assert sorted(str(r.PatientID) for r in found) == sorted([patient_id, other_patient])

    # Patient Root, STUDY level below one patient.
    found = findscu(
        host, port, work, "-P", "QueryRetrieveLevel=STUDY", f"PatientID={patient_id}", "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
    )
    assert {str(r.StudyInstanceUID): int(r.NumberOfStudyRelatedInstances) for r in found} == {
        uid: len(members) for uid, members in studies.items()
    }

    # Study Root, STUDY level: wildcard + date range; computed attributes.
    study_keys = (
        "StudyInstanceUID", "StudyDate", "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries",
        "ModalitiesInStudy",
    )
    found = findscu(
        host, port, work, "-S", "QueryRetrieveLevel=STUDY", "PatientName=Phantom*", "StudyDate=20000101-20991231",
        *study_keys,
    )
    assert len(found) == 2
    for response in found:
        members = studies[str(response.StudyInstanceUID)]
        assert str(response.StudyDate) == str(members[0].StudyDate)
        assert int(response.NumberOfStudyRelatedInstances) == len(members)
        assert int(response.NumberOfStudyRelatedSeries) == len({str(h.SeriesInstanceUID) for h in members})
        modalities = response.ModalitiesInStudy
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        assert sorted(modalities) == sorted({str(h.Modality) for h in members})
        assert response.RetrieveAETitle == AE_TITLE
    # A date range that holds only one of the demo studies, and one that holds none.
    plan_date = str(next(h for h in headers if h.Modality == "RTPLAN").StudyDate)
    found = findscu(
        host, port, work, "-S", "QueryRetrieveLevel=STUDY", f"StudyDate={plan_date}-{plan_date}",
        "PatientID", "StudyInstanceUID",
    )
    assert [str(r.PatientID) for r in found] == [patient_id]
    assert not findscu(
        host, port, work, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=19000101-19001231", "StudyInstanceUID"
    )
    # UID list matching.
    uid1, uid2 = sorted(studies)
    other_study = str(read_header(demo_files.other_paths[0]).StudyInstanceUID)
    found = findscu(host, port, work, "-S", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid1}\\{other_study}")
    assert sorted(str(r.StudyInstanceUID) for r in found) == sorted([uid1, other_study])

    # SERIES level in both models, with computed instance counts.
    for model, extra in (("-P", [f"PatientID={patient_id}"]), ("-S", [])):
        found = findscu(
            host, port, work, model, "QueryRetrieveLevel=SERIES", *extra, f"StudyInstanceUID={uid2}",
            "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances",
        )
        expected = {
            uid: (str(members[0].Modality), len(members))
            for uid, members in series.items()
            if str(members[0].StudyInstanceUID) == uid2
        }
        assert {
            str(r.SeriesInstanceUID): (str(r.Modality), int(r.NumberOfSeriesRelatedInstances)) for r in found
        } == expected

    # IMAGE level in both models: every instance of a series, then a UID list of two instances.
    ct_series = next(uid for uid, members in series.items() if members[0].Modality == "CT")
    members = series[ct_series]
    study_uid = str(members[0].StudyInstanceUID)
    for model, extra in (("-P", [f"PatientID={patient_id}"]), ("-S", [])):
        base = [*extra, f"StudyInstanceUID={study_uid}", f"SeriesInstanceUID={ct_series}"]
        found = findscu(
            host, port, work, model, "QueryRetrieveLevel=IMAGE", *base,
            "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
        )
        assert sorted(str(r.SOPInstanceUID) for r in found) == sorted(str(h.SOPInstanceUID) for h in members)
        assert {str(r.SOPClassUID) for r in found} == {str(members[0].SOPClassUID)}
        wanted = sorted(str(h.SOPInstanceUID) for h in members[:2])
        found = findscu(
            host, port, work, model, "QueryRetrieveLevel=IMAGE", *base,
            "SOPInstanceUID=" + "\\".join(wanted), "InstanceNumber",
        )
        assert sorted(str(r.SOPInstanceUID) for r in found) == wanted
        numbers = {str(h.SOPInstanceUID): int(h.InstanceNumber) for h in members}
        assert all(int(r.InstanceNumber) == numbers[str(r.SOPInstanceUID)] for r in found)


# -- C-MOVE ---------------------------------------------------------------------------------


def test_movescu_to_storescp_delivers_identical_instances(
    move_server: tuple[str, int], storescp: StoreSCP, demo_files: DemoFiles
) -> None:
    host, port = move_server
    assert_stored(storescu(host, port, demo_files.root), len(demo_files.paths))
    for study_uid in demo_files.studies():
        keys = key_args(["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}"])
        result = run_dcmtk("movescu", "-v", "-S", "-aec", AE_TITLE, "-aem", "DEST", *keys, host, str(port))
        assert result.returncode == 0, result.stdout[-3000:]
        assert (
            "Received Final Move Response (Success)" in result.stdout or "Move Response (Success)" in result.stdout
        ), result.stdout[-3000:]
    received = by_sop_uid(storescp.out_dir.iterdir())
    sent = demo_files.dataset_bytes
    assert received.keys() == sent.keys()
    assert not [uid for uid in sent if received[uid] != sent[uid]]


def test_movescu_to_an_unknown_destination_gets_a801(loaded_server: tuple[str, int], demo_files: DemoFiles) -> None:
    host, port = loaded_server
    study_uid = next(iter(demo_files.studies()))
    keys = key_args(["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study_uid}"])
    result = run_dcmtk("movescu", "-d", "-S", "-aec", AE_TITLE, "-aem", "NOWHERE", *keys, host, str(port))
    assert re.search(r"DIMSE Status\s*:\s*0xa801", result.stdout, re.IGNORECASE), result.stdout[-3000:]
    assert echo_ok(host, port)


# -- bad input ------------------------------------------------------------------------------


def _good_ct(demo_files: DemoFiles) -> Path:
    return next(p for p, h in demo_files.headers.items() if h.Modality == "CT")


def _assert_still_serving(host: str, port: int, demo_files: DemoFiles) -> None:
    assert echo_ok(host, port)
    assert_stored(storescu(host, port, _good_ct(demo_files)), 1)


def test_bad_c_store_input_gets_a_status_not_a_dropped_association(
    dimse_server: tuple[str, int], demo_files: DemoFiles, archive: Archive, tmp_path: Path
) -> None:
    host, port = dimse_server
    def good() -> Dataset:
        return pydicom.dcmread(_good_ct(demo_files))

    missing_study = good()
    del missing_study.StudyInstanceUID
    missing_study.SOPInstanceUID = missing_study.file_meta.MediaStorageSOPInstanceUID = (
        "1.2.826.0.1.3680043.8.498.77.2.1"
    )
    assert pynetdicom_store(host, port, write_file(tmp_path / "no-study.dcm", missing_study)) == 0xC000

    missing_sop = good()
    del missing_sop.SOPInstanceUID  # the request still names one (from the File Meta)
    missing_sop.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.2.2"
    assert pynetdicom_store(host, port, write_file(tmp_path / "no-sop.dcm", missing_sop)) == 0xC000

    malformed = good()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the malformed UID we mean to send
        malformed.SeriesInstanceUID = "1.2.3.abc.04"
    malformed.SOPInstanceUID = malformed.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.2.3"
    assert pynetdicom_store(host, port, write_file(tmp_path / "malformed.dcm", malformed)) == 0xC000

    # The request's Affected SOP Instance UID (taken from the File Meta) is not the dataset's.
    # (pydicom's writer would align the File Meta with the dataset, so build the file directly.)
    mismatch = tmp_path / "mismatch.dcm"
    mismatch.write_bytes(
        build_part10(
            dataset_bytes(_good_ct(demo_files).read_bytes()),
            sop_class_uid=CTImageStorage,
            sop_instance_uid="1.2.826.0.1.3680043.8.498.77.2.4",
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    )
    assert pynetdicom_store(host, port, mismatch) == 0xA900

    # A file cut short inside its pixel data, then one cut inside its header.
    data = _good_ct(demo_files).read_bytes()
    for name, keep in (("cut-pixels.dcm", len(data) - 777), ("cut-header.dcm", dataset_offset(data) + 301)):
        truncated = tmp_path / name
        truncated.write_bytes(data[:keep])
        assert pynetdicom_store(host, port, truncated) == 0xC000, name
        # storescu refuses a file cut in its pixel data, and sends what it could parse of the other.
        result = storescu(host, port, truncated)
        assert store_response_statuses(result.stdout) in ([], ["Error: CannotUnderstand"]), result.stdout
        assert echo_ok(host, port)

    assert count_indexed(archive) == 0
    _assert_still_serving(host, port, demo_files)
    assert count_indexed(archive) == 1


def test_unknown_sop_class_is_refused_at_association(
    dimse_server: tuple[str, int], demo_files: DemoFiles, archive: Archive, tmp_path: Path
) -> None:
    host, port = dimse_server

    def with_sop_class(sop_class: str, name: str) -> Path:
        ds = pydicom.dcmread(_good_ct(demo_files))
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77.3." + str(len(name))
        return write_file(tmp_path / name, ds)

    # storescu only sends SOP classes it knows: a retired one the archive does not accept.
    result = storescu(host, port, with_sop_class(RETIRED_NM_IMAGE_STORAGE, "retired.dcm"))
    assert result.returncode != 0
    assert not store_response_statuses(result.stdout), result.stdout
    assert "No Acceptable Presentation Contexts" in result.stdout, result.stdout
    assert echo_ok(host, port)

    # dcmsend sends a private SOP class too (-nuc: no UID checks of its own).
    result = run_dcmtk(
        "dcmsend", "-v", "-nuc", "-aec", AE_TITLE, host, str(port),
        str(with_sop_class(PRIVATE_SOP_CLASS, "private.dcm")),
    )
    assert "No Acceptable Presentation Contexts" in result.stdout, result.stdout
    assert re.search(r"NOT sent to the peer\s*:\s*1", result.stdout), result.stdout
    assert echo_ok(host, port)

    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(host, port, ae_title=AE_TITLE)
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        rejected = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        assert PRIVATE_SOP_CLASS in rejected and PRIVATE_SOP_CLASS not in accepted
        assert str(CTImageStorage) in accepted
    finally:
        assoc.release()

    assert count_indexed(archive) == 0
    _assert_still_serving(host, port, demo_files)


# -- resends --------------------------------------------------------------------------------


def test_resend_is_success_and_changed_content_gets_0111(
    loaded_server: tuple[str, int], demo_files: DemoFiles, archive: Archive, tmp_path: Path
) -> None:
    host, port = loaded_server
    total = len(demo_files.paths) + len(demo_files.other_paths)
    assert count_indexed(archive) == total

    assert_stored(storescu(host, port, demo_files.root), len(demo_files.paths))
    assert count_indexed(archive) == total

    original_path = _good_ct(demo_files)
    changed = pydicom.dcmread(original_path)
    pixels = bytearray(changed.PixelData)
    pixels[:64] = bytes(255 - b for b in pixels[:64])
    changed.PixelData = bytes(pixels)
    changed_path = write_file(tmp_path / "changed.dcm", changed)
    result = run_dcmtk("storescu", "-d", "-R", "-aec", AE_TITLE, host, str(port), str(changed_path))
    assert re.search(r"DIMSE Status\s*:\s*0x0111", result.stdout), result.stdout[-3000:]
    assert count_indexed(archive) == total

    with archive.index.reading() as session:
        file_path = (
            session.query(Instance.file_path).filter(Instance.sop_instance_uid == str(changed.SOPInstanceUID)).scalar()
        )
    stored = archive.storage.read(file_path)
    assert dataset_bytes(stored) == dataset_bytes(original_path.read_bytes())

    out_dir = tmp_path / "get"
    result = getscu(host, port, out_dir, *uid_keys(changed, "IMAGE"))
    [received] = list(out_dir.iterdir())
    assert dataset_bytes(received.read_bytes()) == dataset_bytes(original_path.read_bytes())
