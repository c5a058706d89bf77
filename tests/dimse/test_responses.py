"""The hand-encoded response command sets equal pynetdicom's own encoding, byte for byte."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_FIND_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_STORE

from oncopacs.dimse.responses import encode_response_command, fragment


def pynetdicom_encoding(message_class, primitive, max_pdu: int = 16382):
    """The PDVs pynetdicom would send, in order."""
    message = message_class()
    message.primitive_to_message(primitive)
    return [pdv for p in message.encode_msg(1, max_pdu) for pdv in p.presentation_data_value_list]


def pdvs(primitives) -> list:
    return [pdv for p in primitives for pdv in p.presentation_data_value_list]


def store_response(status: int, comment: str | None = None) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1234567"
    primitive.Status = status
    if comment is not None:
        primitive.ErrorComment = comment
    return primitive


def find_response(status: int, identifier: bytes | None) -> C_FIND:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 65535
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Status = status
    if identifier is not None:
        primitive.Identifier = BytesIO(identifier)
    return primitive


@pytest.mark.parametrize(
    "primitive",
    [store_response(0), store_response(0x0111, "already stored with different content"),
     store_response(0xC000, "odd")],
)
def test_store_responses(primitive):
    ours = pdvs(fragment(1, encode_response_command(primitive), None, 16382))
    assert ours == pynetdicom_encoding(C_STORE_RSP, primitive)


@pytest.mark.parametrize("max_pdu", [0, 16382, 64])
@pytest.mark.parametrize(("status", "identifier"), [(0xFF00, b"\x08\x00\x52\x00" * 100), (0x0000, None)])
def test_find_responses(status, identifier, max_pdu):
    primitive = find_response(status, identifier)
    sent = list(fragment(1, encode_response_command(primitive), identifier, max_pdu))
    assert pdvs(sent) == pynetdicom_encoding(C_FIND_RSP, primitive, max_pdu)
    assert all(sum(4 + 1 + len(v) for _, v in p.presentation_data_value_list) <= (max_pdu or 1 << 32) for p in sent)
    if identifier and max_pdu != 64:
        assert len(sent) == 1  # command and identifier share one PDU


def test_other_messages_are_left_to_pynetdicom():
    primitive = C_GET()
    primitive.MessageIDBeingRespondedTo = 1
    primitive.Status = 0
    assert encode_response_command(primitive) is None
    with_offending = store_response(0xA900)
    with_offending.OffendingElement = [0x00100010]
    assert encode_response_command(with_offending) is None
