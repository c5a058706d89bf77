"""The ``rt_analysis`` job kind and its ingest rule: DVHs, metrics, goals and plan summaries of a study's planning sets.

Parameters: ``study_instance_uid`` (required), ``dose_uid`` (only that RT Dose's set), ``template``
(a shipped goal template name; default: chosen automatically) and ``force`` (recompute even when
cached). The planning sets are resolved when the job runs, so a job queued while a structure set
or plan was still arriving sees the complete set.

:class:`RTAnalysisRule` queues an ``rt_analysis`` job for a study when an RT Dose, RT Structure Set
or RT Plan arrives that belongs to a complete planning set (an RT Dose whose structure set the
archive holds, directly or through its plan). It runs in the ingest thread after the instance is
acknowledged, so it only reads the index (RT objects only; images return at once) and inserts a
job row; a job already queued for the study is reused. :func:`oncopacs.platform.open_platform`
registers the job kind with :func:`install_rt_analysis` and makes the rule the built-in rule ``rt-analysis`` of the
rule engine before anything can be stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from oncopacs.analysis.rt import analyse_planning_set, find_planning_sets, find_planning_sets_with
from oncopacs.archive.extract import InstanceRecord
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.index.db import IndexDatabase
from oncopacs.jobs.kinds import JobSystem, enqueue_once
from oncopacs.jobs.queue import JobQueue, JobRecord, JobStatus
from oncopacs.jobs.worker import Handler, ProgressCallback

log = logging.getLogger(__name__)

RT_ANALYSIS = "rt_analysis"
#: How many of the newest jobs are looked at to find a study's pending or latest job.
JOB_LOOKBACK = 500


def build_rt_analysis_handler(archive: Archive) -> Handler:
    """A handler computing (or finding cached) the RT results of a study's planning sets."""

    def run_rt_analysis(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        study_uid = str(params.get("study_instance_uid") or "")
        dose_uid = params.get("dose_uid") or None
        with archive.index.reading() as session:
            sets = [s for s in find_planning_sets(session, study_uid) if dose_uid in (None, s.dose_uid)]
        if not sets:
            what = f"RT Dose {dose_uid}" if dose_uid else "an RT Dose"
            raise NotFoundError(f"study {study_uid} has no {what} with its RT Structure Set in the archive")
        done = []
        for i, planning_set in enumerate(sets):
            def step(fraction: float, message: str, i: int = i) -> None:
                progress((i + fraction) / len(sets), message)

            computed = analyse_planning_set(archive, planning_set, template=params.get("template") or None,
                                            force=bool(params.get("force")), progress=step)
            done.append({**planning_set.to_dict(), "computed": computed})
        return {"study_instance_uid": study_uid, "planning_sets": done}

    return run_rt_analysis


def _matches(job: JobRecord, study_uid: str, dose_uid: str | None) -> bool:
    return job.params.get("study_instance_uid") == study_uid and (
        dose_uid is None or job.params.get("dose_uid") in (None, dose_uid)
    )


def find_study_job(
    queue: JobQueue, study_uid: str, *, pending_only: bool = False, dose_uid: str | None = None
) -> JobRecord | None:
    """The newest rt_analysis job of the study (queued or running only, with ``pending_only``)."""
    statuses = (JobStatus.QUEUED, JobStatus.RUNNING) if pending_only else (None,)
    found = [
        job
        for status in statuses
        for job in queue.list(status=status, kind=RT_ANALYSIS, limit=JOB_LOOKBACK).jobs
        if _matches(job, study_uid, dose_uid)
    ]
    return max(found, key=lambda job: job.id, default=None)


def enqueue_rt_analysis(
    queue: JobQueue,
    study_uid: str,
    created_by: str,
    *,
    dose_uid: str | None = None,
    template: str | None = None,
    force: bool = False,
) -> tuple[JobRecord, bool]:
    """(job, queued now): a queued, not yet started job for the same study, dose and options is reused."""
    params: dict[str, Any] = {"study_instance_uid": study_uid}
    if dose_uid:
        params["dose_uid"] = dose_uid
    if template:
        params["template"] = template
    if force:
        params["force"] = True
    return enqueue_once(queue, RT_ANALYSIS, params, created_by)


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
            log.info(
                "queued rt_analysis job %d for study %s after %s",
                job.id,
                record.study_instance_uid,
                record.sop_instance_uid,
            )


def install_rt_analysis(archive: Archive, jobs: JobSystem) -> RTAnalysisRule:
    """Register the rt_analysis job kind on ``jobs``; the ingest rule that queues it (a built-in rule)."""
    jobs.registry.register(RT_ANALYSIS, build_rt_analysis_handler(archive))
    return RTAnalysisRule(archive.index, jobs.queue)
