#!/usr/bin/env python
"""Encryption at rest: ingest and read throughput with and without a storage key (median of 5 rounds).

Run from the repository root with the project's virtual environment active::

    python benchmarks/encryption.py              # 200 CT slices of 512x512 (about 0.5 MB each), 5 rounds
    python benchmarks/encryption.py --quick      # 40 slices, 2 rounds

Each round stores the same slices through the archive's ingest path (``Archive.ingest``: staged, fsynced,
placed, indexed in SQLite) into a fresh data directory, then reads every one back with its SHA-256 checked
(``Storage.read``, as WADO-RS and C-GET do), once without a key and once with one, interleaved (alternating
which goes first). Also the bare AES-GCM container on the same files in memory, one core. Figures are MB/s of
plaintext; nothing here asserts.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydicom import Dataset, dcmwrite
from sqlalchemy import select

from oncopacs.archive.encryption import generate_key_file, load_storage_keys, seal, unseal
from oncopacs.index.models import Instance
from oncopacs.phantom import build_benchmark_ct
from oncopacs.platform import open_archive
from oncopacs.settings import Settings


def part10_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _round(folder: Path, files: list[bytes], key_file: Path | None) -> tuple[float, float]:
    """Seconds to ingest ``files``, then to read them all back hash-checked."""
    archive = open_archive(Settings(data_dir=folder, storage_key_file=key_file))
    try:
        started = time.perf_counter()
        for data in files:
            archive.ingest(data, source="benchmark")
        ingest_s = time.perf_counter() - started
        with archive.index.reading() as session:
            rows = session.execute(select(Instance.file_path, Instance.sha256)).all()
        os.sync()
        started = time.perf_counter()
        for relative_path, sha256 in rows:
            archive.storage.read(relative_path, sha256)
        read_s = time.perf_counter() - started
    finally:
        archive.close()
    return ingest_s, read_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    count, rounds = (40, 2) if options.quick else (200, 5)
    files = [part10_bytes(ds) for ds in build_benchmark_ct(count, 1, rows=512, cols=512, prefix="E")]
    megabytes = sum(map(len, files)) / 1e6
    with tempfile.TemporaryDirectory(prefix="oncopacs-enc-") as tmp:
        key_file = Path(tmp) / "storage.key"
        generate_key_file(key_file)
        times: dict[str, list[tuple[float, float]]] = {"plaintext": [], "sealed": []}
        for number in range(rounds):
            order = (("plaintext", None), ("sealed", key_file))
            for label, key in order if number % 2 == 0 else reversed(order):  # neither always goes first
                times[label].append(_round(Path(tmp) / f"{label}-{number}", files, key))
                print(f"round {number + 1}/{rounds} {label} done", file=sys.stderr)
        keys = load_storage_keys(key_file)
        seal_s = statistics.median(_timed(lambda: [seal(data, keys) for data in files]) for _ in range(rounds))
        sealed = [seal(data, keys) for data in files]
        unseal_s = statistics.median(_timed(lambda: [unseal(data, keys) for data in sealed]) for _ in range(rounds))
    print(f"{count} CT slices, {megabytes:.1f} MB, median of {rounds} rounds (MB/s of plaintext)")
    print(f"{'':10} {'ingest':>10} {'read+check':>12}")
    for label, rows in times.items():
        ingest = megabytes / statistics.median(r[0] for r in rows)
        read = megabytes / statistics.median(r[1] for r in rows)
        print(f"{label:10} {ingest:10.0f} {read:12.0f}")
    print(f"the container alone, the same files in memory, one core: seal {megabytes / seal_s:.0f} MB/s, "
          f"unseal {megabytes / unseal_s:.0f} MB/s")


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
