"""deploy/local-cluster under a fault: ``kill -9`` of a DIMSE node during a 4-client ingest through HAProxy.

Four clients (pynetdicom, one thread each) send their share of a few hundred small CT instances through HAProxy's
DICOM front, 20 per association. Once a quarter are acknowledged, the node holding the most live associations is
killed with SIGKILL (its pid from the script's "pids ..." line) and started again at once under the same
ONCOPACS_NODE_NAME, so its crash recovery runs while the survivor takes the clients' stores. The clients resend what
failed on new associations (HAProxy sends them to a live node) and finish. Then: every acknowledged instance is in
the index once and comes back byte-identical through the survivor; the restarted node logged its recovery and serves
the same bytes; ``oncopacs verify`` finds the storage area and the index in agreement (nothing lost or left over).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive.part10 import dataset_offset
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, empty_database, require
from tests.deploy.cluster_script import (
    SCRIPT,
    end_association,
    free_base,
    read_start_lines,
    retrieve_study,
    stop_script,
)
from tests.factories import part10_bytes, small_ct_series

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
USER = "clusteradmin"
PASSWORD = "cluster-password-1"
START_SECONDS = 120  # two nodes one after the other, on a loaded machine
CLIENTS = 4
INSTANCES = 400          # 100 per client
PER_ASSOCIATION = 20     # instances sent on one association before it is released
INGEST_SECONDS = 240     # all clients done within this, kill and retries included
MAX_FAILURES = 200       # failed attempts a client allows itself; each retry waits RETRY_PAUSE_S
RETRY_PAUSE_S = 0.25


@dataclass(frozen=True, slots=True)
class FaultCluster:
    """A running local cluster: its ports (127.0.0.1), the nodes' process ids, and what a node needs to restart."""

    front_dicom: int
    node_http: tuple[int, int]
    node_dicom: tuple[int, int]
    node_pids: tuple[int, int]
    env: dict[str, str]
    data_dir: Path


@dataclass
class ClientLog:
    """What one client saw: SOP Instance UIDs acknowledged with status 0x0000, and failed attempts (retried)."""

    acked: list[str] = field(default_factory=list)
    failures: list[tuple[str, float]] = field(default_factory=list)  # (UID, time.monotonic())
    slowest: tuple[float, float] = (0.0, 0.0)  # (seconds, time.monotonic() at its start) of the slowest C-STORE
    error: str = ""










@pytest.fixture
def fault_cluster(tmp_path: Path, postgres_ok: bool) -> Iterator[FaultCluster]:
    require(Path(HAPROXY).exists(), "haproxy is not installed (apt-get install haproxy)")
    with empty_database("postgresql", tmp_path, postgres_ok) as url:
        base, data_dir = free_base(), tmp_path / "cluster"
        bin_dir = Path(sys.executable).parent
        env = {name: value for name, value in os.environ.items() if not name.startswith("ONCOPACS_")}
        env.update(ONCOPACS_DATABASE_URL=url, LOCAL_CLUSTER_DIR=str(data_dir), LOCAL_CLUSTER_PORT=str(base),
                   LOCAL_CLUSTER_KEEP_GOING="1", ONCOPACS=str(bin_dir / "oncopacs"), HAPROXY=HAPROXY,
                   PATH=f"{bin_dir}:{env.get('PATH', '')}", ONCOPACS_AUDIT_SPOOL_BYTES=str(TEST_AUDIT_SPOOL_BYTES))
        log = tmp_path / "cluster.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen([str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
                                       start_new_session=True)
        try:
            pids_line = read_start_lines(process, log)["pids"]
            found = dict(re.findall(r"(node1|node2|haproxy)=(\d+)", pids_line))
            assert set(found) == {"node1", "node2", "haproxy"}, pids_line
            node_env = {**env, "ONCOPACS_DATA_DIR": str(data_dir), "ONCOPACS_AUDIT_KEY_FILE": str(data_dir /
                        "audit-key"), "ONCOPACS_HTTP_HOST": "127.0.0.1", "ONCOPACS_DICOM_HOST": "127.0.0.1",
                        "ONCOPACS_PROXY_HOPS": "1"}
            user = subprocess.run([str(bin_dir / "oncopacs"), "user", "add", "clusteradmin", "--role", "admin",
                                   "--password-stdin"], input=PASSWORD + "\n", env=node_env, capture_output=True,
                                  text=True, timeout=60)
            assert user.returncode == 0, user.stderr[-2000:]
            yield FaultCluster(base + 1, (base + 2, base + 4), (base + 3, base + 5),
                               (int(found["node1"]), int(found["node2"])), node_env, data_dir)
        finally:
            stop_script(process)


def _established(port: int) -> int:
    """How many TCP connections to 127.0.0.1:``port`` are established (from /proc/net/tcp: the server's side)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        return sum(1 for row in table if (cols := row.split())[1] == local and cols[3] == "01")


def _client(port: int, datasets: list[Dataset], out: ClientLog, name: str) -> None:
    """Send ``datasets`` through 127.0.0.1:``port``; an instance whose store fails is resent on a new association."""
    ae = AE(ae_title=name)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15  # a lost reply costs a retry, not a failure
    ae.add_requested_context(CTImageStorage, [str(datasets[0].file_meta.TransferSyntaxUID)])
    pending, attempts = list(datasets), 0
    while pending:
        association = ae.associate("127.0.0.1", port, ae_title="ONCOPACS")
        transport = getattr(association.dul.socket, "socket", None)
        try:
            sent = 0
            while pending and sent < PER_ASSOCIATION and association.is_established:
                uid = str(pending[0].SOPInstanceUID)
                began = time.monotonic()
                try:
                    reply = association.send_c_store(pending[0])
                except RuntimeError:  # the association ended between the check and the send
                    reply = Dataset()
                out.slowest = max(out.slowest, (time.monotonic() - began, began))
                status = reply.get("Status") if reply else None
                if status != 0:
                    out.failures.append((uid, time.monotonic()))
                    break
                out.acked.append(uid)
                pending.pop(0)
                sent += 1
            else:
                if not association.is_established and pending:
                    out.failures.append(("(no association)", time.monotonic()))
        finally:
            end_association(association, transport)
        if len(out.failures) > attempts:
            attempts = len(out.failures)
            if attempts > MAX_FAILURES:
                out.error = f"{name}: gave up after {attempts} failed attempts"
                return
            time.sleep(RETRY_PAUSE_S)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _index_uids(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sqlalchemy.text("SELECT sop_instance_uid FROM instances")).scalars())
    finally:
        engine.dispose()


def _wait_health(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the restarted node exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 503 while it starts: close the reply it holds
            exc.close()
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("the restarted node did not answer /health")


def test_kill_9_of_a_dimse_node_loses_no_acknowledged_instance(fault_cluster: FaultCluster, tmp_path: Path):
    cluster = fault_cluster
    series = small_ct_series(INSTANCES, prefix="CF")
    sent = {str(ds.SOPInstanceUID): part10_bytes(ds) for ds in series}
    logs = [ClientLog() for _ in range(CLIENTS)]
    threads = [threading.Thread(target=_client, args=(cluster.front_dicom, series[i::CLIENTS], logs[i], f"FAULT{i}"),
                                daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()

    # Partway through, kill -9 the node with the most live associations.
    deadline = time.monotonic() + INGEST_SECONDS
    victim, acked_at_kill = -1, 0
    while time.monotonic() < deadline and victim < 0:
        acked_at_kill = sum(len(log.acked) for log in logs)
        live = [_established(port) for port in cluster.node_dicom]
        if acked_at_kill >= INSTANCES // 4 and max(live) > 0:
            victim = live.index(max(live))
            os.kill(cluster.node_pids[victim], signal.SIGKILL)
        else:
            time.sleep(0.02)
    assert victim >= 0, "no node held a live association after a quarter of the instances"
    assert acked_at_kill < INSTANCES, "the ingest ended before the kill"
    survivor, killed_at = 1 - victim, time.monotonic()

    # The killed node left its running marker; it starts again at once, under its name, while the clients go on
    # through the survivor: its crash recovery meets the survivor's stores in flight.
    name = f"node{victim + 1}"
    assert (cluster.data_dir / f"serve-{name}.running").exists()
    while _listening(cluster.node_dicom[victim]) and time.monotonic() < deadline:
        time.sleep(0.05)
    log_path = tmp_path / f"{name}-restart.log"
    with log_path.open("wb") as log_file:
        restarted = subprocess.Popen(
            [cluster.env["ONCOPACS"], "serve", "--http-port", str(cluster.node_http[victim]),
             "--dicom-port", str(cluster.node_dicom[victim])],
            env={**cluster.env, "ONCOPACS_NODE_NAME": name,
                 "ONCOPACS_AUDIT_CHECKPOINT_FILE": str(cluster.data_dir / name / "audit-checkpoints")},
            stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads), "the clients did not finish after the kill"
        assert [log.error for log in logs if log.error] == []
        finished_at = time.monotonic()
        acked = [uid for log in logs for uid in log.acked]
        failures = sorted(at for log in logs for _, at in log.failures)
        assert sorted(acked) == sorted(sent), "every instance was acknowledged once, after retries"
        assert failures, "the kill interrupted no store: it did not hit a live association"

        # Every acknowledged instance: in the index once, byte-identical through the survivor.
        url = cluster.env["ONCOPACS_DATABASE_URL"]
        assert sorted(_index_uids(url)) == sorted(sent)
        study_uid = str(series[0].StudyInstanceUID)
        through_survivor = retrieve_study(cluster.node_http[survivor], study_uid, USER, PASSWORD)
        assert set(through_survivor) == set(sent)
        for uid, data in sent.items():
            got = through_survivor[uid]
            assert got[dataset_offset(got):] == data[dataset_offset(data):], uid

        # The restarted node ran its crash recovery; nothing the survivor stored was lost or doubled.
        _wait_health(cluster.node_http[victim], restarted, log_path)
        log_text = log_path.read_text()
        assert "the previous run did not stop cleanly" in log_text, log_text[-2000:]
        recovered = re.search(r"recovery done: (\d+) file\(s\) re-indexed", log_text)
        assert recovered is not None, log_text[-2000:]
        print(f"killed {name} at {acked_at_kill}/{INSTANCES} acknowledged; {len(failures)} failed attempts, the last "
              f"{failures[-1] - killed_at:.1f} s after the kill; the clients finished {finished_at - killed_at:.1f} s "
              f"after the kill, {name} healthy again {time.monotonic() - killed_at:.1f} s after it; its recovery "
              f"re-indexed {recovered.group(1)} file(s)")
        slowest = max(log.slowest for log in logs)
        print(f"slowest C-STORE {slowest[0]:.1f} s, begun {slowest[1] - killed_at:.1f} s after the kill")
        assert sorted(_index_uids(url)) == sorted(sent)
        through_restarted = retrieve_study(cluster.node_http[victim], study_uid, USER, PASSWORD)
        assert through_restarted == retrieve_study(cluster.node_http[survivor], study_uid, USER, PASSWORD)
        verify = subprocess.run([cluster.env["ONCOPACS"], "verify"], env=cluster.env, capture_output=True,
                                text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
        assert f"checked {INSTANCES} file(s): 0 missing, 0 altered, 0 unreadable, 0 not indexed" in verify.stdout
    finally:
        restarted.send_signal(signal.SIGTERM)
        try:
            restarted.wait(timeout=30)
        except subprocess.TimeoutExpired:
            restarted.kill()
            restarted.wait()
