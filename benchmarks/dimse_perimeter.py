#!/usr/bin/env python
"""The DIMSE listener under hostile connections: how soon a real C-ECHO gets through, and per-host isolation.

Run from the repository root with the project's virtual environment active::

    python benchmarks/dimse_perimeter.py            # 5 flood rounds
    python benchmarks/dimse_perimeter.py --rounds 9 --json > result.json

``oncopacs serve`` runs on loopback with its embedded defaults (16 associations, 8 per host,
ARTIM 10 s, idle 60 s). Each flood round opens and closes 200 connections without a byte, sends
random bytes on 50 more, announces a 4 GiB PDU on 5 and half an A-ASSOCIATE-RQ on 5 (all closed
by the client), then times a pynetdicom C-ECHO (connect, associate, echo) from the same host
from the flood's last byte. Reported: the median and each round's time, against the same echo
with no flood; then a C-ECHO while 16 silent connections are held open, and while one host
holds its 8 idle associations (its ninth is refused; another host, 127.0.0.2, is served).
Nothing here asserts.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import struct
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from peers import ONCOPACS_AET, BenchError, start_oncopacs
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from report import emit, log, machine_info, machine_line, notes_lines

FLOOD_CLOSED, FLOOD_RANDOM, FLOOD_HUGE, FLOOD_HALF = 200, 50, 5, 5
#: The first 40 bytes of an A-ASSOCIATE-RQ whose header announces 200 bytes.
HALF_REQUEST = struct.pack(">BBL", 0x01, 0, 200) + b"\x00\x01\x00\x00" + b"ONCOPACS".ljust(16) + b"HALF".ljust(12)


def echo(port: int, bind: str = "127.0.0.1") -> tuple[str, float]:
    """A C-ECHO on a new association: its outcome and the seconds it took from connecting."""
    ae = AE(ae_title="BENCHECHO")
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=ONCOPACS_AET, bind_address=(bind, 0))
    if not assoc.is_established:
        outcome = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no association"
        return outcome, time.perf_counter() - started
    status = assoc.send_c_echo()
    elapsed = time.perf_counter() - started
    assoc.release()
    return ("success" if status is not None and status.Status == 0 else "failed"), elapsed


def rejection(port: int) -> str:
    """What an association request from 127.0.0.1 gets (result/source/reason of an A-ASSOCIATE-RJ)."""
    ae = AE(ae_title="BENCHNINTH")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=ONCOPACS_AET)
    if assoc.is_established:
        assoc.release()
        return "accepted"
    rsp = assoc.acceptor.primitive
    if rsp is None or rsp.result is None:
        return "no answer"
    return f"A-ASSOCIATE-RJ result {rsp.result:#04x} source {rsp.result_source:#04x} reason {rsp.diagnostic:#04x}"


def flood(port: int, rng: random.Random) -> None:
    address = ("127.0.0.1", port)
    for _ in range(FLOOD_CLOSED):
        socket.create_connection(address).close()
    for _ in range(FLOOD_RANDOM):
        with socket.create_connection(address) as sock:
            sock.sendall(rng.randbytes(rng.randint(1, 4000)))
    for _ in range(FLOOD_HUGE):
        with socket.create_connection(address) as sock:
            sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))
    for _ in range(FLOOD_HALF):
        with socket.create_connection(address) as sock:
            sock.sendall(HALF_REQUEST)


def run(rounds: int) -> dict:
    report: dict = {"machine": machine_info(), "rounds": rounds}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-perimeter-")))
        server = start_oncopacs(workdir)
        stack.callback(server.stop)
        port = server.port
        echo(port)
        quiet = [echo(port)[1] for _ in range(rounds)]
        report["echo_quiet_s"] = statistics.median(quiet)
        rng = random.Random(18)
        after_flood = []
        for index in range(rounds):
            flood(port, rng)
            outcome, elapsed = echo(port)
            after_flood.append({"outcome": outcome, "seconds": elapsed})
            log(f"round {index + 1}: C-ECHO after the flood: {outcome} in {elapsed * 1000:.0f} ms")
            time.sleep(2.0)
        report["after_flood"] = after_flood
        report["after_flood_median_s"] = statistics.median(r["seconds"] for r in after_flood)
        with ExitStack() as held:
            for _ in range(16):
                held.enter_context(socket.create_connection(("127.0.0.1", port)))
            report["silent_16"] = dict(zip(("outcome", "seconds"), echo(port), strict=True))
        holders = []
        try:
            for _ in range(8):
                ae = AE(ae_title="BENCHHOLD")
                ae.add_requested_context(Verification)
                holders.append(ae.associate("127.0.0.1", port, ae_title=ONCOPACS_AET))
            report["holders_established"] = sum(assoc.is_established for assoc in holders)
            report["ninth_from_the_host"] = rejection(port)
            report["other_host"] = dict(zip(("outcome", "seconds"), echo(port, bind="127.0.0.2"), strict=True))
        finally:
            for assoc in holders:
                if assoc.is_established:
                    assoc.release()
    return report


def render(report: dict) -> str:
    rounds = ", ".join(f"{r['seconds'] * 1000:.0f} ms ({r['outcome']})" for r in report["after_flood"])
    silent, other = report["silent_16"], report["other_host"]
    lines = [
        machine_line("DIMSE perimeter: oncopacs serve, embedded defaults", report["machine"]),
        "",
        f"C-ECHO, no flood (median):                {report['echo_quiet_s'] * 1000:7.1f} ms",
        f"C-ECHO from the flood's end (median of {report['rounds']}): {report['after_flood_median_s'] * 1000:7.1f} ms",
        f"  rounds: {rounds}",
        f"C-ECHO with 16 silent connections held:  {silent['seconds'] * 1000:7.1f} ms ({silent['outcome']})",
        f"one host holding {report['holders_established']} idle associations:",
        f"  its ninth request:                      {report['ninth_from_the_host']}",
        f"  C-ECHO from 127.0.0.2:                  {other['seconds'] * 1000:7.1f} ms ({other['outcome']})",
        "",
        *notes_lines([
            f"flood: {FLOOD_CLOSED} connect+close, {FLOOD_RANDOM} random-byte, {FLOOD_HUGE} 4 GiB PDU headers, "
            f"{FLOOD_HALF} half A-ASSOCIATE-RQs, each closed by the client",
            "each C-ECHO is pynetdicom's SCU: connect, A-ASSOCIATE, C-ECHO, timed from the flood's last byte",
        ]),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        report = run(args.rounds)
    except BenchError as exc:
        log(str(exc))
        return 1
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
