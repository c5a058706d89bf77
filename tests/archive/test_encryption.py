"""Encryption at rest: the sealed container, the key file, transparent reads, ingest and retrieval, rotation."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from dicomweb_client import DICOMwebClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet
from sqlalchemy import select

from oncopacs.archive.encryption import (
    HEADER_BYTES,
    SEGMENT_BYTES,
    TAG_BYTES,
    Sealer,
    StorageKey,
    StorageKeys,
    generate_key_file,
    iter_unsealed,
    load_storage_keys,
    seal,
    sealed_size,
    unseal,
)
from oncopacs.archive.maintenance import verify
from oncopacs.archive.part10 import dataset_offset
from oncopacs.archive.rekey import rekey
from oncopacs.archive.storage import Damage, DamagedFileError, Storage, compute_sha256
from oncopacs.cli.main import main
from oncopacs.errors import ConfigError, SealedDataError
from oncopacs.index.models import Instance
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY
from tests.factories import part10_bytes, small_ct_series

KEY_A = StorageKey.from_secret(bytes(range(32)))
KEY_B = StorageKey.from_secret(bytes(range(32, 64)))
KEYS_A = StorageKeys.of(KEY_A)


def write_key_file(path: Path, *keys: StorageKey, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# test keys\n" + "".join(f"{key.secret.hex()}  # a key\n" for key in keys))
    path.chmod(mode)
    return path


def key_settings(tmp_path: Path, key_file: Path | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                    audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, storage_key_file=key_file)


def stored_rows(platform: Platform) -> list[tuple[str, str]]:
    with platform.archive.index.reading() as session:
        return [(str(p), str(h)) for p, h in session.execute(select(Instance.file_path, Instance.sha256))]


# -- the container -------------------------------------------------------------------------------

BOUNDARIES = [0, 1, SEGMENT_BYTES - 1, SEGMENT_BYTES, SEGMENT_BYTES + 1, 2 * SEGMENT_BYTES, 3 * SEGMENT_BYTES + 7]


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(size=st.one_of(st.sampled_from(BOUNDARIES), st.integers(0, 3 * SEGMENT_BYTES)),
       cuts=st.lists(st.integers(0, 3 * SEGMENT_BYTES), max_size=6))
def test_round_trip_whatever_the_size_and_the_pieces(size: int, cuts: list[int]) -> None:
    data = os.urandom(size)
    sealer = Sealer(KEYS_A)
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    sealed = b"".join(sealer.update(data[a:b]) for a, b in itertools.pairwise(bounds)) + sealer.finish()
    assert len(sealed) == sealed_size(size)
    assert unseal(sealed, KEYS_A) == data
    assert b"".join(iter_unsealed(io.BytesIO(sealed), KEYS_A)) == data


def test_multi_megabyte_round_trip_and_fresh_salt() -> None:
    data = os.urandom(5 * 1024**2 + 3)
    first, second = seal(data, KEYS_A), seal(data, KEYS_A)
    assert first != second and first[:24] == second[:24]  # same magic and key id, another salt
    assert unseal(first, KEYS_A) == data == unseal(second, KEYS_A)
    assert data[:4096] not in first


def test_tampering_truncation_reordering_and_wrong_keys_are_refused() -> None:
    data = os.urandom(3 * SEGMENT_BYTES + 100)
    sealed = seal(data, KEYS_A)
    step = SEGMENT_BYTES + TAG_BYTES
    segments = [sealed[HEADER_BYTES + i: HEADER_BYTES + i + step] for i in range(0, len(sealed) - HEADER_BYTES, step)]
    flipped = bytearray(sealed)
    flipped[HEADER_BYTES + 10] ^= 1
    header_flipped = bytearray(sealed)
    header_flipped[HEADER_BYTES - 1] ^= 1  # the salt: another file key
    cases = {
        "a flipped bit": bytes(flipped),
        "a flipped salt": bytes(header_flipped),
        "the last segment cut off": sealed[:HEADER_BYTES + 3 * step],
        "a segment cut short": sealed[:-1],
        "segments swapped": sealed[:HEADER_BYTES] + segments[1] + segments[0] + b"".join(segments[2:]),
        "bytes appended": sealed + b"\0" * 20,
        "the header only": sealed[:HEADER_BYTES],
    }
    for damaged in cases.values():
        with pytest.raises(SealedDataError):
            unseal(damaged, KEYS_A)
        with pytest.raises(SealedDataError):
            b"".join(iter_unsealed(io.BytesIO(damaged), KEYS_A))

    with pytest.raises(SealedDataError, match="last segment is missing"):
        unseal(sealed[:HEADER_BYTES + 3 * step], KEYS_A)
    with pytest.raises(SealedDataError, match="not in the key file"):
        unseal(sealed, StorageKeys.of(KEY_B))
    forged = sealed[:16] + KEY_B.key_id + sealed[24:]  # another key claimed: its file key cannot open the segments
    with pytest.raises(SealedDataError, match="fails authentication"):
        unseal(forged, StorageKeys.of(KEY_B))


# -- the key file --------------------------------------------------------------------------------


def test_key_file_current_first_comments_and_generation(tmp_path: Path) -> None:
    keys = load_storage_keys(write_key_file(tmp_path / "keys" / "k", KEY_B, KEY_A), tmp_path / "data")
    assert keys.current == KEY_B and set(keys.by_id) == {KEY_A.key_id, KEY_B.key_id}
    assert KEY_A.secret.hex() not in repr(KEY_A)
    made = generate_key_file(tmp_path / "keys" / "new")
    assert (tmp_path / "keys" / "new").stat().st_mode & 0o777 == 0o600
    assert load_storage_keys(tmp_path / "keys" / "new").current == made
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_key_file(tmp_path / "keys" / "new")


@pytest.mark.parametrize("problem", ["missing", "group-readable", "inside", "malformed", "empty"])
def test_bad_key_files_are_config_errors(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "keys" / "k"
    if problem == "group-readable":
        write_key_file(path, KEY_A, mode=0o640)
    elif problem == "inside":
        path = write_key_file(tmp_path / "data" / "k", KEY_A)
    elif problem == "malformed":
        write_key_file(path, KEY_A)
        path.write_text(path.read_text() + "abc\n")
    elif problem == "empty":
        write_key_file(path)
    with pytest.raises(ConfigError) as caught:
        load_storage_keys(path, tmp_path / "data")
    assert KEY_A.secret.hex() not in str(caught.value)


def test_the_setting_is_read_from_the_environment(tmp_path: Path) -> None:
    loaded = Settings.load(env={"ONCOPACS_STORAGE_KEY_FILE": str(tmp_path / "k")})
    assert loaded.storage_key_file == tmp_path / "k"
    assert Settings.load(env={}).storage_key_file is None


# -- the storage area ----------------------------------------------------------------------------


def test_storage_seals_streams_and_reads_transparently(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage", KEYS_A)
    data = os.urandom(SEGMENT_BYTES * 2 + 5)
    stream = storage.open_stream()
    for start in range(0, len(data), 1000):
        stream.write(data[start: start + 1000])
    assert stream.sha256() == compute_sha256(data)  # the plaintext's
    assert storage.place(stream.finish(), "a/b/c.dcm")
    on_disk = storage.path_of("a/b/c.dcm").read_bytes()
    assert len(on_disk) == sealed_size(len(data)) and data[:64] not in on_disk
    assert storage.read("a/b/c.dcm", compute_sha256(data)) == data
    assert storage.check("a/b/c.dcm", compute_sha256(data)) is None
    assert storage.key_id("a/b/c.dcm") == KEY_A.key_id

    legacy = Storage(tmp_path / "storage")  # a plaintext file from before the key is read as it is
    assert legacy.place(legacy.stage(b"plain"), "a/b/old.dcm")
    assert storage.read("a/b/old.dcm", compute_sha256(b"plain")) == b"plain"
    assert storage.check("a/b/old.dcm", compute_sha256(b"plain")) is None
    assert storage.key_id("a/b/old.dcm") is None

    with pytest.raises(DamagedFileError) as caught:  # sealed, and no key configured
        legacy.read("a/b/c.dcm")
    assert caught.value.damage is Damage.UNREADABLE and "no storage key" in str(caught.value)
    assert legacy.check("a/b/c.dcm", compute_sha256(data)) is Damage.UNREADABLE
    assert Storage(tmp_path / "storage", StorageKeys.of(KEY_B)).check("a/b/c.dcm", compute_sha256(data)) \
        is Damage.UNREADABLE

    tampered = bytearray(on_disk)
    tampered[-100] ^= 0x40
    storage.path_of("a/b/c.dcm").write_bytes(bytes(tampered))
    with pytest.raises(DamagedFileError) as caught:
        storage.read("a/b/c.dcm", compute_sha256(data))
    assert caught.value.damage is Damage.ALTERED
    assert storage.check("a/b/c.dcm", compute_sha256(data)) is Damage.ALTERED
    storage.path_of("a/b/c.dcm").write_bytes(on_disk[:HEADER_BYTES + SEGMENT_BYTES + TAG_BYTES])  # truncated
    assert storage.check("a/b/c.dcm", compute_sha256(data)) is Damage.ALTERED
    storage.path_of("a/b/c.dcm").write_bytes(on_disk[:20])  # the header cut short
    assert storage.check("a/b/c.dcm", compute_sha256(data)) is Damage.ALTERED
    with pytest.raises(DamagedFileError) as caught:
        storage.read("a/b/c.dcm")
    assert caught.value.damage is Damage.ALTERED


# -- through the platform ------------------------------------------------------------------------


@pytest.fixture
def keyed_platform(tmp_path: Path) -> Iterator[Platform]:
    key_file = write_key_file(tmp_path / "keys" / "storage.key", KEY_A)
    with open_platform(key_settings(tmp_path, key_file)) as platform:
        yield platform


def test_ingest_by_c_store_and_stow_then_retrieve_by_wado_and_c_get(keyed_platform: Platform) -> None:
    from oncopacs.auth.roles import Role
    from oncopacs.dimse.server import start_dimse
    from oncopacs.web.app import create_app
    from tests.web.conftest import _headers_factory, serve_app

    by_dimse, by_stow = small_ct_series(3, prefix="D"), small_ct_series(2, prefix="W")
    server = start_dimse(keyed_platform.settings, keyed_platform.archive)
    try:
        address = ("127.0.0.1", server.server_address[1])
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(*address, ae_title="ONCOPACS")
        assert [assoc.send_c_store(ds).Status for ds in by_dimse] == [0] * 3
        assoc.release()

        app = create_app(keyed_platform)
        app.config["TESTING"] = True
        headers = _headers_factory(app)(Role("physicist"))
        with serve_app(app) as url:
            client = DICOMwebClient(f"{url}/dicom-web", headers=headers)
            client.store_instances(by_stow)
            for dataset in (*by_dimse, *by_stow):
                got = client.retrieve_instance(dataset.StudyInstanceUID, dataset.SeriesInstanceUID,
                                               dataset.SOPInstanceUID)
                assert got.PixelData == dataset.PixelData and got.PatientName == dataset.PatientName
            reply = requests.get(f"{url}/dicom-web/studies/{by_stow[0].StudyInstanceUID}",
                                 headers={**headers, "Accept": 'multipart/related; type="application/dicom"; '
                                                               "transfer-syntax=*"}, timeout=30)
            assert reply.status_code == 200 and part10_bytes(by_stow[0])[dataset_offset(
                part10_bytes(by_stow[0])):] in reply.content

        received: list[Dataset] = []

        def on_store(event) -> int:
            received.append(event.dataset)
            return 0

        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(*address, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = by_dimse[0].StudyInstanceUID
        statuses = [s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses[-1] == 0
    assert sorted(d.PixelData for d in received) == sorted(d.PixelData for d in by_dimse)

    rows = stored_rows(keyed_platform)
    assert len(rows) == 5
    storage = keyed_platform.archive.storage
    for relative_path, _ in rows:
        on_disk = storage.path_of(relative_path).read_bytes()
        assert storage.key_id(relative_path) == KEY_A.key_id
        assert b"Bench" not in on_disk and b"DICM" not in on_disk
    assert verify(keyed_platform.archive).ok


def test_rekey_from_plaintext_and_from_an_old_key(tmp_path: Path) -> None:
    with open_platform(key_settings(tmp_path, None)) as plain:  # an archive from before encryption
        for dataset in small_ct_series(3, prefix="P"):
            plain.archive.ingest(part10_bytes(dataset), source="test")
    key_file = write_key_file(tmp_path / "keys" / "storage.key", KEY_A)
    with open_platform(key_settings(tmp_path, key_file)) as platform:
        for dataset in small_ct_series(2, prefix="K"):
            platform.archive.ingest(part10_bytes(dataset), source="test")
        assert verify(platform.archive).ok  # plaintext and sealed side by side
        report = rekey(platform.archive)
        assert (report.resealed, report.current, report.ok) == (3, 2, True)
        assert all(platform.archive.storage.key_id(p) == KEY_A.key_id for p, _ in stored_rows(platform))

    write_key_file(key_file, KEY_B, KEY_A)  # rotation: the new key first, the old one still read
    runner = CliRunner()
    done = runner.invoke(main, ["--data-dir", str(tmp_path / "data"), "storage", "rekey", "--json"],
                         env={"ONCOPACS_STORAGE_KEY_FILE": str(key_file)})
    assert done.exit_code == 0, done.output
    assert '"resealed": 5' in done.output

    write_key_file(key_file, KEY_B)  # the old line dropped
    with open_platform(key_settings(tmp_path, key_file)) as platform:
        assert verify(platform.archive).ok
        for relative_path, sha256 in stored_rows(platform):
            assert hashlib.sha256(platform.archive.storage.read(relative_path)).hexdigest() == sha256
        assert rekey(platform.archive).resealed == 0


def test_cli_keygen_and_unseal(tmp_path: Path) -> None:
    runner = CliRunner()
    key_file = tmp_path / "keys" / "new.key"
    key_file.parent.mkdir()
    done = runner.invoke(main, ["storage", "keygen", str(key_file)])
    assert done.exit_code == 0 and key_file.stat().st_mode & 0o777 == 0o600
    keys = load_storage_keys(key_file)
    (tmp_path / "dump.enc").write_bytes(seal(b"pg dump bytes", keys))
    done = runner.invoke(main, ["storage", "unseal", str(tmp_path / "dump.enc"), str(tmp_path / "dump")],
                         env={"ONCOPACS_STORAGE_KEY_FILE": str(key_file)})
    assert done.exit_code == 0, done.output
    assert (tmp_path / "dump").read_bytes() == b"pg dump bytes"
    done = runner.invoke(main, ["storage", "unseal", str(tmp_path / "dump.enc"), str(tmp_path / "again")],
                         env={"ONCOPACS_STORAGE_KEY_FILE": ""})
    assert done.exit_code == 2 and "no storage key" in done.output


def test_verify_without_the_key_says_unreadable_and_names_the_setting(tmp_path: Path) -> None:
    """Forgetting the key is not damage: the files are reported unreadable, with the setting that reads them."""
    key_file = write_key_file(tmp_path / "keys" / "storage.key", KEY_A)
    with open_platform(key_settings(tmp_path, key_file)) as platform:
        for dataset in small_ct_series(2, prefix="V"):
            platform.archive.ingest(part10_bytes(dataset), source="test")
    done = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "verify"],
                              env={"ONCOPACS_STORAGE_KEY_FILE": ""})
    assert done.exit_code == 1
    assert "checked 2 file(s): 0 missing, 0 altered, 2 unreadable, 0 not indexed" in done.stdout
    assert "ONCOPACS_STORAGE_KEY_FILE" in done.stderr
