"""What the benchmarks share: synthetic data sets, and starting and stopping OncoPACS, Orthanc and storescp.

Every peer runs on loopback in the same invocation as OncoPACS; dcmtk's tools (and Orthanc, built
on dcmtk) get ``TCP_NODELAY=1``, without which delayed ACKs cost ~45 ms per instance or query.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from report import log
from shared import shared_tool

REPO = Path(__file__).resolve().parents[1]
ORTHANC_PEER = shared_tool("orthanc-peer")
STORESCU = "/usr/bin/storescu"
FINDSCU = "/usr/bin/findscu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "Orthanc"

ONCOPACS_AET = "ONCOPACS"
ORTHANC_AET = "ORTHANC"
STORESCP_AET = "STORESCP"
CALLING_AET = "BENCHSCU"

# dcmtk's stack (Debian) waits on delayed ACKs without this; every dcmtk process gets it.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


class BenchError(RuntimeError):
    """A peer or tool failed; the message says which and why."""



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


def wait_until(check, what: str, timeout: float, alive=lambda: True) -> None:
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


def _request(url: str, user: tuple[str, str] | None = None) -> urllib.request.Request:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


def http_ok(url: str, user: tuple[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(_request(url, user), timeout=5) as response:
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
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


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
    stop: Callable[[], None] = field(repr=False)
    count_stored: Callable[[], int] | None = field(repr=False, default=None)  # files/instances the server holds
    http_port: int = 0


def start_oncopacs(workdir: Path, user: tuple[str, str] | None = None) -> Server:
    """``oncopacs serve`` on its embedded default; ``user`` (name, password) is created as an admin first."""
    data = workdir / "data"
    data.mkdir(parents=True)
    if user is not None:
        add_oncopacs_user(data, *user)
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
        if not storage.exists():
            return 0
        return sum(1 for p in storage.rglob("*.dcm") if ".incoming" not in p.parts)  # staged files are not stored

    return Server("OncoPACS", ONCOPACS_AET, dicom_port, workdir, stop, count, http_port)


def add_oncopacs_user(data_dir: Path, name: str, password: str) -> None:
    from oncopacs.auth.users import UserStore
    from oncopacs.platform import open_archive
    from oncopacs.settings import Settings

    archive = open_archive(Settings(data_dir=data_dir))
    try:
        UserStore(archive.index).add_user(name, "admin", password)
    finally:
        archive.close()


def start_orthanc(workdir: Path, *, dicomweb: bool = False, user: tuple[str, str] | None = None) -> Server:
    """Orthanc through orthanc-peer; with its DICOMweb plugin and HTTP Basic ``user`` when asked."""
    if not ORTHANC_PEER.exists():
        raise BenchError(f"{ORTHANC_PEER} is missing; it starts the Orthanc peer")
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    result = subprocess.run(
        [str(ORTHANC_PEER), str(workdir), str(dicom_port), str(http_port)]
        + (["--dicomweb"] if dicomweb else [])
        + (["--user", f"{user[0]}:{user[1]}"] if user else []),
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
        wait_until(lambda: http_ok(f"http://127.0.0.1:{http_port}/system", user), "Orthanc /system", 60,
                   alive=lambda: pid_alive(pid))
        wait_until(lambda: dicom_echo(ORTHANC_AET, dicom_port), "Orthanc C-ECHO", 30, alive=lambda: pid_alive(pid))
    except BenchError as exc:
        stop()
        raise BenchError(f"{exc}\n--- {workdir / 'orthanc.log'} ---\n{tail(workdir / 'orthanc.log')}") from None

    def count() -> int:
        with urllib.request.urlopen(_request(f"http://127.0.0.1:{http_port}/statistics", user), timeout=30) as response:
            return int(json.load(response)["CountInstances"])

    return Server("Orthanc", ORTHANC_AET, dicom_port, workdir, stop, count, http_port)


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


def settle() -> None:
    """Flush earlier rounds' dirty pages so they are not written back during a timed transfer."""
    os.sync()
    time.sleep(1.0)
