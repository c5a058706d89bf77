#!/usr/bin/env python
"""PDF reports: time to render each report type, and to deliver a final report over MLLP.

Run from the repository root with the project's virtual environment active::

    python benchmarks/reports.py              # 7 renders per type, 20 MLLP deliveries
    python benchmarks/reports.py --quick      # 3 renders per type, 5 deliveries
    python benchmarks/reports.py --json > result.json

The demo phantom patient is ingested into a fresh SQLite archive in a temporary folder. For each
type (plan, pet-response with two quantified time points and a PERCIST category in the index,
tumour-board), one warm-up render is discarded (font and template loading), then each repetition
times the whole of ``ReportService.make``: gathering the data (for the plan: reading RTPLAN,
RTSTRUCT and RTDOSE from storage and computing every DVH and the goals with ``rt``), rendering the
HTML and the PDF (WeasyPrint) and storing the draft. Target: p50 under 2 s. Delivery: an ORU^R01
with the PDF (base64 in OBX-5) sent to a python-hl7 MLLP listener on loopback that parses it and
answers AA, timed from claiming the delivery to recording the ACK. Progress goes to standard error.
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

from report import emit, log, machine_info, machine_line, notes_lines

TARGET_P50_S = 2.0


def _add_pet_results(archive, demo) -> None:
    from oncopacs.analysis.models import AnalysisResult, MetricValue

    study = str(demo.pet[0].StudyInstanceUID)
    now = datetime(2024, 3, 1, tzinfo=UTC)
    with archive.index.writing() as session:
        for key, time_point, values in (("a", "20240122", (9.8, 7.6, 42.5)), ("b", "20240301", (4.1, 3.2, 11.75))):
            result = AnalysisResult(kind="pet_timepoint", input_key=key * 64, patient_id=demo.patient.patient_id,
                                    study_instance_uid=study, time_point=time_point, inputs="", result_json="{}",
                                    created_at=now)
            session.add(result)
            session.flush()
            for metric, value in zip(("SUVmax[g/mL]", "SULpeak[g/mL]", "MTV[cc]"), values, strict=True):
                session.add(MetricValue(result_pk=result.id, patient_id=demo.patient.patient_id,
                                        study_instance_uid=study, structure="Lesion1", metric=metric, value=value))
        session.add(AnalysisResult(kind="pet_response", input_key="c" * 64, patient_id=demo.patient.patient_id,
                                   study_instance_uid=study, time_point="20240301", inputs="",
                                   result_json=json.dumps({"percist": {"category": "PMR"}}), created_at=now))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(renders: int, deliveries: int) -> dict:
    from oncopacs.auth.roles import Principal, Role
    from oncopacs.phantom import build_demo_patient
    from oncopacs.platform import open_archive
    from oncopacs.settings import Settings
    from reporting.oru import Hl7Destination
    from reporting.workflow import Destinations, ReportService
    from tests.reporting.conftest import MllpListener

    folder = Path(tempfile.mkdtemp(prefix="oncopacs-bench-reports-"))
    archive = open_archive(Settings(data_dir=folder / "data"))
    demo = build_demo_patient()
    for dataset in demo.all_datasets():
        archive.ingest_dataset(dataset, source="bench")
    _add_pet_results(archive, demo)
    listener = MllpListener().start()
    service = ReportService(archive, folder / "reports", Destinations(Hl7Destination("127.0.0.1", listener.port)))
    studies = {"plan": str(demo.rt_ion_plan.StudyInstanceUID), "pet-response": str(demo.pet[0].StudyInstanceUID),
               "tumour-board": str(demo.rt_ion_plan.StudyInstanceUID)}
    rows = []
    try:
        for name, study in studies.items():
            service.make(name, study, "bench")  # warm-up
            times, sizes = [], []
            for _ in range(renders):
                start = time.perf_counter()
                report = service.make(name, study, "bench")
                times.append(time.perf_counter() - start)
                sizes.append(report.pdf_size)
            rows.append({"type": name, "n": renders, "p50_s": statistics.median(times),
                         "p90_s": _percentile(times, 0.9), "min_s": min(times),
                         "pdf_kib": statistics.median(sizes) / 1024})
            log(f"{name}: p50 {rows[-1]['p50_s']:.3f} s")
        approver = Principal("bench", Role.PHYSICIST, "bench")
        final = service.approve(service.make("plan", studies["plan"], "bench").id, approver)
        service.deliver_due()  # the approval's own delivery (also a warm-up)
        times = []
        for _ in range(deliveries):
            service.deliveries.resend(final.id, service.destinations.pairs(), created_by="bench", now=service.clock())
            start = time.perf_counter()
            done = service.deliver_due()
            times.append(time.perf_counter() - start)
            assert [d.status.value for d in done] == ["acknowledged"], done
        delivery = {"n": deliveries, "p50_ms": 1000 * statistics.median(times),
                    "p90_ms": 1000 * _percentile(times, 0.9),
                    "pdf_kib": final.pdf_size / 1024, "received": len(listener.received)}
        log(f"MLLP delivery: p50 {delivery['p50_ms']:.1f} ms")
    finally:
        listener.stop()
        archive.close()
    return {"benchmark": "reports", "machine": machine_info(), "renders": rows, "mllp_delivery": delivery,
            "target_p50_s": TARGET_P50_S,
            "notes": ["render = gather data + HTML + WeasyPrint PDF + store the draft (fsync), warm process",
                      "MLLP delivery = claim + read PDF (SHA-256 checked) + build ORU + send + wait for AA + record"]}


def render(report: dict) -> str:
    lines = [machine_line("PDF reports", report["machine"]), "",
             f"{'report type':<14} {'n':>3} {'p50 [s]':>8} {'p90 [s]':>8} {'min [s]':>8} {'PDF [KiB]':>10}  "
             "target p50 < 2 s"]
    for row in report["renders"]:
        ok = "met" if row["p50_s"] < report["target_p50_s"] else "MISSED"
        lines.append(f"{row['type']:<14} {row['n']:>3} {row['p50_s']:>8.3f} {row['p90_s']:>8.3f} {row['min_s']:>8.3f} "
                     f"{row['pdf_kib']:>10.1f}  {ok}")
    d = report["mllp_delivery"]
    lines += ["", (f"MLLP delivery of a {d['pdf_kib']:.1f} KiB PDF (ORU^R01 -> AA), n={d['n']}: "
              f"p50 {d['p50_ms']:.1f} ms, p90 {d['p90_ms']:.1f} ms"), "", *notes_lines(report["notes"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 renders per type, 5 deliveries")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    report = run(3 if args.quick else 7, 5 if args.quick else 20)
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
