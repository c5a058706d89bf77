"""Writing phantom datasets to disk as DICOM Part 10 files, one folder per series."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "X"


def compute_relative_path(ds: Dataset) -> Path:
    """``<PatientID>/<StudyID>/<Modality>_<SeriesNumber>/<Modality>_<InstanceNumber>.dcm``."""
    modality = _safe(str(ds.Modality))
    series = f"{modality}_{int(ds.SeriesNumber):03d}"
    return (
        Path(_safe(str(ds.PatientID)))
        / _safe(str(ds.StudyID))
        / series
        / f"{modality}_{int(ds.InstanceNumber):04d}.dcm"
    )


def write_datasets(datasets: Iterable[Dataset], out_dir: Path) -> list[Path]:
    """Write each dataset (with file meta, Explicit VR Little Endian) under ``out_dir``.

    Returns the written paths in input order. Raises ValueError when two datasets map to
    the same path (e.g. two series with the same number in one study).
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    seen: dict[Path, str] = {}
    for ds in datasets:
        path = out_dir / compute_relative_path(ds)
        other = seen.setdefault(path, ds.SOPInstanceUID)
        if other != ds.SOPInstanceUID:
            raise ValueError(f"{ds.SOPInstanceUID} and {other} both map to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(path, ds, enforce_file_format=True)
        written.append(path)
    return written
