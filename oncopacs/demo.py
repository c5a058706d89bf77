"""``oncopacs demo``: load synthetic demo patients into the archive through the ingest path."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from oncopacs.archive.importer import ImportSummary
from oncopacs.archive.ingest import Archive
from oncopacs.auth.roles import Role
from oncopacs.auth.users import UserStore
from oncopacs.pet_results import load_followup_demo
from oncopacs.phantom.patient import build_demo_patients
from oncopacs.phantom.review_demo import load_review_demo


def load_demo(archive: Archive, n_patients: int = 2, on_object: Callable[[], None] | None = None) -> ImportSummary:
    """Generate ``n_patients`` phantom patients and ingest every object; re-running adds nothing."""
    summary = ImportSummary()
    for patient in build_demo_patients(n_patients):
        for dataset in patient.all_datasets():
            summary.count(f"{dataset.Modality} {dataset.SOPInstanceUID}", archive.ingest_dataset(dataset, source="demo"))
            if on_object:
                on_object()
    load_followup_demo(archive, summary.count, on_object)  # baseline / mid-treatment / follow-up PET-CT patients
    load_review_demo(archive, summary.count, on_object)  # a small 4D CT and a rigid registration with its QA
    return summary


DEMO_USER = "demo"
DEMO_CREDENTIALS_FILE = "demo-credentials.txt"


def ensure_demo_user(archive: Archive, data_dir: Path) -> tuple[str, str]:
    """The demo's admin account (user ``demo``), created once with a random password kept in the data directory (0600)."""
    credentials = data_dir / DEMO_CREDENTIALS_FILE
    users = UserStore(archive.index)
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
