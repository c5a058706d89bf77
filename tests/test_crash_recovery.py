"""SIGKILL of ``oncopacs serve`` in the middle of a storescu transfer loses nothing acknowledged.

An instance whose Store Response was Success must survive a crash byte for byte; after the
restart's recovery, the storage area and the index must agree exactly (``oncopacs verify``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest

from oncopacs.archive.part10 import dataset_offset
from oncopacs.archive.storage import INCOMING_DIR, relative_path_for
from oncopacs.index.models import Instance
from oncopacs.phantom import build_benchmark_ct, write_datasets
from oncopacs.platform import open_archive
from oncopacs.settings import Settings
from tests.conftest import ServerProcess, dcmtk_tool

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

N_INSTANCES = 300
ROWS = COLS = 512
#: Per round: SIGKILL the server this many seconds after this many new acknowledgements (the
#: delays land the kill at different points of the next instance's ingest); the last round completes.
KILLS = ((N_INSTANCES // 3, 0.0), (N_INSTANCES // 4, 0.004), (N_INSTANCES // 6, 0.015), None)

SENDING = re.compile(r"Sending file: (.+?)\s*$")
RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")


def dataset_bytes(data: bytes) -> bytes:
    return data[dataset_offset(data) :]


def send_until(server: ServerProcess, files: list[Path], kill: tuple[int, float] | None) -> tuple[set[Path], str]:
    """storescu the files on one association; ``kill=(n, delay)``: SIGKILL the server ``delay``
    seconds after the n-th Success response, while storescu keeps sending.

    Returns the files storescu reported as stored (Success) and its whole output.
    """
    acknowledged: set[Path] = set()
    lines: list[str] = []
    current: Path | None = None
    killer: threading.Timer | None = None
    with subprocess.Popen(
        [dcmtk_tool("storescu"), "-v", "-R", "-aec", "ONCOPACS", "127.0.0.1", str(server.dicom_port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.append(line)
                if match := SENDING.search(line):
                    current = Path(match.group(1))
                elif match := RESPONSE.search(line):
                    assert current is not None, line
                    if match.group(1) == "Success":
                        acknowledged.add(current)
                    current = None
                    if kill is not None and len(acknowledged) == kill[0] and killer is None:
                        killer = threading.Timer(kill[1], server.kill)
                        killer.start()
            process.wait(60)
        finally:
            if killer is not None:
                killer.join(30)
            if process.poll() is None:
                process.kill()
    return acknowledged, "".join(lines)


def check_acknowledged_are_stored(data_dir: Path, acknowledged: set[Path]) -> int:
    """Every acknowledged file is indexed and stored with the sent dataset bytes; returns the index size."""
    archive = open_archive(Settings(data_dir=data_dir))
    try:
        with archive.index.reading() as session:
            rows = {
                uid: (path, sha)
                for uid, path, sha in session.query(Instance.sop_instance_uid, Instance.file_path, Instance.sha256)
            }
        missing, altered = [], []
        for sent in acknowledged:
            uid = str(pydicom.dcmread(sent, stop_before_pixels=True).SOPInstanceUID)
            if uid not in rows:
                missing.append(uid)
                continue
            file_path, sha256 = rows[uid]
            stored = archive.storage.read(file_path, expected_sha256=sha256)
            if dataset_bytes(stored) != dataset_bytes(sent.read_bytes()):
                altered.append(uid)
        assert not missing, f"{len(missing)} acknowledged instances are not in the index"
        assert not altered, f"{len(altered)} acknowledged instances were stored with other bytes"
        return len(rows)
    finally:
        archive.close()


def run_verify(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oncopacs.cli", "verify"],
        env={**os.environ, "ONCOPACS_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plant_orphan(data_dir: Path, source: Path) -> str:
    """What a kill between placing a file and committing its index row leaves: a stored file no
    row points at (plus a partial staged file). Returns the orphan's SOP Instance UID."""
    header = pydicom.dcmread(source, stop_before_pixels=True)
    storage = data_dir / "storage"
    target = storage / relative_path_for(header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    (storage / INCOMING_DIR / "interrupted.part").write_bytes(source.read_bytes()[:1000])
    return str(header.SOPInstanceUID)


def test_sigkill_during_storescu_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    files = write_datasets(build_benchmark_ct(N_INSTANCES, 3, rows=ROWS, cols=COLS, prefix="CRASH"), tmp_path / "input")
    data_dir = tmp_path / "served"
    acknowledged: set[Path] = set()
    servers: list[ServerProcess] = []
    orphan: Path | None = None
    try:
        for round_number, kill in enumerate(KILLS):
            server = ServerProcess(data_dir).start()  # fresh ports, same data directory
            servers.append(server)
            if round_number:
                log = server.log_path.read_text()
                assert "did not stop cleanly" in log, "the restart after SIGKILL did not run recovery"
                recovered = [int(n) for n in re.findall(r"recovery done: (\d+) file", log)]
                if round_number == 1:
                    assert recovered and recovered[-1] >= 1, log[-2000:]  # at least the planted orphan
                    assert orphan is not None and check_acknowledged_are_stored(data_dir, {orphan}) > 0
                assert not list((data_dir / "storage" / INCOMING_DIR).glob("*.part"))
                verified = run_verify(data_dir)
                assert verified.returncode == 0, verified.stdout + verified.stderr
                check_acknowledged_are_stored(data_dir, acknowledged)
            pending = [f for f in files if f not in acknowledged]
            stored, output = send_until(server, pending, kill)
            acknowledged |= stored
            if kill is not None:
                assert server.process is not None and server.process.returncode == -9
                # The kill came mid-transfer: storescu saw the association die, not a clean end.
                assert kill[0] <= len(stored) < len(pending), output[-2000:]
                if round_number == 0:
                    orphan = files[-1]  # far from the instance in flight at the kill
                    assert orphan not in acknowledged
                    plant_orphan(data_dir, orphan)
            else:
                # Everything not acknowledged before is stored now (the orphan's resend is a duplicate).
                assert stored == set(pending), output[-3000:]
        assert acknowledged == set(files)
        assert servers[-1].stop() == 0  # a clean stop this time
        assert not (data_dir / "serve.running").exists()
        assert check_acknowledged_are_stored(data_dir, acknowledged) == N_INSTANCES
        verified = run_verify(data_dir)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"checked {N_INSTANCES} file(s): 0 missing, 0 altered, 0 unreadable, 0 not indexed" in verified.stdout
    finally:
        for server in servers:
            server.kill()
