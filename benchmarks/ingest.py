#!/usr/bin/env python
"""DIMSE ingest and study-level C-FIND: OncoPACS against Orthanc, with dcmtk's storescp as the ceiling.

Run from the repository root with the project's virtual environment active::

    python benchmarks/ingest.py                      # 1,000 instances, 500 studies, 5 rounds, 15 queries
    python benchmarks/ingest.py --quick              # smoke test: 100 instances, 50 studies, 1 round
    python benchmarks/ingest.py --json > result.json

Everything runs on this machine in the same invocation, so read the ratios, not the absolute
numbers. Progress goes to standard error; the table (or, with ``--json``, one JSON document)
to standard output. Nothing here asserts: a missed target is reported, not raised.

Ingest: the same synthetic 512x512 CT instances are sent with dcmtk's ``storescu`` (one
association for the whole directory) to a fresh OncoPACS server (``oncopacs serve``, embedded
default configuration), a fresh Orthanc (``../shared/tools/orthanc-peer``, TCP no-delay) and
a fresh ``storescp``; each round uses new data directories, flushes the page cache's dirty
pages (``sync``) and pauses before each timed transfer, and the systems are interleaved.

C-FIND: a study-level query returning every one of ``--studies`` studies (2 small instances
each, loaded with ``storescu`` beforehand) is timed with dcmtk's ``findscu``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from peers import (  # benchmarks/peers.py
    CALLING_AET,
    DCMTK_ENV,
    ECHOSCU,
    FINDSCU,
    ORTHANC,
    ORTHANC_PEER,
    REPO,
    STORESCP,
    STORESCU,
    BenchError,
    Server,
    ensure_dataset,
    first_line,
    settle,
    start_oncopacs,
    start_orthanc,
    start_storescp,
    store,
)
from report import (  # benchmarks/report.py (the script's own folder)
    emit,
    fmt_ratio,
    log,
    machine_info,
    machine_line,
    notes_lines,
)

FIND_KEYS = [
    "QueryRetrieveLevel=STUDY",
    "PatientName=",
    "PatientID=",
    "StudyInstanceUID=",
    "StudyDate=",
    "StudyDescription=",
    "AccessionNumber=",
    "ModalitiesInStudy=",
    "NumberOfStudyRelatedInstances=",
]

STARTERS: dict[str, Callable[[Path], Server]] = {
    "OncoPACS": start_oncopacs, "Orthanc": start_orthanc, "storescp": start_storescp
}


# ---------------------------------------------------------------------------------------------
# The two measurements


def find(server: Server, cwd: Path) -> tuple[float, int]:
    """One study-level C-FIND for all studies; return (seconds, number of pending responses)."""
    cmd = [FINDSCU, "-v", "-S", "-aet", CALLING_AET, "-aec", server.aet]
    for key in FIND_KEYS:
        cmd += ["-k", key]
    cmd += ["127.0.0.1", str(server.port)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=DCMTK_ENV, timeout=600, cwd=cwd)
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        errors = [line for line in output.splitlines() if line.startswith(("E:", "F:"))][:10]
        raise BenchError(f"findscu to {server.system}: exit {result.returncode}\n" + "\n".join(errors))
    return elapsed, len(re.findall(r"Find Response: \d+ \(Pending\)", output))


def run_ingest(args, files: Path, base: Path, systems: list[str]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {s: [] for s in systems}
    for rnd in range(1, args.rounds + 1):
        for system in systems:
            workdir = base / f"ingest-r{rnd}-{system.lower()}"
            server = STARTERS[system](workdir)
            try:
                settle()
                seconds = store(server, files, args.instances)
                assert server.count_stored is not None  # every starter passes one
                held = server.count_stored()
                if held != args.instances:
                    raise BenchError(f"{system} acknowledged {args.instances} instances but holds {held}")
            finally:
                server.stop()
            rate = args.instances / seconds
            rates[system].append(rate)
            log(f"round {rnd}/{args.rounds} {system:9s} {args.instances} instances in {seconds:6.2f} s = {rate:7.1f}/s")
            shutil.rmtree(workdir, ignore_errors=True)
    return rates


def run_find(args, files: Path, base: Path) -> dict[str, dict]:
    systems = ["OncoPACS", "Orthanc"]
    results: dict[str, dict] = {}
    with ExitStack() as stack:
        servers = {}
        for system in systems:
            server = STARTERS[system](base / f"find-{system.lower()}")
            stack.callback(server.stop)
            log(f"C-FIND: loading {2 * args.studies} instances ({args.studies} studies) into {system} ...")
            seconds = store(server, files, 2 * args.studies)
            log(f"C-FIND: {system} loaded in {seconds:.1f} s")
            servers[system] = server
        settle()
        cwd = base / "findscu-cwd"
        cwd.mkdir(exist_ok=True)
        for system in systems:  # one untimed warm-up query each
            find(servers[system], cwd)
        times: dict[str, list[float]] = {s: [] for s in systems}
        counts: dict[str, list[int]] = {s: [] for s in systems}
        for i in range(args.find_repeats):
            for system in systems:
                seconds, n = find(servers[system], cwd)
                times[system].append(seconds * 1000)
                counts[system].append(n)
                log(f"C-FIND {i + 1}/{args.find_repeats} {system:9s} {seconds * 1000:8.1f} ms, {n} responses")
        for system in systems:
            results[system] = {
                "ms": times[system],
                "median_ms": statistics.median(times[system]),
                "responses": counts[system],
                "responses_ok": all(n == args.studies for n in counts[system]),
            }
    return results


# ---------------------------------------------------------------------------------------------
# Output



def render(report: dict) -> str:
    lines = []
    m = report["machine"]
    lines.append(machine_line("OncoPACS DIMSE benchmark", m))
    v = report["versions"]
    lines.append(f"versions: OncoPACS {v['oncopacs']} | {v['orthanc']} | dcmtk {v['dcmtk']}")
    lines.append("")
    ingest = report.get("ingest")
    if ingest:
        lines.append(
            f"Ingest: {ingest['instances']} CT instances {ingest['rows']}x{ingest['cols']} in 1 study, "
            f"storescu, one association, {ingest['rounds']} round(s), median of rounds"
        )
        lines.append(f"  {'system':<10} {'instances/s':>12}   {'per round':<28} {'vs Orthanc':>10}")
        for system, row in ingest["systems"].items():
            per_round = " ".join(f"{r:.1f}" for r in row["rates"])
            note = "  (ceiling)" if system == "storescp" else ""
            lines.append(
                f"  {system:<10} {row['median']:>12.1f}   {per_round:<28} {fmt_ratio(row['vs_orthanc']):>10}{note}"
            )
        ratio = ingest["ratio_oncopacs_orthanc"]
        target = "met" if ratio is not None and ratio >= 1.0 else "NOT met"
        lines.append(
            f"  OncoPACS/Orthanc ingest rate: {fmt_ratio(ratio)} (higher is better; target >= 1.00x: {target})"
        )
        if ingest.get("ceiling_fraction") is not None:
            lines.append(f"  OncoPACS reaches {ingest['ceiling_fraction'] * 100:.0f}% of the storescp ceiling")
        lines.append("")
    cfind = report.get("cfind")
    if cfind:
        lines.append(
            f"C-FIND: study level, {cfind['studies']} studies ({cfind['studies'] * 2} instances), "
            f"{cfind['repeats']} timed queries each after 1 warm-up, findscu wall time"
        )
        lines.append(f"  {'system':<10} {'median ms':>10}   {'per query (ms)':<40} {'responses':>10}")
        for system, row in cfind["systems"].items():
            per = " ".join(f"{t:.0f}" for t in row["ms"])
            got = sorted(set(row["responses"]))
            resp = f"{got[0]}" if len(got) == 1 else "/".join(map(str, got))
            flag = "" if row["responses_ok"] else f"  (expected {cfind['studies']}!)"
            lines.append(f"  {system:<10} {row['median_ms']:>10.1f}   {per:<40} {resp:>10}{flag}")
        ratio = cfind["ratio_oncopacs_orthanc"]
        target = "met" if ratio is not None and ratio <= 1.0 else "NOT met"
        lines.append(f"  OncoPACS/Orthanc C-FIND time: {fmt_ratio(ratio)} (lower is better; target <= 1.00x: {target})")
        lines.append("")
    lines.extend(notes_lines(report["notes"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="CT instances (512x512) to ingest (default 1000)")
    parser.add_argument("--studies", type=int, default=500, help="studies for the C-FIND benchmark (default 500)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="ingest rounds per system (default 5: single rounds swing ±20 %%)")
    parser.add_argument("--find-repeats", type=int, default=15,
                        help="timed C-FIND queries per system "
                             "(default 15: a query is ~80 ms and single ones swing ±20 %%)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 100 instances, 50 studies, 1 round, 3 queries")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--skip-ingest", action="store_true", help="only the C-FIND benchmark")
    parser.add_argument("--skip-find", action="store_true", help="only the ingest benchmark")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench",
                        help="where generated instances are kept and servers' data directories are made "
                             "(default .bench/ in the repository, git-ignored)")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.studies, args.rounds, args.find_repeats = 100, 50, 1, 3
    if min(args.instances, args.studies, args.rounds, args.find_repeats) < 1:
        parser.error("--instances, --studies, --rounds and --find-repeats must be positive")

    for tool in (STORESCU, FINDSCU, STORESCP, ECHOSCU):
        if not os.access(tool, os.X_OK):
            print(f"benchmark: {tool} not found (install the Debian package dcmtk)", file=sys.stderr)
            return 2
    if shutil.which(ORTHANC) is None and not ORTHANC_PEER.exists():
        print("benchmark: Orthanc is not installed and orthanc-peer is missing", file=sys.stderr)
        return 2

    from oncopacs import __version__ as oncopacs_version

    dcmtk = re.search(r"v(\d+\.\d+\.\d+)", first_line([STORESCU, "--version"]))
    report: dict = {
        "machine": machine_info(),
        "versions": {
            "oncopacs": oncopacs_version,
            "orthanc": first_line([ORTHANC, "--version"]) if shutil.which(ORTHANC) else "Orthanc (not yet installed)",
            "dcmtk": dcmtk.group(1) if dcmtk else "unknown",
        },
    }
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache_dir))  # same disk as the cache
    log(f"working directory {base}")
    try:
        if not args.skip_ingest:
            files = ensure_dataset(args.cache_dir, f"ingest-ct-{args.instances}-512x512", args.instances, 1,
                                   512, 512, "BENCHINGEST")
            systems = ["OncoPACS", "Orthanc", "storescp"]
            rates = run_ingest(args, files, base, systems)
            medians = {s: statistics.median(r) for s, r in rates.items()}
            orthanc = medians.get("Orthanc")
            report["ingest"] = {
                "instances": args.instances, "rows": 512, "cols": 512, "rounds": args.rounds,
                "systems": {
                    s: {
                        "rates": rates[s], "median": medians[s], "vs_orthanc": medians[s] / orthanc if orthanc else None
                    }
                    for s in systems
                },
                "ratio_oncopacs_orthanc": medians["OncoPACS"] / orthanc if orthanc else None,
                "ceiling_fraction": medians["OncoPACS"] / medians["storescp"] if medians.get("storescp") else None,
            }
        if not args.skip_find:
            files = ensure_dataset(args.cache_dir, f"find-{args.studies}x2-64x64", 2 * args.studies, args.studies,
                                   64, 64, "BENCHFIND")
            cfind = run_find(args, files, base)
            orth = cfind["Orthanc"]["median_ms"]
            report["cfind"] = {
                "studies": args.studies, "repeats": args.find_repeats, "keys": FIND_KEYS, "systems": cfind,
                "ratio_oncopacs_orthanc": cfind["OncoPACS"]["median_ms"] / orth if orth else None,
            }
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)

    if report["versions"]["orthanc"].startswith("Orthanc (not"):
        report["versions"]["orthanc"] = first_line([ORTHANC, "--version"])
    report["notes"] = [
        "ratios, not absolute rates, are the result: all systems ran on this machine in this run, "
        "interleaved, each round on fresh data directories after sync + 1 s pause.",
        "OncoPACS: `oncopacs serve` with its embedded default configuration (SQLite index); it fsyncs each "
        "file and commits its index before acknowledging each C-STORE (durable).",
        "Orthanc: Debian package, loopback, temporary configuration from orthanc-peer, TCP_NODELAY=1 "
        "(its fast configuration); other settings are Orthanc's defaults (SyncStorageArea defaults to true "
        "since Orthanc 1.7.4, i.e. fsync of each stored file).",
        "storescp: dcmtk, writes each file without fsync and keeps no index: the ceiling, not a peer.",
        "all dcmtk tools run with TCP_NODELAY=1; times are storescu's and findscu's wall-clock time, "
        "process start and (for storescu) its scan of the input directory included.",
    ]
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
