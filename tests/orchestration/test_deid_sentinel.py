"""Nothing planted in the inputs survives the export, and an independent de-identifier (dicognito) agrees.

Every text attribute of every input object gets a sentinel: the patient's name, ID, birth date and accession
number (the identity the profile must clean out of the text it keeps) or, where the profile empties the
attribute, a unique marker. Every exported byte is then scanned for all of them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset

from oncopacs.orchestration import DeidOptions, DirectorySink, export_deidentified
from oncopacs.orchestration.deid_profile import DESCRIPTORS, TECHNICAL_TEXT
from tests.orchestration.conftest import ingest, patient_datasets, patient_offsets, read_export, small_patient, uid_map

NAME, FAMILY, GIVEN, PATIENT_ID, BIRTH_DATE, ACCESSION = "Wvyfam^Qzxname", "Wvyfam", "Qzxname", "QZX731", "19011223", \
    "QZXACC9"
MARKER = "QZUQV"  # + a number: a text attribute the profile must empty
TIME = "235801.987654"
IDENTITY_TEXT = (f"{FAMILY} {PATIENT_ID}", f"{GIVEN} {BIRTH_DATE}", f"{ACCESSION} {FAMILY}")
FREE_TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC"}
NO_OPTIONS = DeidOptions(retain_longitudinal_dates=False, retain_patient_characteristics=False,
                         clean_descriptors=False)


def plant(ds: Dataset, counter: Iterator[int]) -> int:
    """Put a sentinel into every text, person name, date, date-time and time of ``ds``; how many were planted."""
    planted = 0
    for elem in ds:
        if elem.VR == "SQ":
            planted += sum(plant(item, counter) for item in elem.value)
            continue
        keyword = elem.keyword or ""
        if keyword in ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate"):
            continue  # the identity itself, set below
        if elem.VR == "PN":
            elem.value = f"{MARKER}{next(counter)}^{FAMILY}"
        elif elem.VR == "DA":
            elem.value = BIRTH_DATE
        elif elem.VR == "DT":
            elem.value = BIRTH_DATE + "101010"
        elif elem.VR == "TM":
            elem.value = TIME
        elif elem.VR in FREE_TEXT_VRS and not elem.tag.is_private:
            kept = keyword in TECHNICAL_TEXT or keyword in DESCRIPTORS
            elem.value = IDENTITY_TEXT[next(counter) % 3] if kept else f"{MARKER}{next(counter)}"
        else:
            continue
        planted += 1
    return planted


@pytest.fixture
def planted(deid_platform):
    patient = small_patient(PATIENT_ID, NAME)
    datasets = patient_datasets(patient)
    counter = itertools.count(1000)
    total = 0
    for ds in datasets:
        ds.AccessionNumber, ds.PatientBirthDate = ACCESSION, BIRTH_DATE
        ds.OtherPatientIDs, ds.InstitutionName, ds.ImageComments = f"{PATIENT_ID}-B", NAME, f"{NAME} {PATIENT_ID}"
        total += plant(ds, counter)
    assert total > 500
    ingest(deid_platform, datasets)
    return deid_platform, datasets


def _sentinels(with_time: bool) -> list[bytes]:
    words = [FAMILY, GIVEN, PATIENT_ID, BIRTH_DATE, ACCESSION, MARKER] + ([TIME.split(".")[0]] if with_time else [])
    return [w.lower().encode() for w in words]


@pytest.mark.parametrize("options", [DeidOptions(), NO_OPTIONS], ids=["all-options", "no-options"])
def test_no_planted_sentinel_survives_in_any_exported_byte(planted, tmp_path: Path, options: DeidOptions):
    platform, datasets = planted
    stored = b"".join(p.read_bytes() for p in (platform.settings.storage_dir).rglob("*") if p.is_file()).lower()
    assert all(word in stored for word in _sentinels(with_time=True))  # planted, and kept by the archive
    export_deidentified(platform.archive, platform.audit, sorted({ds.StudyInstanceUID for ds in datasets}),
                        DirectorySink(tmp_path / "out"), options, actor="t", source="t")
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(files) == len(datasets)
    # Times stay with Retain Longitudinal Temporal Information (dates move, times do not); otherwise they go.
    for word in _sentinels(with_time=not options.retain_longitudinal_dates):
        leaks = [f.name for f in files if word in f.read_bytes().lower()]
        assert not leaks, f"{word!r} survives in {len(leaks)} file(s)"


def _flat(ds: Dataset, path: tuple = ()) -> dict[tuple, tuple[str, object]]:
    out: dict[tuple, tuple[str, object]] = {}
    for elem in ds:
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                out.update(_flat(item, (*path, elem.keyword, i)))
        else:
            out[(*path, elem.keyword or str(elem.tag))] = (elem.VR, elem.value)
    return out


def identifiers_left(ds: Dataset, *, pseudonym: str, new_uids: set[str], dates_kept: bool) -> list[str]:
    """What dicognito still finds identifying in ``ds``: attributes it changes that hold a value we did not make.

    Allowed are empty values, the pseudonym (Patient ID, name), replacement UIDs, moved dates (with the
    longitudinal option) and the de-identification method text.
    """
    before = _flat(ds)
    anonymized = copy.deepcopy(ds)
    Anonymizer(seed="independent-check").anonymize(anonymized)
    after = _flat(anonymized)
    left = []
    for path in set(before) | set(after):
        if before.get(path) == after.get(path) or path not in before:
            continue
        vr, value = before[path]
        values = [str(v) for v in (value if isinstance(value, list | tuple) else [value]) if str(v)]
        keyword = path[-1]
        if (not values or keyword == "DeidentificationMethod"
                or (vr == "UI" and set(values) <= new_uids)
                or (vr in ("DA", "DT", "TM") and dates_kept)
                or (keyword in ("PatientID", "PatientName") and values == [pseudonym])):
            continue
        left.append("/".join(map(str, path)))
    return sorted(left)


@pytest.mark.parametrize("options", [DeidOptions(), NO_OPTIONS], ids=["all-options", "no-options"])
def test_an_independent_deidentifier_finds_nothing_left(planted, tmp_path: Path, options: DeidOptions):
    platform, datasets = planted
    export_deidentified(platform.archive, platform.audit, sorted({ds.StudyInstanceUID for ds in datasets}),
                        DirectorySink(tmp_path / "out"), options, actor="t", source="t")
    new_uids = set(uid_map(platform).values())
    (pseudonym, _), = patient_offsets(platform).values()
    kept = options.retain_longitudinal_dates
    for ds in read_export(tmp_path / "out"):
        assert identifiers_left(ds, pseudonym=pseudonym, new_uids=new_uids, dates_kept=kept) == []
    # the check is not vacuous: on the inputs dicognito finds the identity we planted
    found = identifiers_left(datasets[0], pseudonym=pseudonym, new_uids=new_uids, dates_kept=False)
    assert {"PatientName", "PatientID", "InstitutionName", "StudyInstanceUID", "PatientBirthDate"} <= set(found)
