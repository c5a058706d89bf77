"""Driving ``deploy/local-cluster`` and reading studies back from a node: shared by the several-node tests."""

from __future__ import annotations

import base64
import io
import os
import selectors
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pytest

from oncopacs.dicomweb.multipart import read_multipart

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local-cluster"
START_SECONDS = 120  # two nodes one after the other, on a loaded machine
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def free_base() -> int:
    """The first of six consecutive free loopback ports (the script takes six from LOCAL_CLUSTER_PORT)."""
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


def read_start_lines(process: subprocess.Popen[bytes], log: Path) -> dict[str, str]:
    """The script's "front ..." and "pids ..." lines by their first word, once everything listens (fails when it
    exits or takes too long). Read straight from the pipe: a buffered reader could keep a line select never sees."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline, received = time.monotonic() + START_SECONDS, b""
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            piece = os.read(process.stdout.fileno(), 4096)
            received += piece
            lines = {line.split()[0]: line for line in received.decode(errors="replace").splitlines(keepends=True)
                     if line.startswith(("front ", "pids ")) and line.endswith("\n")}
            if len(lines) == 2:
                return lines
            if not piece:
                break
    pytest.fail(f"deploy/local-cluster did not start (exit status {process.poll()}): "
                f"{log.read_text(errors='replace')[-3000:]}")


def stop_script(process: subprocess.Popen[bytes]) -> None:
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


def retrieve_study(port: int, study_uid: str, user: str, password: str, timeout_s: float = 60) -> dict[str, bytes]:
    """WADO-RS of a whole study from 127.0.0.1:``port`` as ``user`` (HTTP Basic), by SOP Instance UID."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/dicom-web/studies/{study_uid}",
                                     headers={"Authorization": f"Basic {token}", "Accept": WADO_ACCEPT})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        assert reply.status == 200
        body, content_type = reply.read(), reply.headers["Content-Type"]
    with read_multipart(io.BytesIO(body), content_type) as parts:
        files = [part.read_bytes() for part in parts.parts]
    return {str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID): f for f in files}


def end_association(association: Any, transport: socket.socket | None) -> None:
    """Release ``association`` if it still stands, else abort it; then close its socket (``transport``, taken when
    it was established), which pynetdicom leaves open when its shutdown() fails because the peer dropped it."""
    if association.is_established:
        association.release()
    else:
        association.abort()
    if transport is not None:
        transport.close()
