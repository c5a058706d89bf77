#!/usr/bin/env python
"""DIMSE ingest and study-level C-FIND: OncoPACS against Orthanc, with dcmtk's storescp as the ceiling.

Run from the repository root with the project's virtual environment active::

    python benchmarks/ingest.py                      # 1,000 instances, 500 studies, 3 rounds
    python benchmarks/ingest.py --quick              # smoke test: 100 instances, 50 studies, 1 round
    python benchmarks/ingest.py --json > result.json

Everything runs on this machine in the same invocation, so read the ratios, not the absolute
numbers. Progress goes to standard error; the table (or, with ``--json``, one JSON document)
to standard output. Nothing here asserts: a missed target is reported, not raised.

Ingest: the same synthetic 512x512 CT instances are sent with dcmtk's ``storescu`` (one
association for the whole directory) to a fresh OncoPACS server (``oncopacs serve``, embedded
default configuration), a fresh Orthanc (``/work/shared/tools/orthanc-peer``, TCP no-delay) and
a fresh ``storescp``; each round uses new data directories, flushes the page cache's dirty
pages (``sync``) and pauses before each timed transfer, and the systems are interleaved.

C-FIND: a study-level query returning every one of ``--studies`` studies (2 small instances
each, loaded with ``storescu`` beforehand) is timed with dcmtk's ``findscu``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from report import emit, fmt_ratio, log, machine_info, machine_line, notes_lines  # benchmarks/report.py (the script's own folder)

REPO = Path(__file__).resolve().parents[1]
ORTHANC_PEER = Path("/work/shared/tools/orthanc-peer")
STORESCU = "/usr/bin/storescu"
FINDSCU = "/usr/bin/findscu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "Orthanc"

ONCOPACS_AET = "ONCOPACS"
ORTHANC_AET = "ORTHANC"
STORESCP_AET = "STORESCP"
CALLING_AET = "BENCHSCU"

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

# dcmtk's stack (Debian) waits on delayed ACKs without this; every dcmtk process gets it.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


class BenchError(RuntimeError):
    """A peer or tool failed; the message says which and why."""



# ---------------------------------------------------------------------------------------------
# Data sets


def ensure_dataset(cache: Path, name: str, n_instances: int, n_studies: int, rows: int, cols: int, prefix: str) -> Path:
    """Write (once) the synthetic instances as Part 10 files; return the directory of .dcm files."""
    root = cache / name
    files = root / "dicom"
    marker = root / "COMPLETE"  # outside ``dicom/`` so that ``storescu +sd`` never sees it
    if marker.exists() and marker.read_text().strip() == str(n_instances):
        log(f"data set {name}: reusing {n_instances} cached instances in {files}")
        return files
    import pydicom

    from oncopacs.phantom import build_benchmark_ct

    shutil.rmtree(root, ignore_errors=True)
    files.mkdir(parents=True)
    log(f"data set {name}: generating {n_instances} instances ({rows}x{cols}, {n_studies} studies) ...")
    start = time.monotonic()
    count = 0
    for count, ds in enumerate(
        build_benchmark_ct(n_instances, n_studies, rows=rows, cols=cols, prefix=prefix), start=1
    ):
        pydicom.dcmwrite(files / f"{count:06d}.dcm", ds, enforce_file_format=True)
    if count != n_instances:
        raise BenchError(f"build_benchmark_ct yielded {count} instances, expected {n_instances}")
    marker.write_text(f"{n_instances}\n")
    log(f"data set {name}: {count} files in {time.monotonic() - start:.1f} s")
    return files


# ---------------------------------------------------------------------------------------------
# Processes and ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=DCMTK_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def dicom_echo(aet: str, port: int) -> bool:
    result = subprocess.run(
        [ECHOSCU, "-aet", CALLING_AET, "-aec", aet, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True, env=DCMTK_ENV, timeout=30,
    )
    return result.returncode == 0


def wait_until(check, what: str, timeout: float, alive=lambda: True) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError(f"{what}: the process exited during start-up")
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.2)
    raise BenchError(f"{what}: not ready after {timeout:.0f} s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in {"Z", "X"}


def stop_pid(pid: int, what: str, timeout: float = 20.0) -> None:
    """SIGTERM one process by id, then SIGKILL if it does not exit in time."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    log(f"{what} (pid {pid}) ignored SIGTERM for {timeout:.0f} s; killing it")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pids_with_argument(argument: str) -> list[int]:
    """Our own processes whose command line contains ``argument`` (a unique temp path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argument.encode() in arg for arg in args):
            found.append(int(entry.name))
    return found


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """One running SCP: what a benchmark needs to talk to it and to stop it."""

    system: str
    aet: str
    port: int
    workdir: Path
    stop: callable = field(repr=False)
    count_stored: callable = field(repr=False, default=None)  # files/instances the server holds


def start_oncopacs(workdir: Path) -> Server:
    data = workdir / "data"
    data.mkdir(parents=True)
    http_port, dicom_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCOPACS_")}  # embedded default
    env.update(
        ONCOPACS_DATA_DIR=str(data),
        ONCOPACS_HTTP_PORT=str(http_port),
        ONCOPACS_DICOM_PORT=str(dicom_port),
        ONCOPACS_DICOM_HOST="127.0.0.1",
    )
    logfile = workdir / "oncopacs.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oncopacs.cli", "serve"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"OncoPACS (pid {proc.pid}) ignored SIGTERM for 30 s; killing it")
                proc.kill()
                proc.wait()

    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/health"), "OncoPACS /health", 60,
                   alive=lambda: proc.poll() is None)
        wait_until(lambda: dicom_echo(ONCOPACS_AET, dicom_port), "OncoPACS C-ECHO", 30,
                   alive=lambda: proc.poll() is None)
    except BenchError as exc:
        stop()
        raise BenchError(f"{exc}\n--- {logfile} ---\n{tail(logfile)}") from None

    def count() -> int:
        storage = data / "storage"
        return sum(1 for p in storage.rglob("*") if p.is_file() and "incoming" not in p.parts) if storage.exists() else 0

    return Server("OncoPACS", ONCOPACS_AET, dicom_port, workdir, stop, count)


def start_orthanc(workdir: Path) -> Server:
    if not ORTHANC_PEER.exists():
        raise BenchError(f"{ORTHANC_PEER} is missing; it starts the Orthanc peer")
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    result = subprocess.run(
        [str(ORTHANC_PEER), str(workdir), str(dicom_port), str(http_port)],
        capture_output=True, text=True, timeout=600, start_new_session=True,
    )
    config = str(workdir / "orthanc.json")
    pids = [int(w) for w in result.stdout.split() if w.isdigit()]
    pid = pids[-1] if pids else None

    def stop() -> None:
        targets = {pid} if pid else set()
        targets.update(pids_with_argument(config))  # in case the script's PID was a wrapper
        for p in targets:
            stop_pid(p, "Orthanc")

    if result.returncode != 0 or pid is None:
        stop()
        raise BenchError(
            f"orthanc-peer failed (exit {result.returncode}): {result.stderr.strip()}\n"
            f"--- {workdir / 'orthanc.log'} ---\n{tail(workdir / 'orthanc.log')}"
        )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/system"), "Orthanc /system", 60,
                   alive=lambda: pid_alive(pid))
        wait_until(lambda: dicom_echo(ORTHANC_AET, dicom_port), "Orthanc C-ECHO", 30, alive=lambda: pid_alive(pid))
    except BenchError as exc:
        stop()
        raise BenchError(f"{exc}\n--- {workdir / 'orthanc.log'} ---\n{tail(workdir / 'orthanc.log')}") from None

    def count() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=30) as response:
            return int(json.load(response)["CountInstances"])

    return Server("Orthanc", ORTHANC_AET, dicom_port, workdir, stop, count)


def start_storescp(workdir: Path) -> Server:
    out_dir = workdir / "received"
    out_dir.mkdir(parents=True)
    port = free_port()
    logfile = workdir / "storescp.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [STORESCP, "-aet", STORESCP_AET, "-od", str(out_dir), str(port)],
            cwd=workdir, env=DCMTK_ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    try:
        wait_until(lambda: dicom_echo(STORESCP_AET, port), "storescp C-ECHO", 30, alive=lambda: proc.poll() is None)
    except BenchError as exc:
        stop()
        raise BenchError(f"{exc}\n--- {logfile} ---\n{tail(logfile)}") from None
    return Server("storescp", STORESCP_AET, port, workdir, stop, lambda: sum(1 for _ in out_dir.iterdir()))


STARTERS = {"OncoPACS": start_oncopacs, "Orthanc": start_orthanc, "storescp": start_storescp}


# ---------------------------------------------------------------------------------------------
# The two measurements


def store(server: Server, files: Path, expected: int) -> float:
    """Send every file in ``files`` in one association; return the wall-clock seconds."""
    cmd = [STORESCU, "-v", "-aet", CALLING_AET, "-aec", server.aet, "+sd", "127.0.0.1", str(server.port), str(files)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=DCMTK_ENV, timeout=3600)
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    ok = len(re.findall(r"Received Store Response \(Success\)", output))
    if result.returncode != 0 or ok != expected:
        errors = [line for line in output.splitlines() if line.startswith(("E:", "W:", "F:"))][:10]
        raise BenchError(
            f"storescu to {server.system}: exit {result.returncode}, {ok}/{expected} stored with Success\n"
            + "\n".join(errors)
        )
    return elapsed


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


def settle() -> None:
    """Flush earlier rounds' dirty pages so they are not written back during a timed transfer."""
    os.sync()
    time.sleep(1.0)


def run_ingest(args, files: Path, base: Path, systems: list[str]) -> dict[str, list[float]]:  # noqa: ANN001
    rates: dict[str, list[float]] = {s: [] for s in systems}
    for rnd in range(1, args.rounds + 1):
        for system in systems:
            workdir = base / f"ingest-r{rnd}-{system.lower()}"
            server = STARTERS[system](workdir)
            try:
                settle()
                seconds = store(server, files, args.instances)
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


def run_find(args, files: Path, base: Path) -> dict[str, dict]:  # noqa: ANN001
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
        lines.append(f"  OncoPACS/Orthanc ingest rate: {fmt_ratio(ratio)} (higher is better; target >= 1.00x: {target})")
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
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds per system (default 3)")
    parser.add_argument("--find-repeats", type=int, default=5, help="timed C-FIND queries per system (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 100 instances, 50 studies, 1 round, 3 queries")
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
                    s: {"rates": rates[s], "median": medians[s], "vs_orthanc": medians[s] / orthanc if orthanc else None}
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
