"""DIMSE fuzzing: damaged data sets sent as C-STOREs, and damaged PDU streams, against a real listener.

Every C-STORE of a damaged data set gets a status (its association is never dropped); every PDU
stream ends within the ARTIM and idle times with a status, an A-ASSOCIATE-RJ, an A-RELEASE-RP or
an A-ABORT (a bare close only where the standard has one: the peer's own A-ABORT, or a request
that never completed); no exception reaches pynetdicom's threads; the listener answers a C-ECHO
afterwards; and every instance answered Success is in the archive, byte for byte as it was sent.
The seed is ``ONCOPACS_FUZZ_SEED`` (default 18), the number of mutants of each kind
``ONCOPACS_FUZZ_DIMSE_CASES`` (default 240); the counts by status are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.uid import ImplicitVRLittleEndian

from oncopacs.archive.part10 import dataset_offset
from oncopacs.index.query import find_instances
from tests.conftest import SHARED_DATA, require
from tests.dimse.fuzzing import (
    Mutator,
    Seed,
    data_set_sent,
    fresh_uid,
    has_abort,
    load_seeds,
    store_exchange,
)
from tests.dimse.raw_peer import (
    A_ABORT_TYPE,
    A_ASSOCIATE_AC_TYPE,
    A_ASSOCIATE_RJ_TYPE,
    A_RELEASE_RP_TYPE,
    P_DATA_TF_TYPE,
    RawPeer,
    associate_rq_bytes,
    c_echo_rq,
    c_store_rq,
    echo,
    p_data_tf,
    pdu_bytes,
)

FUZZ_SEED = int(os.environ.get("ONCOPACS_FUZZ_SEED", "18"))
#: Mutants of each kind; a longer run: ``ONCOPACS_FUZZ_SEED=7 ONCOPACS_FUZZ_DIMSE_CASES=5000 pytest -s ...``.
DATA_SET_MUTANTS = PDU_MUTANTS = int(os.environ.get("ONCOPACS_FUZZ_DIMSE_CASES", "240"))
CASE_LIMIT_S = 20.0  # a hang guard on each exchange (they take milliseconds, or the 1 s timeouts)
SUCCESS = (0x0000, 0xB000, 0xB006, 0xB007)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    require(SHARED_DATA.exists(), f"shared test data {SHARED_DATA} is absent")
    loaded = load_seeds(SHARED_DATA)
    assert len(loaded) >= 6
    return loaded


@pytest.fixture
def pynetdicom_errors(caplog):
    """pynetdicom's own last resort: an exception in its DUL loop (it then aborts bypassing the state machine).
    An exception that ends a thread fails the test through pytest (filterwarnings = error)."""
    caplog.set_level(logging.ERROR, logger="pynetdicom")
    yield lambda: [r.getMessage() for r in caplog.records if "Exception in DUL.run()" in r.getMessage()]


def _stored_data_set(archive, sop_instance_uid: str) -> bytes | None:
    with archive.index.reading() as session:
        found = find_instances(session, {"SOPInstanceUID": sop_instance_uid})
    if not found:
        return None
    data = archive.storage.read(found[0].file_path, expected_sha256=found[0].sha256)
    return data[dataset_offset(data) :]


def test_damaged_data_sets_each_get_a_status(start_listener, seeds, pynetdicom_errors):
    listener = start_listener(dicom_artim_seconds=5, dicom_idle_seconds=5, dicom_max_per_host=32,
                              max_associations=32)  # one association per seed
    mutator = Mutator(FUZZ_SEED)
    statuses: Counter[str] = Counter()
    dropped, not_identical, successes = [], [], 0
    peers: dict[str, RawPeer] = {}
    try:
        for case in range(DATA_SET_MUTANTS):
            seed = seeds[case % len(seeds)]
            uid = fresh_uid(str(FUZZ_SEED), str(case))
            description, data = mutator.data_set(seed.encoded(uid), implicit=seed.implicit)
            peer = peers.get(seed.name)
            if peer is None:
                peer = peers[seed.name] = RawPeer(listener.address, timeout_s=CASE_LIMIT_S)
                answer = peer.associate([(seed.sop_class_uid, [seed.transfer_syntax_uid])])
                assert answer is not None and answer.pdu_type == A_ASSOCIATE_AC_TYPE, seed.name
            reply = peer.request(1, c_store_rq(seed.sop_class_uid, uid, message_id=case % 65536), data)
            if reply.status is None:
                dropped.append(f"case {case} ({seed.name}, {description}): {reply.ended_by or 'closed'}")
                peers.pop(seed.name).close()
                continue
            statuses[f"0x{reply.status:04X}"] += 1
            if reply.status in SUCCESS:
                successes += 1
                if _stored_data_set(listener.archive, uid) != data:
                    not_identical.append(f"case {case} ({seed.name}, {description})")
    finally:
        for peer in peers.values():
            peer.close()
    print(f"\n{DATA_SET_MUTANTS} damaged data sets over {len(seeds)} seeds, by status:",
          dict(sorted(statuses.items())))
    assert not dropped, dropped
    assert not not_identical, not_identical
    assert successes > 0 and len(statuses) >= 2  # some mutants still store, others are refused
    assert not pynetdicom_errors()
    assert echo(listener.address)[0] == 0x0000


def _exchange(address, case: int, sends: list[bytes]) -> dict:
    """Send one damaged exchange on a new connection, the rest once the first is answered with an
    A-ASSOCIATE-AC, and read the server's PDUs until it closes."""
    outcome = {"case": case, "statuses": [], "ac": False, "end": "closed"}
    with RawPeer(address, timeout_s=CASE_LIMIT_S) as peer:
        rest = b"".join(sends[1:])
        with contextlib.suppress(OSError):  # the server closed early (an oversized PDU, an abort): read what it said
            peer.send(sends[0])
        while True:
            try:
                pdu = peer.read_pdu()
            except TimeoutError:
                outcome["end"] = "hang"
                return outcome
            except OSError:  # reset: the server closed with our bytes unread
                return outcome
            if pdu is None:
                return outcome
            if pdu.pdu_type == A_ASSOCIATE_AC_TYPE and not outcome["ac"]:
                outcome["ac"] = True
                with contextlib.suppress(OSError):
                    peer.send(rest)
            elif pdu.pdu_type == P_DATA_TF_TYPE:
                reply = _status_of(pdu.body)
                if reply is not None:
                    outcome["statuses"].append(reply)
            elif pdu.pdu_type in (A_ABORT_TYPE, A_ASSOCIATE_RJ_TYPE, A_RELEASE_RP_TYPE):
                outcome["end"] = {A_ABORT_TYPE: "A-ABORT", A_ASSOCIATE_RJ_TYPE: "A-ASSOCIATE-RJ",
                                  A_RELEASE_RP_TYPE: "A-RELEASE-RP"}[pdu.pdu_type]


def _status_of(body: bytes) -> tuple[int, str] | None:
    """(Status, Affected SOP Instance UID) of a one-PDU response command set, if it is one."""
    from io import BytesIO

    from pydicom.filereader import read_dataset

    if len(body) < 6 or not body[5] & 0x01:
        return None
    command = read_dataset(BytesIO(body[6:]), is_implicit_VR=True, is_little_endian=True)
    if "Status" not in command:
        return None
    return int(command.Status), str(command.get("AffectedSOPInstanceUID", ""))


def test_damaged_pdu_streams_each_end_cleanly(start_listener, seeds, pynetdicom_errors):
    listener = start_listener(dicom_artim_seconds=1, dicom_idle_seconds=1, max_associations=64,
                              dicom_max_per_host=64)
    mutator = Mutator(FUZZ_SEED + 1)
    exchanges: list[list[bytes]] = []
    for case in range(PDU_MUTANTS):
        if case % 5 == 0:  # a C-ECHO exchange
            exchange = [associate_rq_bytes([("1.2.840.10008.1.1", [ImplicitVRLittleEndian])]),
                        p_data_tf(1, 0x03, c_echo_rq()), pdu_bytes(0x05, b"\x00" * 4)]
        else:
            seed = seeds[case % len(seeds)]
            uid = fresh_uid("pdu", str(FUZZ_SEED), str(case))
            exchange = store_exchange(associate_rq_bytes([(seed.sop_class_uid, [seed.transfer_syntax_uid])]),
                                      seed, uid, seed.encoded(uid))
        exchanges.append(mutator.pdu_stream(exchange)[1])
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(_exchange, [listener.address] * len(exchanges), range(len(exchanges)), exchanges))
    streams = [b"".join(sends) for sends in exchanges]

    endings = Counter(outcome["end"] for outcome in outcomes)
    statuses = Counter(f"0x{status:04X}" for outcome in outcomes for status, _ in outcome["statuses"])
    print(f"\n{PDU_MUTANTS} damaged PDU streams, endings: {dict(endings)}, statuses: {dict(sorted(statuses.items()))}")
    hangs = [outcome["case"] for outcome in outcomes if outcome["end"] == "hang"]
    silent = [outcome["case"] for outcome in outcomes
              if outcome["ac"] and outcome["end"] == "closed" and not has_abort(streams[outcome["case"]])]
    not_identical = []
    for outcome in outcomes:
        for status, uid in outcome["statuses"]:
            if status in SUCCESS and uid:
                sent = data_set_sent(streams[outcome["case"]])
                if sent is None or _stored_data_set(listener.archive, uid) != sent:
                    not_identical.append(outcome["case"])
    assert not hangs, f"cases the server never ended: {hangs}"
    assert not silent, f"associations closed after A-ASSOCIATE-AC with no A-ABORT or A-RELEASE-RP: {silent}"
    assert not not_identical, f"stored instances that differ from what was sent: {not_identical}"
    assert not pynetdicom_errors()
    assert listener.wait_until_idle(10.0)
    assert echo(listener.address)[0] == 0x0000
