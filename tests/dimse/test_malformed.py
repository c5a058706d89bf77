"""Malformed C-STORE requests, built by hand, get a failure status or an A-ABORT: never an exception in a
reactor thread, never a dropped association, and never their bad value echoed back."""

from __future__ import annotations

import logging
import struct
import warnings

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE

from oncopacs.archive.part10 import dataset_offset
from oncopacs.dimse.responses import encode_response_command
from tests.dimse.raw_peer import (
    A_ABORT_TYPE,
    A_ASSOCIATE_AC_TYPE,
    RawPeer,
    c_store_rq,
    command_set,
    echo,
    element,
    text,
    us,
)
from tests.factories import part10_bytes, small_ct_series

CT_CONTEXT = [(CTImageStorage, [ExplicitVRLittleEndian])]


def _dataset_bytes(dataset) -> bytes:
    data = part10_bytes(dataset)
    return data[dataset_offset(data) :]


def _store_command(*, sop_class: str | bytes = CTImageStorage, sop_instance: str | bytes, message_id: int = 7,
                   dataset_type: int = 0x0000, omit: tuple[int, ...] = ()) -> bytes:
    elements = {
        0x0002: element(0x0002, text(sop_class)),
        0x0100: element(0x0100, us(0x0001)),
        0x0110: element(0x0110, us(message_id)),
        0x0700: element(0x0700, us(0)),
        0x0800: element(0x0800, us(dataset_type)),
        0x1000: element(0x1000, text(sop_instance)),
    }
    return command_set(*(value for tag, value in elements.items() if tag not in omit))


@pytest.fixture
def listener(start_listener):
    return start_listener()


@pytest.fixture
def pynetdicom_errors(caplog):
    """Errors pynetdicom logs when an exception reaches its state machine or reactor."""
    caplog.set_level(logging.ERROR, logger="pynetdicom")
    yield lambda: [r.getMessage() for r in caplog.records
                   if "exception" in r.getMessage().lower() and r.name in {"pynetdicom.fsm", "pynetdicom.dul"}]


NOT_VALID, LACKING = "AffectedSOPInstanceUID is not a valid UID", "the C-STORE request lacks AffectedSOPInstanceUID"


@pytest.mark.parametrize(("bad_uid", "comment"), [
    ("1.2.3.\u00e9\u00e9", NOT_VALID), (b"1.2.3.\xe9", NOT_VALID), ("1.2.abc", NOT_VALID), ("", LACKING),
    ("1." * 40 + "1", None),
], ids=["utf-8", "latin-1", "letters", "empty", "81 characters"])
def test_an_unusable_affected_sop_instance_uid_gets_c000_and_the_association_goes_on(listener, pynetdicom_errors,
                                                                                       bad_uid, comment):
    ct = small_ct_series(2, prefix="MAL")
    with RawPeer(listener.address) as peer:
        assert peer.associate(CT_CONTEXT).pdu_type == A_ASSOCIATE_AC_TYPE
        refused = peer.request(1, _store_command(sop_instance=bad_uid), _dataset_bytes(ct[0]))
        if comment is None:  # longer than a UID may be: pynetdicom refuses to decode the command, a clean A-ABORT
            assert refused.ended_by is not None and refused.ended_by.pdu_type == A_ABORT_TYPE
            assert not pynetdicom_errors()
            return
        assert refused.status == 0xC000
        assert refused.command.ErrorComment == comment
        assert "AffectedSOPInstanceUID" not in refused.command  # the bad value is not echoed
        stored = peer.request(1, c_store_rq(CTImageStorage, str(ct[1].SOPInstanceUID), message_id=8),
                              _dataset_bytes(ct[1]))
        assert stored.status == 0x0000
        assert peer.release() is not None
    assert not pynetdicom_errors()


def test_a_non_ascii_affected_sop_class_uid_is_refused_or_aborted(listener, pynetdicom_errors):
    ct = small_ct_series(1, prefix="MAC")[0]
    with RawPeer(listener.address) as peer:
        assert peer.associate(CT_CONTEXT).pdu_type == A_ASSOCIATE_AC_TYPE
        reply = peer.request(1, _store_command(sop_class=b"1.2.840.10008.5.1.4.1.1.2\xff",
                                               sop_instance=str(ct.SOPInstanceUID)), _dataset_bytes(ct))
    assert reply.status is not None or (reply.ended_by is not None and reply.ended_by.pdu_type == A_ABORT_TYPE)
    assert not pynetdicom_errors()
    assert echo(listener.address)[0] == 0x0000


@pytest.mark.parametrize(("omit", "dataset_type", "lacking"), [
    ((0x1000,), 0x0000, "AffectedSOPInstanceUID"),
    ((0x0002,), 0x0000, "AffectedSOPClassUID"),
    ((), 0x0101, "empty"),  # pynetdicom hands the handler an empty data set
], ids=["no instance UID", "no class UID", "no data set"])
def test_a_c_store_lacking_a_required_element_gets_c000_naming_it(listener, pynetdicom_errors, omit, dataset_type,
                                                                  lacking):
    ct = small_ct_series(1, prefix="MIS")[0]
    with RawPeer(listener.address) as peer:
        assert peer.associate(CT_CONTEXT).pdu_type == A_ASSOCIATE_AC_TYPE
        command = _store_command(sop_instance=str(ct.SOPInstanceUID), omit=omit, dataset_type=dataset_type)
        reply = peer.request(1, command, None if dataset_type == 0x0101 else _dataset_bytes(ct))
        assert reply.status == 0xC000 and lacking in reply.command.ErrorComment
        assert int(reply.command.MessageIDBeingRespondedTo) == 7
        assert peer.release() is not None
    assert not pynetdicom_errors()


@pytest.mark.parametrize("command", [
    b"\xde\xad\xbe\xef" * 8,  # not a command set at all
    command_set(element(0x0100, us(0x0001)), group_length=99_999),  # lies about its length, lacks the rest
    command_set(element(0x0002, text(CTImageStorage)), element(0x0100, b"\x01\x00\x00\x00"),  # US with 4 bytes
                element(0x0110, us(1)), element(0x0800, us(0x0000))),
    command_set(element(0x0002, text(CTImageStorage)), element(0x0100, us(0x0ABC)),  # no such command
                element(0x0110, us(1)), element(0x0800, us(0x0101))),
    command_set(element(0x0002, text(CTImageStorage)), element(0x0100, us(0x0001)),
                element(0x0110, b"\x01"), element(0x0800, us(0x0000))),  # a 1-byte message ID
    struct.pack("<HHI", 0x0000, 0x0100, 0xFFFFFFFF) + b"\x01\x00",  # an element longer than the command set
], ids=["garbage", "wrong group length", "US of 4 bytes", "unknown command", "1-byte message ID", "overlong element"])
def test_a_command_set_that_cannot_be_decoded_gets_an_a_abort(listener, pynetdicom_errors, command):
    ct = small_ct_series(1, prefix="GAR")[0]
    with RawPeer(listener.address) as peer:
        assert peer.associate(CT_CONTEXT).pdu_type == A_ASSOCIATE_AC_TYPE
        reply = peer.request(1, command, _dataset_bytes(ct))
    # A status when pynetdicom could still make out a C-STORE request, otherwise a clean A-ABORT.
    assert reply.status is not None or (reply.ended_by is not None and reply.ended_by.pdu_type == A_ABORT_TYPE)
    assert not reply.closed
    assert not pynetdicom_errors()
    assert echo(listener.address)[0] == 0x0000


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "huge element length", "empty"])
def test_a_data_set_that_cannot_be_decoded_gets_a_failure_status(listener, pynetdicom_errors, damage):
    ct = small_ct_series(1, prefix="UND")[0]
    good = _dataset_bytes(ct)
    dataset = {
        "random bytes": bytes(range(256)) * 4,
        "truncated": good[: len(good) // 3],
        "huge element length": good[:200] + struct.pack("<HH2sHI", 0x0011, 0x0010, b"OB", 0, 0xFFFFFFF0) + b"x",
        "empty": b"",
    }[damage]
    with RawPeer(listener.address) as peer:
        assert peer.associate(CT_CONTEXT).pdu_type == A_ASSOCIATE_AC_TYPE
        reply = peer.request(1, _store_command(sop_instance=str(ct.SOPInstanceUID)), dataset)
        assert reply.status is not None and reply.status not in (0x0000,) and reply.status >> 12 in (0xA, 0xC, 0x0)
        assert peer.release() is not None
    assert not pynetdicom_errors()


def test_a_response_never_carries_an_unusable_uid():
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.Status = 0xC000
    response.AffectedSOPClassUID = CTImageStorage
    with warnings.catch_warnings():  # pydicom warns of the invalid UID it is given: that is the point
        warnings.simplefilter("ignore")
        response.AffectedSOPInstanceUID = "1.2.3.\u00e9"
    encoded = encode_response_command(response)
    assert encoded is not None and b"1.2.3." not in encoded and CTImageStorage.encode() in encoded
