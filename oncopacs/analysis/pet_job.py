"""The ``pet_statistics`` job kind and its ingest rule: SUV statistics of a PET series in its contours.

:class:`PetStatisticsRule` queues a ``pet_statistics`` job for a study when a PET slice arrives and
the study holds an RT Structure Set on that slice's frame of reference, or when a structure set
arrives on the frame of a PET series of the study (a PET-CT contoured on its CT). Like the RT rule
it runs in the ingest thread after the acknowledgement, only reads the index, and reuses a job
already queued for the study. The job resolves the (PET series, structure set) pairs when it runs,
skips a series whose slices are still arriving (its last slice queues the job again), and stores
each series' SUVmax/SUVmean/SUVpeak/SULpeak/MTV/TLG per ROI as the patient's PET time point
(:func:`oncopacs.analysis.pet.analyse_contoured_pet`). Parameters: ``study_instance_uid``
(required) and ``suv_type`` (``bw`` default, ``lbm``, ``bsa``, ``ibw``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fusion.pet.suv import SuvType
from oncopacs.analysis.pet import analyse_contoured_pet, find_contoured_pet, has_contours_on_frame
from oncopacs.archive.extract import InstanceRecord
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.kinds import JobSystem, enqueue_once
from oncopacs.jobs.queue import JobQueue, JobRecord
from oncopacs.jobs.worker import Handler, ProgressCallback

log = logging.getLogger(__name__)

PET_STATISTICS = "pet_statistics"
RULE_ACTOR = "system:ingest-rule"


def build_pet_statistics_handler(archive: Archive) -> Handler:
    """A handler measuring (or finding cached) every contoured PET series of a study."""

    def run_pet_statistics(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        study_uid = str(params.get("study_instance_uid") or "")
        try:
            suv_type = SuvType(params.get("suv_type") or SuvType.BW)
        except ValueError:
            raise ValueError(f"suv_type must be one of {', '.join(t.value for t in SuvType)}") from None
        with archive.index.reading() as session:
            pairs = find_contoured_pet(session, study_uid)
        if not pairs:
            raise NotFoundError(
                f"study {study_uid} has no PET series with an RT Structure Set on its frame of reference"
            )
        outcomes = []
        for i, contoured in enumerate(pairs):
            progress(i / len(pairs), f"SUV statistics of PET series {i + 1} of {len(pairs)}")
            outcomes.append(analyse_contoured_pet(archive, contoured, suv_type=suv_type))
        progress(1.0, ", ".join(f"{o.status}" for o in outcomes))
        return {
            "study_instance_uid": study_uid,
            "suv_type": suv_type.value,
            "measured": [o.to_dict() for o in outcomes if o.status in ("measured", "cached")],
            "skipped": [o.to_dict() for o in outcomes if o.status not in ("measured", "cached")],
        }

    return run_pet_statistics


def enqueue_pet_statistics(queue: JobQueue, study_uid: str, created_by: str) -> tuple[JobRecord, bool]:
    """(job, queued now): a queued, not yet started job for the same study is reused."""
    return enqueue_once(queue, PET_STATISTICS, {"study_instance_uid": study_uid}, created_by)


class PetStatisticsRule:
    """Ingest listener queueing SUV statistics when a PET series and contours on its frame of reference meet."""

    def __init__(self, index: IndexDatabase, queue: JobQueue):
        self.index = index
        self.queue = queue

    def __call__(self, record: InstanceRecord) -> None:
        if record.modality == "PT":
            with self.index.reading() as session:
                if not has_contours_on_frame(session, record.study_instance_uid, record.frame_of_reference_uid):
                    return
        elif record.modality == "RTSTRUCT":
            with self.index.reading() as session:
                if not any(
                    pair.structure_set_uid == record.sop_instance_uid
                    for pair in find_contoured_pet(session, record.study_instance_uid)
                ):
                    return
        else:
            return
        job, queued = enqueue_pet_statistics(self.queue, record.study_instance_uid, RULE_ACTOR)
        if queued:
            log.info(
                "queued pet_statistics job %d for study %s after %s",
                job.id,
                record.study_instance_uid,
                record.sop_instance_uid,
            )


def install_pet_statistics(archive: Archive, jobs: JobSystem) -> None:
    """Register the pet_statistics job kind on ``jobs`` and subscribe its ingest rule to ``archive``."""
    jobs.registry.register(PET_STATISTICS, build_pet_statistics_handler(archive))
    archive.subscribe(PetStatisticsRule(archive.index, jobs.queue))
