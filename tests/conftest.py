"""Shared fixtures: archives on SQLite and PostgreSQL, DIMSE servers on loopback, dcmtk tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy

from oncopacs.archive.ingest import Archive
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_SERVER_URL = os.environ.get("ONCOPACS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: The workplace's shared folder: ``../shared`` beside the repository, or ``ONCOPACS_SHARED_DIR``.
SHARED_DIR = Path(os.environ.get("ONCOPACS_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
SHARED_DATA = SHARED_DIR / "data"


def require(condition: bool, reason: str) -> None:
    """Skip when a peer or data set is missing locally; fail in CI, where everything must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def dcmtk_tool(name: str) -> str:
    """The path of a dcmtk program (not pynetdicom's same-named console scripts in the venv)."""
    path = Path("/usr/bin") / name
    if not path.exists():
        found = shutil.which(name)
        path = Path(found) if found and "site-packages" not in found and ".venv" not in found else path
    require(path.exists(), f"dcmtk's {name} is not installed (apt-get install dcmtk)")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_available() -> bool:
    try:
        engine = sqlalchemy.create_engine(POSTGRES_SERVER_URL)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


@pytest.fixture(scope="session")
def postgres_ok() -> bool:
    return _postgres_available()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def empty_database(backend: str, folder: Path, postgres_ok: bool) -> Iterator[str]:
    """An empty index database: a SQLite file, or a fresh schema on the PostgreSQL server."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'index.sqlite'}"
        return
    require(postgres_ok, "PostgreSQL is not reachable on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_SERVER_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_SERVER_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_ok: bool) -> Iterator[str]:
    with empty_database(request.param, tmp_path, postgres_ok) as url:
        yield url


TEST_SECRET_KEY = "test-secret"
TEST_AUDIT_SPOOL_BYTES = 64 * 1024  # the production reserve (16 MiB) in each of ~1,000 test data dirs is too much disk


@pytest.fixture(autouse=True)
def _small_audit_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read from the environment (the CLI, ``oncopacs serve`` subprocesses) reserve a small spool too."""
    monkeypatch.setenv("ONCOPACS_AUDIT_SPOOL_BYTES", str(TEST_AUDIT_SPOOL_BYTES))


@pytest.fixture(scope="module", params=BACKENDS)
def module_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    postgres_ok: bool) -> Iterator[Platform]:
    """One platform per module and back-end, for read-only tests over a shared data set."""
    folder = tmp_path_factory.mktemp("module-archive")
    with (
        empty_database(request.param, folder, postgres_ok) as url,
        open_platform(Settings(data_dir=folder / "data", database_url=url, dicom_host="127.0.0.1", dicom_port=0,
                               secret_key=TEST_SECRET_KEY, audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)) as platform,
    ):
        yield platform


@pytest.fixture(scope="module")
def module_archive(module_platform: Platform) -> Archive:
    return module_platform.archive


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, dicom_host="127.0.0.1", dicom_port=0,
                    secret_key=TEST_SECRET_KEY, audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings for tests that need only the embedded default."""
    return Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                    audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    """The whole platform (rules installed) on both index back-ends, as ``oncopacs serve`` opens it."""
    with open_platform(settings) as platform:
        yield platform


@pytest.fixture
def archive(platform: Platform) -> Archive:
    """The platform's archive: what is stored here meets the ingest rules, as in production."""
    return platform.archive


@pytest.fixture
def dimse_server(settings: Settings, archive: Archive) -> Iterator[tuple[str, int]]:
    """The DIMSE service of ``archive`` on an OS-assigned loopback port."""
    from oncopacs.dimse.server import start_dimse

    server = start_dimse(settings, archive)
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()


class ServerProcess:
    """``oncopacs serve`` in a subprocess, as an administrator would run it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.env = {
            **os.environ,
            "ONCOPACS_DATA_DIR": str(data_dir),
            "ONCOPACS_HTTP_PORT": str(self.http_port),
            "ONCOPACS_DICOM_PORT": str(self.dicom_port),
            "ONCOPACS_DICOM_HOST": "127.0.0.1",
            "ONCOPACS_AUDIT_SPOOL_BYTES": str(TEST_AUDIT_SPOOL_BYTES),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self._log = None
        self.log_path = data_dir.parent / f"serve-{self.dicom_port}.log"

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        """Launch ``oncopacs serve`` and wait until ``/health`` answers."""
        return self.launch().wait_healthy(timeout_s)

    def launch(self) -> ServerProcess:
        """Launch ``oncopacs serve`` without waiting for anything."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None or self._log.closed:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oncopacs.cli", "serve"], env=self.env, stdout=self._log, stderr=self._log
        )
        return self

    def wait_healthy(self, timeout_s: float = 30.0) -> ServerProcess:
        """Wait until ``/health`` answers 200; RuntimeError with the log's tail when the server exits or is late."""
        import urllib.request

        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oncopacs serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("oncopacs serve did not become healthy in time")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_log()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        code = self.process.returncode if self.process else 0
        if self.process and self.process.poll() is None:
            self.process.terminate()
            code = self.process.wait(20)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None and not self._log.closed:
            self._log.close()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "served")
    yield server
    server.kill()


def shared_data(*parts: str) -> Path:
    """A path under the shared folder's data/; skips locally (fails in CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    require(path.exists(), f"shared test data {path} is absent (set ONCOPACS_SHARED_DIR to the shared folder)")
    return path


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port (this process's thread), with test credentials in the environment
    (``oncopacs serve`` subprocesses inherit them)."""
    from moto.server import ThreadedMotoServer

    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                     "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="oncopacs-test", AWS_SECRET_ACCESS_KEY="oncopacs-test",
                      AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
