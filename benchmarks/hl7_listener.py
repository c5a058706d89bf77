#!/usr/bin/env python
"""HL7 v2 over MLLP: messages per second through OncoPACS's listener (ADT^A08 updates applied) against python-hl7's
own minimal echo server (an MLLP server that only answers ACK) as the ceiling.

Run from the repository root with the project's virtual environment active::

    python benchmarks/hl7_listener.py                # 500 messages per mode, 5 rounds
    python benchmarks/hl7_listener.py --quick        # smoke test: 50 messages, 1 round
    python benchmarks/hl7_listener.py --json > result.json

Everything runs on this machine in one process (the servers in their own threads and event loops, the client in the
main one). Progress goes to standard error; the table (or, with ``--json``, one JSON document) to standard output.
Nothing here asserts: the numbers are reported, not judged.

* OncoPACS: :class:`~oncopacs.ehr.listener.Hl7Listener` as ``oncopacs serve`` starts it, over a fresh platform (the
  embedded SQLite index, the audit trail); each ADT^A08 is logged, applied to the patient row by the ADT handler
  (:func:`oncopacs.ehr.adt.build_adt_handlers`; a direct patient-row update when that module is absent: the output
  says which), audited, and answered AA. Every message changes the patient's name, so every one is a real update.
* Ceiling: ``hl7.mllp.start_hl7_server`` answering each message with ``message.create_ack()`` and nothing else.
* Modes: N messages over one connection (send, wait for the ACK, send the next: what an EHR interface engine does),
  and N messages split over ``--connections`` connections at once.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
from hl7.mllp import HL7StreamReader, HL7StreamWriter, open_hl7_connection, start_hl7_server  # noqa: E402

sys.path[:0] = [str(REPO), str(HERE)]
from report import emit, log, machine_info, machine_line, notes_lines  # noqa: E402 - benchmarks/report.py

PATIENTS = 50


def adt_a08(number: int) -> str:
    """The ``number``-th update: one of PATIENTS patients, a name that differs from that patient's previous one."""
    patient = number % PATIENTS
    return (f"MSH|^~\\&|BENCH|HOSP|ONCOPACS|ONCO|20250101120000||ADT^A08|B{number}|P|2.5\r"
            f"EVN|A08|20250101120000\r"
            f"PID|1||BENCH-{patient:04d}^^^HOSP^MR||Bench^Name{number}||19700101|F\r")


# ---------------------------------------------------------------------------------------------
# Servers


class EchoServer:
    """python-hl7's MLLP server in a thread, answering ACK (AA) to every message: the ceiling."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _answer(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        try:
            while True:
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(start_hl7_server(self._answer, "127.0.0.1", 0, encoding="utf-8"))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def adt_handlers(index) -> tuple[Mapping[str, Callable], str]:
    """The ADT handlers and how they apply an update (for the report)."""
    try:
        from oncopacs.ehr.adt import build_adt_handlers
    except ImportError:
        return {"ADT^A08": _row_update(index)}, "direct patient-row update (oncopacs.ehr.adt absent)"
    return build_adt_handlers(index), "oncopacs.ehr.adt (update_patient: row + patient_updates)"


def _row_update(index) -> Callable:
    from sqlalchemy import select

    from oncopacs.ehr.messages import HandlerOutcome
    from oncopacs.index.models import Patient

    def handle(message, _message_pk):
        identity = message.patient()
        with index.writing() as session:
            row = session.scalars(select(Patient).where(Patient.patient_id == identity.patient_id)).first()
            if row is None:
                row = Patient(patient_id=identity.patient_id, issuer_of_patient_id=identity.issuer,
                              patient_name="", patient_birth_date="", patient_sex="")
                session.add(row)
            row.patient_name, row.patient_birth_date, row.patient_sex = (identity.name, identity.birth_date,
                                                                         identity.sex)
        return HandlerOutcome.applied()

    return handle


# ---------------------------------------------------------------------------------------------
# The client


async def _send_all(port: int, numbers: range) -> list[str]:
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8", limit=1024 * 1024)
    codes = []
    try:
        for number in numbers:
            writer.writeblock(adt_a08(number).encode("utf-8"))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 60)
            codes.append(str(ack.segment("MSA")[1]))
    finally:
        writer.close()
        await writer.wait_closed()
    return codes


async def _run(port: int, first: int, count: int, connections: int) -> tuple[float, list[str]]:
    share = -(-count // connections)
    parts = [range(first + i * share, min(first + count, first + (i + 1) * share)) for i in range(connections)]
    started = time.perf_counter()
    results = await asyncio.gather(*(_send_all(port, part) for part in parts if len(part)))
    return time.perf_counter() - started, [code for codes in results for code in codes]


def measure(port: int, first: int, count: int, connections: int) -> float:
    """Messages per second for ``count`` messages over ``connections`` connections; BenchError unless all AA."""
    seconds, codes = asyncio.run(_run(port, first, count, connections))
    refused = [c for c in codes if c != "AA"]
    if len(codes) != count or refused:
        raise RuntimeError(f"{len(codes)} ACKs for {count} messages, {len(refused)} not AA ({sorted(set(refused))})")
    return count / seconds


# ---------------------------------------------------------------------------------------------


def summary(rates: list[float]) -> dict:
    return {"rates": rates, "median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def render(report: dict) -> str:
    lines = [machine_line("HL7 v2 over MLLP: messages/s", report["machine"]),
             f"{report['messages']} ADT^A08 per mode, {report['rounds']} round(s); handler: {report['handler']}", "",
             f"{'mode':<26}{'OncoPACS':>12}{'spread':>20}{'echo ceiling':>14}{'ratio':>8}"]
    for mode, values in report["modes"].items():
        ours, echo = values["oncopacs"], values["echo"]
        lines.append(f"{mode:<26}{ours['median']:>12.1f}{ours['min']:>9.1f} – {ours['max']:<8.1f}"
                     f"{echo['median']:>14.1f}{ours['median'] / echo['median']:>7.2f}x")
    return "\n".join([*lines, "", *notes_lines(report["notes"])])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per mode and round (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--connections", type=int, default=4, help="connections of the parallel mode (default 4)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 50 messages, 1 round")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench",
                        help="where the data directory is made (default .bench/ in the repository, git-ignored)")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 50, 1
    if min(args.messages, args.rounds, args.connections) < 1:
        parser.error("--messages, --rounds and --connections must be positive")

    from oncopacs import __version__ as oncopacs_version
    from oncopacs.ehr.listener import Hl7Listener
    from oncopacs.ehr.wiring import build_dispatcher
    from oncopacs.platform import open_platform
    from oncopacs.settings import Settings

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="hl7-", dir=args.cache_dir))
    settings = replace(Settings(data_dir=base / "data", dicom_port=0, secret_key="bench-" * 6),
                       hl7_listen_host="127.0.0.1", hl7_listen_port=0)
    modes = {"one connection": 1, f"{args.connections} connections": args.connections}
    results: dict[str, dict[str, list[float]]] = {mode: {"oncopacs": [], "echo": []} for mode in modes}
    echo = EchoServer()
    echo.start()
    try:
        with open_platform(settings) as platform:
            handlers, handler_name = adt_handlers(platform.index)
            listener = Hl7Listener(settings, build_dispatcher(settings, platform.index, platform.audit, handlers))
            listener.start()
            try:
                measure(listener.port, 0, PATIENTS, 1)  # registers the patients: the rounds only update
                sent = PATIENTS
                for rnd in range(1, args.rounds + 1):
                    for mode, connections in modes.items():
                        ours = measure(listener.port, sent, args.messages, connections)
                        ceiling = measure(echo.port, sent, args.messages, connections)
                        sent += args.messages
                        results[mode]["oncopacs"].append(ours)
                        results[mode]["echo"].append(ceiling)
                        log(f"round {rnd}/{args.rounds}, {mode}: OncoPACS {ours:7.1f}/s, echo {ceiling:7.1f}/s")
            finally:
                listener.stop()
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        echo.stop()
        shutil.rmtree(base, ignore_errors=True)

    report: dict = {
        "machine": machine_info(), "versions": {"oncopacs": oncopacs_version, "hl7": _hl7_version()},
        "messages": args.messages, "rounds": args.rounds, "handler": handler_name,
        "modes": {mode: {side: summary(rates) for side, rates in sides.items()} for mode, sides in results.items()},
        "notes": [
            "OncoPACS: per message, a message-log row before the handler and its outcome after, the ADT update "
            "(patient row + patient_updates), an audit record (hash-chained), all on the embedded SQLite index.",
            "echo: python-hl7's start_hl7_server answering create_ack() with no work: the transport's ceiling.",
            "spread: the lowest and highest round; ratio: OncoPACS median / echo median.",
        ],
    }
    return emit(report, args.json, render)


def _hl7_version() -> str:
    from importlib.metadata import version

    return version("hl7")


if __name__ == "__main__":
    sys.exit(main())
