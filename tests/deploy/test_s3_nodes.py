"""Two ``oncopacs serve`` nodes with nothing on disk in common: one PostgreSQL index and one S3 bucket.

With an object store the nodes need no shared file system: each has its own data directory (its staging folder,
crash marker), and shares only the index, the bucket, the secret key and the audit key. What one node stores over
DIMSE the other serves byte-identical over WADO-RS, and ``oncopacs verify`` on either finds every object whole.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from oncopacs.archive.part10 import dataset_offset
from tests.conftest import ServerProcess, empty_database
from tests.deploy.cluster_script import end_association, retrieve_study
from tests.factories import part10_bytes, small_ct_series

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "s3-nodes-password-1"


@pytest.fixture
def two_nodes(tmp_path: Path, s3_endpoint: str, postgres_ok: bool) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    bucket = f"oncopacs-nodes-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    with empty_database("postgresql", tmp_path, postgres_ok) as url:
        shared = tmp_path / "shared"
        shared.mkdir()
        env = {"ONCOPACS_DATABASE_URL": url, "ONCOPACS_STORAGE_URL": f"s3://{bucket}/nodes?endpoint={s3_endpoint}",
               "ONCOPACS_SECRET_KEY": "s3-nodes-secret", "ONCOPACS_AUDIT_KEY_FILE": str(shared / "audit-key")}
        first = ServerProcess(tmp_path / "node1", {**env, "ONCOPACS_NODE_NAME": "node1"})
        second: ServerProcess | None = None
        try:
            first.start(60)  # creates the index's tables and the audit key; the second finds them
            # its free ports are picked only now, while the first node's are taken (two picks could otherwise meet)
            second = ServerProcess(tmp_path / "node2", {**env, "ONCOPACS_NODE_NAME": "node2"})
            second.start(60)
            added = subprocess.run([sys.executable, "-m", "oncopacs.cli", "user", "add", "nodeadmin", "--role",
                                    "admin", "--password-stdin"], input=PASSWORD + "\n", env=first.env,
                                   capture_output=True, text=True, timeout=60)
            assert added.returncode == 0, added.stderr[-2000:]
            yield first, second
        finally:
            first.kill()
            if second is not None:
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

    served = retrieve_study(second.http_port, datasets[0].StudyInstanceUID, "nodeadmin", PASSWORD)
    sent = sorted(data[dataset_offset(data):] for data in map(part10_bytes, datasets))
    assert sorted(data[dataset_offset(data):] for data in served.values()) == sent
    assert not (second.data_dir / "storage").exists()  # nothing of it on the second node's disk

    for node in (first, second):
        checked = subprocess.run([sys.executable, "-m", "oncopacs.cli", "verify"], env=node.env,
                                 capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("checked 6 file(s): 0 missing"), checked.stdout


def test_kill_a_node_mid_ingest_then_recover_from_s3(two_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    """``kill -9`` a node while it stores into the bucket: every instance it acknowledged is served by the other node
    identical; its restart (the crash marker is its own) recovers confirmed objects whose rows were never written,
    and ``verify`` then finds nothing missing and nothing unindexed."""
    first, second = two_nodes
    datasets = small_ct_series(200, prefix="S3K")
    acknowledged: list[bytes] = []

    def send() -> None:
        ae = AE(ae_title="S3KILL")
        ae.add_requested_context(CTImageStorage)
        association = ae.associate("127.0.0.1", first.dicom_port, ae_title="ONCOPACS")
        assert association.is_established
        transport = getattr(association.dul.socket, "socket", None)
        try:
            for dataset in datasets:
                status = association.send_c_store(dataset)
                if "Status" not in status:
                    return  # the node is gone: what it did not answer was not acknowledged
                if status.Status == 0:
                    acknowledged.append(dataset.SOPInstanceUID.encode())
        except RuntimeError:  # the association ended between two stores
            return
        finally:
            end_association(association, transport)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.kill()
    sender.join(60)
    assert 40 <= len(acknowledged) < len(datasets), len(acknowledged)
    assert (first.data_dir / "serve-node1.running").exists()  # it died: its marker says so

    first.start(60)  # recovery runs before it listens
    served = retrieve_study(second.http_port, datasets[0].StudyInstanceUID, "nodeadmin", PASSWORD)
    sent = {d.SOPInstanceUID: part10_bytes(d) for d in datasets}
    for uid in (value.decode() for value in acknowledged):
        assert served[uid][dataset_offset(served[uid]):] == sent[uid][dataset_offset(sent[uid]):]
    checked = subprocess.run([sys.executable, "-m", "oncopacs.cli", "verify"], env=second.env,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"checked {len(served)} file(s): 0 missing, 0 altered, 0 unreadable, "
                                     "0 not indexed"), checked.stdout
