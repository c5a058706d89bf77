"""The ``pet_statistics`` job kind and its ingest rule: SUV statistics of a PET series in its contours.

:class:`PetStatisticsRule` queues a ``pet_statistics`` job for a PET series when it is complete and
its patient holds an RT Structure Set on its frame of reference (a PET-CT contoured on its CT, in
any study), and for each such PET series when a structure set on its frame arrives. It runs in the
ingest thread after the instance's index row is committed, so it stays cheap: a PT instance of a
static series costs one look-up of the series' stored count until the count reaches its
NumberOfSlices, and only the last slice looks for contours; dynamic and gated series, and series
that do not say how many slices they have, queue nothing. A job already queued for the series is
reused. The job measures the series in the newest structure set on its frame with
:func:`oncopacs.analysis.pet.analyse_contoured_pet` and stores SUVmax, SUVmean, SUVpeak, SULpeak,
MTV and TLG per ROI as the patient's time point, then assesses each of the patient's follow-ups against the
earliest time point (PERCIST 1.0, EORTC, RECIST-style: ``pet_response`` results). Parameters:
``pet_series_uid`` (required) and ``suv_type`` (``bw`` default, ``lbm``, ``bsa``, ``ibw``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fusion.pet.suv import SuvType
from oncopacs.analysis.pet import (
    MEASURED_SERIES_TYPES,
    analyse_contoured_pet,
    count_series_instances,
    find_contoured_pet,
    find_pet_series_on_frames,
    find_structure_sets_on_frame,
)
from oncopacs.archive.extract import InstanceRecord
from oncopacs.archive.ingest import Archive
from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import Relation
from oncopacs.jobs.kinds import JobSystem, enqueue_once
from oncopacs.jobs.queue import JobQueue, JobRecord
from oncopacs.jobs.worker import Handler, ProgressCallback

log = logging.getLogger(__name__)

PET_STATISTICS = "pet_statistics"
RULE_ACTOR = "system:ingest-rule"
FOUND = ("measured", "cached")


def build_pet_statistics_handler(archive: Archive) -> Handler:
    """A handler measuring (or finding cached) a PET series in the newest structure set on its frame."""

    def run_pet_statistics(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        series_uid = params.get("pet_series_uid")
        if not isinstance(series_uid, str) or not series_uid.strip():
            raise ValueError("pet_series_uid (a PET Series Instance UID) is required")
        try:
            suv_type = SuvType(params.get("suv_type") or SuvType.BW)
        except ValueError:
            raise ValueError(f"suv_type must be one of {', '.join(t.value for t in SuvType)}") from None
        with archive.index.reading() as session:
            contoured = find_contoured_pet(session, series_uid.strip())
        outcomes = []
        if contoured is not None:
            progress(0.0, "SUV statistics in the newest structure set on the PET's frame of reference")
            outcomes.append(analyse_contoured_pet(archive, contoured, suv_type=suv_type))
        progress(1.0, outcomes[0].status if outcomes else "no structure set on the PET's frame of reference")
        return {"pet_series_uid": series_uid, "suv_type": suv_type.value,
                "measured": [o.to_dict() for o in outcomes if o.status in FOUND],
                "skipped": [o.to_dict() for o in outcomes if o.status not in FOUND]}

    return run_pet_statistics


def enqueue_pet_statistics(queue: JobQueue, pet_series_uid: str, created_by: str) -> tuple[JobRecord, bool]:
    """(job, queued now): a queued, not yet started job for the same PET series is reused."""
    return enqueue_once(queue, PET_STATISTICS, {"pet_series_uid": pet_series_uid}, created_by)


class PetStatisticsRule:
    """Ingest listener queueing SUV statistics when a complete PET series and contours on its frame meet."""

    def __init__(self, index: IndexDatabase, queue: JobQueue):
        self.index = index
        self.queue = queue

    def __call__(self, record: InstanceRecord) -> None:
        if record.modality == "PT":
            series = self._completed_series(record)
        elif record.modality == "RTSTRUCT":
            frames = [record.frame_of_reference_uid, *(r.uid for r in record.references
                                                        if r.relation is Relation.FRAME_OF_REFERENCE)]
            with self.index.reading() as session:
                series = find_pet_series_on_frames(session, record.patient_id, frames)
        else:
            return
        for series_uid in series:
            job, queued = enqueue_pet_statistics(self.queue, series_uid, RULE_ACTOR)
            if queued:
                log.info("queued pet_statistics job %d for PET series %s after %s", job.id, series_uid,
                         record.sop_instance_uid)

    def _completed_series(self, record: InstanceRecord) -> list[str]:
        """The PET series of ``record`` when this instance completed it and it has contours; else nothing."""
        if record.series_type not in MEASURED_SERIES_TYPES or not record.number_of_slices:
            return []
        with self.index.read_connection() as connection:  # the one query most slices cost: a bare count
            stored = count_series_instances(connection, record.series_instance_uid)
        if stored != record.number_of_slices:
            return []
        with self.index.reading() as session:
            if not find_structure_sets_on_frame(session, record.patient_id, record.frame_of_reference_uid):
                return []
        return [record.series_instance_uid]


def install_pet_statistics(archive: Archive, jobs: JobSystem) -> PetStatisticsRule:
    """Register the pet_statistics job kind on ``jobs``; the ingest rule that queues it (a built-in rule)."""
    jobs.registry.register(PET_STATISTICS, build_pet_statistics_handler(archive))
    return PetStatisticsRule(archive.index, jobs.queue)
