"""``/jobs``: the job queue as a page for staff (whoever may read ``/api/jobs``): what runs, what waited, what failed.

Newest first, :data:`PER_PAGE` a page (``?page=``), filtered by ``?kind=`` and ``?status=`` (a small GET form). Each
job by id, its kind in words (unknown kinds raw), its status as a coloured badge, a progress bar with the job's
message while it runs, who queued it, when it was queued, started and finished (UTC), and a summary in words: the
message, the error of a failed job, the counts of a prefetch, the plug-in and what it stored. Parameters are never
dumped; only a prefetch job shows its patient ID, and a page that shows one is audited (READ) with those patients.
While a listed job is queued or running the page reloads itself every :data:`REFRESH_S` seconds (a ``<meta>``
refresh: no script). Needs ARCHIVE_READ, as ``GET /api/jobs``. A refusal is a page in words, never JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, current_app, g, render_template, request
from werkzeug.exceptions import HTTPException

from oncopacs.analysis.pet_job import PET_STATISTICS
from oncopacs.analysis.registration_job import REGISTRATION
from oncopacs.analysis.rt_job import RT_ANALYSIS
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.ehr.prefetch import PREFETCH
from oncopacs.jobs.kinds import VERIFY, JobSystem
from oncopacs.jobs.queue import JobRecord, JobStatus
from oncopacs.orchestration.rule_actions import EXPORT_JOB, PLUGIN_JOB
from oncopacs.web.access import audit_access, requires
from oncopacs.web.refusals import as_sentence, explain_refusal
from reporting.jobs import REPORT_DELIVERY

bp = Blueprint("jobs_page", __name__, template_folder="templates")

PER_PAGE = 50  # jobs a page
REFRESH_S = 5  # seconds between reloads while a listed job is queued or running
MAX_KIND_CHARS = 64  # the jobs table's kind column
MAX_PAGE = 100_000  # a larger page number is refused (its offset would overflow the database's integers)
#: The job kinds in words; a kind not named here is shown as stored.
KIND_WORDS = {
    PREFETCH: "Prefetch of priors",
    RT_ANALYSIS: "RT analysis",
    PET_STATISTICS: "SUV statistics",
    PLUGIN_JOB: "Plug-in analysis",
    EXPORT_JOB: "De-identified export",
    REGISTRATION: "Registration",
    VERIFY: "Archive verification",
    REPORT_DELIVERY: "Report delivery",
}
#: Prefetch result counts shown, in this order (``partial`` only when some were).
PREFETCH_COUNTS = ("found", "relevant", "moved", "partial", "skipped", "failed")
#: What a role lacking a permission is told it may not do (the page's 403).
_WHAT_IT_ALLOWS = {Permission.ARCHIVE_READ: "see the jobs"}


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the page shows it; times in UTC (None: not yet), ``patient_id`` only for a prefetch job."""

    job: JobRecord
    kind_words: str
    summary: str
    patient_id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def percent(self) -> int:
        """The job's progress in whole per cent (0..100)."""
        return round(min(max(self.job.progress, 0.0), 1.0) * 100)


def _jobs() -> JobSystem:
    return current_app.extensions["oncopacs.jobs"]


@bp.app_context_processor
def _jobs_link() -> dict[str, bool]:
    """Whether the shell's header shows the Jobs link (to callers who may read ``/api/jobs``)."""
    principal = g.get("principal")
    return {"can_see_jobs": principal is not None and principal.can(Permission.ARCHIVE_READ)}


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What the page's GET form asks for: a kind ("" any), a status (None: any) and a page (from 1)."""

    kind: str
    status: JobStatus | None
    page: int


@bp.get("/jobs")
@requires(Permission.ARCHIVE_READ)
def jobs():
    """The jobs page: a page of jobs, newest first, filtered by ``?kind=`` and ``?status=``."""
    wanted = read_filter()
    found = _jobs().queue.list(status=wanted.status, kind=wanted.kind or None, limit=PER_PAGE,
                               offset=(wanted.page - 1) * PER_PAGE)
    rows = [job_row(job) for job in found.jobs]
    patient_ids = [row.patient_id for row in rows if row.patient_id]
    if patient_ids:
        audit_access(AuditAction.READ, patient_ids=patient_ids)
    kinds = sorted({*_jobs().registry.kinds, *([wanted.kind] if wanted.kind else [])},
                   key=lambda k: kind_in_words(k).lower())
    return render_template(
        "jobs.html", rows=rows, total=found.total, page=wanted.page, pages=max(1, -(-found.total // PER_PAGE)),
        kind=wanted.kind, status=wanted.status.value if wanted.status else "", statuses=[s.value for s in JobStatus],
        kinds=[(k, kind_in_words(k)) for k in kinds], refresh_s=REFRESH_S,
        refresh=any(row.job.status in (JobStatus.QUEUED, JobStatus.RUNNING) for row in rows))


def read_filter() -> JobFilter:
    """The request's ``?kind=``, ``?status=`` and ``?page=`` (400 in words when one is not understood)."""
    status_text = request.args.get("status", "").strip().lower()
    try:
        status = JobStatus(status_text) if status_text else None
    except ValueError:
        abort(400, description=f"unknown job status {status_text[:20]!r} "
                               f"(valid: {', '.join(s.value for s in JobStatus)})")
    kind = request.args.get("kind", "").strip()
    if len(kind) > MAX_KIND_CHARS:
        abort(400, description=f"a job kind has at most {MAX_KIND_CHARS} characters")
    page_text = request.args.get("page", "1").strip() or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
        abort(400, description=f"the page number must be a whole number from 1 to {MAX_PAGE} "
                               f"(not {page_text[:20]!r})")
    return JobFilter(kind, status, int(page_text))


def kind_in_words(kind: str) -> str:
    """A job kind as people name it (``prefetch``: "Prefetch of priors"); an unknown kind as stored."""
    return KIND_WORDS.get(kind, kind)


def job_row(job: JobRecord) -> JobRow:
    """What the page shows of ``job``."""
    patient_id = str(job.params.get("patient_id", "")) if job.kind == PREFETCH else ""
    return JobRow(job, kind_in_words(job.kind), summarise(job), patient_id, _utc(job.created_at),
                  _utc_or_none(job.started_at), _utc_or_none(job.finished_at))


def summarise(job: JobRecord) -> str:
    """A short sentence on ``job``: the error when it failed, the counts of a finished prefetch, the plug-in and
    what it stored, else the job's own message ("" while it runs: the progress bar carries the message)."""
    if job.status is JobStatus.FAILED:
        return as_sentence(job.message or "failed without a reason")
    if job.status is JobStatus.RUNNING:
        return ""
    if job.status is JobStatus.QUEUED:  # its message says why it still waits (the job queue unreachable)
        return as_sentence(job.message) if job.message else "Waiting for the worker."
    result = job.result if isinstance(job.result, Mapping) else {}
    if job.kind == PREFETCH and result:
        return _prefetch_summary(result)
    if job.kind == PLUGIN_JOB and result:
        return _plugin_summary(result)
    return as_sentence(job.message) if job.message and job.message != "done" else "Done."


def _prefetch_summary(result: Mapping[str, Any]) -> str:
    counts = [f"{_count(result.get(key))} {key}" for key in PREFETCH_COUNTS
              if key != "partial" or _count(result.get(key))]
    source = str(result.get("source", "")).strip()
    return ", ".join(counts) + (f" (from {source})." if source else ".")


def _plugin_summary(result: Mapping[str, Any]) -> str:
    plugin = str(result.get("plugin", "")) or "the plug-in"
    if result.get("skipped"):
        return as_sentence(str(result["skipped"]))
    stored = result.get("stored")
    refused = result.get("refused")
    text = f"{plugin}: {len(stored) if isinstance(stored, list) else 0} object(s) stored"
    if isinstance(refused, list) and refused:
        text += f", {len(refused)} refused"
    return text + "."


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (SQLite gives naive datetimes, stored in UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


@bp.errorhandler(400)
@bp.errorhandler(403)
def _problem(exc: HTTPException):
    """A refusal by this page as a page in words (a 401 keeps the sign-in redirect, or JSON for scripts)."""
    return render_template("jobs.html", problem=_explain(exc), code=exc.code), exc.code


def _explain(exc: HTTPException) -> str:
    """The sentence a person reads for ``exc``."""
    return explain_refusal(exc, _WHAT_IT_ALLOWS)
