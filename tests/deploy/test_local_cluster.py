"""deploy/local-cluster: two nodes behind HAProxy; store through one, retrieve byte-identical through the other.

The script starts two ``oncopacs serve`` nodes on one PostgreSQL schema and one data directory, and HAProxy in front
(HTTP mode for the web, TCP mode for DIMSE). Instances go in through HAProxy's DICOM port (to whichever node it
picks) and come back through HAProxy's HTTP port and from each node directly, so each node serves what either
stored; a browser session signed in on one node is good on the other.
"""

from __future__ import annotations

import base64
import http.cookiejar
import io
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive.part10 import dataset_offset
from oncopacs.dicomweb.multipart import read_multipart
from tests.conftest import empty_database, require
from tests.factories import part10_bytes, small_ct_series

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local-cluster"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_SECONDS = 60
PASSWORD = "cluster-password-1"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass(frozen=True, slots=True)
class Cluster:
    """The ports of a running local cluster (all on 127.0.0.1)."""

    front_http: int
    front_dicom: int
    node_http: tuple[int, int]
    node_dicom: tuple[int, int]


def _free_base() -> int:
    """The first of six consecutive free ports."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base > 65000:
            continue
        try:
            for port in range(base, base + 6):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no six consecutive free ports")


def _read_front_line(process: subprocess.Popen[str]) -> str:
    """The script's "front ..." line, once everything listens (fails when it exits or takes too long)."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if line.startswith("front "):
                return line
            if not line:
                break
    pytest.fail(f"deploy/local-cluster did not start (exit status {process.poll()})")


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the script (it stops its nodes and HAProxy); its whole session if it does not end."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def cluster(tmp_path: Path, postgres_ok: bool) -> Iterator[tuple[Cluster, Path]]:
    require(Path(HAPROXY).exists(), "haproxy is not installed (apt-get install haproxy)")
    with empty_database("postgresql", tmp_path, postgres_ok) as url:
        base, data_dir = _free_base(), tmp_path / "cluster"
        bin_dir = Path(sys.executable).parent
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("ONCOPACS_") or name == "ONCOPACS_AUDIT_SPOOL_BYTES"}
        env.update(ONCOPACS_DATABASE_URL=url, LOCAL_CLUSTER_DIR=str(data_dir), LOCAL_CLUSTER_PORT=str(base),
                   ONCOPACS=str(bin_dir / "oncopacs"), HAPROXY=HAPROXY, PATH=f"{bin_dir}:{env.get('PATH', '')}")
        process = subprocess.Popen([str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True, start_new_session=True)
        try:
            line = _read_front_line(process)
            ports = [int(port) for port in re.findall(r"\d+", line)]
            assert ports == [base, base + 1, base + 2, base + 4, base + 3, base + 5], line
            user = subprocess.run([str(bin_dir / "oncopacs"), "user", "add", "clusteradmin", "--role", "admin",
                                   "--password-stdin"], input=PASSWORD + "\n", env={**env, "ONCOPACS_DATA_DIR":
                                   str(data_dir)}, capture_output=True, text=True, timeout=60)
            assert user.returncode == 0, user.stderr[-2000:]
            yield Cluster(base, base + 1, (base + 2, base + 4), (base + 3, base + 5)), data_dir
        finally:
            _stop(process)


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"clusteradmin:{PASSWORD}".encode()).decode()}


def _retrieve(port: int, study_uid: str) -> dict[str, bytes]:
    """WADO-RS of a whole study from 127.0.0.1:``port``, by SOP Instance UID."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/dicom-web/studies/{study_uid}",
                                     headers={**_basic(), "Accept": WADO_ACCEPT})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
        body, content_type = reply.read(), reply.headers["Content-Type"]
    with read_multipart(io.BytesIO(body), content_type) as parts:
        files = [part.read_bytes() for part in parts.parts]
    return {str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID): f for f in files}


def test_store_through_one_node_retrieve_byte_identical_through_the_other(cluster: tuple[Cluster, Path]):
    ports, _ = cluster
    series = small_ct_series(4, prefix="LC")
    ae = AE(ae_title="CLUSTERSCU")
    ae.add_requested_context(CTImageStorage, [str(series[0].file_meta.TransferSyntaxUID)])
    for dataset in series:  # one association each: HAProxy spreads them over both nodes
        association = ae.associate("127.0.0.1", ports.front_dicom, ae_title="ONCOPACS")
        assert association.is_established
        assert association.send_c_store(dataset).Status == 0
        association.release()

    study_uid = str(series[0].StudyInstanceUID)
    sent = {str(ds.SOPInstanceUID): part10_bytes(ds) for ds in series}
    node_a, node_b = (_retrieve(port, study_uid) for port in ports.node_http)
    through_front = [_retrieve(ports.front_http, study_uid) for _ in range(2)]  # round robin: both nodes
    assert set(node_a) == set(node_b) == set(sent)
    for uid, data in sent.items():
        assert node_a[uid] == node_b[uid] == through_front[0][uid] == through_front[1][uid]
        assert node_a[uid][dataset_offset(node_a[uid]):] == data[dataset_offset(data):]


def test_a_session_signed_in_on_one_node_is_good_on_the_other(cluster: tuple[Cluster, Path]):
    ports, _ = cluster
    node_a, node_b = ports.node_http
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
