"""The report workflow: make a draft, approve it (archive + deliveries), amend it, send and re-send it.

- *make*: gather the type's data, store a draft, render its PDF (marked DRAFT on every page).
- *approve*: only a principal with ``reports.write``; the PDF is rendered again from the draft's
  stored data with the approval, stored as a DICOM Encapsulated PDF in the patient's study through
  :meth:`Archive.ingest_dataset`, and the report becomes final with one pending delivery per
  configured destination, in one transaction (an amended version is marked superseded there too).
- *amend*: a new draft version of a final report, with freshly gathered data.
- *deliver*: each due delivery is claimed, sent (HL7 ORU over MLLP, FHIR transaction Bundle) and its
  outcome logged; transient failures are retried with back-off by :class:`DeliveryLoop`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Permission, Principal
from oncopacs.errors import (
    OncopacsError,
    PermissionDeniedError,
    RemoteNodeError,
    StorageError,
)
from oncopacs.jobs.background import BackgroundLoop
from oncopacs.reports.deliveries import (
    FINISHED,
    DeliveryLog,
    DeliveryOutcome,
    DeliveryRecord,
    Destination,
    OutcomeKind,
    RetryPolicy,
)
from oncopacs.reports.store import (
    NewReport,
    ReportRecord,
    ReportStatus,
    ReportStore,
    utc_now,
)
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from reporting.diagnostic_report import FhirReport, build_bundle
from reporting.encapsulated import build_encapsulated_pdf
from reporting.fhir_client import post_bundle
from reporting.mllp import send_message
from reporting.oru import Hl7Destination, OruReport, build_oru
from reporting.render import ReportHeader, iso_utc, render_html, render_pdf
from reporting.subject import ReportSubject
from reporting.types import ReportRequest, report_type

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where final reports go: an MLLP receiver and/or a FHIR server (either may be absent)."""

    hl7: Hl7Destination | None = None
    fhir_base_url: str = ""
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Destinations:
        hl7 = (Hl7Destination.parse(settings.hl7_endpoint, sending_facility=settings.ae_title)
               if settings.hl7_endpoint else None)
        if hl7 is not None and hl7.tls:  # verified against tls_ca (else the system's CAs), our certificate shown
            hl7 = replace(hl7, ssl_context=TlsFiles.from_settings(settings).client_context())
        return cls(hl7, settings.fhir_base_url.strip())

    def pairs(self) -> list[tuple[str, str]]:
        """``(kind, endpoint)`` of each configured destination."""
        found = []
        if self.hl7 is not None:
            found.append((Destination.HL7.value, self.hl7.endpoint))
        if self.fhir_base_url:
            found.append((Destination.FHIR.value, self.fhir_base_url))
        return found


class ReportService:
    """Reports of one archive: their store, delivery log and destinations."""

    def __init__(self, archive: Archive, pdf_dir: Path, destinations: Destinations, *,
                 policy: RetryPolicy | None = None, clock=utc_now):
        self.archive = archive
        self.destinations = destinations
        self.clock = clock
        self.store = ReportStore(archive.index, pdf_dir, clock)
        self.deliveries = DeliveryLog(archive.index, policy)

    @classmethod
    def from_settings(cls, settings: Settings, archive: Archive, **options: Any) -> ReportService:
        return cls(archive, settings.data_dir / "reports", Destinations.from_settings(settings), **options)

    # -- drafting and approval -----------------------------------------------------------------
    def make(self, type_name: str, study_uid: str, created_by: str, options: Mapping[str, Any] | None = None, *,
             supersedes: int | None = None) -> ReportRecord:
        """Gather, store and render a draft of ``type_name`` for ``study_uid``."""
        kind = report_type(type_name)
        content = kind.gather(ReportRequest(self.archive, study_uid, dict(options or {})))
        draft = self.store.create_draft(
            NewReport(kind.name, content.subject.patient_id, study_uid, kind.title, content.conclusion, content.data),
            created_by, supersedes=supersedes)
        return self.store.attach_draft_pdf(draft.id, self._render(draft, rendered_at=draft.created_at))

    def amend(self, report_id: int, created_by: str, options: Mapping[str, Any] | None = None) -> ReportRecord:
        """A new draft version of final report ``report_id`` (data gathered again)."""
        current = self.store.get(report_id)
        if current.status is not ReportStatus.FINAL:
            raise OncopacsError(f"report {report_id} is {current.status.value}; only a final report can be amended")
        return self.make(current.type, current.study_uid, created_by, options, supersedes=report_id)

    def approve(self, report_id: int, principal: Principal) -> ReportRecord:
        """Make draft ``report_id`` final: render, archive as Encapsulated PDF, queue its deliveries."""
        if not principal.can(Permission.REPORTS_WRITE):
            raise PermissionDeniedError(f"{principal.name} ({principal.role.value}) may not approve reports")
        draft = self.store.get(report_id)
        if draft.status is not ReportStatus.DRAFT:
            raise OncopacsError(f"report {report_id} is {draft.status.value}; only a draft can be approved")
        approved_at = self.clock().replace(microsecond=0)
        pdf = self._render(draft, rendered_at=approved_at, status="final", approved_by=principal.name,
                           approved_at=approved_at)
        dataset = build_encapsulated_pdf(
            pdf, ReportSubject.from_dict(draft.data["subject"]), report_type=draft.type, title=draft.title,
            report_id=draft.id, version=draft.version, approved_at=approved_at)
        stored = self.archive.ingest_dataset(dataset, source=f"report:{draft.id}")
        if not stored.acknowledged:
            raise StorageError(f"the archive refused the PDF of report {report_id}: {stored.reason}")
        final = self.store.finalize(report_id, approved_by=principal.name, approved_at=approved_at, pdf=pdf,
                                    sop_instance_uid=str(dataset.SOPInstanceUID),
                                    destinations=self.destinations.pairs())
        log.info("report %d v%d approved and archived as %s", final.id, final.version, final.sop_instance_uid)
        return final

    def _render(self, report: ReportRecord, *, rendered_at: datetime, status: str = "draft", approved_by: str = "",
                approved_at: datetime | None = None) -> bytes:
        supersedes_version = self.store.get(report.supersedes_id).version if report.supersedes_id else None
        header = ReportHeader(report.id, report.version, report.title, status, report.conclusion, report.created_by,
                              iso_utc(report.created_at), iso_utc(rendered_at), approved_by, iso_utc(approved_at),
                              supersedes_version)
        return render_pdf(render_html(report_type(report.type), header, report.data))

    def read_pdf(self, report: ReportRecord) -> bytes:
        return self.store.read_pdf(report)

    # -- delivery ------------------------------------------------------------------------------
    def queue_send(self, report_id: int, requested_by: str) -> list[tuple[str, str]]:
        """Make final report ``report_id`` due now for every configured destination; the destinations.

        Destinations with an unfinished delivery keep that one (no duplicate); the others get a new
        delivery with a new control ID (a re-send by hand).
        """
        report = self.store.get(report_id)
        if report.status is ReportStatus.DRAFT:
            raise OncopacsError(f"report {report_id} is a draft; approve it before sending")
        pairs = self.destinations.pairs()
        if not pairs:
            raise RemoteNodeError("no destination configured (set ONCOPACS_HL7_ENDPOINT and/or ONCOPACS_FHIR_BASE_URL)")
        open_ones = {(d.destination.value, d.endpoint) for d in self.deliveries.for_report(report_id)
                     if d.status not in FINISHED}
        missing = [pair for pair in pairs if pair not in open_ones]
        if missing:
            self.deliveries.resend(report_id, missing, created_by=requested_by, now=self.clock())
        self.deliveries.make_due(report_id, self.clock())  # a send by hand does not wait for the back-off
        return pairs

    def send(self, report_id: int, requested_by: str) -> list[DeliveryRecord]:
        """Deliver final report ``report_id`` to every configured destination now; the deliveries after it."""
        pairs = self.queue_send(report_id, requested_by)
        self.deliver_due(report_id=report_id)
        return [d for d in self.deliveries.for_report(report_id) if (d.destination.value, d.endpoint) in pairs]

    def deliver_due(self, *, report_id: int | None = None) -> list[DeliveryRecord]:
        """Send every delivery whose time has come; the records after their attempt."""
        done: list[DeliveryRecord] = []
        while True:
            claimed = self.deliveries.claim_due(self.clock(), report_id=report_id)
            if not claimed:
                return done
            done.extend(self._deliver(delivery) for delivery in claimed)

    def _deliver(self, delivery: DeliveryRecord) -> DeliveryRecord:
        report = self.store.get(delivery.report_id)
        try:
            pdf = self.store.read_pdf(report)
            if delivery.destination is Destination.HL7:
                outcome = self._send_hl7(report, delivery, pdf)
            else:
                outcome = self._send_fhir(report, delivery, pdf)
        except RemoteNodeError as exc:
            outcome = DeliveryOutcome(OutcomeKind.RETRY, "", str(exc))
        except OncopacsError as exc:  # the PDF is unreadable: retrying will not help
            outcome = DeliveryOutcome(OutcomeKind.REJECTED, "", f"not sent: {exc}")
        record = self.deliveries.record(delivery.id, outcome, self.clock())
        log.info("report %d delivery %d (%s): %s %s", report.id, delivery.id, delivery.destination.value,
                 record.status.value, outcome.ack_code)
        return record

    def _send_hl7(self, report: ReportRecord, delivery: DeliveryRecord, pdf: bytes) -> DeliveryOutcome:
        configured, recorded = self.destinations.hl7, Hl7Destination.parse(delivery.endpoint)
        # the receiver as configured now (TLS or not, its context), also for a delivery queued before a change
        destination = (configured if configured is not None
                       and (configured.host, configured.port) == (recorded.host, recorded.port) else recorded)
        kind = report_type(report.type)
        subject = ReportSubject.from_dict(report.data["subject"])
        observed = subject.study_date + (subject.study_time or "").split(".")[0][:6]
        message = build_oru(OruReport(delivery.message_control_id, report.id, report.version, report.is_amendment,
                                      kind.code, report.title, kind.service_section, subject, observed,
                                      report.approved_at or self.clock(), pdf), destination)
        ack = send_message(destination, message)
        if ack.control_id and ack.control_id != delivery.message_control_id:
            return DeliveryOutcome(OutcomeKind.RETRY, ack.code, f"ACK for another message ({ack.control_id[:20]})")
        if ack.code == "AA":
            return DeliveryOutcome(OutcomeKind.ACKNOWLEDGED, "AA", "")
        if ack.code == "AR":
            return DeliveryOutcome(OutcomeKind.REJECTED, "AR", ack.text or "rejected by the receiver (AR)")
        return DeliveryOutcome(OutcomeKind.RETRY, ack.code, ack.text or f"application error ({ack.code})")

    def _send_fhir(self, report: ReportRecord, delivery: DeliveryRecord, pdf: bytes) -> DeliveryOutcome:
        kind = report_type(report.type)
        bundle = build_bundle(FhirReport(delivery.message_control_id, report.id, report.version, report.is_amendment,
                                         kind.code, report.title, report.conclusion,
                                         ReportSubject.from_dict(report.data["subject"]),
                                         report.approved_at or self.clock(), pdf))
        answer = post_bundle(delivery.endpoint, bundle, timeout_s=self.destinations.timeout_s)
        code = str(answer.status)
        if answer.accepted:
            return DeliveryOutcome(OutcomeKind.ACKNOWLEDGED, code, "")
        if answer.transient:
            return DeliveryOutcome(OutcomeKind.RETRY, code, answer.detail or f"HTTP {code}")
        return DeliveryOutcome(OutcomeKind.REJECTED, code, answer.detail or f"HTTP {code}")


class DeliveryLoop(BackgroundLoop):
    """A background thread that sends due deliveries, waking at the next retry time or every poll."""

    thread_name = "oncopacs-report-delivery"

    def __init__(self, service: ReportService, *, poll_interval_s: float = 5.0):
        super().__init__()
        self.service = service
        self.poll_interval_s = poll_interval_s

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.service.deliver_due()
                due = self.service.deliveries.next_due_at()
            except Exception:
                log.exception("report delivery could not reach the index; retrying")
                due = None
            wait = self.poll_interval_s
            if due is not None:
                wait = min(wait, max((due - self.service.clock()).total_seconds(), 0.05))
            self._sleep(wait)
