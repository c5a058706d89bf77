"""Every file this project did not write, through ``oncopacs import`` and the readers (issue 17).

The corpus: pydicom's bundled test, character-set and palette files (only what the installed package ships;
nothing is downloaded), pynetdicom's ``tests/dicom_files``, and everything under ``../shared/data`` (planning-system
files with their README, licences, CSV and NRRD). Each source is imported into its own archive with the CLI:
no traceback, stored + duplicate + rejected + skipped = the files given, and every refusal and skip has a reason.
Then each file pydicom can read goes to the reader its modality calls for — RTSTRUCT, RTDOSE, RTPLAN, PET (SUV)
and CT/MR/PT series (the fusion volume loader) — which must either work or raise one of the project's declared
errors (:data:`oncopacs.errors.EXPECTED_ERRORS`) with a message.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom.data
import pynetdicom
import pytest
from click.testing import CliRunner
from pydicom import Dataset, dcmread

from fusion.pet.suv import read_suv_image
from fusion.volume import load_series
from oncopacs.cli import main
from oncopacs.errors import EXPECTED_ERRORS
from rt.dose import read_dose
from rt.plan import read_plan_summary
from rt.structures import read_structure_set
from tests.conftest import SHARED_DATA, require

SKIP_REASONS = ("not DICOM", "DICOMDIR", "hidden file")
VOLUME_MODALITIES = {"CT", "MR", "PT"}
#: One dataset's reader per modality (RT Ion Plans are Modality RTPLAN too).
DATASET_READERS: dict[str, Callable[[Dataset], Any]] = {
    "RTSTRUCT": read_structure_set,
    "RTDOSE": read_dose,
    "RTPLAN": read_plan_summary,
}


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def pydicom_files() -> list[Path]:
    bundled = [*pydicom.data.get_testdata_files(), *pydicom.data.get_charset_files(),
               *pydicom.data.get_palette_files()]
    return sorted(Path(name) for name in bundled if os.path.isfile(name))


def pynetdicom_files() -> list[Path]:
    folder = Path(pynetdicom.__file__).parent / "tests" / "dicom_files"
    return _files(folder) if folder.is_dir() else []


def shared_files() -> list[Path]:
    return _files(SHARED_DATA) if SHARED_DATA.is_dir() else []


SOURCES: dict[str, Callable[[], list[Path]]] = {
    "pydicom": pydicom_files,
    "pynetdicom": pynetdicom_files,
    "shared-data": shared_files,
}


@pytest.fixture(params=sorted(SOURCES), scope="module")
def corpus(request: pytest.FixtureRequest) -> tuple[str, list[Path]]:
    files = SOURCES[request.param]()
    require(bool(files), f"{request.param}: no test files are installed or present")
    return request.param, files


@pytest.fixture(scope="module")
def imported(corpus: tuple[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    name, files = corpus
    data_dir = tmp_path_factory.mktemp(f"corpus-{name}")
    result = CliRunner().invoke(main, ["--data-dir", str(data_dir), "import", "--json", *map(str, files)],
                                catch_exceptions=False)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.exit_code in (0, 1), result.stderr[-3000:]
    summary = json.loads(result.stdout)
    summary["exit_code"], summary["files"] = result.exit_code, files
    return summary


def test_every_file_is_counted_once_with_a_reason(imported: dict[str, Any]):
    files = imported["files"]
    rejected, skipped = imported["rejected"], imported["skipped"]
    assert imported["stored"] + imported["duplicate"] + len(rejected) + len(skipped) == len(files)
    named = [item["path"] for item in [*rejected, *skipped]]
    assert len(set(named)) == len(named) and set(named) <= {str(path) for path in files}
    assert imported["stored"] > 0
    assert imported["exit_code"] == (1 if rejected else 0)
    assert all(item["reason"].strip() for item in [*rejected, *skipped])
    assert all(item["reason"].startswith(SKIP_REASONS) for item in skipped), skipped
    # A reader bug in ingest shows as "unexpected <ExceptionType>": none may happen on real files.
    assert not [item for item in rejected if "unexpected" in item["reason"]]


def test_what_pydicom_cannot_read_is_never_stored(imported: dict[str, Any]):
    refused = {item["path"] for item in [*imported["rejected"], *imported["skipped"]]}
    unreadable = [path for path in imported["files"] if _read(path) is None]
    assert all(str(path) in refused for path in unreadable)


def test_readers_work_or_raise_a_declared_error(corpus: tuple[str, list[Path]]):
    _name, files = corpus
    outcomes: Counter[tuple[str, str]] = Counter()
    crashes: list[str] = []
    series: defaultdict[tuple[str, str], list[Path]] = defaultdict(list)

    def run(label: str, reader: Callable[[], Any]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's notes on doubtful values are not failures
                reader()
        except EXPECTED_ERRORS as exc:
            outcomes[label, "refused"] += 1
            if not str(exc).strip():
                crashes.append(f"{label}: {type(exc).__name__} without a message")
        except Exception as exc:  # noqa: BLE001 - collected: the assertion lists every crash at once
            outcomes[label, "crashed"] += 1
            crashes.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            outcomes[label, "read"] += 1

    for path in files:
        ds = _read(path)
        modality = str(ds.get("Modality", "") or "").strip().upper() if ds is not None else ""
        if ds is None or not modality:
            continue
        if modality in DATASET_READERS:
            run(f"{modality} {path.name}", lambda reader=DATASET_READERS[modality], ds=ds: reader(ds))
        if modality in VOLUME_MODALITIES:
            series[modality, str(ds.get("SeriesInstanceUID", ""))].append(path)
    for (modality, uid), paths in series.items():
        if modality == "PT":
            run(f"PET SUV {uid}", lambda paths=paths: read_suv_image(_read_all(paths)))
        run(f"{modality} volume {uid}", lambda paths=paths: load_series(paths))
    assert not crashes, "\n".join(crashes)


def _read(path: Path) -> Dataset | None:
    """The dataset in ``path`` as a reader would get it, or None where pydicom cannot read it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(path, force=True)
    except Exception:  # noqa: BLE001 - pydicom raises many kinds on damaged files
        return None


def _read_all(paths: Sequence[Path]) -> list[Dataset]:
    return [ds for ds in map(_read, paths) if ds is not None]
