"""Delivery to the EHR: HL7 ORU over a real MLLP listener, FHIR to a local HTTP endpoint, retries and restarts."""

from __future__ import annotations

import base64
import hashlib

import pytest

from oncopacs.errors import OncopacsError
from oncopacs.platform import open_archive
from oncopacs.reports.deliveries import DeliveryStatus
from reporting.diagnostic_report import validate_bundle
from tests.reporting.conftest import PHYSICIST, ingest_demo, make_service


@pytest.fixture
def final_report(sqlite_settings, tmp_path, clock, mllp, fhir_endpoint):
    """A final plan report of the demo patient on SQLite, with an MLLP and a FHIR destination."""
    archive = open_archive(sqlite_settings)
    demo = ingest_demo(archive)
    service = make_service(archive, tmp_path, clock, hl7_port=mllp.port, fhir_url=fhir_endpoint.url)
    report = service.approve(service.make("plan", str(demo.rt_ion_plan.StudyInstanceUID), "dr-physicist").id, PHYSICIST)
    yield service, report
    archive.close()


def _hl7(service, report_id):
    return [d for d in service.deliveries.for_report(report_id) if d.destination.value == "hl7"]


def test_oru_arrives_with_the_same_pdf_and_is_acknowledged(final_report, mllp, fhir_endpoint) -> None:
    service, report = final_report
    deliveries = service.deliver_due()
    assert {d.status for d in deliveries} == {DeliveryStatus.ACKNOWLEDGED}
    hl7_delivery = _hl7(service, report.id)[0]
    assert hl7_delivery.ack_code == "AA" and hl7_delivery.attempts == 1
    assert len(mllp.received) == 1
    message = mllp.received[0]
    assert str(message.segment("MSH")(9)) == "ORU^R01^ORU_R01" and str(message.segment("MSH")(12)) == "2.5.1"
    assert str(message.segment("MSH")(10)) == hl7_delivery.message_control_id
    assert str(message.segment("PID")(3)).startswith("ONCO-DEMO-001^")
    assert str(message.segment("OBR")(25)) == "F"
    obx = message.segment("OBX")
    assert str(obx(2)) == "ED" and str(obx(11)) == "F"
    value = obx(5)[0]
    assert [str(value[i]) for i in range(4)] == ["ONCOPACS", "AP", "PDF", "Base64"]
    assert base64.b64decode(str(value[4])) == service.read_pdf(report)  # the same file, byte for byte

    bundle = fhir_endpoint.bodies[0]
    assert fhir_endpoint.content_types[0] == "application/fhir+json"
    validate_bundle(bundle)
    diagnostic = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    study = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ImagingStudy")
    pdf = service.read_pdf(report)
    assert diagnostic["status"] == "final" and diagnostic["subject"]["identifier"]["value"] == "ONCO-DEMO-001"
    assert diagnostic["imagingStudy"] == [{"reference": study["fullUrl"]}]
    assert study["resource"]["identifier"][0]["value"] == f"urn:oid:{report.study_uid}"
    assert diagnostic["conclusion"] == report.conclusion and diagnostic["effectiveDateTime"].startswith("2024-01-15")
    form = diagnostic["presentedForm"][0]
    assert base64.b64decode(form["data"]) == pdf and form["size"] == len(pdf)
    assert form["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()
    assert bundle["entry"][1]["request"]["ifNoneExist"].endswith(_fhir(service, report.id).message_control_id)


def _fhir(service, report_id):
    return next(d for d in service.deliveries.for_report(report_id) if d.destination.value == "fhir")


def test_ae_is_retried_with_backoff_and_the_same_control_id(final_report, mllp, clock) -> None:
    service, report = final_report
    mllp.replies = ["AE", "AA"]
    service.deliver_due()
    first = _hl7(service, report.id)[0]
    assert first.status is DeliveryStatus.PENDING and first.ack_code == "AE" and "scripted AE" in first.last_error
    assert first.next_attempt_at > clock.now
    service.deliver_due()
    assert len(mllp.received) == 1  # not due yet: backing off
    clock.advance(11)
    service.deliver_due()
    done = _hl7(service, report.id)[0]
    assert done.status is DeliveryStatus.ACKNOWLEDGED and done.attempts == 2 and done.last_error == ""
    ids = {str(m.segment("MSH")(10)) for m in mllp.received}
    assert ids == {done.message_control_id}  # a retry reuses MSH-10, so the receiver can drop duplicates


def test_ar_is_rejected_and_not_retried(final_report, mllp, clock) -> None:
    service, report = final_report
    mllp.replies = ["AR"]
    service.deliver_due()
    clock.advance(3600)
    service.deliver_due()
    delivery = _hl7(service, report.id)[0]
    assert delivery.status is DeliveryStatus.REJECTED and delivery.ack_code == "AR" and delivery.attempts == 1
    assert "scripted AR" in delivery.last_error and len(mllp.received) == 1


def test_dropped_connection_retries_then_fails_logged_and_resend_by_hand(final_report, mllp, clock) -> None:
    service, report = final_report
    mllp.replies = ["drop"]
    for _ in range(3):  # max_attempts=3
        service.deliver_due()
        clock.advance(120)
    failed = _hl7(service, report.id)[0]
    assert failed.status is DeliveryStatus.FAILED and failed.attempts == 3
    assert "gave up after 3 attempt(s)" in failed.last_error and "closed the connection" in failed.last_error
    assert service.store.get(report.id).status.value == "final"  # the report is kept, nothing lost
    mllp.replies = ["AA"]
    deliveries = service.send(report.id, "dr-physicist")  # re-send by hand: a new delivery
    hl7_rows = _hl7(service, report.id)
    assert [d.status for d in hl7_rows] == [DeliveryStatus.FAILED, DeliveryStatus.ACKNOWLEDGED]
    assert hl7_rows[0].message_control_id != hl7_rows[1].message_control_id
    assert any(d.status is DeliveryStatus.ACKNOWLEDGED for d in deliveries)


def test_a_restart_resumes_an_in_flight_delivery_once(final_report, mllp, clock, sqlite_settings, tmp_path) -> None:
    service, _report = final_report
    claimed = service.deliveries.claim_due(clock.now)  # the process "dies" with these messages in flight
    assert {d.status for d in claimed} == {DeliveryStatus.SENT}
    restarted = make_service(service.archive, tmp_path, clock, hl7_port=mllp.port,
                             fhir_url=service.destinations.fhir_base_url)
    assert restarted.deliver_due() == []  # the lease has not expired: nobody sends it twice
    clock.advance(31)
    resumed = restarted.deliver_due()
    assert {d.status for d in resumed} == {DeliveryStatus.ACKNOWLEDGED} and len(resumed) == 2
    assert len(mllp.received) == 1
    assert str(mllp.received[0].segment("MSH")(10)) in {d.message_control_id for d in claimed}  # the same MSH-10
    assert restarted.deliver_due() == [] and len(mllp.received) == 1


def test_fhir_transient_error_retries_and_client_error_rejects(final_report, fhir_endpoint, clock) -> None:
    service, report = final_report
    fhir_endpoint.statuses = [503, 201]
    service.deliver_due()
    assert _fhir(service, report.id).status is DeliveryStatus.PENDING
    clock.advance(11)
    service.deliver_due()
    assert (_fhir(service, report.id).status is DeliveryStatus.ACKNOWLEDGED
            and _fhir(service, report.id).ack_code == "201")
    fhir_endpoint.statuses = [422]
    service.send(report.id, "dr-physicist")
    last = [d for d in service.deliveries.for_report(report.id) if d.destination.value == "fhir"][-1]
    assert last.status is DeliveryStatus.REJECTED and last.ack_code == "422" and "scripted 422" in last.last_error


def test_amendment_is_sent_as_a_correction(final_report, mllp, fhir_endpoint) -> None:
    service, report = final_report
    service.deliver_due()
    amended = service.approve(service.amend(report.id, "dr-physicist").id, PHYSICIST)
    service.deliver_due()
    assert str(mllp.received[-1].segment("OBX")(11)) == "C" and str(mllp.received[-1].segment("OBR")(25)) == "C"
    assert fhir_endpoint.bodies[-1]["entry"][1]["resource"]["status"] == "amended"
    assert amended.version == 2


def test_a_draft_cannot_be_sent(final_report) -> None:
    service, report = final_report
    draft = service.make("tumour-board", report.study_uid, "dr-physicist")
    with pytest.raises(OncopacsError):
        service.send(draft.id, "dr-physicist")
