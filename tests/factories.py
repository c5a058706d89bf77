"""Builders of small test objects (deterministic, no downloads)."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom import Dataset, dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

from oncopacs.phantom import build_benchmark_ct


def small_ct_series(n: int = 3, *, studies: int = 1, prefix: str = "T") -> list[Dataset]:
    """``n`` 16x16 CT slices spread over ``studies`` studies (one patient each)."""
    return list(build_benchmark_ct(n, studies, rows=16, cols=16, prefix=prefix))


def part10_bytes(dataset: Dataset) -> bytes:
    """The Part 10 encoding of ``dataset``."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def write_files(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, dataset in enumerate(datasets):
        path = folder / f"{dataset.Modality}_{i:04d}.dcm"
        dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    return paths


def without(dataset: Dataset, *keywords: str) -> Dataset:
    """A copy of ``dataset`` lacking the given attributes."""
    copy = Dataset(dataset)
    copy.file_meta = dataset.file_meta
    for keyword in keywords:
        if keyword in copy:
            delattr(copy, keyword)
    return copy


def explicit_le(dataset: Dataset) -> Dataset:
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset
