#!/usr/bin/env python
"""DICOMweb: QIDO-RS study searches over 10,000 studies and WADO-RS instance retrieval, OncoPACS against Orthanc.

Run from the repository root with the project's virtual environment active::

    python benchmarks/dicomweb.py              # 10,000 studies, 200 timed requests per query kind
    python benchmarks/dicomweb.py --quick      # smoke test: 500 studies, 30 requests
    python benchmarks/dicomweb.py --json > result.json

Both servers hold the same synthetic studies (one small CT instance each, sent with dcmtk's
``storescu``), are asked the same requests by one keep-alive HTTP client with HTTP Basic
credentials (both require authentication), and are measured in the same run, request kinds
interleaved in blocks. Orthanc is the Debian package with its DICOMweb plugin
(``orthanc-dicomweb``), started by ``../shared/tools/orthanc-peer --dicomweb``. Reported:
p50/p95 latency and sequential requests/s per request kind, and requests/s with 4 concurrent
clients for the exact-PatientID search. Nothing here asserts; a missed target is reported.
"""

from __future__ import annotations

import argparse
import functools
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from peers import (
    ORTHANC,
    REPO,
    BenchError,
    Server,
    ensure_dataset,
    first_line,
    settle,
    start_oncopacs,
    start_orthanc,
    store,
)
from report import emit, fmt_ratio, log, machine_info, machine_line, notes_lines

USER = ("bench", "bench-password-1")
PREFIX = "BENCHQIDO"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CONCURRENT_CLIENTS = 4


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    params: dict[str, str]
    accept: str = "application/dicom+json"


@dataclass(frozen=True, slots=True)
class RequestKind:
    """One kind of request, and how to make the i-th instance of it."""

    name: str
    make: Callable[[int], Request]


@dataclass(frozen=True, slots=True)
class InstanceUIDs:
    study: str
    series: str
    instance: str


def read_uids(files: Path, count: int, seed: int) -> list[InstanceUIDs]:
    chosen = random.Random(seed).sample(sorted(files.iterdir()), count)
    uids = []
    for path in chosen:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids.append(InstanceUIDs(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return uids


def request_kinds(n_studies: int, uids: list[InstanceUIDs], seed: int) -> list[RequestKind]:
    rng = random.Random(seed)
    patients = [rng.randrange(n_studies) for _ in range(len(uids))]
    offsets = [rng.randrange(max(1, n_studies - 100)) for _ in range(len(uids))]
    n = len(uids)
    return [
        RequestKind(
            "QIDO PatientID exact", lambda i: Request("/studies", {"PatientID": f"{PREFIX}-{patients[i % n]:05d}"})
        ),
        RequestKind(
            "QIDO PatientName wildcard",
            lambda i: Request("/studies", {"PatientName": f"*patient{patients[i % n] // 10:04d}*"}),
        ),
        RequestKind(
            "QIDO StudyDate range, limit 100",
            lambda i: Request(
                "/studies", {"StudyDate": f"2023{1 + i % 12:02d}01-2023{1 + i % 12:02d}07", "limit": "100"}
            ),
        ),
        RequestKind(
            "QIDO all, limit 100, offset",
            lambda i: Request("/studies", {"limit": "100", "offset": str(offsets[i % n])}),
        ),
        RequestKind("QIDO series of a study", lambda i: Request(f"/studies/{uids[i % n].study}/series", {})),
        RequestKind(
            "WADO-RS instance",
            lambda i: Request(
                f"/studies/{uids[i % n].study}/series/{uids[i % n].series}/instances/{uids[i % n].instance}",
                {},
                WADO_ACCEPT,
            ),
        ),
    ]


class Client:
    """A keep-alive HTTP client of one server's DICOMweb root."""

    def __init__(self, system: str, root: str):
        self.system = system
        self.root = root
        self.session = requests.Session()
        self.session.auth = USER

    def get(self, request: Request) -> tuple[float, requests.Response]:
        start = time.perf_counter()
        query = urllib.parse.urlencode(request.params, safe="*")  # Orthanc does not decode %2A
        url = self.root + request.path + (f"?{query}" if query else "")
        response = self.session.get(url, headers={"Accept": request.accept}, timeout=120)
        _ = response.content
        elapsed = time.perf_counter() - start
        if response.status_code not in (200, 204):
            raise BenchError(
                f"{self.system} {request.path} {request.params}: HTTP {response.status_code} {response.text[:200]}"
            )
        return elapsed, response


def results_count(response: requests.Response) -> int:
    return len(response.json()) if response.status_code == 200 and response.content else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_sequential(clients: list[Client], kind: RequestKind, repeats: int, block: int = 10) -> dict[str, dict]:
    """Latencies of ``repeats`` requests per system, alternating systems every ``block`` requests."""
    times: dict[str, list[float]] = {c.system: [] for c in clients}
    counts: dict[str, list[int]] = {c.system: [] for c in clients}
    for c in clients:  # warm-up
        for i in range(3):
            c.get(kind.make(i))
    for first in range(0, repeats, block):
        for c in clients:
            for i in range(first, min(repeats, first + block)):
                seconds, response = c.get(kind.make(i))
                times[c.system].append(seconds * 1000)
                if not kind.name.startswith("WADO"):
                    counts[c.system].append(results_count(response))
    out = {}
    for c in clients:
        ms = times[c.system]
        out[c.system] = {
            "p50_ms": percentile(ms, 0.50),
            "p95_ms": percentile(ms, 0.95),
            "mean_ms": statistics.fmean(ms),
            "requests_per_s": 1000 * len(ms) / sum(ms),
            "results": sum(counts[c.system]),
        }
    return out


def measure_concurrent(client_factory: Callable[[], Client], kind: RequestKind, seconds: float) -> float:
    """Requests/s of ``CONCURRENT_CLIENTS`` threads, each with its own keep-alive connection."""
    done = [0] * CONCURRENT_CLIENTS
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    def work(slot: int) -> None:
        client = client_factory()
        i = slot * 100_000
        try:
            while time.perf_counter() < stop_at:
                client.get(kind.make(i))
                done[slot] += 1
                i += 1
        except (BenchError, requests.RequestException) as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(CONCURRENT_CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(errors[0])
    return sum(done) / (time.perf_counter() - start)


def render(report: dict) -> str:
    lines = [machine_line("OncoPACS DICOMweb benchmark", report["machine"])]
    v = report["versions"]
    lines.append(f"versions: OncoPACS {v['oncopacs']} | {v['orthanc']} with its DICOMweb plugin")
    lines.append(
        f"{report['studies']} studies (1 CT instance 32x32 each); "
        f"{report['repeats']} timed requests per kind and system "
        "after 3 warm-ups, one keep-alive client, HTTP Basic on both"
    )
    lines.append("")
    lines.append(
        f"  {'request':<34} {'system':<9} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'results':>8}   "
        f"{'p95 vs Orthanc':>14}"
    )
    for name, row in report["kinds"].items():
        for system, r in row["systems"].items():
            ratio = fmt_ratio(row["p95_ratio"]) if system == "OncoPACS" else ""
            lines.append(
                f"  {name:<34} {system:<9} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['requests_per_s']:>8.1f} "
                f"{r['results']:>8}   {ratio:>14}"
            )
    lines.append("")
    conc = report["concurrent"]
    lines.append(
        f"  {CONCURRENT_CLIENTS} concurrent clients, {conc['kind']}, {conc['seconds']:.0f} s: "
        + ", ".join(f"{s} {r:.1f} req/s" for s, r in conc["systems"].items())
        + f" (OncoPACS/Orthanc {fmt_ratio(conc['ratio'])})"
    )
    qido = [row["p95_ratio"] for name, row in report["kinds"].items() if name.startswith("QIDO")]
    worst = max(qido)
    lines.append(
        f"  QIDO p95 OncoPACS/Orthanc: worst {fmt_ratio(worst)} over {len(qido)} kinds "
        f"(lower is better; target <= 1.00x: {'met' if worst <= 1.0 else 'NOT met'})"
    )
    lines.append("")
    lines.extend(notes_lines(report["notes"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000, help="studies in each archive (default 10000)")
    parser.add_argument("--repeats", type=int, default=200, help="timed requests per kind and system (default 200)")
    parser.add_argument(
        "--concurrent-seconds", type=float, default=10.0, help="length of the concurrent run (default 10 s)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 500 studies, 30 requests, 3 s concurrent")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench",
                        help="where generated instances and the servers' data directories live (default .bench/)")
    args = parser.parse_args()
    if args.quick:
        args.studies, args.repeats, args.concurrent_seconds = 500, 30, 3.0
    if args.studies < 100 or args.repeats < 10:
        parser.error("need --studies >= 100 and --repeats >= 10")
    if shutil.which(ORTHANC) is None:
        print("benchmark: Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)", file=sys.stderr)
        return 2

    from oncopacs import __version__ as oncopacs_version

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    files = ensure_dataset(args.cache_dir, f"qido-{args.studies}-32x32", args.studies, args.studies, 32, 32, PREFIX)
    uids = read_uids(files, min(args.repeats, args.studies), args.seed)
    kinds = request_kinds(args.studies, uids, args.seed)
    base = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache_dir))
    log(f"working directory {base}")
    report: dict = {"machine": machine_info(), "studies": args.studies, "repeats": args.repeats}
    try:
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            for system, start in (
                ("OncoPACS", lambda w: start_oncopacs(w, user=USER)),
                ("Orthanc", lambda w: start_orthanc(w, dicomweb=True, user=USER)),
            ):
                server = start(base / system.lower())
                stack.callback(server.stop)
                log(f"loading {args.studies} studies into {system} with storescu ...")
                seconds = store(server, files, args.studies)
                log(f"{system} loaded in {seconds:.1f} s")
                servers[system] = server
            settle()
            roots = {s: f"http://127.0.0.1:{srv.http_port}/dicom-web" for s, srv in servers.items()}
            clients = [Client(s, root) for s, root in roots.items()]
            report["kinds"] = {}
            for kind in kinds:
                log(f"{kind.name}: {args.repeats} requests per system ...")
                systems = measure_sequential(clients, kind, args.repeats)
                counts = {s: r["results"] for s, r in systems.items()}
                if len(set(counts.values())) != 1:
                    raise BenchError(f"{kind.name}: the servers returned different numbers of results {counts}")
                report["kinds"][kind.name] = {
                    "systems": systems,
                    "p95_ratio": systems["OncoPACS"]["p95_ms"] / systems["Orthanc"]["p95_ms"],
                }
            concurrent = {}
            for system, root in roots.items():
                log(f"{CONCURRENT_CLIENTS} concurrent clients on {system} for {args.concurrent_seconds:.0f} s ...")
                concurrent[system] = measure_concurrent(
                    functools.partial(Client, system, root), kinds[0], args.concurrent_seconds
                )
            report["concurrent"] = {
                "kind": kinds[0].name, "seconds": args.concurrent_seconds, "systems": concurrent,
                "ratio": concurrent["OncoPACS"] / concurrent["Orthanc"],
            }
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["versions"] = {"oncopacs": oncopacs_version, "orthanc": first_line([ORTHANC, "--version"])}
    report["notes"] = [
        "ratios, not absolute times, are the result: both servers ran on this machine in this run, "
        "requests interleaved in blocks of 10 per system.",
        "OncoPACS: `oncopacs serve`, embedded default (SQLite index, waitress); every request is authenticated "
        "(HTTP Basic) and writes a hash-chained audit record before it answers.",
        "Orthanc: Debian package with orthanc-dicomweb, loopback, orthanc-peer's configuration, HTTP Basic "
        "authentication on, no audit trail.",
        "the same results count per request kind is checked on both servers; a mismatch aborts the run.",
    ]
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
