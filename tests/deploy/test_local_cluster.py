"""deploy/local-cluster: two nodes behind HAProxy; store through one, retrieve byte-identical through the other.

The script starts two ``oncopacs serve`` nodes on one PostgreSQL schema and one data directory, and HAProxy in front
(HTTP mode for the web, TCP mode for DIMSE). Instances go in through HAProxy's DICOM port (to whichever node it
picks) and come back through HAProxy's HTTP port and from each node directly, so each node serves what either
stored; a browser session signed in on one node is good on the other.

With RabbitMQ on loopback the cluster also runs its two ``oncopacs worker`` processes (a queue of this module's own):
a job queued through one node runs in a worker process, and the RT analysis of a plan stored on one node is served
by the other. One cluster serves the whole module.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import sqlalchemy
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive.part10 import dataset_offset
from oncopacs.jobs.models import Job
from rt.dose import build_rt_dose
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, empty_database, require, shared_data
from tests.deploy.cluster_script import SCRIPT, free_base, read_start_lines, retrieve_study, stop_script
from tests.factories import part10_bytes, small_ct_series
from tests.jobs.test_queue_engine import delete_queue, listening
from tests.rt.helpers import read_nrrd_dose
from tests.rt.test_real_data import read_eclipse_table

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
JOB_SECONDS = 240  # a queued job (the Eclipse plan's DVHs take the longest) until it finished
USER = "clusteradmin"
PASSWORD = "cluster-password-1"
RABBITMQ_URL, RABBITMQ_PORT = "amqp://guest:guest@127.0.0.1:5672//", 5672


@dataclass(frozen=True, slots=True)
class Cluster:
    """A running local cluster: its ports (all on 127.0.0.1), index, data directory, queue and script."""

    front_http: int
    front_dicom: int
    node_http: tuple[int, int]
    node_dicom: tuple[int, int]
    database_url: str
    data_dir: Path
    queue_name: str  # the broker queue its workers take jobs from; "" when RabbitMQ is not here (no workers)
    script_pid: int
    log: Path  # the script's and its processes' standard error








@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_ok: bool) -> Iterator[Cluster]:
    """One cluster for the module: with RabbitMQ here, its workers take jobs from a queue of their own."""
    require(Path(HAPROXY).exists(), "haproxy is not installed (apt-get install haproxy)")
    folder = tmp_path_factory.mktemp("local-cluster")
    queue_name = f"oncopacs-cluster-{uuid.uuid4().hex[:12]}" if listening(RABBITMQ_PORT) else ""
    with empty_database("postgresql", folder, postgres_ok) as url:
        base, data_dir, log = free_base(), folder / "cluster", folder / "cluster.log"
        bin_dir = Path(sys.executable).parent
        env = {name: value for name, value in os.environ.items() if not name.startswith("ONCOPACS_")}
        env.update(ONCOPACS_DATABASE_URL=url, LOCAL_CLUSTER_DIR=str(data_dir), LOCAL_CLUSTER_PORT=str(base),
                   ONCOPACS=str(bin_dir / "oncopacs"), HAPROXY=HAPROXY, PATH=f"{bin_dir}:{env.get('PATH', '')}",
                   ONCOPACS_AUDIT_SPOOL_BYTES=str(TEST_AUDIT_SPOOL_BYTES))
        if queue_name:
            env.update(ONCOPACS_QUEUE_URL=RABBITMQ_URL, ONCOPACS_QUEUE_NAME=queue_name)
        with log.open("wb") as stderr:
            process = subprocess.Popen([str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
                                       start_new_session=True)
        try:
            line = read_start_lines(process, log)["front"]
            ports = [int(port) for port in re.findall(r"\d+", line)]
            assert ports[:6] == [base, base + 1, base + 2, base + 4, base + 3, base + 5], line
            user = subprocess.run([str(bin_dir / "oncopacs"), "user", "add", "clusteradmin", "--role", "admin",
                                   "--password-stdin"], input=PASSWORD + "\n", env={**env, "ONCOPACS_DATA_DIR":
                                   str(data_dir)}, capture_output=True, text=True, timeout=60)
            assert user.returncode == 0, user.stderr[-2000:]
            yield Cluster(base, base + 1, (base + 2, base + 4), (base + 3, base + 5), url, data_dir, queue_name,
                          process.pid, log)
        finally:
            stop_script(process)
            if queue_name:
                delete_queue(RABBITMQ_URL, queue_name)




def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"clusteradmin:{PASSWORD}".encode()).decode()}




def test_store_through_one_node_retrieve_byte_identical_through_the_other(cluster: Cluster):
    series = small_ct_series(4, prefix="LC")
    ae = AE(ae_title="CLUSTERSCU")
    ae.add_requested_context(CTImageStorage, [str(series[0].file_meta.TransferSyntaxUID)])
    for dataset in series:  # one association each: HAProxy spreads them over both nodes
        association = ae.associate("127.0.0.1", cluster.front_dicom, ae_title="ONCOPACS")
        assert association.is_established
        assert association.send_c_store(dataset).Status == 0
        association.release()

    study_uid = str(series[0].StudyInstanceUID)
    sent = {str(ds.SOPInstanceUID): part10_bytes(ds) for ds in series}
    node_a, node_b = (retrieve_study(port, study_uid, USER, PASSWORD) for port in cluster.node_http)
    # round robin: both nodes
    through_front = [retrieve_study(cluster.front_http, study_uid, USER, PASSWORD) for _ in range(2)]
    assert set(node_a) == set(node_b) == set(sent)
    for uid, data in sent.items():
        assert node_a[uid] == node_b[uid] == through_front[0][uid] == through_front[1][uid]
        assert node_a[uid][dataset_offset(node_a[uid]):] == data[dataset_offset(data):]


def test_a_session_signed_in_on_one_node_is_good_on_the_other(cluster: Cluster):
    node_a, node_b = cluster.node_http
    jar = http.cookiejar.CookieJar()  # cookies ignore ports: node B gets node A's session cookie
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"http://127.0.0.1:{node_a}/login", timeout=30) as page:
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.read().decode()).group(1)
    form = urllib.parse.urlencode({"csrf_token": token, "username": "clusteradmin", "password": PASSWORD,
                                   "totp": ""}).encode()
    with browser.open(f"http://127.0.0.1:{node_a}/login", data=form, timeout=30) as signed_in:
        assert signed_in.status == 200 and not signed_in.url.endswith("/login")

    def query() -> urllib.request.Request:  # a new one each time: the cookie processor adds its header to it
        return urllib.request.Request(f"http://127.0.0.1:{node_b}/dicom-web/studies",
                                      headers={"Accept": "application/dicom+json"})

    with browser.open(query(), timeout=30) as reply:
        assert reply.status in (200, 204)
    with pytest.raises(urllib.error.HTTPError) as refused:  # without the cookie: refused, so the session counted
        urllib.request.urlopen(query(), timeout=30)
    refused.value.close()
    assert refused.value.code == 401


# -- jobs: queued through one node, run by a worker process, read through the other ---------------------------

def _send(port: int, datasets: list[Dataset]) -> None:
    """C-STORE ``datasets`` in one association straight to the node whose DICOM port is ``port``."""
    ae = AE(ae_title="CLUSTERSCU")
    ae.dimse_timeout = ae.network_timeout = 120  # a 2.5 MB RT Dose on a loaded machine
    for sop_class, syntax in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}:
        ae.add_requested_context(sop_class, [syntax])
    association = ae.associate("127.0.0.1", port, ae_title="ONCOPACS")
    assert association.is_established
    try:
        for dataset in datasets:
            assert association.send_c_store(dataset).Status == 0, dataset.SOPClassUID.name
    finally:
        association.release()


def _api(port: int, path: str, body: dict | None = None) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a GET, or with ``body`` a POST, to 127.0.0.1:``port`` as the administrator."""
    headers = {**_basic(), "Accept": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.status, json.loads(reply.read())


def _finished_jobs(cluster: Cluster, port: int, kind: str, wanted) -> list[dict]:
    """The ``kind`` jobs that ``wanted(job)`` picks, as node ``port`` lists them, once there are some and all of them
    finished (fails after JOB_SECONDS)."""
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        jobs = [job for job in _api(port, f"/api/jobs?kind={kind}&limit=100")[1]["jobs"] if wanted(job)]
        if jobs and all(job["status"] in ("succeeded", "failed") for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            pytest.fail(f"{kind} jobs not finished after {JOB_SECONDS} s: {jobs}; "
                        f"{cluster.log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def _cluster_processes(cluster: Cluster) -> dict[int, str]:
    """Every process below the script, by pid: ``serve``, ``worker`` or ``other`` (HAProxy), as its top-most
    ancestor below the script was started (``oncopacs serve ...``, ``oncopacs worker``)."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except (OSError, IndexError, ValueError):  # ended meanwhile
                continue
            table[int(entry.name)] = (ppid, argv)
    roles: dict[int, str] = {}
    for pid in table:
        child, parent = pid, table[pid][0]
        while parent in table and parent != cluster.script_pid:
            child, parent = parent, table[parent][0]
        if parent == cluster.script_pid:
            argv = table[child][1]
            roles[pid] = next((word for word in ("serve", "worker") if word in argv), "other")
    return roles


def _assert_run_by_a_worker_process(cluster: Cluster, job_id: int) -> None:
    """The job's lease holder (``host:pid:claim``, kept once it finished) is an ``oncopacs worker`` process of the
    cluster, claimed once; a serve node's embedded worker takes no lease (and does not run with a queue engine)."""
    engine = sqlalchemy.create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            owner, attempts = connection.execute(
                sqlalchemy.select(Job.lease_owner, Job.attempts).where(Job.id == job_id)).one()
    finally:
        engine.dispose()
    assert owner, f"job {job_id} has no lease holder: no queue worker claimed it"
    host, pid, _claim = owner.split(":")
    roles = _cluster_processes(cluster)
    assert sorted(role for role in roles.values() if role != "other").count("serve") >= 2, roles  # both nodes seen
    assert host == socket.gethostname()[:24] and roles.get(int(pid)) == "worker", (owner, roles)
    assert attempts == 1


def _instances_indexed(cluster: Cluster) -> int:
    engine = sqlalchemy.create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT count(*) FROM instances")).scalar_one()
    finally:
        engine.dispose()


def test_a_job_queued_through_one_node_runs_in_a_worker_process(cluster: Cluster):
    require(bool(cluster.queue_name), "RabbitMQ is not reachable on 127.0.0.1:5672 (the cluster runs no workers)")
    _send(cluster.node_dicom[0], small_ct_series(3, prefix="LJ"))
    status, created = _api(cluster.node_http[0], "/api/jobs", {"kind": "verify"})
    # a worker may take it before the reply is written: the message is sent before the request returns
    assert status == 202 and created["status"] in ("queued", "running", "succeeded"), created

    (job,) = _finished_jobs(cluster, cluster.node_http[1], "verify", lambda j: j["id"] == created["id"])
    assert job["status"] == "succeeded", job["message"]
    assert _api(cluster.node_http[1], f"/api/jobs/{job['id']}")[1] == job
    assert job["result"]["ok"] is True and job["result"]["checked"] == _instances_indexed(cluster) >= 3
    assert job["created_by"] == "clusteradmin"
    _assert_run_by_a_worker_process(cluster, job["id"])


def _eclipse_planning_set() -> list[Dataset]:
    """Eclipse's structure set and plan (real files), and its dose (Eclipse's NRRD export) as an RT Dose of that plan,
    in the order a planning system sends them."""
    folder = shared_data("eclipse-prostate-phantom")
    structures = pydicom.dcmread(next(folder.glob("RS*.dcm")))
    plan = pydicom.dcmread(next(folder.glob("RP*.dcm")))
    dose = build_rt_dose(read_nrrd_dose(folder / "aux" / "EclipseProstate_Dose.nrrd"), plan, summation_type="PLAN",
                         series_description="Eclipse plan dose (from the NRRD export)")
    dose.FrameOfReferenceUID = structures.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = plan.SOPClassUID, plan.SOPInstanceUID
    dose.ReferencedRTPlanSequence = Sequence([reference])
    return [structures, plan, dose]


def test_the_rt_analysis_of_a_plan_stored_on_one_node_is_served_by_the_other(cluster: Cluster):
    require(bool(cluster.queue_name), "RabbitMQ is not reachable on 127.0.0.1:5672 (the cluster runs no workers)")
    structures, plan, dose = _eclipse_planning_set()
    study_uid = str(plan.StudyInstanceUID)
    _send(cluster.node_dicom[0], [structures, plan, dose])  # node 1's ingest rule queues the analysis

    jobs = _finished_jobs(cluster, cluster.node_http[1], "rt_analysis",
                          lambda j: j["params"].get("study_instance_uid") == study_uid)
    assert all(job["status"] == "succeeded" for job in jobs), [job["message"] for job in jobs]
    for job in jobs:
        _assert_run_by_a_worker_process(cluster, job["id"])

    status, results = _api(cluster.node_http[1], f"/api/studies/{study_uid}/rt")
    assert status == 200, results
    (planning_set,) = results["planning_sets"]
    assert planning_set["computed"] is True
    assert planning_set["inputs"]["dose_uid"] == dose.SOPInstanceUID
    assert planning_set["plan"]["fractions"] == 23 and planning_set["plan"]["prescription_gy"] == pytest.approx(46.0)
    ptv = {roi["name"]: roi for roi in planning_set["dvh"]["rois"]}["PTV"]
    table_dose, table_percent, table_cc = read_eclipse_table("PTV")
    assert ptv["volume_cc"] == pytest.approx(table_cc, rel=0.03)
    for x in (95, 50):  # as Eclipse computed them, within 2 %
        eclipse_gy = float(np.interp(-x, -table_percent, table_dose))
        assert ptv["metrics"][f"D{x}%[Gy]"] == pytest.approx(eclipse_gy, rel=0.02)

    status, dvh = _api(cluster.node_http[1], f"/api/studies/{study_uid}/rt/dvh?roi=PTV")
    assert status == 200, dvh
    ((roi,),) = [s["rois"] for s in dvh["planning_sets"]]
    curve = roi["curve"]
    doses, percent = np.array(curve["dose_gy"]), np.array(curve["volume_percent"])
    assert roi["name"] == "PTV" and dvh["planning_sets"][0]["prescription_gy"] == pytest.approx(46.0)
    assert np.all(np.diff(doses) > 0) and np.all(np.diff(percent) <= 1e-6)  # cumulative: never rises
    assert percent[0] == pytest.approx(100.0) and percent[-1] == 0.0 and 46.0 < doses[-1] < 55.0
    assert float(np.interp(-95, -percent, doses)) == pytest.approx(ptv["metrics"]["D95%[Gy]"], rel=0.02)
