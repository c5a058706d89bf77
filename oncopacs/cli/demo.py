"""``oncopacs demo``: synthetic patients through the ingest path, analysed before the server opens.

The demo opens the whole platform first, so its RT objects and PET-CT meet the ingest rules like any
C-STORE would; :func:`analyse_demo` then runs the jobs the rules queued, so the plans have their DVHs
and clinical goals (and the PET series their SUV statistics) when the readiness message is printed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oncopacs.analysis.pet import PET_TIMEPOINT, find_contoured_pet_series, measure_time_point, record_patient
from oncopacs.analysis.pet_job import enqueue_pet_statistics
from oncopacs.analysis.registration import find_registration_of, store_registration
from oncopacs.analysis.results import count_results
from oncopacs.analysis.rt import PLAN, find_studies_with_doses
from oncopacs.analysis.rt_job import enqueue_rt_analysis
from oncopacs.archive.importer import ImportSummary
from oncopacs.archive.ingest import Archive, IngestResult
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.jobs.queue import JobRecord, JobStatus
from oncopacs.phantom.ct4d import build_ct4d_phantom
from oncopacs.phantom.patient import build_demo_patients
from oncopacs.phantom.pet_followup import build_longitudinal_patients
from oncopacs.phantom.review_demo import (
    PATIENT_ID as REVIEW_PATIENT_ID,
)
from oncopacs.phantom.review_demo import (
    SPEC as REVIEW_SPEC,
)
from oncopacs.phantom.review_demo import (
    ReviewDemo,
    build_repeat_ct,
    build_review_registration,
)
from oncopacs.platform import Platform

DEMO_USER = "demo"
DEMO_ACTOR = "system:demo"
DEMO_CREDENTIALS_FILE = "demo-credentials.txt"
#: EORTC counts treatment cycles before each follow-up of the longitudinal PET-CT patients.
FOLLOWUP_CYCLES = (2, 4)
#: The demo patient whose proton plan also has an independent dose check to compare with on the plan page.
DOSE_CHECK_PATIENT_ID = "ONCO-DEMO-001"

Count = Callable[[str, IngestResult], None]


def load_demo(archive: Archive, n_patients: int = 2, on_object: Callable[[], None] | None = None) -> ImportSummary:
    """Generate ``n_patients`` phantom patients and ingest every object; re-running adds nothing.

    The first patient's planning study also holds an independent dose check of its plan (a second RT Dose).
    """
    summary = ImportSummary()
    for patient in build_demo_patients(n_patients, dose_check_ids=(DOSE_CHECK_PATIENT_ID,)):
        for dataset in patient.all_datasets():
            summary.count(
                f"{dataset.Modality} {dataset.SOPInstanceUID}", archive.ingest_dataset(dataset, source="demo")
            )
            if on_object:
                on_object()
    load_followup_demo(archive, summary.count, on_object)  # baseline / mid-treatment / follow-up PET-CT patients
    load_review_demo(archive, summary.count, on_object)  # a small 4D CT and a rigid registration with its QA
    return summary


def load_followup_demo(archive: Archive, count: Count, on_object: Callable[[], None] | None = None) -> int:
    """Ingest the longitudinal demo patients (:mod:`oncopacs.phantom.pet_followup`) and record their PET results.

    ``count(label, ingest_result)`` is called per ingested object (the demo's summary); returns the
    number of patients recorded.
    """
    patients = build_longitudinal_patients()
    for patient in patients:
        for dataset in patient.all_datasets():
            count(f"{dataset.Modality} {dataset.SOPInstanceUID}", archive.ingest_dataset(dataset, source="demo"))
            if on_object:
                on_object()
        measured = [measure_time_point(scan.pet, scan.rtstruct, label=scan.spec.label) for scan in patient.scans]
        record_patient(archive, measured, cycles=list(FOLLOWUP_CYCLES))
    return len(patients)


def load_review_demo(
    archive: Archive, count: Count | None = None, on_object: Callable[[], None] | None = None
) -> ReviewDemo:
    """Ingest the 4D CT, its GTV, the repeat CT and the registration (with its QA result); idempotent.

    ``count(label, ingest_result)`` is called per ingested image or structure set (the demo's summary).
    """
    phantom = build_ct4d_phantom(REVIEW_SPEC, patient_id=REVIEW_PATIENT_ID)
    repeat_ct = build_repeat_ct(phantom)
    for dataset in [*phantom.all_datasets(), *repeat_ct]:
        result = archive.ingest_dataset(dataset, source="demo")
        if count:
            count(f"{dataset.Modality} {dataset.SOPInstanceUID}", result)
        if on_object:
            on_object()
    fixed_uid, moving_uid = str(phantom.phases[0][0].SeriesInstanceUID), str(repeat_ct[0].SeriesInstanceUID)
    with archive.index.reading() as session:
        registration_uid = find_registration_of(session, fixed_uid, moving_uid)
    if registration_uid is None:  # the optimiser's last digits may vary: register once per archive
        dataset = build_review_registration(phantom, repeat_ct)
        registration_uid = store_registration(archive, dataset, source="demo").registration.sop_instance_uid
    return ReviewDemo(phantom, repeat_ct, registration_uid)


@dataclass(frozen=True, slots=True)
class DemoAnalysis:
    """What the demo's user will find analysed: plans with DVHs and goals, PET series with SUV statistics.

    ``plans`` counts analysed plans, not doses (a plan with an independent dose check counts once).
    """

    plans: int
    pet_series: int
    failed: tuple[str, ...]  # jobs of this run that failed, with their messages

    def describe(self) -> str:
        """The readiness line."""
        text = (
            f"demo analysed: {self.plans} plan(s) with DVHs and clinical goals, "
            f"{self.pet_series} PET series with SUV statistics"
        )
        return text + (f"; {len(self.failed)} job(s) failed: {'; '.join(self.failed)}" if self.failed else "")


def analyse_demo(platform: Platform, on_job: Callable[[], None] | None = None) -> DemoAnalysis:
    """Run every job the ingest rules queued (RT analyses, PET statistics) before the server opens.

    Studies whose RT or PET results are missing (an archive filled before the rules existed) are
    queued too; a study already analysed costs one cached look-up.
    """
    with platform.index.reading() as session:
        rt_studies, pet_series = find_studies_with_doses(session), find_contoured_pet_series(session)
    for study_uid in rt_studies:
        enqueue_rt_analysis(platform.jobs.queue, study_uid, DEMO_ACTOR)
    for series_uid in pet_series:
        enqueue_pet_statistics(platform.jobs.queue, series_uid, DEMO_ACTOR)
    failed: list[str] = []

    def ran(job: JobRecord) -> None:
        if job.status is JobStatus.FAILED:
            failed.append(f"{job.kind} job {job.id}: {job.message}")
        if on_job:
            on_job()

    platform.jobs.new_worker().run_pending(on_job=ran)
    with platform.index.reading() as session:
        return DemoAnalysis(count_results(session, PLAN), count_results(session, PET_TIMEPOINT), tuple(failed))


def ensure_demo_user(users: UserStore, data_dir: Path) -> tuple[str, str]:
    """The demo's admin account (user ``demo``), made once; its random password is kept in the data directory (0600)."""
    credentials = data_dir / DEMO_CREDENTIALS_FILE
    if credentials.exists() and users.exists(DEMO_USER):
        username, _, password = credentials.read_text(encoding="utf-8").strip().partition(":")
        return username, password
    password = secrets.token_urlsafe(12)
    if users.exists(DEMO_USER):
        users.set_password(DEMO_USER, password)
    else:
        users.add_user(DEMO_USER, Role.ADMIN, password)
    fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(f"{DEMO_USER}:{password}\n")
    return DEMO_USER, password
