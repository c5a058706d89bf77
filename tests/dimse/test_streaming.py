"""C-STORE datasets staged while they arrive: the same bytes as before, one write, nothing left behind."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive import ingest
from oncopacs.archive.ingest import Archive
from oncopacs.archive.part10 import dataset_offset
from oncopacs.archive.storage import Storage
from oncopacs.dimse import streaming, transport
from oncopacs.errors import StorageError
from oncopacs.index.query import find_instances
from tests.factories import part10_bytes, small_ct_series


def _stored_bytes(archive: Archive, sop_uid: str) -> bytes:
    with archive.index.reading() as session:
        (stored,) = find_instances(session, {"SOPInstanceUID": sop_uid})
    return archive.storage.read(stored.file_path, expected_sha256=stored.sha256)


def _wait_for_stored(archive: Archive, sop_uid: str, seconds: float = 10.0) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return _stored_bytes(archive, sop_uid)
        except ValueError:  # not indexed yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_for_empty_incoming(storage: Storage, seconds: float = 10.0) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = list(storage.incoming.glob("*.part"))
        if not left:
            return []
        time.sleep(0.05)
    return list(storage.incoming.glob("*.part"))


def _associate(dimse_server):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(*dimse_server, ae_title="ONCOPACS")
    assert assoc.is_established
    return assoc


def _c_store_fragments(assoc, dataset, *, message_id: int, max_pdu_length: int) -> list:
    """The P-DATA primitives of a C-STORE-RQ of ``dataset``, cut for ``max_pdu_length``, to send by hand."""
    context = assoc._get_valid_context(CTImageStorage, "", "scu")
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    request.Priority = 2
    encoded = part10_bytes(dataset)
    request.DataSet = io.BytesIO(encoded[dataset_offset(encoded):])
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return list(message.encode_msg(context.context_id, max_pdu_length))


def test_staging_stream_keeps_what_it_is_given_and_cleans_up(tmp_path):
    storage = Storage(tmp_path / "storage")
    stream = storage.open_stream()
    pieces = [b"header", bytes(range(256)) * 700, b"tail"]
    for piece in pieces:
        stream.write(piece)
    assert stream.size == sum(map(len, pieces))
    path = stream.finish()
    assert path.read_bytes() == b"".join(pieces)
    assert stream.sha256() == hashlib.sha256(b"".join(pieces)).hexdigest()  # hashed piece by piece
    with pytest.raises(StorageError):
        stream.write(b"more")  # closed by finish
    abandoned = storage.open_stream()
    abandoned.write(b"partial")
    abandoned.abandon()
    assert not abandoned.path.exists()
    abandoned.abandon()  # twice is harmless


def test_dimse_store_writes_each_file_once_from_the_staged_stream(dimse_server, archive: Archive, monkeypatch):
    """With the whole-file writer and hasher disabled, C-STORE still stores byte-identical files under
    their right SHA-256 (checked on read): both came from the stream."""

    def no_second_write(data):
        raise AssertionError("the received dataset was written or hashed a second time")

    monkeypatch.setattr(archive.storage, "stage", no_second_write)
    monkeypatch.setattr(ingest, "compute_sha256", no_second_write)
    series = small_ct_series(5, prefix="S")
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(*dimse_server, ae_title="ONCOPACS")
    statuses = [assoc.send_c_store(ds).Status for ds in series]
    assoc.release()
    assert statuses == [0] * 5
    for dataset in series:
        data = _stored_bytes(archive, str(dataset.SOPInstanceUID))
        sent = part10_bytes(dataset)
        assert data[dataset_offset(data):] == sent[dataset_offset(sent):]
        assert data[128:132] == b"DICM"
    assert _wait_for_empty_incoming(archive.storage) == []  # the spare staged file went with the association


def test_an_association_aborted_mid_dataset_leaves_no_staged_file(dimse_server, archive: Archive):
    dataset = small_ct_series(1, prefix="A")[0]
    assoc = _associate(dimse_server)
    fragments = _c_store_fragments(assoc, dataset, message_id=1, max_pdu_length=256)
    assert len(fragments) > 4
    for pdata in fragments[: len(fragments) // 2]:  # the command and half of the dataset, then abort
        assoc.dul.send_pdu(pdata)
    time.sleep(0.3)
    assoc.abort()
    assert _wait_for_empty_incoming(archive.storage) == []
    with archive.index.reading() as session:
        assert find_instances(session, {"SOPInstanceUID": str(dataset.SOPInstanceUID)}) == []


def test_reactor_clock_wakes_only_the_association_it_is_asked_to(monkeypatch):
    clock = transport._AssociationClock()
    slept: list[float] = []
    monkeypatch.setattr(transport.time, "sleep", slept.append)
    clock.sleep(0.25)  # any other sleep is the real one
    assert slept == [0.25]
    other = threading.Thread(target=lambda: None)
    clock.wake(threading.current_thread())
    assert clock._event_of(threading.current_thread()).is_set()
    assert not clock._event_of(other).is_set()
    clock.sleep(transport.ASSOCIATION_POLL_S)  # returns at once, and takes the wake-up
    assert not clock._event_of(threading.current_thread()).is_set()
    assert clock.monotonic() > 0  # everything else is the time module's


def test_middle_dataset_fragments_are_read_straight_into_the_request(dimse_server, archive: Archive, monkeypatch):
    """A C-STORE sent in 64-byte PDUs: its middle dataset fragments bypass pynetdicom's per-PDU machinery,
    the command and the last fragment do not, and the stored file is byte-identical."""
    taken: list[bool] = []
    read_middle_fragment = streaming._read_middle_fragment

    def spy(dul) -> bool:
        taken.append(read_middle_fragment(dul))
        return taken[-1]

    monkeypatch.setattr(streaming, "_read_middle_fragment", spy)
    dataset = small_ct_series(1, prefix="F")[0]
    assoc = _associate(dimse_server)
    fragments = _c_store_fragments(assoc, dataset, message_id=7, max_pdu_length=64)
    middle = sum(1 for pdata in fragments if pdata.presentation_data_value_list[0][1][0] == 0x00)
    assert middle > 10
    for pdata in fragments:
        assoc.dul.send_pdu(pdata)
    stored = _wait_for_stored(archive, str(dataset.SOPInstanceUID))  # (the SCU's own reactor takes the response)
    assoc.release()
    assert middle // 2 <= sum(taken) <= middle  # data arriving in pieces may take pynetdicom's path instead
    encoded = part10_bytes(dataset)
    assert stored[dataset_offset(stored):] == encoded[dataset_offset(encoded):]
