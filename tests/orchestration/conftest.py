"""Phantom patients in an archive, and the checks every de-identified export must pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from fusion.dicom_reg import build_registration_dataset
from fusion.registration import Registration, RegistrationKind
from fusion.volume import load_series, read_series_info
from oncopacs.index.models import DeidPatient, DeidUid
from oncopacs.phantom.geometry import centred_grid
from oncopacs.phantom.patient import DemoPatient, build_demo_patient
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings

SMALL_GRIDS = {"ct_grid": centred_grid((10, 16, 16), (16.0, 16.0, 15.0)),
               "dose_grid": centred_grid((11, 11, 11), (12.0, 12.0, 12.0)),
               "pet_grid": centred_grid((10, 10, 10), (25.6, 25.6, 15.0))}


def small_patient(patient_id: str, name: str) -> DemoPatient:
    """A demo patient (planning CT, RTSTRUCT, RT Ion Plan, RTDOSE; PET-CT) on coarse grids."""
    return build_demo_patient(patient_id, name, **SMALL_GRIDS)  # type: ignore[arg-type]


def build_registration(patient: DemoPatient) -> Dataset:
    """A rigid (identity) Spatial Registration from the PET-CT's CT to the planning CT of ``patient``."""
    fixed, moving = load_series(list(patient.planning_ct)), load_series(list(patient.pet_ct))
    registration = Registration(sitk.Euler3DTransform(), RegistrationKind.RIGID, read_series_info(fixed),
                                read_series_info(moving), 0.1)
    return build_registration_dataset(registration, fixed, moving)


def patient_datasets(patient: DemoPatient) -> list[Dataset]:
    return [*patient.all_datasets(), build_registration(patient)]


@pytest.fixture
def deid_platform(sqlite_settings: Settings) -> Iterator[Platform]:
    with open_platform(sqlite_settings) as platform:
        yield platform


def ingest(platform: Platform, datasets: list[Dataset]) -> None:
    for ds in datasets:
        result = platform.archive.ingest_dataset(ds, source="test")
        assert result.acknowledged, result.reason


def read_export(folder: Path) -> list[Dataset]:
    files = sorted(folder.rglob("*.dcm"))
    assert files, f"nothing exported under {folder}"
    return [dcmread(f) for f in files]


def uid_map(platform: Platform) -> dict[str, str]:
    with platform.index.reading() as session:
        return {row.original_uid: row.deid_uid for row in session.execute(select(DeidUid.original_uid,
                                                                                   DeidUid.deid_uid))}


def patient_offsets(platform: Platform) -> dict[str, tuple[str, int]]:
    """Original Patient ID -> (pseudonym, date offset in days)."""
    with platform.index.reading() as session:
        rows = session.execute(select(DeidPatient.patient_id, DeidPatient.pseudonym, DeidPatient.date_offset_days))
        return {pid: (pseudonym, offset) for pid, pseudonym, offset in rows}


def walk_uids(ds: Dataset, path: tuple = ()) -> Iterator[tuple[tuple, str, str]]:
    """(path, keyword, value) of every UI value in ``ds``, nested sequences included."""
    for elem in ds:
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from walk_uids(item, (*path, elem.tag, i))
        elif elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            for j, value in enumerate(values):
                yield (*path, elem.tag, j), elem.keyword, str(value)


def targets(datasets: list[Dataset]) -> set[str]:
    """UIDs a reference can resolve to: instances, series, studies, frames of reference."""
    return {str(ds.get(k)) for ds in datasets for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                                                       "FrameOfReferenceUID") if ds.get(k)}


def assert_references_resolve(originals: list[Dataset], exported: list[Dataset], mapping: dict[str, str]) -> int:
    """Every UID reference of the originals that resolved among them resolves in the export, to the mapped UID.

    Returns how many references were checked.
    """
    inverse = {new: old for old, new in mapping.items()}
    assert len(inverse) == len(mapping), "two original UIDs share a replacement"
    by_sop = {str(ds.SOPInstanceUID): ds for ds in originals}
    original_targets, exported_targets = targets(originals), targets(exported)
    checked = 0
    for ds in exported:
        original = by_sop[inverse[str(ds.SOPInstanceUID)]]
        original_uids = {path: value for path, _, value in walk_uids(original)}
        for path, keyword, value in walk_uids(ds):
            if keyword in ("SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID") or value not in inverse:
                assert value == original_uids.get(path), f"{keyword} changed without a mapping"
                continue
            assert original_uids[path] == inverse[value], f"{keyword} maps to another UID than its original"
            if inverse[value] in original_targets:
                assert value in exported_targets, f"{keyword} no longer resolves inside the export"
                checked += 1
    return checked
