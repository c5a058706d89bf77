"""The HL7 v2 listener over real MLLP on loopback: ACK semantics, the allow-list, the message log and audit, and
malformed input (which must be answered AE/AR or end in a closed connection, the listener serving on)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from hl7.mllp import open_hl7_connection

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditFilter
from oncopacs.ehr.dispatch import Hl7Dispatcher, build_ack
from oncopacs.ehr.listener import Hl7Listener
from oncopacs.ehr.message_log import MessageLog
from oncopacs.ehr.messages import AckCode, HandlerOutcome, Hl7Message, parse_message
from oncopacs.ehr.wiring import build_dispatcher
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from oncopacs.tls.certificates import write_trial_certificates

PATIENT_ID, FAMILY_NAME = "PAT-7731", "Quillfeather"
MAX_BYTES = 64 * 1024
IDLE_S = 0.5
CLOSED = "closed"


def adt(control_id: str = "MSG0001", *, kind: str = "ADT^A08", sender: str = "EPIC|HOSP") -> str:
    return (f"MSH|^~\\&|{sender}|ONCOPACS|ONCO|20250101120000||{kind}|{control_id}|P|2.5\r"
            f"EVN|A08|20250101120000\r"
            f"PID|1||{PATIENT_ID}^^^HOSP^MR||{FAMILY_NAME}^Jane||19700101|F\r")


class Recorder:
    """A real handler: keeps what it was given and answers as told (or raises)."""

    def __init__(self, outcome: HandlerOutcome | None = None, error: Exception | None = None):
        self.outcome = outcome or HandlerOutcome.applied()
        self.error = error
        self.seen: list[tuple[str, int | None]] = []

    def __call__(self, message: Hl7Message, message_pk: int | None) -> HandlerOutcome:
        self.seen.append((message.control_id, message_pk))
        if self.error is not None:
            raise self.error
        return self.outcome


@dataclasses.dataclass
class Rig:
    platform: Platform
    listener: Hl7Listener
    handlers: dict[str, Recorder]

    @property
    def log(self) -> MessageLog:
        return MessageLog(self.platform.index)


def open_rig(platform: Platform, *, max_connections: int = 32, idle_s: float = IDLE_S,
             tls: ssl.SSLContext | None = None) -> Rig:
    settings = dataclasses.replace(platform.settings, hl7_listen_host="127.0.0.1", hl7_listen_port=0,
                                   hl7_allowed_senders=("EPIC^HOSP", "RIS"), hl7_max_message_bytes=MAX_BYTES)
    handlers = {"ADT^A08": Recorder(), "ADT^A31": Recorder(HandlerOutcome.not_applied("PID-3 names no patient")),
                "ADT^A40": Recorder(error=RuntimeError("boom"))}
    dispatcher = build_dispatcher(settings, platform.index, platform.audit, handlers)
    listener = Hl7Listener(settings, dispatcher, idle_timeout_s=idle_s, max_connections=max_connections,
                           ssl_context=tls)
    listener.start()
    return Rig(platform, listener, handlers)


@pytest.fixture
def rig(platform: Platform) -> Iterator[Rig]:
    rig = open_rig(platform)
    yield rig
    rig.listener.stop()


async def _exchange(port: int, payload: bytes, *, framed: bool = True, tls: ssl.SSLContext | None = None,
                    timeout_s: float = 10.0) -> hl7.Message | str:
    """Send ``payload`` (in an MLLP block unless ``framed`` is false) and read one block back; CLOSED if the
    listener closed the connection instead."""
    extra = {"ssl": tls, "server_hostname": "localhost"} if tls else {}
    reader, writer = await open_hl7_connection("127.0.0.1", port, limit=1024 * 1024, **extra)
    try:
        writer.writeblock(payload) if framed else writer.write(payload)
        try:
            await writer.drain()
            block = await asyncio.wait_for(reader.readblock(), timeout_s)
        except (asyncio.IncompleteReadError, ConnectionError):
            return CLOSED
        return hl7.parse(block.decode("utf-8"))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def send(port: int, payload: bytes | str, **options) -> hl7.Message | str:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return asyncio.run(_exchange(port, data, **options))


def msa(ack: hl7.Message | str) -> tuple[str, str, str]:
    assert ack != CLOSED, "the listener closed the connection instead of answering"
    assert isinstance(ack, hl7.Message)
    segment = ack.segment("MSA")
    return str(segment[1]), str(segment[2]), ack.unescape(str(segment(3))) if len(segment) > 3 else ""


def still_serving(rig: Rig, control_id: str = "AFTER") -> None:
    """A good message is answered AA (within 2 s: connections just closed by clients may still hold their slots)."""
    for _ in range(20):
        answer = send(rig.listener.port, adt(control_id))
        if answer != CLOSED:
            break
        time.sleep(0.1)
    assert msa(answer)[:2] == ("AA", control_id)


def test_a_handled_message_is_acknowledged_logged_and_audited(rig: Rig, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    ack = send(rig.listener.port, adt("CTRL-1"))
    assert msa(ack) == ("AA", "CTRL-1", "")
    header = ack.segment("MSH")
    assert (str(header[3]), str(header[5]), str(header[6])) == ("ONCOPACS", "EPIC", "HOSP")  # sender/receiver swapped
    assert str(header[9]) == "ACK^A08^ACK" and str(header[10]) != "CTRL-1" and str(header[12]) == "2.5"

    row = rig.log.query().messages[0]
    assert (row.message_type, row.control_id, row.outcome, row.sending_application) == ("ADT^A08", "CTRL-1", "AA",
                                                                                         "EPIC")
    assert rig.handlers["ADT^A08"].seen == [("CTRL-1", row.id)]  # logged before the handler ran
    assert rig.log.get(row.id).raw.startswith("MSH|")

    records = rig.platform.audit.query(AuditFilter(action=AuditAction.PATIENT_RECORD)).entries
    assert [(r.outcome, r.patient_ids, r.actor) for r in records] == [(Outcome.SUCCESS, (PATIENT_ID,), "EPIC^HOSP")]
    assert "ADT^A08" in records[0].detail and "CTRL-1" in records[0].detail
    assert PATIENT_ID not in caplog.text and FAMILY_NAME not in caplog.text


@pytest.mark.parametrize(("message", "code", "reason"), [
    (adt("C2", kind="ORU^R01"), "200", "message type ORU^R01 is not accepted here"),
    (adt("C3", kind="ADT^A04"), "201", "message type ADT^A04 is not accepted here"),
    (adt("C4", sender="OTHER|HOSP"), "207", "sending application OTHER^HOSP is not allowed"),
    (adt("C5", sender="EPIC|ELSEWHERE"), "207", "sending application EPIC^ELSEWHERE is not allowed"),
])
def test_refused_messages_are_answered_ar_with_the_reason(rig: Rig, message: str, code: str, reason: str):
    ack = send(rig.listener.port, message)
    control_id = parse_message(message).control_id
    assert msa(ack) == ("AR", control_id, reason)
    err = ack.segment("ERR")
    assert str(err[3][0][0]) == code and str(err[4]) == "E" and ack.unescape(str(err[8])) == reason
    assert all(not h.seen for h in rig.handlers.values())
    row = rig.log.query().messages[0]
    assert (row.control_id, row.outcome, row.reason) == (control_id, "AR", reason)
    [record] = rig.platform.audit.query(AuditFilter(action=AuditAction.PATIENT_RECORD)).entries
    assert record.outcome == Outcome.SERIOUS_FAILURE and reason in record.detail


def test_a_sender_allowed_by_application_alone_may_use_any_facility(rig: Rig):
    assert msa(send(rig.listener.port, adt("C6", sender="RIS|ANYWHERE")))[0] == "AA"


def test_a_handler_that_does_not_apply_or_fails_gives_ae(rig: Rig, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    assert msa(send(rig.listener.port, adt("C7", kind="ADT^A31"))) == ("AE", "C7", "PID-3 names no patient")
    assert msa(send(rig.listener.port, adt("C8", kind="ADT^A40"))) == ("AE", "C8", "could not be applied: RuntimeError")
    outcomes = {m.control_id: (m.outcome, m.reason) for m in rig.log.query().messages}
    assert outcomes == {"C7": ("AE", "PID-3 names no patient"), "C8": ("AE", "could not be applied: RuntimeError")}
    records = rig.platform.audit.query(AuditFilter(action=AuditAction.PATIENT_RECORD)).entries
    assert [r.outcome for r in records] == [Outcome.MINOR_FAILURE, Outcome.MINOR_FAILURE]
    still_serving(rig)
    assert PATIENT_ID not in caplog.text and FAMILY_NAME not in caplog.text


def test_orders_and_appointments_are_audited_as_order_records(platform: Platform):
    handlers = {"SIU^S12": Recorder()}
    dispatcher = Hl7Dispatcher(handlers, MessageLog(platform.index), platform.audit)
    ack = dispatcher.handle(adt("C9", kind="SIU^S12"), "127.0.0.1:1")
    assert msa(hl7.parse(ack))[0] == "AA"
    [record] = platform.audit.query(AuditFilter(action=AuditAction.ORDER_RECORD)).entries
    assert record.patient_ids == (PATIENT_ID,)


GARBAGE = bytes(range(256)) * 8

MALFORMED = {
    "segments": "PID|1||X\rMSH|^~\\&|EPIC|HOSP|ONCOPACS|ONCO|2025||ADT^A08|M1|P|2.5\r",
    "no message type": "MSH|^~\\&|EPIC|HOSP|ONCOPACS|ONCO|2025|||M2|P|2.5\rPID|1||X\r",
    "encoding characters": "MSH|^^^^|EPIC|HOSP|ONCOPACS|ONCO|2025||ADT^A08|M3|P|2.5\r",
    "short header": "MSH|\r",
    "binary in a block": GARBAGE,
    "nul bytes": "MSH|^~\\&|EPIC|HOSP|ONCOPACS|ONCO|2025||ADT^A08|M4|P|2.5\rPID|1||\x00\x00\rZZZ\x00|\x01",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_messages_are_refused_and_the_listener_serves_on(rig: Rig, name: str,
                                                                   caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    payload = MALFORMED[name]
    answer = send(rig.listener.port, payload)
    assert answer == CLOSED or msa(answer)[0] in {"AE", "AR"}
    if answer != CLOSED:
        assert rig.log.query().messages[0].outcome in {"AE", "AR"}
    still_serving(rig)
    assert PATIENT_ID not in caplog.text


def test_binary_garbage_without_a_start_block_closes_the_connection(rig: Rig):
    assert send(rig.listener.port, GARBAGE + b"\x1c\r", framed=False) == CLOSED
    still_serving(rig)


def test_a_message_over_the_limit_is_refused_without_reading_it_whole(rig: Rig):
    huge = adt("BIG") + "NTE|1||" + "x" * (10 * 1024 * 1024) + "\r"
    answer = send(rig.listener.port, huge)
    assert msa(answer) == ("AR", "", f"the message is larger than {MAX_BYTES} bytes")
    assert rig.log.query().messages[0].outcome == "AR"
    assert not rig.handlers["ADT^A08"].seen
    still_serving(rig)


def test_a_message_without_an_end_block_is_closed_after_the_idle_timeout(rig: Rig):
    unfinished = b"\x0b" + adt("NOEND").encode()
    assert send(rig.listener.port, unfinished, framed=False, timeout_s=IDLE_S * 10) == CLOSED
    assert not rig.handlers["ADT^A08"].seen
    still_serving(rig)


def test_connections_past_the_cap_are_closed_at_once(platform: Platform):
    rig = open_rig(platform, max_connections=4, idle_s=10.0)  # the four held connections outlive the test
    try:
        async def scenario() -> tuple[list[object], object]:
            idle = [await open_hl7_connection("127.0.0.1", rig.listener.port) for _ in range(4)]
            await asyncio.sleep(0.2)  # the four are accepted and held (idle, under the timeout)
            extra = await _exchange(rig.listener.port, adt("OVER").encode(), timeout_s=IDLE_S)
            for _, writer in idle:
                writer.close()
            await asyncio.sleep(0.1)
            many = await asyncio.gather(*(_exchange(rig.listener.port, adt(f"P{i}").encode()) for i in range(12)))
            return list(many), extra

        many, extra = asyncio.run(scenario())
        assert extra == CLOSED
        answered = [msa(a)[0] for a in many if a != CLOSED]
        assert answered and set(answered) == {"AA"}
        still_serving(rig)
    finally:
        rig.listener.stop()


def test_several_connections_at_once_are_all_answered(rig: Rig):
    async def scenario() -> list[hl7.Message | str]:
        return await asyncio.gather(*(_exchange(rig.listener.port, adt(f"Q{i}").encode()) for i in range(16)))

    answers = asyncio.run(scenario())
    assert sorted(msa(a)[1] for a in answers) == sorted(f"Q{i}" for i in range(16))
    assert rig.log.query().total == 16


def test_mllp_over_tls(tmp_path: Path, sqlite_settings: Settings):
    certs = write_trial_certificates(tmp_path / "certs")
    settings = dataclasses.replace(sqlite_settings, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key))
    with open_platform(settings) as platform:
        rig = open_rig(platform)
        try:
            assert rig.listener.tls
            client = ssl.create_default_context(cafile=str(certs.ca))
            assert msa(send(rig.listener.port, adt("TLS1"), tls=client))[0] == "AA"
            assert send(rig.listener.port, adt("PLAIN")) == CLOSED  # no TLS: no answer
            assert msa(send(rig.listener.port, adt("TLS2"), tls=client))[0] == "AA"
        finally:
            rig.listener.stop()


def test_the_ack_escapes_the_reason_and_a_header_less_message_gets_defaults():
    ack = hl7.parse(build_ack(None, AckCode.REJECT, "bad | ^ & ~ \\ \r text"))
    assert str(ack.segment("MSH")[3]) == "ONCOPACS"
    assert msa(ack) == ("AR", "", "bad | ^ & ~ \\   text")
