"""Rules run on ingest events: decide what to compute next and queue it as a job (never compute here).

:class:`RTAnalysisRule` queues an ``rt_analysis`` job for a study when an RT Dose, RT Structure Set
or RT Plan arrives that belongs to a complete planning set (an RT Dose whose structure set the
archive holds, directly or through its plan). It runs in the ingest thread after the instance is
acknowledged, so it only reads the index (RT objects only; images return at once) and inserts a
job row; a job already queued for the study is reused. The composition root installs the rules
with :func:`install_rt_analysis`.
"""

from __future__ import annotations

import logging

from oncopacs.analysis.rt_store import find_planning_sets_with
from oncopacs.archive.extract import InstanceRecord
from oncopacs.archive.ingest import Archive
from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.queue import JobQueue
from oncopacs.jobs.rt_kind import (
    RT_ANALYSIS,
    build_rt_analysis_handler,
    enqueue_rt_analysis,
)

log = logging.getLogger(__name__)

#: Modalities whose arrival can complete a planning set.
RT_MODALITIES = frozenset({"RTDOSE", "RTSTRUCT", "RTPLAN"})
RULE_ACTOR = "system:ingest-rule"


class RTAnalysisRule:
    """Ingest listener queueing RT analyses for planning sets the new instance completes or changes."""

    def __init__(self, index: IndexDatabase, queue: JobQueue):
        self.index = index
        self.queue = queue

    def __call__(self, record: InstanceRecord) -> None:
        if record.modality not in RT_MODALITIES:
            return
        with self.index.reading() as session:
            sets = find_planning_sets_with(session, record.study_instance_uid, record.sop_instance_uid)
        if not sets:
            return
        job, queued = enqueue_rt_analysis(self.queue, record.study_instance_uid, RULE_ACTOR)
        if queued:
            log.info("queued rt_analysis job %d for study %s after %s", job.id, record.study_instance_uid,
                     record.sop_instance_uid)


def install_rt_analysis(archive: Archive, jobs: JobSystem) -> None:
    """Register the rt_analysis job kind on ``jobs`` and subscribe its ingest rule to ``archive``."""
    jobs.registry.register(RT_ANALYSIS, build_rt_analysis_handler(archive))
    archive.subscribe(RTAnalysisRule(archive.index, jobs.queue))
