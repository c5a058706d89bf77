"""Two ``oncopacs serve`` nodes with nothing on disk in common: one PostgreSQL index and one S3 bucket.

With an object store the nodes need no shared file system: each has its own data directory (its staging folder,
crash marker), and shares only the index, the bucket, the secret key and the audit key. What one node stores over
DIMSE the other serves byte-identical over WADO-RS, and ``oncopacs verify`` on either finds every object whole.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive.part10 import dataset_offset
from oncopacs.dicomweb.multipart import read_multipart
from tests.conftest import ServerProcess, empty_database
from tests.factories import part10_bytes, small_ct_series

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "s3-nodes-password-1"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def two_nodes(tmp_path: Path, s3_endpoint: str, postgres_ok: bool) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    bucket = f"oncopacs-nodes-{os.getpid()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    with empty_database("postgresql", tmp_path, postgres_ok) as url:
        shared = tmp_path / "shared"
        shared.mkdir()
        env = {"ONCOPACS_DATABASE_URL": url, "ONCOPACS_STORAGE_URL": f"s3://{bucket}/nodes?endpoint={s3_endpoint}",
               "ONCOPACS_SECRET_KEY": "s3-nodes-secret", "ONCOPACS_AUDIT_KEY_FILE": str(shared / "audit-key")}
        first = ServerProcess(tmp_path / "node1", {**env, "ONCOPACS_NODE_NAME": "node1"})
        second = ServerProcess(tmp_path / "node2", {**env, "ONCOPACS_NODE_NAME": "node2"})
        try:
            first.start(60)  # creates the index's tables and the audit key; the second finds them
            second.start(60)
            added = subprocess.run([sys.executable, "-m", "oncopacs.cli", "user", "add", "nodeadmin", "--role",
                                    "admin", "--password-stdin"], input=PASSWORD + "\n", env=first.env,
                                   capture_output=True, text=True, timeout=60)
            assert added.returncode == 0, added.stderr[-2000:]
            yield first, second
        finally:
            first.kill()
            second.kill()


def test_store_on_one_node_retrieve_from_the_other_through_s3(two_nodes: tuple[ServerProcess, ServerProcess],
                                                              s3_endpoint: str) -> None:
    first, second = two_nodes
    datasets = small_ct_series(6, prefix="S3N")
    ae = AE(ae_title="S3NODES")
    ae.add_requested_context(CTImageStorage)
    association = ae.associate("127.0.0.1", first.dicom_port, ae_title="ONCOPACS")
    assert association.is_established
    try:
        assert [association.send_c_store(d).Status for d in datasets] == [0] * 6
    finally:
        association.release()

    authorization = "Basic " + base64.b64encode(f"nodeadmin:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{second.http_port}/dicom-web/studies/{datasets[0].StudyInstanceUID}",
        headers={"Authorization": authorization, "Accept": WADO_ACCEPT})
    with urllib.request.urlopen(request, timeout=30) as reply:
        body, content_type = reply.read(), reply.headers["Content-Type"]
    with read_multipart(io.BytesIO(body), content_type) as parts:
        served = [part.read_bytes() for part in parts.parts]
    sent = sorted(data[dataset_offset(data):] for data in map(part10_bytes, datasets))
    assert sorted(data[dataset_offset(data):] for data in served) == sent
    assert not (second.data_dir / "storage").exists()  # nothing of it on the second node's disk

    for node in (first, second):
        checked = subprocess.run([sys.executable, "-m", "oncopacs.cli", "verify"], env=node.env,
                                 capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("checked 6 file(s): 0 missing"), checked.stdout
