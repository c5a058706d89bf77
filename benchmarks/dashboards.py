#!/usr/bin/env python
"""Dashboards: first load of the tumour board with 200 synthetic patients (target <= 2 s).

Run from the repository root with the project's virtual environment active::

    python benchmarks/dashboards.py               # 200 patients, 10 loads
    python benchmarks/dashboards.py --patients 500 --repeat 5
    python benchmarks/dashboards.py --json > result.json

A fresh SQLite archive in a temporary folder receives one small CT per synthetic patient (through
the ingest path, BodyPartExamined from a few sites) and, for each, a ``pet_timepoint`` baseline and
follow-up and a ``pet_response`` result with a PERCIST category. A "first load" is what a browser
does when it opens /dashboards/board/: GET the page, GET ``_dash-layout`` and ``_dash-dependencies``,
then POST the initial callback (the cohort table, the filter options, the button states), all with
a bearer token through the full app (authentication, audit). One warm-up load is discarded.
Progress goes to standard error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit, log, machine_info, machine_line

TARGET_S = 2.0
SITES = ("LUNG", "HEADNECK", "PELVIS", "BREAST")
CATEGORIES = ("CMR", "PMR", "SMD", "PMD")


def _populate(archive, patients: int) -> None:
    from pydicom.uid import generate_uid

    from oncopacs.analysis.models import AnalysisResult
    from tests.factories import small_ct_series

    template = small_ct_series(1, prefix="B")[0]
    for i in range(patients):
        ds = template.copy()
        ds.PatientID, ds.PatientName = f"BENCH-{i:04d}", f"Bench^Patient{i:04d}"
        ds.BodyPartExamined = SITES[i % len(SITES)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        if not archive.ingest_dataset(ds, source="bench").acknowledged:
            raise SystemExit(f"ingest of synthetic patient {i} failed")
    now = datetime.now(UTC)
    with archive.index.writing() as session:
        for i in range(patients):
            pid = f"BENCH-{i:04d}"
            for n, day in enumerate(("20240105", "20240320")):
                session.add(AnalysisResult(kind="pet_timepoint", input_key=f"{pid}-tp{n}", patient_id=pid,
                                           time_point=day, result_json=json.dumps({"suv_type": "bw"}), created_at=now))
            category = CATEGORIES[i % len(CATEGORIES)]
            session.add(AnalysisResult(kind="pet_response", input_key=f"{pid}-r", patient_id=pid, time_point="20240320",
                                       result_json=json.dumps({"percist": {"category": category}}), created_at=now))


def _first_load(client, headers: dict[str, str]) -> float:
    inputs = [{"id": "url", "property": "pathname", "value": "/dashboards/board/"},
              *({"id": i, "property": "value", "value": None} for i in ("site", "status", "category"))]
    outputs = [("cohort", "children"), ("count", "children"), ("site", "options"), ("status", "options"),
               ("category", "options"), ("pdf-patient", "options"), ("export-csv", "disabled"),
               ("make-pdf", "disabled")]
    body = {"output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
            "outputs": [{"id": i, "property": p} for i, p in outputs], "inputs": inputs,
            "changedPropIds": ["url.pathname"], "state": []}
    start = time.perf_counter()
    for path in ("/dashboards/board/", "/dashboards/board/_dash-layout", "/dashboards/board/_dash-dependencies"):
        if client.get(path, headers=headers).status_code != 200:
            raise SystemExit(f"GET {path} failed")
    answer = client.post("/dashboards/board/_dash-update-component", json=body, headers=headers)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200 or "BENCH-0000" not in answer.get_data(as_text=True):
        raise SystemExit(f"the board callback failed ({answer.status_code})")
    return elapsed


def run(patients: int, repeat: int) -> dict:
    from oncopacs.auth.roles import Role
    from oncopacs.platform import open_platform
    from oncopacs.settings import Settings
    from oncopacs.web.app import create_app

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder) / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key="bench")
        platform = open_platform(settings)
        archive = platform.archive
        log(f"ingesting {patients} synthetic patients with PET results")
        _populate(archive, patients)
        app = create_app(platform)
        users = app.extensions["oncopacs.users"]
        users.add_user("bench", Role.TUMOUR_BOARD, "correct horse battery")
        headers = {"Authorization": f"Bearer {users.create_token('bench')}"}
        client = app.test_client()
        _first_load(client, headers)  # warm-up: imports, component bundles, caches
        times = []
        for k in range(repeat):
            times.append(_first_load(client, headers))
            log(f"load {k + 1}/{repeat}: {times[-1] * 1000:.0f} ms")
        archive.close()
    ordered = sorted(times)
    return {"machine": machine_info(), "patients": patients, "repeat": repeat,
            "p50_s": statistics.median(ordered),
            "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "max_s": ordered[-1], "target_s": TARGET_S, "meets_target": ordered[-1] <= TARGET_S}


def render(report: dict) -> str:
    row = (f"{report['patients']:>9} {report['repeat']:>6} {report['p50_s'] * 1000:>9.0f} "
           f"{report['p95_s'] * 1000:>9.0f} {report['max_s'] * 1000:>9.0f} "
           f"{'met' if report['meets_target'] else 'MISSED':>8}")
    lines = [machine_line("Tumour-board dashboard: first load (page, layout, dependencies, initial callback)",
                          report["machine"]),
             f"{'patients':>9} {'loads':>6} {'p50 (ms)':>9} {'p95 (ms)':>9} {'max (ms)':>9} {'target':>8}", row]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return emit(run(args.patients, args.repeat), args.json, render)


if __name__ == "__main__":
    raise SystemExit(main())
