"""De-identified export of the planning-system files in ../shared/data (RayStation, Eclipse)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from oncopacs.archive.importer import import_files, iter_files
from oncopacs.index.models import Instance, Study
from oncopacs.orchestration import DirectorySink, export_deidentified
from tests.conftest import SHARED_DATA, require
from tests.orchestration.conftest import assert_references_resolve, read_export, uid_map


@pytest.mark.slow
def test_real_planning_files_export_with_every_reference_resolved(deid_platform, tmp_path: Path):
    require(SHARED_DATA.is_dir(), f"shared test data {SHARED_DATA} is absent")
    files = list(iter_files([SHARED_DATA]))
    summary = import_files(deid_platform.archive, files)
    assert summary.stored >= 20
    with deid_platform.index.reading() as session:
        studies = list(session.scalars(select(Study.study_instance_uid)))
        stored_sops = set(session.scalars(select(Instance.sop_instance_uid)))  # not those refused (ID conflicts)
    first_copies: dict[str, Dataset] = {}  # a file met again under another folder was stored (or refused) once
    for ds in map(dcmread, (p for p in files if p.suffix == ".dcm")):
        first_copies.setdefault(str(ds.SOPInstanceUID), ds)
    originals = list(first_copies.values())
    exported = export_deidentified(deid_platform.archive, deid_platform.audit, studies, DirectorySink(tmp_path / "out"),
                                   actor="t", source="t")
    result = read_export(tmp_path / "out")
    assert exported.instances == len(result) == summary.stored
    archived = [ds for ds in originals if str(ds.SOPInstanceUID) in stored_sops]
    checked = assert_references_resolve(archived, result, uid_map(deid_platform))
    assert checked >= 10  # doses -> plans, plans -> structure sets, frames of reference
    blob = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.dcm"))
    for ds in archived:
        for value in (ds.get("PatientID"), str(ds.get("PatientName", ""))):
            if value and len(value) >= 4:
                assert value.encode() not in blob
