"""Prefetch on an appointment: SIU^S12 -> prefetch job -> a second OncoPACS on loopback C-MOVEs the priors to us."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from oncopacs.archive.ingest import Archive
from oncopacs.dimse.server import start_dimse
from oncopacs.dimse.tls import listener_context
from oncopacs.ehr.messages import AckCode, parse_message
from oncopacs.ehr.prefetch import (
    NOT_CONFIGURED,
    PREFETCH,
    appointment_body_part,
    build_prefetch_handlers,
    install_prefetch,
    local_instance_count,
    parse_prefetch_rules,
)
from oncopacs.ehr.prefetch_rules import DEFAULT_RULES, RemoteSeries, RemoteStudy, select_studies
from oncopacs.errors import ConfigError
from oncopacs.index.models import Instance
from oncopacs.jobs.kinds import JobSystem
from oncopacs.jobs.queue import DatabaseJobQueue, JobStatus
from oncopacs.jobs.worker import JobRegistry
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import RemoteAE, Settings
from oncopacs.tls import TlsFiles
from oncopacs.tls.certificates import write_trial_certificates
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY, free_port
from tests.factories import small_ct_series
from tests.orchestration.conftest import small_patient

PATIENT = "PF-1"


def siu(patient_id: str = PATIENT, service: str = "PROTONPELVIS^PROTON PELVIS FOLLOW-UP",
        start: str = "202612150900") -> str:
    return "\r".join([
        "MSH|^~\\&|EPIC|HOSP|ONCOPACS|RADONC|202612070800||SIU^S12|MSG0001|P|2.5.1",
        f"SCH|PL-77|FI-4711|||||FOLLOWUP||30|min|^^30^{start}",
        f"PID|1||{patient_id}^^^HOSP^MR||Pre^Fetch||19580312|M",
        f"AIS|1||{service}|{start}",
    ])


def job_system(archive: Archive) -> JobSystem:
    return JobSystem(DatabaseJobQueue(archive.index), JobRegistry())


class RemoteOncopacs:
    """A second OncoPACS (its own data directory and index) with a DIMSE listener that knows our AE title."""

    def __init__(self, folder: Path, our_ae: RemoteAE, tls: TlsFiles | None = None):
        self.platform: Platform = open_platform(Settings(
            data_dir=folder / "remote-data", dicom_host="127.0.0.1", dicom_port=0, dicom_tls_port=0,
            ae_title="REMOTE", remote_aes=(our_ae,), secret_key=TEST_SECRET_KEY,
            audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES))
        context = listener_context(tls) if tls is not None else None  # DICOM-TLS only, when given
        self.server = start_dimse(self.platform.settings, self.platform.archive, ssl_context=context)
        self.ae = RemoteAE("REMOTE", "127.0.0.1", self.server.server_address[1], tls=tls is not None)

    def close(self) -> None:
        self.server.shutdown()
        self.platform.close()


@pytest.fixture
def our_listener(settings: Settings, archive: Archive) -> Iterator[RemoteAE]:
    """Our own DIMSE listener (where C-MOVEd priors arrive), as the remote knows it."""
    server = start_dimse(settings, archive)
    yield RemoteAE(settings.ae_title, "127.0.0.1", server.server_address[1])
    server.shutdown()


@pytest.fixture
def priors():
    """The patient's priors: planning study (CT + RTSTRUCT + plan + dose, pelvis), PET-CT, and a newer head CT."""
    patient = small_patient(PATIENT, "Pre^Fetch")
    head = small_ct_series(3, prefix="H")
    for dataset in head:
        dataset.PatientID, dataset.PatientName = PATIENT, "Pre^Fetch"
        dataset.BodyPartExamined, dataset.StudyDate = "HEAD", "20250601"
    return patient, head


@pytest.fixture
def remote(tmp_path: Path, our_listener: RemoteAE, priors) -> Iterator[RemoteOncopacs]:
    archive = RemoteOncopacs(tmp_path, our_listener)
    patient, head = priors
    for dataset in (*patient.all_datasets(), *head):
        archive.platform.archive.ingest_dataset(dataset, source="t")
    yield archive
    archive.close()


def configured(settings: Settings, remote: RemoteAE, **more) -> Settings:
    return settings.with_overrides(prefetch_from=remote.ae_title, remote_aes=(remote,), **more)


def run_jobs(jobs: JobSystem) -> None:
    jobs.new_worker().run_pending()


def test_appointment_moves_the_relevant_priors_and_skips_what_is_local(settings, archive, remote, priors):
    patient, head = priors
    ours = configured(settings, remote.ae)
    jobs = job_system(archive)
    install_prefetch(archive, jobs, ours)
    for dataset in patient.pet_ct + patient.pet:  # the PET-CT is already here
        archive.ingest_dataset(dataset, source="t")
    handler = build_prefetch_handlers(jobs, ours)["SIU^S12"]

    outcome = handler(parse_message(siu()), None)
    again = handler(parse_message(siu()), None)  # the same appointment again: the queued job is reused
    assert outcome.ack is AckCode.ACCEPT and "queued" in outcome.text
    assert again.text.endswith("already queued")
    queued = jobs.queue.list(kind=PREFETCH).jobs
    assert len(queued) == 1
    assert queued[0].params == {"patient_id": PATIENT, "appointment": "20261215", "body_part": "PELVIS",
                                "reason": "SIU^S12 appointment FI-4711"}
    run_jobs(jobs)

    job = jobs.queue.get(queued[0].id)
    assert job is not None and job.status is JobStatus.SUCCEEDED, job.message if job else None
    planning_uid = str(patient.planning_ct[0].StudyInstanceUID)
    pet_uid = str(patient.pet[0].StudyInstanceUID)
    head_uid = str(head[0].StudyInstanceUID)
    by_study = {s["study_instance_uid"]: s for s in job.result["studies"]}
    assert job.result["found"] == 3 and job.result["moved"] == 1 and job.result["skipped"] == 1
    assert set(by_study) == {planning_uid, pet_uid}
    assert by_study[planning_uid]["outcome"] == "moved" and by_study[planning_uid]["status"] == "0x0000"
    assert set(by_study[planning_uid]["rules"]) == {"same-body-part", "planning-ct"}
    assert by_study[pet_uid]["outcome"] == "skipped"
    planning = (*patient.planning_ct, patient.rtstruct, patient.rt_ion_plan, patient.rt_dose)
    assert local_instance_count(archive, planning_uid) == len(planning)
    with archive.index.reading() as session:
        here = {uid for (uid,) in session.query(Instance.sop_instance_uid)}
    assert {str(ds.SOPInstanceUID) for ds in planning} <= here
    assert local_instance_count(archive, head_uid) == 0  # another body part, no RT, no PET: not relevant


def test_configured_rules_choose_what_moves(sqlite_settings, tmp_path, priors):
    platform = open_platform(sqlite_settings)
    server = start_dimse(sqlite_settings, platform.archive)
    source = RemoteOncopacs(tmp_path, RemoteAE("ONCOPACS", "127.0.0.1", server.server_address[1]))
    try:
        patient, head = priors
        for dataset in (*patient.all_datasets(), *head):
            source.platform.archive.ingest_dataset(dataset, source="t")
        ours = configured(sqlite_settings, source.ae, prefetch=(
            {"name": "head", "body_part": "HEAD", "newest": 1},
            {"name": "pet", "modality": ["PT"], "series_description": "*fdg*", "within_days": 1825},
        ))
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, ours)
        build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu()), None)
        run_jobs(jobs)
        job = jobs.queue.list(kind=PREFETCH).jobs[0]
        assert job.status is JobStatus.SUCCEEDED, job.message
        assert job.result["moved"] == 2
        assert local_instance_count(platform.archive, str(head[0].StudyInstanceUID)) == len(head)
        pet_study = str(patient.pet[0].StudyInstanceUID)
        assert local_instance_count(platform.archive, pet_study) == len(patient.pet) + len(patient.pet_ct)
        assert local_instance_count(platform.archive, str(patient.planning_ct[0].StudyInstanceUID)) == 0
    finally:
        source.close()
        server.shutdown()
        platform.close()


def test_a_remote_that_does_not_know_us_fails_the_job_with_the_status(sqlite_settings, tmp_path, priors):
    platform = open_platform(sqlite_settings)
    source = RemoteOncopacs(tmp_path, RemoteAE("SOMEONE", "127.0.0.1", free_port()))
    try:
        for dataset in priors[0].all_datasets():
            source.platform.archive.ingest_dataset(dataset, source="t")
        ours = configured(sqlite_settings, source.ae)
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, ours)
        build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu()), None)
        run_jobs(jobs)
        job = jobs.queue.list(kind=PREFETCH).jobs[0]
    finally:
        source.close()
        platform.close()
    assert job.status is JobStatus.FAILED
    assert "REMOTE at 127.0.0.1" in job.message and "0xA801" in job.message
    assert "must list our AE title" in job.message


def test_a_remote_that_is_down_fails_the_job_naming_it(sqlite_settings):
    down = RemoteAE("REMOTE", "127.0.0.1", free_port())
    ours = configured(sqlite_settings, down)
    with open_platform(sqlite_settings) as platform:
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, ours)
        outcome = build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu()), None)
        run_jobs(jobs)
        job = jobs.queue.list(kind=PREFETCH).jobs[0]
    assert outcome.ack is AckCode.ACCEPT
    assert job.status is JobStatus.FAILED
    assert job.message.startswith(f"REMOTE at 127.0.0.1:{down.port} could not be reached")
    assert PATIENT not in job.message


def test_not_configured_accepts_the_appointment_and_queues_nothing(sqlite_settings):
    with open_platform(sqlite_settings) as platform:
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, sqlite_settings)
        outcome = build_prefetch_handlers(jobs, sqlite_settings)["SIU^S12"](parse_message(siu()), None)
        assert outcome.ack is AckCode.ACCEPT and NOT_CONFIGURED in outcome.text
        assert jobs.queue.list(kind=PREFETCH).total == 0


def test_an_appointment_without_a_patient_is_not_applied(sqlite_settings):
    ours = configured(sqlite_settings, RemoteAE("REMOTE", "127.0.0.1", 104))
    with open_platform(sqlite_settings) as platform:
        jobs = job_system(platform.archive)
        outcome = build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu(patient_id="")), None)
        assert outcome.ack is AckCode.ERROR and "PID-3" in outcome.text
        assert jobs.queue.list(kind=PREFETCH).total == 0


def test_a_wildcard_patient_id_is_not_prefetched(sqlite_settings):
    ours = configured(sqlite_settings, RemoteAE("REMOTE", "127.0.0.1", 104))
    with open_platform(sqlite_settings) as platform:
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, ours)
        outcome = build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu(patient_id="PF*")), None)
        assert outcome.ack is AckCode.ERROR and "wildcard" in outcome.text
        assert jobs.queue.list(kind=PREFETCH).total == 0
        jobs.queue.enqueue(PREFETCH, {"patient_id": "*"}, "t")  # as POST /api/jobs could
        run_jobs(jobs)
        job = jobs.queue.list(kind=PREFETCH).jobs[0]
        assert job.status is JobStatus.FAILED and "wildcard" in job.message


def test_body_part_from_the_appointment_service():
    assert appointment_body_part(parse_message(siu(service="CTCHEST^CT CHEST PLANNING"))) == "CHEST"
    assert appointment_body_part(parse_message(siu(service="FU^Follow-up visit"))) == ""


def test_default_rules_when_none_are_configured():
    assert parse_prefetch_rules(()) == DEFAULT_RULES


@pytest.mark.parametrize(("table", "problem"), [
    ({"modality": ["CT"]}, "name must be a non-empty string"),
    ({"name": "x", "newest": 0}, "newest must be a whole number of at least 1"),
    ({"name": "x", "within_days": "5y"}, "within_days must be a whole number"),
    ({"name": "x", "modality": [3]}, "modality must be a modality or a list"),
    ({"name": "x", "bodypart": "HEAD"}, "unknown key(s) bodypart"),
    ({"name": "x", "series_description": 7}, "must be strings"),
])
def test_bad_rules_name_the_entry(table, problem):
    with pytest.raises(ConfigError) as raised:
        parse_prefetch_rules([{"name": "ok"}, table])
    assert "[[prefetch]] entry 2" in str(raised.value) and problem in str(raised.value)


def test_duplicate_rule_names_are_refused():
    with pytest.raises(ConfigError, match="'a' is used twice"):
        parse_prefetch_rules([{"name": "a"}, {"name": "a"}])


def test_install_refuses_bad_rules(sqlite_settings):
    with open_platform(sqlite_settings) as platform, pytest.raises(ConfigError, match="entry 1"):
        install_prefetch(platform.archive, job_system(platform.archive), sqlite_settings.with_overrides(
            prefetch=({"name": "x", "newest": -1},)))


def study(uid: str, day: str, *series: tuple[str, str, str]) -> RemoteStudy:
    return RemoteStudy(uid, day, "", 1, tuple(RemoteSeries(f"{uid}.{i}", m, b, d, 1)
                                              for i, (m, b, d) in enumerate(series)))


def test_selection_keeps_the_newest_within_the_age_limit():
    studies = [
        study("1", "20260101", ("CT", "CHEST", "Planning CT"), ("RTSTRUCT", "", "")),
        study("2", "20250101", ("CT", "CHEST", "Planning CT"), ("RTPLAN", "", "")),
        study("3", "20240101", ("CT", "CHEST", "Planning CT"), ("RTSTRUCT", "", "")),
        study("4", "20200101", ("CT", "CHEST", "Diagnostic")),
        study("5", "", ("CT", "CHEST", "undated")),
        study("6", "20261101", ("PT", "WHOLEBODY", "FDG"), ("CT", "WHOLEBODY", "AC")),
    ]
    rules = parse_prefetch_rules([
        {"name": "plan", "modality": "CT", "series_description": "*plan*", "study_has": ["RTSTRUCT", "RTPLAN"],
         "newest": 2},
        {"name": "chest", "body_part": "same", "newest": 5, "within_days": 1825},
    ])
    chosen = select_studies(studies, rules, body_part="chest", appointment=date(2026, 12, 15))
    assert chosen == {"1": ("plan", "chest"), "2": ("plan", "chest"), "3": ("chest",)}
    anything = select_studies(studies, DEFAULT_RULES, body_part="", appointment=date(2026, 12, 15))
    assert set(anything) == {"6", "1", "2"}  # any body part: the two newest; planning CTs 1 and 2; the PET-CT 6


def test_an_instance_held_here_with_other_bytes_makes_a_partial_move(sqlite_settings, tmp_path, priors):
    patient, _ = priors
    platform = open_platform(sqlite_settings)
    server = start_dimse(sqlite_settings, platform.archive)
    source = RemoteOncopacs(tmp_path, RemoteAE("ONCOPACS", "127.0.0.1", server.server_address[1]))
    try:
        for dataset in patient.all_datasets():
            source.platform.archive.ingest_dataset(dataset, source="t")
        altered = copy.deepcopy(patient.planning_ct[0])
        altered.SeriesDescription = "edited here"
        platform.archive.ingest_dataset(altered, source="t")
        ours = configured(sqlite_settings, source.ae, prefetch=({"name": "plan", "study_has": "RTPLAN"},))
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, ours)
        build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu()), None)
        run_jobs(jobs)
        job = jobs.queue.list(kind=PREFETCH).jobs[0]
    finally:
        source.close()
        server.shutdown()
        platform.close()
    assert job.status is JobStatus.SUCCEEDED, job.message
    (entry,) = job.result["studies"]
    planning = len(patient.planning_ct) + 3
    assert job.result["partial"] == 1 and entry["outcome"] == "partial" and entry["status"] == "0xB000"
    assert entry["failed"] == 1 and entry["completed"] == planning - 1 and entry["local_instances"] == planning


def test_a_tls_remote_is_queried_and_moved_over_tls(sqlite_settings, tmp_path, priors):
    certs = write_trial_certificates(tmp_path / "certs")
    patient, _ = priors
    platform = open_platform(sqlite_settings)
    server = start_dimse(sqlite_settings, platform.archive)
    source = RemoteOncopacs(tmp_path, RemoteAE("ONCOPACS", "127.0.0.1", server.server_address[1]),
                            TlsFiles(certs.server_cert, certs.server_key, None))
    try:
        for dataset in patient.all_datasets():
            source.platform.archive.ingest_dataset(dataset, source="t")
        ours = configured(sqlite_settings, source.ae, tls_ca=str(certs.ca))  # +tls peer, verified against the CA
        jobs = job_system(platform.archive)
        install_prefetch(platform.archive, jobs, ours)
        build_prefetch_handlers(jobs, ours)["SIU^S12"](parse_message(siu()), None)
        run_jobs(jobs)
        job = jobs.queue.list(kind=PREFETCH).jobs[0]
        untrusted = configured(sqlite_settings, source.ae)  # the system's CAs do not know the trial CA
        refused = job_system(platform.archive)
        install_prefetch(platform.archive, refused, untrusted)
        refused.queue.enqueue(PREFETCH, {"patient_id": PATIENT}, "t")
        run_jobs(refused)
        failed = refused.queue.list(kind=PREFETCH, status=JobStatus.FAILED).jobs[0]
    finally:
        source.close()
        server.shutdown()
        platform.close()
    assert source.ae.tls and job.status is JobStatus.SUCCEEDED, job.message
    assert job.result["moved"] == 2
    assert failed.message.startswith(f"REMOTE at 127.0.0.1:{source.ae.port}: TLS handshake failed"), failed.message
