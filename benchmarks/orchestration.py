#!/usr/bin/env python
"""Orchestration: the outbox's forwarding rate against the ingest rate, and a series rule's latency.

Run from the repository root with the project's virtual environment active::

    python benchmarks/orchestration.py               # 500 instances, 5 rounds, 5 contouring rounds
    python benchmarks/orchestration.py --quick       # smoke test: 50 instances, 1 round of each
    python benchmarks/orchestration.py --json > result.json

Everything runs on this machine in the same invocation. Progress goes to standard error; the table
(or, with ``--json``, one JSON document) to standard output. Nothing here asserts: a missed target
is reported, not raised.

1. Ingest: N synthetic 512x512 CT instances are sent with dcmtk's ``storescu`` (one association) to
   a fresh ``oncopacs serve`` (embedded default configuration), as ``benchmarks/ingest.py`` does.
2. Forwarding: the server is stopped; the same data directory is opened in this process with a
   remote AE ``DEST`` (dcmtk's ``storescp`` on loopback), every instance is queued in the outbox
   for it, and the platform's own :class:`~oncopacs.orchestration.delivery.DeliveryLoop` (as
   ``oncopacs serve`` builds it) delivers them. The rate is N over the time from the enqueue to the
   last row marked delivered. Target: at least 0.9x the ingest rate (the outbox must keep up).
3. Latency: a platform with the series rule "CT → body-contour" (``stable_seconds`` 1, the rule loop
   and a job worker running as under ``oncopacs serve``) receives a thorax phantom CT; the latency
   runs from the moment the series became stable (last arrival + ``stable_seconds``) to the
   plug-in's RTSTRUCT stored in the archive. It includes the rule loop's poll (up to 1 s).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from peers import (  # benchmarks/peers.py
    REPO,
    STORESCP,
    STORESCU,
    BenchError,
    ensure_dataset,
    first_line,
    settle,
    start_oncopacs,
    start_storescp,
    store,
)
from report import emit, fmt_ratio, log, machine_info, machine_line, notes_lines  # benchmarks/report.py

TARGET_RATIO = 0.9  # the outbox must forward at least this fraction of the ingest rate
STABLE_SECONDS = 1
FORWARD_TIMEOUT_S = 600.0
CONTOUR_TIMEOUT_S = 300.0
RULE = {"name": "autocontour", "on": "series", "match": {"Modality": "CT"}, "analyse": ["body-contour"]}


# ---------------------------------------------------------------------------------------------
# The three measurements


def ingest_round(files: Path, workdir: Path, instances: int) -> tuple[float, Path]:
    """Store ``files`` into a fresh ``oncopacs serve``; (instances per second, the server's data directory)."""
    server = start_oncopacs(workdir)
    try:
        settle()
        seconds = store(server, files, instances)
        assert server.count_stored is not None
        held = server.count_stored()
        if held != instances:
            raise BenchError(f"OncoPACS acknowledged {instances} instances but holds {held}")
    finally:
        server.stop()
    return instances / seconds, workdir / "data"


def forward_round(data_dir: Path, workdir: Path, instances: int) -> tuple[float, int]:
    """Queue every instance of ``data_dir`` for a fresh storescp and let the delivery loop send them;
    (delivered instances per second from enqueue to the last delivery, instances storescp wrote)."""
    from sqlalchemy import select

    from oncopacs.index.models import Instance
    from oncopacs.orchestration.delivery import open_delivery
    from oncopacs.orchestration.outbox import OutboxState
    from oncopacs.platform import open_platform
    from oncopacs.settings import RemoteAE, Settings

    peer = start_storescp(workdir / "storescp")
    try:
        settings = Settings(data_dir=data_dir, remote_aes=(RemoteAE(peer.aet, "127.0.0.1", peer.port),))
        with open_platform(settings) as platform:
            with platform.index.reading() as session:
                uids = list(session.scalars(select(Instance.sop_instance_uid)))
            loop = open_delivery(platform.outbox, platform.archive, settings)
            settle()
            start = time.perf_counter()
            platform.outbox.enqueue(uids, peer.aet, "bench-forward")
            loop.start()
            try:
                delivered = _wait_delivered(platform.outbox, peer.aet, len(uids))
            finally:
                loop.stop()
            elapsed = time.perf_counter() - start
            dead = platform.outbox.list_items(state=OutboxState.DEAD, limit=1)
        if delivered != instances:
            first = dead.items[0].last_error if dead.items else "none dead"
            raise BenchError(f"delivered {delivered} of {instances} instances ({first})")
        assert peer.count_stored is not None
        return delivered / elapsed, peer.count_stored()
    finally:
        peer.stop()


def _wait_delivered(outbox, destination: str, wanted: int) -> int:
    """Poll the outbox until ``wanted`` rows are delivered, or none is pending or being delivered any more."""
    deadline = time.perf_counter() + FORWARD_TIMEOUT_S
    while time.perf_counter() < deadline:
        [status] = [s for s in outbox.status() if s.destination == destination]
        if status.delivered >= wanted or status.pending + status.delivering == 0:
            return status.delivered
        time.sleep(0.01)
    raise BenchError(f"the outbox had not delivered {wanted} instances after {FORWARD_TIMEOUT_S:.0f} s")


def contour_round(workdir: Path, series: list) -> dict[str, float]:
    """A platform with the body-contour series rule receives ``series``; seconds from stable to the RTSTRUCT."""
    from oncopacs.orchestration.rule_actions import PLUGIN_JOB, RuleLoop
    from oncopacs.platform import open_platform
    from oncopacs.settings import Settings

    settings = Settings(data_dir=workdir / "data", rules=(RULE,), stable_seconds=STABLE_SECONDS)
    stored = threading.Event()
    stored_at: list[float] = []

    def on_arrival(record, _source: str) -> None:
        if record.modality == "RTSTRUCT" and not stored.is_set():
            stored_at.append(time.perf_counter())
            stored.set()

    with open_platform(settings) as platform:
        platform.archive.subscribe_arrivals(on_arrival)
        worker = platform.jobs.new_worker()
        rule_loop = RuleLoop(platform.rules, on_fired=worker.wake)  # as `oncopacs serve` wires them
        worker.start()
        rule_loop.start()
        try:
            settle()
            started = time.perf_counter()
            for ds in series:
                if not platform.archive.ingest_dataset(ds, source="dimse:BENCHCT").acknowledged:
                    raise BenchError("the archive refused a phantom CT slice")
            last_arrival, last_arrival_wall = time.perf_counter(), time.time()
            if not stored.wait(CONTOUR_TIMEOUT_S):
                jobs = platform.jobs.queue.list(kind=PLUGIN_JOB).jobs
                raise BenchError(f"no RTSTRUCT after {CONTOUR_TIMEOUT_S:.0f} s (jobs: "
                                 f"{[(j.status.value, j.message) for j in jobs]})")
        finally:
            rule_loop.stop()
            worker.stop()
        (job,) = platform.jobs.queue.list(kind=PLUGIN_JOB).jobs
    if job.started_at is None or job.finished_at is None:
        raise BenchError(f"the body-contour job is {job.status.value}, yet an RTSTRUCT arrived")
    queued_s = job.created_at.timestamp() - (last_arrival_wall + STABLE_SECONDS)  # the rule loop's poll
    return {"latency_s": stored_at[0] - (last_arrival + STABLE_SECONDS), "queued_s": queued_s,
            "picked_up_s": (job.started_at - job.created_at).total_seconds(),
            "job_s": (job.finished_at - job.started_at).total_seconds(), "ingest_s": last_arrival - started}


def thorax_series() -> list:
    """One phase of the thorax 4D-CT phantom: the CT the rules tests contour."""
    from oncopacs.phantom.ct4d import CT4D_FAMILY, build_ct4d_phantom

    spec = replace(CT4D_FAMILY["issue_case"], phases=1, gtv_phase=0, supersampling=1)
    return list(build_ct4d_phantom(spec).phases[0])


# ---------------------------------------------------------------------------------------------
# Output


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else "-"


def render(report: dict) -> str:
    lines = [machine_line("OncoPACS orchestration benchmark", report["machine"]),
             f"versions: OncoPACS {report['versions']['oncopacs']} | dcmtk {report['versions']['dcmtk']}", ""]
    fw = report.get("forwarding")
    if fw:
        lines.append(f"Forwarding: {fw['instances']} CT instances 512x512, {fw['rounds']} round(s), median of rounds")
        lines.append(f"  {'measure':<34} {'median':>9} {'spread':>13}   per round")
        for label, key in (("ingest (storescu -> OncoPACS) /s", "ingest"),
                           ("forward (outbox -> storescp) /s", "forward")):
            rates = fw[key]
            lines.append(f"  {label:<34} {statistics.median(rates):>9.1f} {spread(rates):>13}   "
                         + " ".join(f"{r:.1f}" for r in rates))
        ratio = fw["ratio"]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        lines.append(f"  forward/ingest: {fmt_ratio(ratio)} (target >= {TARGET_RATIO:.2f}x: {verdict})")
        lines.append("")
    lat = report.get("latency")
    if lat:
        lines.append(f"Latency: series stable -> body-contour RTSTRUCT in the archive; {lat['slices']} CT slices "
                     f"{lat['rows']}x{lat['cols']}, stable_seconds {STABLE_SECONDS}, {lat['rounds']} round(s)")
        lines.append(f"  {'measure':<34} {'median s':>9} {'spread':>13}   per round")
        for label, key in (("stable -> RTSTRUCT stored", "latency_s"),
                           ("  stable -> job queued (rule loop)", "queued_s"),
                           ("  job queued -> started (worker)", "picked_up_s"), ("  job ran (start to end)", "job_s"),
                           ("ingest of the series (in-process)", "ingest_s")):
            values = [r[key] for r in lat["runs"]]
            lines.append(f"  {label:<34} {statistics.median(values):>9.2f} {spread(values):>13}   "
                         + " ".join(f"{v:.2f}" for v in values))
        lines.append("")
    lines.extend(notes_lines(report["notes"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500, help="CT instances (512x512) to ingest and forward "
                                                                   "(default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="ingest + forward rounds (default 5)")
    parser.add_argument("--contour-rounds", type=int, default=5, help="latency rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 50 instances, 1 round of each")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--skip-forward", action="store_true", help="only the latency benchmark")
    parser.add_argument("--skip-latency", action="store_true", help="only the ingest and forwarding benchmark")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench",
                        help="where generated instances are kept and data directories are made "
                             "(default .bench/ in the repository, git-ignored)")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.rounds, args.contour_rounds = 50, 1, 1
    if min(args.instances, args.rounds, args.contour_rounds) < 1:
        parser.error("--instances, --rounds and --contour-rounds must be positive")
    for tool in (STORESCU, STORESCP):
        if not os.access(tool, os.X_OK):
            print(f"benchmark: {tool} not found (install the Debian package dcmtk)", file=sys.stderr)
            return 2

    from oncopacs import __version__ as oncopacs_version

    dcmtk = re.search(r"v(\d+\.\d+\.\d+)", first_line([STORESCU, "--version"]))
    report: dict = {"machine": machine_info(),
                    "versions": {"oncopacs": oncopacs_version, "dcmtk": dcmtk.group(1) if dcmtk else "unknown"}}
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="orchestration-", dir=args.cache_dir))
    log(f"working directory {base}")
    try:
        if not args.skip_forward:
            files = ensure_dataset(args.cache_dir, f"orchestration-ct-{args.instances}-512x512", args.instances, 1,
                                   512, 512, "BENCHORCH")
            ingest, forward = [], []
            for rnd in range(1, args.rounds + 1):
                workdir = base / f"forward-r{rnd}"
                rate_in, data_dir = ingest_round(files, workdir, args.instances)
                rate_out, received = forward_round(data_dir, workdir, args.instances)
                if received != args.instances:
                    raise BenchError(f"storescp wrote {received} of {args.instances} forwarded instances")
                ingest.append(rate_in)
                forward.append(rate_out)
                log(f"round {rnd}/{args.rounds}: ingest {rate_in:6.1f}/s, forward {rate_out:6.1f}/s")
                shutil.rmtree(workdir, ignore_errors=True)
            report["forwarding"] = {"instances": args.instances, "rounds": args.rounds, "ingest": ingest,
                                    "forward": forward,
                                    "ratio": statistics.median(forward) / statistics.median(ingest)}
        if not args.skip_latency:
            series = thorax_series()
            runs = []
            for rnd in range(1, args.contour_rounds + 1):
                run = contour_round(base / f"contour-r{rnd}", series)
                runs.append(run)
                log(f"contour round {rnd}/{args.contour_rounds}: stable -> RTSTRUCT {run['latency_s']:.2f} s "
                    f"(job {run['job_s']:.2f} s)")
                shutil.rmtree(base / f"contour-r{rnd}", ignore_errors=True)
            report["latency"] = {"rounds": args.contour_rounds, "slices": len(series), "rows": int(series[0].Rows),
                                 "cols": int(series[0].Columns), "runs": runs}
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["notes"] = [
        "ingest: `oncopacs serve` (embedded SQLite), storescu wall time with process start, fsync per instance.",
        "forward: open_delivery() as `oncopacs serve` builds it (batches of DeliveryLoop.batch_size rows, one "
        "association per batch), from outbox.enqueue() to the last row marked delivered; storescp writes "
        "without fsync.",
        f"latency: from last arrival + stable_seconds ({STABLE_SECONDS} s) to the RTSTRUCT's arrival in the "
        "archive; includes the rule loop's 1 s poll; a firing wakes the job worker, as under `oncopacs serve`.",
    ]
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
