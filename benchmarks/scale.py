#!/usr/bin/env python
"""Scale-out: DIMSE ingest through HAProxy to one node and to two nodes, with each process's CPU time.

Run from the repository root with the project's virtual environment active (PostgreSQL, HAProxy and dcmtk needed)::

    python benchmarks/scale.py                     # 4 clients x 400 instances of 128x128, 5 rounds (~4 min)
    python benchmarks/scale.py --quick             # smoke test: 4 x 60 instances, 1 round
    python benchmarks/scale.py --instances 500 --rounds 3 --json

Each round starts, for each set-up, fresh ``oncopacs serve --role dimse`` nodes (one data directory, one fresh
PostgreSQL schema, ``ONCOPACS_NODE_NAME`` node1/node2) and HAProxy with ``deploy/haproxy.cfg`` (TCP mode, leastconn).
"1 node" points both of HAProxy's DIMSE server lines at node1, so both set-ups use the same configuration. Four
dcmtk ``storescu`` processes start together, each sending its own study of N instances in one association through
HAProxy's DICOM front. The rate is 4N over the wall time from the first start to the last exit; the set-ups
alternate (1, 2, then 2, 1) and the table gives the median of the rounds and their spread. Nothing asserts.

CPU time (user + sys) is measured for every process of the run: each node and HAProxy from ``/proc/<pid>/stat``
before and after (all their threads), each ``storescu`` from ``wait4``, and the PostgreSQL backends that serve the
nodes, found by ``application_name`` (``scale-<run>-node<i>`` in the nodes' database URL) in ``pg_stat_activity``,
sampled every 0.2 s from ``/proc`` (a backend that ends between samples loses < 0.2 s). PostgreSQL's WAL writer,
checkpointer and the walsender are shared and not attributed. ``/proc/stat`` gives the whole machine's busy, iowait
and idle cores over the same interval; busy minus attributed is everything else (other users of the machine, the
shared PostgreSQL processes, this script).

The projection. Let ``c_k`` be the attributed CPU-seconds per instance with k nodes and ``n_k`` the nodes' part of
it. When a run is bound by cores (the machine's busy cores ~= its CPU count, little idle), its rate is
``cores / c_k``: on this machine adding a node cannot help unless it lowers ``c_k``. With enough cores, the limit is
the busiest single consumer: a node is one Python process whose DIMSE handlers share one interpreter lock, so it
can use about ``--node-cores`` (default 1.0) cores, and k nodes that share the work evenly reach
``X_k = k * node_cores / n_k`` instances/s, needing ``X_k * c_k`` cores in all (PostgreSQL backends, one per
connection, and the clients scale with them). The projected 2-node speed-up is ``X_2 / X_1 = 2 * n_1 / n_2``; it is
2x when a second node costs no extra CPU per instance, less when coordination (index contention, retries) adds some.

Contention. If something serialised the nodes (a lock in the index, one consumer), the cores would wait: the
attributed CPU would be well under ``wall * cores``, the machine would show idle time, and the two nodes' CPU would
not add up to more than one node's alone. The table prints attributed cores (CPU / wall), the machine's busy, iowait
and idle cores, and each node's CPU / wall, so a run bound by cores reads "busy ~= CPUs, idle ~= 0".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from peers import (  # benchmarks/peers.py
    CALLING_AET,
    DCMTK_ENV,
    ECHOSCU,
    ONCOPACS_AET,
    REPO,
    STORESCU,
    BenchError,
    dicom_echo,
    ensure_dataset,
    first_line,
    free_port,
    settle,
    tail,
    wait_until,
)
from report import emit, fmt_ratio, log, machine_info, machine_line, notes_lines  # benchmarks/report.py

DEFAULT_URL = os.environ.get("ONCOPACS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2


@dataclass(frozen=True, slots=True)
class RunResult:
    """One timed ingest: k nodes, 4N instances in ``wall_s`` seconds; CPU seconds by process; machine cores."""

    nodes: int
    instances: int
    wall_s: float
    cpu_s: dict[str, float]     # node1, node2, haproxy, postgres, storescu: CPU-seconds (user + sys)
    backends: int               # PostgreSQL backends attributed to the nodes
    machine_busy: float         # cores busy over the run (the whole machine, /proc/stat)
    machine_iowait: float
    machine_idle: float

    @property
    def rate(self) -> float:
        return self.instances / self.wall_s


# CPU accounting


def process_cpu(pid: int) -> float | None:
    """User + system CPU-seconds of a process (all its threads, ended ones included); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, iowait, idle) jiffies of the whole machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal, iowait, idle


class BackendSampler:
    """CPU of the PostgreSQL backends whose application_name starts with ``prefix``, sampled in a thread."""

    def __init__(self, url: str, prefix: str):
        import sqlalchemy

        self._engine = sqlalchemy.create_engine(url, pool_size=1)
        self._query = sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE application_name LIKE :p")
        self._prefix = prefix + "%"
        self.baseline: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.unreadable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        with self._engine.connect() as connection:
            pids = list(connection.execute(self._query, {"p": self._prefix}).scalars())
        found = {pid: process_cpu(pid) for pid in pids}
        self.unreadable = sum(1 for cpu in found.values() if cpu is None)
        return {pid: cpu for pid, cpu in found.items() if cpu is not None}

    def start(self) -> None:
        self.baseline = self._sample()
        self.last = dict(self.baseline)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.last.update(self._sample())

    def stop(self) -> tuple[float, int]:
        """(CPU-seconds of the backends since :meth:`start`, how many backends)."""
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        self._engine.dispose()
        return sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.last.items()), len(self.last)


# The cluster


@dataclass
class Cluster:
    """Nodes and HAProxy of one set-up; ``front`` is HAProxy's DICOM port."""

    front: int
    node_pids: list[int]
    haproxy_pid: int
    app_prefix: str
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        for proc in reversed(self._procs):  # HAProxy first, then the nodes
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def scratch_schema(server_url: str) -> Iterator[tuple[str, str]]:
    """A fresh schema on the PostgreSQL server: (its name, the URL the nodes use), dropped afterwards."""
    import sqlalchemy

    schema = f"scale_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema, f"{server_url}{'&' if '?' in server_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def start_cluster(nodes: int, workdir: Path, database_url: str, haproxy: str) -> Cluster:
    """``nodes`` DIMSE nodes on one data directory and index, one after the other, and HAProxy in front."""
    data = workdir / "data"
    data.mkdir(parents=True)
    prefix = f"scale-{uuid.uuid4().hex[:8]}-node"
    cluster = Cluster(0, [], 0, prefix)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ONCOPACS_")}
    ports = []
    try:
        for i in range(1, nodes + 1):
            port = free_port()
            (data / f"node{i}").mkdir()
            env = {**base_env, "ONCOPACS_DATA_DIR": str(data), "ONCOPACS_DICOM_HOST": "127.0.0.1",
                   "ONCOPACS_DATABASE_URL": f"{database_url}&application_name={prefix}{i}",
                   "ONCOPACS_NODE_NAME": f"node{i}", "ONCOPACS_AUDIT_KEY_FILE": str(data / "audit-key"),
                   "ONCOPACS_AUDIT_CHECKPOINT_FILE": str(data / f"node{i}" / "audit-checkpoints")}
            logfile = workdir / f"node{i}.log"
            with logfile.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "oncopacs.cli", "serve", "--role", "dimse",
                                         "--dicom-port", str(port)], cwd=workdir, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            cluster._procs.append(proc)
            cluster.node_pids.append(proc.pid)
            try:
                wait_until(lambda p=port: dicom_echo(ONCOPACS_AET, p), f"node{i} C-ECHO", 90,
                           alive=lambda proc=proc: proc.poll() is None)
            except BenchError as exc:
                raise BenchError(f"{exc}\n--- {logfile} ---\n{tail(logfile)}") from None
            ports.append(port)
        closed = free_port()  # the web backend's servers: nothing listens (role dimse), HAProxy marks them down
        cluster.front = free_port()
        env = {**base_env, "ONCOPACS_FRONT_HTTP": f"127.0.0.1:{free_port()}",
               "ONCOPACS_FRONT_DICOM": f"127.0.0.1:{cluster.front}", "ONCOPACS_WEB1": f"127.0.0.1:{closed}",
               "ONCOPACS_WEB2": f"127.0.0.1:{closed}", "ONCOPACS_DIMSE1": f"127.0.0.1:{ports[0]}",
               "ONCOPACS_DIMSE2": f"127.0.0.1:{ports[-1]}"}  # one node: both server lines name it
        with (workdir / "haproxy.log").open("wb") as out:
            proc = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        cluster._procs.append(proc)
        cluster.haproxy_pid = proc.pid
        wait_until(lambda: dicom_echo(ONCOPACS_AET, cluster.front), "C-ECHO through HAProxy", 30,
                   alive=lambda: proc.poll() is None)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# One timed run


def ingest(cluster: Cluster, nodes: int, dirs: list[Path], per_client: int, server_url: str, schema: str,
           workdir: Path) -> RunResult:
    """Four (len(dirs)) storescu processes at once through HAProxy; the CPU of every process of the run."""
    import sqlalchemy

    settle()
    sampler = BackendSampler(server_url, cluster.app_prefix)
    sampler.start()
    before = {f"node{i + 1}": process_cpu(pid) or 0.0 for i, pid in enumerate(cluster.node_pids)}
    before["haproxy"] = process_cpu(cluster.haproxy_pid) or 0.0
    jiffies0, start = machine_jiffies(), time.perf_counter()
    clients = []
    for i, folder in enumerate(dirs):
        with (workdir / f"storescu{i}.log").open("wb") as out:
            clients.append(subprocess.Popen(
                [STORESCU, "-v", "-aet", CALLING_AET, "-aec", ONCOPACS_AET, "+sd", "127.0.0.1", str(cluster.front),
                 str(folder)], env=DCMTK_ENV, stdout=out, stderr=subprocess.STDOUT))
    client_cpu = 0.0
    for proc in clients:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        client_cpu += usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - start
    jiffies1 = machine_jiffies()
    cpu = {name: (process_cpu(pid) or 0.0) - before[name]
           for name, pid in zip(before, [*cluster.node_pids, cluster.haproxy_pid], strict=True)}
    cpu["postgres"], backends = sampler.stop()
    cpu["storescu"] = client_cpu
    for i, proc in enumerate(clients):
        output = (workdir / f"storescu{i}.log").read_text(errors="replace")
        ok = len(re.findall(r"Received Store Response \(Success\)", output))
        if proc.returncode != 0 or ok != per_client:
            errors = [line for line in output.splitlines() if line.startswith(("E:", "F:"))][:10]
            raise BenchError(f"storescu {i}: exit {proc.returncode}, {ok}/{per_client} with Success\n"
                             + "\n".join(errors))
    engine = sqlalchemy.create_engine(server_url)
    with engine.connect() as connection:
        held = connection.scalar(sqlalchemy.text(f'SELECT count(*) FROM "{schema}".instances'))
    engine.dispose()
    total = per_client * len(dirs)
    if held != total:
        raise BenchError(f"{nodes} node(s) acknowledged {total} instances but the index holds {held}")
    busy, iowait, idle = (
        (after - first) / CLK_TCK / wall for after, first in zip(jiffies1, jiffies0, strict=True))
    return RunResult(nodes, total, wall, cpu, backends, busy, iowait, idle)


# Summary and output


def summarise(runs: list[RunResult], node_cores: float, nproc: int) -> dict:
    """Medians over the rounds of one set-up, per-instance CPU and the projection inputs."""
    rates = [r.rate for r in runs]
    names = list(runs[0].cpu_s)
    cpu = {name: statistics.median(r.cpu_s[name] for r in runs) for name in names}
    per_instance = statistics.median(sum(r.cpu_s.values()) / r.instances for r in runs)       # c_k
    node_per_instance = statistics.median(
        sum(v for n, v in r.cpu_s.items() if n.startswith("node")) / r.instances for r in runs)  # n_k
    nodes = runs[0].nodes
    projected = nodes * node_cores / node_per_instance
    return {
        "nodes": nodes, "rates": rates, "rate": statistics.median(rates), "wall_s": statistics.median(
            r.wall_s for r in runs), "cpu_s": cpu, "backends": max(r.backends for r in runs),
        "cpu_ms_per_instance": {n: 1000 * statistics.median(r.cpu_s[n] / r.instances for r in runs) for n in names},
        "c_ms": 1000 * per_instance, "n_ms": 1000 * node_per_instance,
        "attributed_cores": statistics.median(sum(r.cpu_s.values()) / r.wall_s for r in runs),
        "machine_busy": statistics.median(r.machine_busy for r in runs),
        "machine_iowait": statistics.median(r.machine_iowait for r in runs),
        "machine_idle": statistics.median(r.machine_idle for r in runs),
        "node_utilisation": [statistics.median(r.cpu_s[f"node{i}"] / r.wall_s for r in runs)
                             for i in range(1, nodes + 1)],
        "core_bound_rate": nproc / per_instance,
        "projected_rate": projected, "projected_cores": projected * per_instance,
    }


def render(report: dict) -> str:
    s1, s2 = report["setups"]["1"], report["setups"]["2"]
    lines = [machine_line("OncoPACS scale-out: DIMSE ingest through HAProxy", report["machine"]), ""]
    lines.append(f"{report['clients']} storescu x {report['instances']} CT instances {report['rows']}x"
                 f"{report['rows']} (one study each, one association each), role dimse, {report['rounds']} round(s)")
    lines.append(f"  {'nodes':<6} {'instances/s':>12} {'(min-max)':>16} {'wall s':>8}   per round")
    for s in (s1, s2):
        spread = f"({min(s['rates']):.1f}-{max(s['rates']):.1f})"
        lines.append(f"  {s['nodes']:<6} {s['rate']:>12.1f} {spread:>16} {s['wall_s']:>8.2f}   "
                     + " ".join(f"{r:.1f}" for r in s["rates"]))
    lines.append(f"  measured 2 nodes / 1 node on this machine: {fmt_ratio(s2['rate'] / s1['rate'])}")
    lines.append("")
    lines.append("CPU-seconds per run (median) and CPU-ms per instance")
    lines.append(f"  {'process':<22} {'1 node s':>9} {'ms/inst':>8}   {'2 nodes s':>9} {'ms/inst':>8}")
    for name in s2["cpu_s"]:
        label = {"postgres": f"postgres ({s2['backends']} backends)", "storescu": "storescu (all 4)"}.get(name, name)
        one = (f"{s1['cpu_s'][name]:>9.2f} {s1['cpu_ms_per_instance'][name]:>8.2f}" if name in s1["cpu_s"]
               else f"{'-':>9} {'-':>8}")
        lines.append(f"  {label:<22} {one}   {s2['cpu_s'][name]:>9.2f} {s2['cpu_ms_per_instance'][name]:>8.2f}")
    lines.append(f"  {'total c_k':<22} {'':>9} {s1['c_ms']:>8.2f}   {'':>9} {s2['c_ms']:>8.2f}")
    lines.append(f"  {'nodes n_k':<22} {'':>9} {s1['n_ms']:>8.2f}   {'':>9} {s2['n_ms']:>8.2f}")
    lines.append("")
    lines.append("Cores over the run (median): attributed = CPU / wall; machine from /proc/stat")
    nproc = report["machine"]["nproc"]
    for s in (s1, s2):
        nodes = " ".join(f"{u:.2f}" for u in s["node_utilisation"])
        waiting = s["machine_idle"] + s["machine_iowait"]
        verdict = ("bound by cores: no core waits, so no lock or single consumer holds the nodes back"
                   if waiting < 0.1 * nproc else
                   f"{waiting:.2f} cores wait (idle or on the disk): a lock, fsync or the network limits the rate")
        lines.append(f"  {s['nodes']} node(s): attributed {s['attributed_cores']:.2f}, machine busy "
                     f"{s['machine_busy']:.2f} (other work {s['machine_busy'] - s['attributed_cores']:.2f}) "
                     f"iowait {s['machine_iowait']:.2f} idle {s['machine_idle']:.2f} of {nproc}; "
                     f"each node CPU/wall {nodes}")
        lines.append(f"    {verdict}")
    lines.append(f"  nodes' CPU per instance, 2 nodes / 1 node: {fmt_ratio(s2['n_ms'] / s1['n_ms'])} "
                 "(near 1.00x: a second node adds no coordination cost)")
    lines.append("")
    lines.append("Projection (formula in the docstring)")
    for s in (s1, s2):
        lines.append(f"  {s['nodes']} node(s): core-bound here {report['machine']['nproc']} / c_k = "
                     f"{s['core_bound_rate']:.1f}/s; enough cores, {report['node_cores']:.1f} core per node: "
                     f"{s['projected_rate']:.1f}/s using {s['projected_cores']:.1f} cores")
    lines.append(f"  projected 2-node speed-up with enough cores: 2 x n_1 / n_2 = "
                 f"{fmt_ratio(s2['projected_rate'] / s1['projected_rate'])}")
    lines.append("")
    lines.extend(notes_lines(report["notes"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=400,
                        help="instances per storescu process (default 400: ~10-20 s a run on 2 cores)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent storescu processes (default 4)")
    parser.add_argument("--rows", type=int, default=128, help="CT rows = columns (default 128: ~32 KiB a slice)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per set-up (default 5); the median is shown")
    parser.add_argument("--node-cores", type=float, default=1.0,
                        help="cores one node process can use, for the projection (default 1.0: one GIL)")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL server URL (a schema is made per run)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 60 instances per client, 1 round")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench",
                        help="generated instances and the runs' data directories (default .bench/, git-ignored)")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.rounds = 60, 1
    if min(args.instances, args.clients, args.rows, args.rounds) < 1 or args.node_cores <= 0:
        parser.error("--instances, --clients, --rows, --rounds and --node-cores must be positive")
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    for tool in (STORESCU, ECHOSCU, haproxy):
        if not os.access(tool, os.X_OK):
            print(f"benchmark: {tool} not found (apt-get install dcmtk haproxy)", file=sys.stderr)
            return 2
    from oncopacs import __version__ as oncopacs_version

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    dirs = [ensure_dataset(args.cache_dir, f"scale-ct-{args.instances}-{args.rows}-c{i}", args.instances, 1,
                           args.rows, args.rows, f"BSCALE{i}") for i in range(args.clients)]
    base = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache_dir))
    runs: dict[int, list[RunResult]] = {1: [], 2: []}
    try:
        for rnd in range(1, args.rounds + 1):
            for nodes in ((1, 2) if rnd % 2 else (2, 1)):
                workdir = base / f"r{rnd}-n{nodes}"
                with scratch_schema(args.url) as (schema, url):
                    cluster = start_cluster(nodes, workdir, url, haproxy)
                    try:
                        result = ingest(cluster, nodes, dirs, args.instances, args.url, schema, workdir)
                    finally:
                        cluster.stop()
                runs[nodes].append(result)
                log(f"round {rnd}/{args.rounds} {nodes} node(s): {result.instances} instances in "
                    f"{result.wall_s:.2f} s = {result.rate:.1f}/s, CPU " + ", ".join(
                        f"{n} {v:.1f} s" for n, v in result.cpu_s.items()))
                shutil.rmtree(workdir, ignore_errors=True)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    machine = machine_info()
    report = {
        "machine": machine, "clients": args.clients, "instances": args.instances, "rows": args.rows,
        "rounds": args.rounds, "node_cores": args.node_cores,
        "versions": {"oncopacs": oncopacs_version, "haproxy": first_line([haproxy, "-v"])},
        "setups": {str(k): summarise(v, args.node_cores, machine["nproc"] or 1) for k, v in runs.items()},
        "notes": [
            "every process of the cluster and the clients runs on this machine, which other work may share: "
            "machine busy minus attributed is that other work plus PostgreSQL's shared processes.",
            "each node fsyncs each file and commits its index row before acknowledging (as in ingest.py); "
            "iowait is time the cores had nothing to run while waiting for the disk.",
            "PostgreSQL backends are those with the nodes' application_name, sampled every 0.2 s; WAL writer, "
            "checkpointer and background writer are not attributed.",
            "the projection assumes the work divides evenly between the nodes and each node is limited to "
            "--node-cores cores (one Python interpreter lock); PostgreSQL and the clients scale with connections.",
        ],
    }
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
