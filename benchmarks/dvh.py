#!/usr/bin/env python
"""DVHs from RTSTRUCT + RTDOSE files: OncoPACS ``rt.dvh`` against dicompyler-core, with analytic truth.

Run from the repository root with the project's virtual environment active::

    python benchmarks/dvh.py                   # clinical size: CT 512x512x150 (1x1x2 mm), 25 ROIs, dose 2.5 mm
    python benchmarks/dvh.py --quick           # smoke test: the default demo patient (CT 4x4x5 mm, dose 3 mm)
    python benchmarks/dvh.py --json > result.json

The synthetic case (:mod:`oncopacs.phantom.clinical` by default) is written to files with ``write_datasets``;
both tools read the same RTSTRUCT and RTDOSE files with their own parsers. OncoPACS:
``pydicom.dcmread`` + ``rt.structures.read_structure_set`` + ``rt.dose.read_dose`` once, then
``rt.dvh.compute_roi_dvh`` and ``compute_metric`` per ROI (defaults). dicompyler-core 0.5.6
(which needs pydicom < 3) runs in its own virtual environment
(``../shared/tools/dicompyler-reference`` prints its python) as a subprocess: the files are
read once with ``pydicom.dcmread`` and ``dvhcalc.get_dvh`` runs per ROI (defaults: no
interpolation). Imports are not timed in either; parsing the files is. Each tool repeats the
whole job ``--repeat`` times (default 5) in its own process, the runs alternating between the
tools so that both meet the same load, and the medians are compared: both get one cold run and
the same number of warm ones. ``--busy N`` keeps N CPU-bound neighbour processes running
meanwhile (a busy machine).

Truth is closed-form (``patient.truth``): the structure's exact volume, mean dose, D95%, D50%,
D2% and maximum dose. Progress goes to standard error; the table (or, with ``--json``, one JSON
document) to standard output. Nothing here asserts: a missed target is reported, not raised.
If dicompyler-core cannot be set up (e.g. no network for pip), the OncoPACS numbers and their
errors against truth are still printed, with a message saying why the peer is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from report import (  # benchmarks/report.py (the script's own folder)
    emit,
    fmt_ratio,
    log,
    machine_info,
    machine_line,
    notes_lines,
)
from shared import shared_tool  # benchmarks/shared.py

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DICOMPYLER_REFERENCE = shared_tool("dicompyler-reference")
TARGET_SPEEDUP = 10.0
EQUAL_DOSE_GY = 0.005  # half the 0.01 Gy DVH bin width both tools use
METRICS = ("volume_cc", "mean_gy", "d95_gy", "d50_gy", "d2_gy", "max_gy")
LABELS = {"volume_cc": "volume cc", "mean_gy": "mean Gy", "d95_gy": "D95% Gy", "d50_gy": "D50% Gy",
          "d2_gy": "D2% Gy", "max_gy": "max Gy"}

# Runs inside dicompyler-core's python (pydicom 2); argv[1] = JSON {"rtss", "rtdose", "rois": {name: number}}.
# One run (parse both files, compute every ROI, as run_oncopacs_once does) per line read from standard input, each
# answered with one JSON line, so that the benchmark can interleave the two tools' runs.
DICOMPYLER_SCRIPT = r"""
import json, sys, time
import dicompylercore, pydicom
from dicompylercore import dvhcalc
args = json.loads(sys.argv[1])
for _ in sys.stdin:
    out = {"version": dicompylercore.__version__, "rois": {}}
    start = time.perf_counter()
    rtss = pydicom.dcmread(args["rtss"], force=True)  # get_dvh takes paths or datasets, not parsers
    rtdose = pydicom.dcmread(args["rtdose"], force=True)
    out["parse_s"] = time.perf_counter() - start
    for name, number in args["rois"].items():
        t0 = time.perf_counter()
        dvh = dvhcalc.get_dvh(rtss, rtdose, int(number))
        out["rois"][name] = {
            "seconds": time.perf_counter() - t0,
            "volume_cc": float(dvh.volume), "mean_gy": float(dvh.mean),
            "d95_gy": float(dvh.statistic("D95").value), "d50_gy": float(dvh.statistic("D50").value),
            "d2_gy": float(dvh.statistic("D2").value),
            "max_gy": float(dvh.max), "min_gy": float(dvh.min),
        }
    out["total_s"] = time.perf_counter() - start
    print(json.dumps(out), flush=True)
"""



def build_phantom(quick: bool):
    from oncopacs.phantom import build_demo_patient
    from oncopacs.phantom.clinical import build_clinical_case

    if quick:
        return build_demo_patient(), "default demo patient: CT 64x64x30 (4x4x5 mm), dose 41^3 (3 mm)"
    return (
        build_clinical_case(),
        "clinical size: CT 512x512x150 (1x1x2 mm), 25 ROIs (spheres, cylinders, shells, ellipsoids, "
        "radii 4-160 mm), dose 133x133x121 (2.5 mm, covers the body)",
    )


def run_oncopacs_once(rtss_path: Path, dose_path: Path) -> dict:
    import pydicom

    from rt.dose import read_dose
    from rt.dvh import compute_metric, compute_roi_dvh
    from rt.errors import OutsideDoseGridError
    from rt.structures import read_structure_set

    start = time.perf_counter()
    structure_set = read_structure_set(pydicom.dcmread(rtss_path))
    dose = read_dose(pydicom.dcmread(dose_path))
    parse_s = time.perf_counter() - start
    rois, outside = {}, []
    for roi in structure_set.rois:
        if roi.is_empty:
            continue
        t0 = time.perf_counter()
        try:
            dvh = compute_roi_dvh(structure_set, roi.name, dose)
        except OutsideDoseGridError:
            outside.append(roi.name)  # no dose at all: nothing to compare
            continue
        rois[roi.name] = {
            "seconds": time.perf_counter() - t0,
            "volume_cc": dvh.total_volume_cc,
            "mean_gy": compute_metric(dvh, "Mean[Gy]"),
            "d95_gy": compute_metric(dvh, "D95%[Gy]"),
            "d50_gy": compute_metric(dvh, "D50%[Gy]"),
            "d2_gy": compute_metric(dvh, "D2%[Gy]"),
            "max_gy": compute_metric(dvh, "Max[Gy]"),
            "uncovered_cc": dvh.uncovered_volume_cc,
        }
    return {"parse_s": parse_s, "rois": rois, "outside": outside, "total_s": time.perf_counter() - start}


def _summarise_runs(first: dict, per_run_rois: list[dict], totals: list[float], parses: list[float], **extra) -> dict:
    rois = {name: dict(row, seconds=statistics.median(run[name]["seconds"] for run in per_run_rois))
            for name, row in first.items()}
    return {"rois": rois, "total_s": statistics.median(totals), "parse_s": statistics.median(parses),
            "runs_s": totals, **extra}


def dicompyler_python() -> tuple[str | None, str]:
    """(python path, '') or (None, why not)."""
    if not DICOMPYLER_REFERENCE.exists():
        return None, f"{DICOMPYLER_REFERENCE} is missing"
    try:
        result = subprocess.run([str(DICOMPYLER_REFERENCE)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"dicompyler-reference failed: {exc}"
    python = result.stdout.strip().splitlines()[-1].strip() if result.stdout.strip() else ""
    if result.returncode != 0 or not python or not os.access(python, os.X_OK):
        why = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None, (f"dicompyler-reference exited {result.returncode} ({why}); building its virtual "
                      "environment needs pip and the network")
    return python, ""


class DicompylerWorker:
    """dicompyler-core in its own python, doing one whole run (parse + every ROI) each time :meth:`run` asks."""

    def __init__(self, python: str, rtss_path: Path, dose_path: Path, roi_numbers: dict[str, int]) -> None:
        payload = json.dumps({"rtss": str(rtss_path), "rtdose": str(dose_path), "rois": roi_numbers})
        self.process = subprocess.Popen([python, "-c", DICOMPYLER_SCRIPT, payload], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise RuntimeError(f"dicompyler-core stopped (exit {self.process.wait()}): {stderr.strip()[-800:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def run_interleaved(rtss_path: Path, dose_path: Path, repeat: int,
                    start_worker: Callable[[list[str]], DicompylerWorker] | None) -> tuple[dict, dict | None, str]:
    """``repeat`` runs of each tool, alternating (OncoPACS in this process, dicompyler-core in its worker, started
    after OncoPACS's first run with the ROIs that run compared), so both meet the same load; the first run of each
    is cold. Returns (OncoPACS summary, dicompyler-core summary or None, why not)."""
    ours: list[dict] = []
    theirs: list[dict] = []
    worker: DicompylerWorker | None = None
    error = ""
    try:
        for k in range(repeat):
            ours.append(run_oncopacs_once(rtss_path, dose_path))
            log(f"run {k + 1}/{repeat}: OncoPACS {ours[-1]['total_s']:.2f} s")
            if start_worker is None or error:
                continue
            try:
                worker = worker or start_worker(list(ours[0]["rois"]))
                theirs.append(worker.run())
                log(f"run {k + 1}/{repeat}: dicompyler-core {theirs[-1]['total_s']:.2f} s")
            except (RuntimeError, ValueError, OSError) as exc:
                error = f"dicompyler-core subprocess failed: {exc}"
                log(error)
    finally:
        if worker is not None:
            worker.close()
    onco = _summarise_runs(ours[0]["rois"], [r["rois"] for r in ours], [r["total_s"] for r in ours],
                           [r["parse_s"] for r in ours], outside=ours[0]["outside"])
    if not theirs or error:
        return onco, None, error
    dicompyler = _summarise_runs(theirs[0]["rois"], [r["rois"] for r in theirs], [r["total_s"] for r in theirs],
                                 [r["parse_s"] for r in theirs], version=theirs[0]["version"])
    return onco, dicompyler, ""


def start_neighbours(count: int) -> list[subprocess.Popen]:
    """``count`` CPU-bound processes (a pure-Python loop each, stopped after 30 min at most): a busy machine."""
    loop = "import time\nend = time.monotonic() + 1800\nwhile time.monotonic() < end:\n    sum(range(10000))\n"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]


def truth_for(truth, name: str) -> dict:
    return {
        "volume_cc": truth.compute_volume_cc(name),
        "mean_gy": truth.compute_mean_dose_gy(name),
        "d95_gy": truth.compute_dose_at_volume_gy(name, 95),
        "d50_gy": truth.compute_dose_at_volume_gy(name, 50),
        "d2_gy": truth.compute_dose_at_volume_gy(name, 2),
        "max_gy": truth.compute_max_dose_gy(name),
    }


def same_error(metric: str, err_oncopacs: float, err_dicompyler: float, truth: float) -> bool:
    """Errors that differ by less than 0.1% of the truth, or (doses) half a 0.01 Gy DVH bin, count as equal."""
    floor = EQUAL_DOSE_GY if metric.endswith("_gy") else 0.0
    return abs(err_oncopacs - err_dicompyler) <= max(floor, 1e-3 * abs(truth))



def render(report: dict) -> str:
    lines = []
    m, v = report["machine"], report["versions"]
    lines.append(machine_line("OncoPACS DVH benchmark", m))
    lines.append(f"versions: OncoPACS {v['oncopacs']} | dicompyler-core {v.get('dicompyler') or 'n/a'}")
    lines.append(f"phantom: {report['phantom']}")
    if report.get("dicompyler_error"):
        lines.append(f"dicompyler-core NOT RUN: {report['dicompyler_error']}")
    if report["outside_dose_grid"]:
        lines.append(f"not compared (entirely outside the dose grid): {', '.join(report['outside_dose_grid'])}")
    lines.append("")
    has_peer = report.get("dicompyler_error") is None
    head = f"  {'ROI':<14} {'metric':<10} {'truth':>10} {'OncoPACS':>10} {'|err|':>8}"
    if has_peer:
        head += f" {'dicompyler':>11} {'|err|':>8}  better"
    lines.append(head)
    for name, row in report["rois"].items():
        if row["oncopacs"]["uncovered_cc"] > 0:
            name = name + "*"
        for metric in METRICS:
            t, o = row["truth"][metric], row["oncopacs"][metric]
            line = f"  {name:<14} {LABELS[metric]:<10} {t:>10.3f} {o:>10.3f} {abs(o - t):>8.3f}"
            if has_peer:
                d = row["dicompyler"][metric]
                eo, ed = abs(o - t), abs(d - t)
                better = "=" if same_error(metric, eo, ed, t) else ("OncoPACS" if eo < ed else "dicompyler")
                line += f" {d:>11.3f} {ed:>8.3f}  {better}"
            lines.append(line)
        name = ""
    if any(r["oncopacs"]["uncovered_cc"] > 0 for r in report["rois"].values()):
        lines.append("  * part of this ROI lies outside the dose grid: OncoPACS's mean/D95/max are over the covered "
                     "part; truth is over the whole solid (zero dose outside the dose support)")
    lines.append("")
    t = report["timing"]

    def runs(key: str) -> str:
        return "/".join(f"{v:.2f}" for v in t[key])

    lines.append(f"  time (parse both files + all {len(report['rois'])} ROIs; median of {t['repeat']} runs): "
                 f"OncoPACS {t['oncopacs_s']:.3f} s ({runs('oncopacs_runs_s')})"
                 + (f", dicompyler-core {t['dicompyler_s']:.3f} s ({runs('dicompyler_runs_s')})" if has_peer else ""))
    if has_peer:
        per = "  per ROI s (OncoPACS / dicompyler): " + ", ".join(
            f"{n} {r['oncopacs']['seconds']:.2f}/{r['dicompyler']['seconds']:.2f}" for n, r in report["rois"].items())
        lines.append(per)
        ratio = t["speedup"]
        target = "met" if ratio is not None and ratio >= TARGET_SPEEDUP else "NOT met"
        lines.append(f"  speed-up dicompyler/OncoPACS: {fmt_ratio(ratio)} (higher is better; target >= "
                     f"{TARGET_SPEEDUP:.0f}x: {target})")
        acc = report["accuracy"]
        lines.append(f"  accuracy: OncoPACS less accurate than dicompyler in {acc['worse']} of {acc['compared']} "
                     f"(ROI, metric) pairs, more accurate in {acc['better']} (target: never less accurate: "
                     f"{'met' if acc['worse'] == 0 else 'NOT met'})")
    lines.append("")
    lines.extend(notes_lines(report["notes"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: the default demo patient")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--skip-dicompyler", action="store_true", help="only OncoPACS and truth")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per tool, alternating between the tools; times are medians (default 5)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N CPU-bound neighbour processes running while timing: a busy machine (default 0)")
    args = parser.parse_args()

    from oncopacs import __version__ as oncopacs_version
    from oncopacs.phantom import write_datasets

    python, peer_error = (None, "skipped (--skip-dicompyler)") if args.skip_dicompyler else dicompyler_python()
    if python is None:
        log(f"dicompyler-core unavailable: {peer_error}")
    else:
        log(f"dicompyler-core python: {python}")

    log("building the phantom ...")
    start = time.monotonic()
    patient, phantom_label = build_phantom(args.quick)
    log(f"phantom built in {time.monotonic() - start:.1f} s")
    workdir = Path(tempfile.mkdtemp(prefix="oncopacs-dvh-bench-"))
    try:
        rtss_path, dose_path = write_datasets([patient.rtstruct, patient.rt_dose], workdir)
        roi_numbers = {str(item.ROIName): int(item.ROINumber) for item in patient.rtstruct.StructureSetROISequence}

        start_worker = None
        if python is not None:
            def start_worker(names: list[str], python: str = python) -> DicompylerWorker:
                return DicompylerWorker(python, rtss_path, dose_path, {name: roi_numbers[name] for name in names})
        neighbours = start_neighbours(args.busy)
        try:
            onco, dicompyler, err = run_interleaved(rtss_path, dose_path, args.repeat, start_worker)
        finally:
            for neighbour in neighbours:
                neighbour.kill()
        if python is not None and dicompyler is None:
            peer_error = err
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rois = {}
    better = worse = compared = 0
    for name, o in onco["rois"].items():
        row = {"truth": truth_for(patient.truth, name), "oncopacs": o}
        if dicompyler is not None:
            d = dicompyler["rois"][name]
            row["dicompyler"] = d
            for metric in METRICS:
                t = row["truth"][metric]
                eo, ed = abs(o[metric] - t), abs(d[metric] - t)
                compared += 1
                if not same_error(metric, eo, ed, t):
                    better += int(eo < ed)
                    worse += int(eo > ed)
        rois[name] = row

    report = {
        "machine": machine_info(),
        "versions": {"oncopacs": oncopacs_version, "dicompyler": dicompyler["version"] if dicompyler else None},
        "phantom": phantom_label,
        "dicompyler_error": None if dicompyler is not None else peer_error,
        "rois": rois,
        "timing": {
            "oncopacs_s": onco["total_s"], "oncopacs_parse_s": onco["parse_s"],
            "dicompyler_s": dicompyler["total_s"] if dicompyler else None,
            "dicompyler_parse_s": dicompyler["parse_s"] if dicompyler else None,
            "speedup": dicompyler["total_s"] / onco["total_s"] if dicompyler and onco["total_s"] > 0 else None,
            "repeat": args.repeat, "busy_neighbours": args.busy, "oncopacs_runs_s": onco["runs_s"],
            "dicompyler_runs_s": dicompyler["runs_s"] if dicompyler else None,
        },
        "accuracy": {"compared": compared, "better": better, "worse": worse},
        "outside_dose_grid": onco["outside"],
        "notes": [
            "ratios, not absolute times, are the result: both tools ran on this machine in this run on the same "
            "files; times include parsing the two files but not imports or process start. Each tool runs "
            f"{args.repeat} times in its own process, the runs alternating between the tools so that both meet the "
            "same load (the first run of each cold, later ones warm alike); times are the medians."
            + (f" {args.busy} CPU-bound neighbour process(es) ran throughout (--busy): a busy machine." if args.busy
               else ""),
            "truth is analytic (exact solid volume; mean, D95%, D50%, D2% and max dose of the radial dose model "
            "over the solid), not the contoured (polygon-stack) volume, so both tools carry the contouring error too.",
            "OncoPACS volume is DVH.total_volume_cc (inside and outside the dose grid); dicompyler-core's is "
            "dvh.volume with calculate_full_volume=True. Both use their defaults otherwise (OncoPACS: all planes of a "
            "ROI at once, dose on the contour planes, each plane weighted by its Cavalieri volume (quadratic section "
            "areas, extrapolated end caps; ROIs whose box is under 10 cc on 4 shape-interpolated sections per plane, "
            "boundary pixels 12x12, 32 samples per whole pixel), boundary pixels split 4x4 with exact inside areas "
            "sampled at the centroid of their inside part, whole pixels as 8 quantiles of a slope-limited linear "
            "dose (the inner slope beside undosed pixels), pixels "
            "with no dose nearby counted at 0 Gy unsampled; dicompyler-core: dose-grid pixel centres on the "
            "contour planes, no interpolation).",
            "'better' compares |error| per (ROI, metric); |errors| differing by at most 0.1% of the truth, or for "
            "doses by at most 0.005 Gy (half the 0.01 Gy DVH bin both tools use), count as equal.",
        ],
    }
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
