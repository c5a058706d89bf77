"""MLLP over TLS to the EHR: the ORU of an approved report, from the report delivery path to a TLS listener."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from hl7.mllp import start_hl7_server

from oncopacs.errors import ConfigError, RemoteNodeError
from oncopacs.platform import open_archive
from oncopacs.reports.deliveries import DeliveryStatus
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import TrialCertificates
from reporting.mllp import send_message
from reporting.oru import Hl7Destination
from reporting.workflow import ReportService
from tests.reporting.conftest import PHYSICIST, Clock, MllpListener, ingest_demo
from tests.tls.conftest import server_files


class TlsMllpListener(MllpListener):
    """The reporting tests' MLLP listener, speaking TLS; ``versions`` holds each connection's TLS version."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.context = context
        self.versions: list[str] = []

    async def _handle(self, reader, writer) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        self.versions.append(ssl_object.version() if ssl_object is not None else "plain")
        await super()._handle(reader, writer)

    def start(self) -> TlsMllpListener:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_hl7_server(self._handle, "127.0.0.1", 0, limit=64 * 1024 * 1024, ssl=self.context), self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self


@pytest.fixture
def listener(certs: TrialCertificates):
    """An MLLP receiver that requires a client certificate from the trial CA."""
    running = TlsMllpListener(server_files(certs, require_clients=True).server_context()).start()
    yield running
    running.stop()


def test_endpoints_parse() -> None:
    assert Hl7Destination.parse("tls://ehr.example:2575") == Hl7Destination("ehr.example", 2575, tls=True)
    assert Hl7Destination.parse("mllp://ehr.example:2575") == Hl7Destination("ehr.example", 2575)
    assert Hl7Destination.parse("ehr.example:2575").endpoint == "ehr.example:2575"
    assert Hl7Destination.parse("TLS://[::1]:2575").endpoint == "tls://::1:2575"
    for bad in ("https://ehr:2575", "tls://ehr", "tls://:2575", "ehr:0"):
        with pytest.raises(ConfigError):
            Hl7Destination.parse(bad)


def test_approved_report_arrives_over_tls_with_our_client_certificate(
        sqlite_settings: Settings, tmp_path: Path, certs: TrialCertificates, listener: TlsMllpListener) -> None:
    settings = sqlite_settings.with_overrides(
        hl7_endpoint=f"tls://localhost:{listener.port}", tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key), tls_ca=str(certs.ca))
    archive = open_archive(settings)
    try:
        demo = ingest_demo(archive)
        service = ReportService.from_settings(settings, archive, clock=Clock())
        report = service.approve(
            service.make("plan", str(demo.rt_ion_plan.StudyInstanceUID), "dr-physicist").id, PHYSICIST)
        deliveries = service.deliver_due()
    finally:
        archive.close()
    assert [(d.status, d.endpoint, d.ack_code) for d in deliveries] == [
        (DeliveryStatus.ACKNOWLEDGED, f"tls://localhost:{listener.port}", "AA")]
    assert len(listener.received) == 1 and listener.versions[0] in {"TLSv1.2", "TLSv1.3"}
    message = listener.received[0]
    assert str(message.segment("MSH")(9)) == "ORU^R01^ORU_R01"
    assert str(message.segment("MSH")(10)) == deliveries[0].message_control_id
    assert report.id == deliveries[0].report_id


ORU = "MSH|^~\\&|ONCOPACS|ONCOPACS|EHR|HOSP|20250114120000||ORU^R01^ORU_R01|TLS-1|P|2.5.1\r"


def test_a_receiver_we_do_not_trust_gets_nothing(stranger: TrialCertificates, certs: TrialCertificates) -> None:
    impostor = TlsMllpListener(server_files(stranger).server_context()).start()
    try:
        destination = Hl7Destination.parse(f"tls://localhost:{impostor.port}", timeout_s=5.0,
                                           ssl_context=TlsFiles(ca=certs.ca).client_context())
        with pytest.raises(RemoteNodeError, match="certificate not trusted"):
            send_message(destination, ORU)
        plain = Hl7Destination("localhost", impostor.port, timeout_s=5.0)  # MLLP in clear to a TLS receiver
        with pytest.raises(RemoteNodeError):
            send_message(plain, ORU)
    finally:
        impostor.stop()
    assert impostor.received == []


def test_our_certificate_is_needed_where_the_receiver_asks_for_one(certs: TrialCertificates,
                                                                   listener: TlsMllpListener) -> None:
    anonymous = Hl7Destination.parse(f"tls://127.0.0.1:{listener.port}", timeout_s=5.0,
                                     ssl_context=TlsFiles(ca=certs.ca).client_context())
    with pytest.raises(RemoteNodeError):
        send_message(anonymous, ORU)
    ours = Hl7Destination.parse(f"tls://127.0.0.1:{listener.port}", timeout_s=5.0,
                                ssl_context=TlsFiles(certs.server_cert, certs.server_key, certs.ca).client_context())
    assert send_message(ours, ORU).code == "AA"
    assert len(listener.received) == 1
