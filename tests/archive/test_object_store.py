"""Instance storage in an S3-compatible object store (moto's server on loopback), through the whole archive.

The same durability rule as files: a C-STORE is acknowledged only once the store has confirmed the object and its
SHA-256; retrieval checks the SHA-256; ``verify`` and crash recovery list the bucket; a store that is down answers
0xA700 and nothing is indexed that is not stored.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive.backup import backup as run_backup
from oncopacs.archive.encryption import StorageKey, StorageKeys
from oncopacs.archive.maintenance import recover_orphans, verify
from oncopacs.archive.object_store import ObjectStorage, S3Location
from oncopacs.archive.storage import Damage, DamagedFileError, compute_sha256
from oncopacs.dimse.server import start_dimse
from oncopacs.errors import StorageError
from oncopacs.index.models import Instance
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY, free_port
from tests.factories import part10_bytes, small_ct_series

boto3 = pytest.importorskip("boto3")

KEYS = StorageKeys.of(StorageKey.from_secret(bytes(range(32))))


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = "oncopacs-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint)


def _storage(tmp_path: Path, endpoint: str, bucket: str, keys: StorageKeys | None = None,
             **options: str) -> ObjectStorage:
    return ObjectStorage(S3Location(bucket, "archive/", endpoint, **options), tmp_path / "staging", keys)


def test_place_read_check_and_list(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    storage = _storage(tmp_path, s3_endpoint, bucket)
    data = os.urandom(300_000)
    assert storage.place(storage.stage(data), "a/b/c.dcm")
    assert list(storage.incoming.iterdir()) == []  # the staged copy is gone once the store confirmed it
    assert storage.exists("a/b/c.dcm") and not storage.exists("a/b/d.dcm")
    assert storage.read("a/b/c.dcm", compute_sha256(data)) == data
    assert storage.check("a/b/c.dcm", compute_sha256(data)) is None
    assert list(storage.iter_files()) == ["a/b/c.dcm"]
    stored = _client(s3_endpoint).get_object(Bucket=bucket, Key="archive/a/b/c.dcm")
    assert stored["Body"].read() == data and stored["ContentType"] == "application/dicom"

    assert not storage.place(storage.stage(b"other content"), "a/b/c.dcm")  # never overwritten without replace
    assert storage.read("a/b/c.dcm") == data and list(storage.incoming.iterdir()) == []
    assert storage.place(storage.stage(b"other content"), "a/b/c.dcm", replace=True)
    assert storage.read("a/b/c.dcm") == b"other content"

    storage.remove("a/b/c.dcm")
    assert storage.check("a/b/c.dcm", compute_sha256(data)) is Damage.MISSING
    with pytest.raises(DamagedFileError) as missing:
        storage.read("a/b/c.dcm")
    assert missing.value.damage is Damage.MISSING


def test_altered_object_is_found_by_check_and_read(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    storage = _storage(tmp_path, s3_endpoint, bucket)
    data = b"DICM" * 5000
    storage.place(storage.stage(data), "x/y/z.dcm")
    _client(s3_endpoint).put_object(Bucket=bucket, Key="archive/x/y/z.dcm", Body=data[:-1] + b"!")  # bit rot
    assert storage.check("x/y/z.dcm", compute_sha256(data)) is Damage.ALTERED
    with pytest.raises(DamagedFileError) as altered:
        storage.read("x/y/z.dcm", compute_sha256(data))
    assert altered.value.damage is Damage.ALTERED


def test_sealed_objects_and_server_side_encryption(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    storage = _storage(tmp_path, s3_endpoint, bucket, KEYS, sse="AES256")
    data = os.urandom(2_500_000)  # several sealing segments
    storage.place(storage.stage(data), "s/e/a.dcm")
    raw = _client(s3_endpoint).get_object(Bucket=bucket, Key="archive/s/e/a.dcm")
    assert raw["ServerSideEncryption"] == "AES256"  # the store was asked to encrypt it at rest
    assert data[:4096] not in raw["Body"].read()  # and it is sealed before it leaves this machine
    assert storage.read("s/e/a.dcm", compute_sha256(data)) == data
    assert storage.check("s/e/a.dcm", compute_sha256(data)) is None
    assert storage.key_id("s/e/a.dcm") == KEYS.current.key_id
    unkeyed = _storage(tmp_path / "other", s3_endpoint, bucket)
    assert unkeyed.check("s/e/a.dcm", compute_sha256(data)) is Damage.UNREADABLE


class _MisreportingClient:
    """A store that stores the object but answers with another checksum (a hostile or broken peer)."""

    def __init__(self, real: Any, answer: dict[str, str]):
        self._real, self._answer = real, answer

    def put_object(self, **request: Any) -> dict[str, Any]:
        reply = dict(self._real.put_object(**request))
        reply.pop("ChecksumSHA256", None)
        return {**reply, **self._answer}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("answer", [{"ChecksumSHA256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
                                    {"ETag": '"00000000000000000000000000000000"'}],
                         ids=["wrong-sha256", "no-sha256-wrong-etag"])
def test_an_unconfirmed_write_is_refused(tmp_path: Path, s3_endpoint: str, bucket: str,
                                         answer: dict[str, str]) -> None:
    location = S3Location(bucket, "", s3_endpoint)
    storage = ObjectStorage(location, tmp_path / "staging", client=_MisreportingClient(_client(s3_endpoint), answer))
    with pytest.raises(StorageError, match="did not confirm the content"):
        storage.place(storage.stage(b"payload"), "p/q/r.dcm")
    assert list(storage.incoming.iterdir()) == []
    assert storage.check_reachable() is None  # the bucket answers; only the content went unconfirmed
    assert not storage.exists("p/q/r.dcm")  # and the unconfirmed object was deleted, never left for recovery


class _ForgetfulClient:
    """A store that ignores If-None-Match (older S3-compatible servers) and, when told, fails every GET (500)."""

    def __init__(self, real: Any, *, honour_conditions: bool = False):
        self._real, self.failing_gets, self._honour = real, False, honour_conditions

    def put_object(self, **request: Any) -> dict[str, Any]:
        if not self._honour:
            request.pop("IfNoneMatch", None)
        return self._real.put_object(**request)

    def get_object(self, **request: Any) -> dict[str, Any]:
        if self.failing_gets:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InternalError", "Message": "We encountered an internal error"},
                 "ResponseMetadata": {"HTTPStatusCode": 500}}, "GetObject")
        return self._real.get_object(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_store_that_ignores_conditional_writes_is_refused(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    _storage(tmp_path, s3_endpoint, bucket).check_conditional_writes()  # moto honours If-None-Match
    forgetful = ObjectStorage(S3Location(bucket, "", s3_endpoint), tmp_path / "staging",
                              client=_ForgetfulClient(_client(s3_endpoint)))
    with pytest.raises(StorageError, match="ignores If-None-Match"):
        forgetful.check_conditional_writes()
    assert [o["Key"] for o in _client(s3_endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])] == []


def test_a_resend_or_an_unreadable_first_copy_never_costs_the_first_copy(s3_settings: Settings, s3_endpoint: str,
                                                                         bucket: str) -> None:
    """Even on a store that ignores If-None-Match (refused at start-up: a different second copy would overwrite the
    first), an identical resend leaves the object its row points at; on a store that honours it, a first copy that
    cannot be read (the store answers 500) is not replaced by different content: 0xA700, try again."""
    with open_platform(s3_settings) as platform:
        archive = platform.archive
        client = _ForgetfulClient(_client(s3_endpoint))
        archive.storage = ObjectStorage(S3Location.parse(s3_settings.storage_url), s3_settings.staging_dir,
                                        client=client)
        dataset = small_ct_series(1, prefix="FGT")[0]
        assert archive.ingest(part10_bytes(dataset), source="test").status == 0x0000
        assert archive.ingest(part10_bytes(dataset), source="test").status == 0x0000  # a resend: a duplicate
        assert verify(archive).ok

        changed = copy.deepcopy(dataset)
        changed.PatientName = "Other^Name"
        client = _ForgetfulClient(_client(s3_endpoint), honour_conditions=True)
        archive.storage = ObjectStorage(S3Location.parse(s3_settings.storage_url), s3_settings.staging_dir,
                                        client=client)
        client.failing_gets = True
        refused = archive.ingest(part10_bytes(changed), source="test")
        assert refused.status == 0xA700 and "try again" in refused.reason
        client.failing_gets = False
        with archive.index.reading() as session:
            [(path, sha256)] = session.query(Instance.file_path, Instance.sha256).all()
        assert pydicom.dcmread(io.BytesIO(archive.storage.read(path, sha256))).PatientName == dataset.PatientName


def test_a_missing_bucket_is_named(tmp_path: Path, s3_endpoint: str) -> None:
    storage = _storage(tmp_path, s3_endpoint, "oncopacs-never-created")
    with pytest.raises(StorageError, match="its bucket oncopacs-never-created does not exist"):
        storage.check_reachable()
    with pytest.raises(StorageError, match="NoSuchBucket"):
        storage.place(storage.stage(b"payload"), "p/q/r.dcm")


def test_unreachable_store_raises_storage_error(tmp_path: Path) -> None:
    storage = _storage(tmp_path, f"http://127.0.0.1:{free_port()}", "no-such-bucket")
    with pytest.raises(StorageError, match="unavailable"):
        storage.place(storage.stage(b"payload"), "p/q/r.dcm")
    with pytest.raises(StorageError, match="unavailable"):
        storage.check_reachable()
    assert storage.check("p/q/r.dcm", "0" * 64) is Damage.UNREADABLE
    assert list(storage.incoming.iterdir()) == []


# -- the whole archive on an object store --------------------------------------------------------


@pytest.fixture
def s3_settings(tmp_path: Path, s3_endpoint: str, bucket: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                    audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES,
                    storage_url=f"s3://{bucket}/pacs?endpoint={s3_endpoint}&sse=AES256")


def _store(port: int, datasets: list[pydicom.Dataset]) -> list[int]:
    ae = AE(ae_title="S3TEST")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(dataset).Status for dataset in datasets]
    finally:
        assoc.release()


def test_c_store_retrieve_verify_and_recover_on_s3(s3_settings: Settings, s3_endpoint: str, bucket: str,
                                                   tmp_path: Path) -> None:
    datasets = small_ct_series(4)
    with open_platform(s3_settings) as platform:
        server = start_dimse(s3_settings, platform.archive)
        try:
            assert _store(server.server_address[1], datasets) == [0x0000] * 4
        finally:
            server.shutdown()
        archive = platform.archive
        keys = sorted(o["Key"] for o in _client(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"])
        assert len(keys) == 4 and all(k.startswith("pacs/") and k.endswith(".dcm") for k in keys)
        with archive.index.reading() as session:
            rows = session.query(Instance.file_path, Instance.sha256).all()
        for file_path, sha256 in rows:
            stored = archive.storage.read(file_path, sha256)
            assert pydicom.dcmread(io.BytesIO(stored)).SOPInstanceUID in {d.SOPInstanceUID for d in datasets}
        report = verify(archive)
        assert (report.checked, report.missing, report.altered, report.unindexed) == (4, [], [], [])

        # a crash after the object was confirmed but before its row was written: recovery indexes it
        orphan = small_ct_series(1, prefix="O")[0]
        data = part10_bytes(orphan)
        relative = f"{orphan.StudyInstanceUID}/{orphan.SeriesInstanceUID}/{orphan.SOPInstanceUID}.dcm"
        archive.storage.place(archive.storage.stage(data), relative)
        assert verify(archive).unindexed == [relative]
        assert recover_orphans(archive) == 1
        assert verify(archive).unindexed == []

        backup = run_backup(s3_settings, tmp_path / "backup")  # objects are downloaded into the backup folder
        assert backup.instances == 5 and backup.new == 5 and not backup.linked
        assert sorted(p.name for p in (tmp_path / "backup" / "storage").rglob("*.dcm")) == sorted(
            Path(k).name for k in [*keys, relative])


def test_store_down_answers_a700_and_indexes_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES,
                        storage_url=f"s3://oncopacs-down?endpoint=http://127.0.0.1:{free_port()}")
    with open_platform(settings) as platform:
        server = start_dimse(settings, platform.archive)
        try:
            assert _store(server.server_address[1], small_ct_series(2)) == [0xA700, 0xA700]
        finally:
            server.shutdown()
        with platform.archive.index.reading() as session:
            assert session.query(Instance).count() == 0
        assert list(settings.staging_dir.glob("*.part")) == []


class _Cable:
    """A TCP forwarder on loopback between the archive and the store that a test can cut and reconnect."""

    def __init__(self, target_port: int):
        self.port, self._target = free_port(), target_port
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.connect()

    def connect(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a store that went down."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            live, self._live = self._live, []
        for sock in live:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pipe blocked in recv(); close() alone would not
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._live += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_store_going_down_mid_ingest_loses_nothing_acknowledged(tmp_path: Path, s3_endpoint: str,
                                                                bucket: str) -> None:
    """Four clients store while the store's connection is cut and reconnected: every instance acknowledged (0x0000)
    is indexed and retrieved identical; every refused one answered 0xA700 and is not indexed."""
    cable = _Cable(int(s3_endpoint.rsplit(":", 1)[1]))
    settings = Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES,
                        storage_url=f"s3://{bucket}?endpoint=http://127.0.0.1:{cable.port}")
    series = [small_ct_series(30, prefix=f"C{n}") for n in range(4)]
    statuses: dict[str, int] = {}
    with open_platform(settings) as platform:
        server = start_dimse(settings, platform.archive)

        def client(datasets: list[pydicom.Dataset]) -> None:
            ae = AE(ae_title="S3FAULT")
            ae.add_requested_context(CTImageStorage)
            assoc = ae.associate("127.0.0.1", server.server_address[1])
            assert assoc.is_established
            for dataset in datasets:
                statuses[dataset.SOPInstanceUID] = assoc.send_c_store(dataset).Status
                time.sleep(0.01)
            assoc.release()

        try:
            threads = [threading.Thread(target=client, args=(datasets,)) for datasets in series]
            for thread in threads:
                thread.start()
            time.sleep(0.4)
            cable.cut()
            time.sleep(1.5)
            cable.connect()
            for thread in threads:
                thread.join(60)
        finally:
            server.shutdown()
        assert sorted(set(statuses.values())) == [0x0000, 0xA700]  # the cut was felt, and some went through
        assert len(statuses) == 120
        with platform.archive.index.reading() as session:
            rows = {uid: (path, sha) for uid, path, sha in
                    session.query(Instance.sop_instance_uid, Instance.file_path, Instance.sha256)}
        sent = {d.SOPInstanceUID: d for datasets in series for d in datasets}
        for uid, status in statuses.items():
            if status == 0x0000:
                path, sha256 = rows[uid]
                stored = pydicom.dcmread(io.BytesIO(platform.archive.storage.read(path, sha256)))
                assert stored.PixelData == sent[uid].PixelData
            else:
                assert uid not in rows
        assert list(settings.staging_dir.glob("*.part")) == []
