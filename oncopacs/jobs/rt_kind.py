"""The ``rt_analysis`` job kind: DVHs, metrics, goals and plan summaries of a study's planning sets.

Parameters: ``study_instance_uid`` (required), ``dose_uid`` (only that RT Dose's set), ``template``
(a shipped goal template name; default: chosen automatically) and ``force`` (recompute even when
cached). The planning sets are resolved when the job runs, so a job queued while a structure set
or plan was still arriving sees the complete set. Registered by the composition root
(:func:`oncopacs.ingest_rules.install_rt_analysis`), never by the platform itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oncopacs.analysis.rt_store import analyse_planning_set, find_planning_sets
from oncopacs.archive.ingest import Archive
from oncopacs.errors import NotFoundError
from oncopacs.jobs.queue import JobQueue, JobRecord, JobStatus
from oncopacs.jobs.worker import Handler, ProgressCallback

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
    return job.params.get("study_instance_uid") == study_uid and (dose_uid is None or job.params.get("dose_uid") in (None, dose_uid))


def find_study_job(queue: JobQueue, study_uid: str, *, pending_only: bool = False,
                   dose_uid: str | None = None) -> JobRecord | None:
    """The newest rt_analysis job of the study (queued or running only, with ``pending_only``)."""
    statuses = (JobStatus.QUEUED, JobStatus.RUNNING) if pending_only else (None,)
    found = [job for status in statuses
             for job in queue.list(status=status, kind=RT_ANALYSIS, limit=JOB_LOOKBACK).jobs
             if _matches(job, study_uid, dose_uid)]
    return max(found, key=lambda job: job.id, default=None)


def enqueue_rt_analysis(queue: JobQueue, study_uid: str, created_by: str, *, dose_uid: str | None = None,
                        template: str | None = None, force: bool = False) -> tuple[JobRecord, bool]:
    """(job, queued now): a queued, not yet started job for the same study, dose and options is reused."""
    params: dict[str, Any] = {"study_instance_uid": study_uid}
    if dose_uid:
        params["dose_uid"] = dose_uid
    if template:
        params["template"] = template
    if force:
        params["force"] = True
    for job in queue.list(status=JobStatus.QUEUED, kind=RT_ANALYSIS, limit=JOB_LOOKBACK).jobs:
        if job.params == params:
            return job, False
    job = queue.get(queue.enqueue(RT_ANALYSIS, params, created_by))
    assert job is not None  # just inserted
    return job, True
