"""Report fixtures: the demo patient in an archive, a real MLLP listener and a FHIR endpoint on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hl7
import pytest
from hl7.mllp import start_hl7_server

from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Principal, Role
from oncopacs.phantom import DemoPatient, build_demo_patient
from oncopacs.reports.deliveries import RetryPolicy
from reporting.oru import Hl7Destination
from reporting.workflow import Destinations, ReportService
from tests.conftest import require

PHYSICIST = Principal("dr-physicist", Role.PHYSICIST, "test")


@lru_cache(maxsize=1)
def demo_patient() -> DemoPatient:
    return build_demo_patient()


def ingest_demo(archive: Archive) -> DemoPatient:
    patient = demo_patient()
    for dataset in patient.all_datasets():
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return patient


@pytest.fixture
def demo(archive: Archive) -> DemoPatient:
    """The demo phantom patient ingested into the (SQLite and PostgreSQL) ``archive``."""
    return ingest_demo(archive)


class Clock:
    """A settable UTC clock for back-off tests."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_service(archive: Archive, folder: Path, clock: Clock, *, hl7_port: int | None = None, fhir_url: str = "",
                 max_attempts: int = 3) -> ReportService:
    destination = Hl7Destination("127.0.0.1", hl7_port, timeout_s=5.0) if hl7_port else None
    return ReportService(archive, folder / "reports", Destinations(destination, fhir_url, timeout_s=5.0),
                         policy=RetryPolicy(max_attempts=max_attempts, base_delay_s=10.0, max_delay_s=60.0,
                                            lease_s=30.0),
                         clock=clock)


class MllpListener:
    """A real MLLP server (python-hl7) on loopback answering each message with the next scripted reply.

    Replies: "AA", "AE", "AR" (an ACK with that code) or "drop" (close without answering); the last
    one repeats. ``received`` holds every message parsed.
    """

    def __init__(self) -> None:
        self.replies: list[str] = ["AA"]
        self.received: list[hl7.Message] = []
        self.raw: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="mllp-listener", daemon=True)

    def _next_reply(self) -> str:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    async def _handle(self, reader, writer) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                self.received.append(message)
                self.raw.append(str(message))
                reply = self._next_reply()
                if reply == "drop":
                    break
                ack = message.create_ack(reply)
                if reply != "AA":  # MSA is the last segment: add MSA-3, the text message
                    ack = hl7.parse(str(ack).rstrip("\r") + f"|scripted {reply}")
                writer.writemessage(ack)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def start(self) -> MllpListener:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_hl7_server(self._handle, "127.0.0.1", 0, limit=64 * 1024 * 1024), self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def mllp() -> Iterator[MllpListener]:
    listener = MllpListener().start()
    yield listener
    listener.stop()


class FhirEndpoint:
    """A tiny FHIR server (http.server on loopback) recording POSTed bodies and answering scripted statuses."""

    def __init__(self) -> None:
        self.statuses: list[int] = [200]
        self.bodies: list[dict] = []
        self.content_types: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.bodies.append(json.loads(body))
                endpoint.content_types.append(self.headers.get("Content-Type", ""))
                status = endpoint.statuses.pop(0) if len(endpoint.statuses) > 1 else endpoint.statuses[0]
                if status < 300:
                    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": [
                        {"response": {"status": "201 Created"}}, {"response": {"status": "201 Created"}}]}
                else:
                    answer = {"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "invalid", "diagnostics": f"scripted {status}"}]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def fhir_endpoint() -> Iterator[FhirEndpoint]:
    endpoint = FhirEndpoint()
    yield endpoint
    endpoint.stop()


def pdf_text(pdf: bytes, folder: Path) -> str:
    """The PDF's text as poppler's pdftotext extracts it (pages separated by form feeds)."""
    require(shutil.which("pdftotext") is not None, "pdftotext is not installed (apt-get install poppler-utils)")
    path = folder / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def words_past_the_right_edge(pdf: bytes, folder: Path, margin_pt: float = 20.0) -> list[str]:
    """The words of the PDF that reach within ``margin_pt`` of any page's right edge (a table or line cut off)."""
    require(shutil.which("pdftotext") is not None, "pdftotext is not installed (apt-get install poppler-utils)")
    path = folder / "edges.pdf"
    path.write_bytes(pdf)
    boxes = subprocess.run(["pdftotext", "-bbox", str(path), "-"], capture_output=True, check=True,
                           timeout=60).stdout.decode()
    past = []
    for width, page in re.findall(r'<page width="([\d.]+)"[^>]*>(.*?)</page>', boxes, flags=re.S):
        past += [w for x, w in re.findall(r'xMax="([\d.]+)"[^>]*>([^<]+)</word>', page)
                 if float(x) > float(width) - margin_pt]
    return past
