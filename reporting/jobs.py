"""Wiring reports into a running OncoPACS: the report service, its delivery loop and the job kind.

The app factory (the composition root) calls :func:`open_reports`; ``oncopacs serve`` starts and
stops the delivery loop with the job worker. The ``report_delivery`` job sends whatever is due now
(optionally one report's deliveries, ``{"report_id": N}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oncopacs.archive.ingest import Archive
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.worker import ProgressCallback
from oncopacs.settings import Settings
from reporting.workflow import DeliveryLoop, ReportService

REPORT_DELIVERY = "report_delivery"


@dataclass(frozen=True)
class Reports:
    """The report service of an archive and the loop that delivers its reports."""

    service: ReportService
    loop: DeliveryLoop

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()


def open_reports(settings: Settings, archive: Archive, jobs: JobSystem | None = None) -> Reports:
    """The reports of ``archive``, with the ``report_delivery`` job kind registered on ``jobs``."""
    service = ReportService.from_settings(settings, archive)
    if jobs is not None and REPORT_DELIVERY not in jobs.registry:
        def run_delivery(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
            report_id = params.get("report_id")
            done = service.deliver_due(report_id=int(report_id) if report_id is not None else None)
            progress(1.0, f"{len(done)} delivery attempt(s)")
            return {"deliveries": [d.to_dict() for d in done]}

        jobs.registry.register(REPORT_DELIVERY, run_delivery)
    return Reports(service, DeliveryLoop(service))
