#!/usr/bin/env python
"""Server-side slice rendering: a 512x512 CT plane with contours, dose colourwash and isodose lines, as PNG.

Run from the repository root with the project's virtual environment active::

    python benchmarks/viewer.py              # CT 512x512x60 (0.5 x 0.5 x 2.5 mm), the demo anatomy and dose
    python benchmarks/viewer.py --quick      # the default demo patient (CT 64x64x30)
    python benchmarks/viewer.py --json

The demo patient (:func:`oncopacs.phantom.build_demo_patient`) is built on the CT grid; the scene
(CT volume via ``fusion.volume.load_series``, ROI masks, dose resampled onto the CT) is built once and
timed on its own. "cold" renders slices not in the cache (each distinct); "cached" asks for them again
from :class:`oncopacs.viewer.slices.SliceCache`. Target: p95 <= 100 ms for a cold 512x512 axial slice.
Progress on standard error; the table (or JSON) on standard output. Nothing here asserts.

``--ohif`` measures OHIF's time to first image instead: the installed OHIF build (``oncopacs viewer
install --dir DIR``; ``--viewer-dir DIR``) opens a 512x512 CT series of 150 slices in headless Chromium, once
with OncoPACS and once with Orthanc's DICOMweb plugin as the server, in the same run, the same OHIF build behind
the same front server and proxy (see ``benchmarks/ohif_timing.py`` for how it is fair and how the image is
detected)::

    python benchmarks/viewer.py --ohif                       # 150 slices 512x512: 1 cold + 5 timed loads per server
    python benchmarks/viewer.py --ohif --rounds 9 --viewer-dir DIR --json
    python benchmarks/viewer.py --ohif --quick               # smoke run: 20 slices 256x256, 1 round
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from ohif_timing import FrontServer, Load, Target, chromium_missing, load_viewer, summary
from peers import ORTHANC_PEER, REPO, BenchError, start_oncopacs, start_orthanc, store
from report import (  # benchmarks/report.py
    emit,
    fmt_ratio,
    log,
    machine_info,
    machine_line,
    notes_lines,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fusion.volume import load_series
from oncopacs.phantom import build_demo_patient
from oncopacs.phantom.geometry import centred_grid
from oncopacs.viewer.scene import read_axis_aligned_volume
from oncopacs.viewer.slices import PLANES, RenderOptions, SliceCache, build_scene
from rt.dose import read_dose
from rt.plan import read_plan_summary
from rt.structures import read_structure_set

TARGET_P95_MS = 100.0
OHIF_USER = ("bench", "bench-password-1")
OHIF_PREFIX = "BENCHOHIF"
BLANK_BELOW = 16  # distinct colours in a viewport screenshot: fewer is an empty viewport, not a CT slice


def _percentiles(samples: list[float]) -> dict:
    values = np.array(samples) * 1000.0
    return {"n": len(samples), "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
            "max_ms": float(values.max())}


def run(quick: bool, repeats: int) -> dict:
    grid = centred_grid((30, 64, 64), (4.0, 4.0, 5.0)) if quick else centred_grid((60, 512, 512), (0.5, 0.5, 2.5))
    log(f"building the demo patient on a {grid.shape} CT grid")
    patient = build_demo_patient("ONCO-BENCH-VIEW", ct_grid=grid)
    started = time.perf_counter()
    ct_hu, voxel_grid = read_axis_aligned_volume(load_series(list(patient.planning_ct)))
    plan = read_plan_summary(patient.rt_ion_plan)
    scene = build_scene("bench", ct_hu, voxel_grid, structures=read_structure_set(patient.rtstruct),
                        dose=read_dose(patient.rt_dose), prescription_gy=plan.prescription_gy)
    scene_s = time.perf_counter() - started
    log(f"scene built in {scene_s:.2f} s ({len(scene.rois)} ROIs)")
    options = RenderOptions(isodose_gy=(30.0, 48.0, 57.0, 60.0))
    rows: list[dict[str, Any]] = []
    for plane in PLANES:
        cache = SliceCache(max_entries=10_000)
        size = scene.plane_size(plane)
        indices = [int(i) for i in np.linspace(0, size - 1, min(size, repeats))]
        cold, cached = [], []
        for index in indices:
            t = time.perf_counter()
            rendered = cache.render(scene, plane, index, options)
            cold.append(time.perf_counter() - t)
        for index in indices:
            t = time.perf_counter()
            cache.render(scene, plane, index, options)
            cached.append(time.perf_counter() - t)
        rows.append({"plane": plane, "output_px": list(rendered.size), "cold": _percentiles(cold),
                     "cached": _percentiles(cached)})
        log(f"{plane}: cold p95 {rows[-1]['cold']['p95_ms']:.1f} ms")
    axial = rows[0]["cold"]["p95_ms"]
    return {"machine": machine_info(), "ct_shape": list(voxel_grid.shape), "spacing_mm": list(voxel_grid.spacing_mm),
            "scene_build_s": scene_s, "planes": rows, "target_p95_ms": TARGET_P95_MS,
            "target_met": axial <= TARGET_P95_MS,
            "notes": ["cold = first render of a distinct slice (CT window, dose wash, 4 isodose lines, "
                      f"{len(scene.rois)} ROI outlines, PNG level 1); the scene is built once per study and cached",
                      "not measured here: dashboard first load with 200 demo patients (issue 8 check)"]}


def render(report: dict) -> str:
    lines = [machine_line("Server-side slice rendering (oncopacs.viewer.slices)", report["machine"]),
             f"CT {report['ct_shape']} voxels, spacing {report['spacing_mm']} mm; scene build "
             f"{report['scene_build_s']:.2f} s (once per study)", "",
             f"{'plane':<10}{'output':>11}{'cold p50':>10}{'cold p95':>10}{'cached p50':>12}{'cached p95':>12}"]
    for row in report["planes"]:
        w, h = row["output_px"]
        lines.append(f"{row['plane']:<10}{f'{w}x{h}':>11}{row['cold']['p50_ms']:>8.1f}ms{row['cold']['p95_ms']:>8.1f}ms"
                     f"{row['cached']['p50_ms']:>10.3f}ms{row['cached']['p95_ms']:>10.3f}ms")
    lines += ["", f"target: axial cold p95 <= {report['target_p95_ms']:.0f} ms: "
              f"{'met' if report['target_met'] else 'MISSED'}", *notes_lines(report["notes"])]
    return "\n".join(lines)


def _load_row(loads: list[Load], frames: int) -> dict:
    """Medians and spreads of one server's timed loads (milliseconds)."""
    complete = [ld.all_frames_ms for ld in loads if ld.all_frames_ms is not None]
    return {
        "first_image_ms": summary([ld.first_image_ms for ld in loads]),
        "after_first_request_ms": summary([ld.first_image_ms - ld.first_request_ms for ld in loads]),
        "all_frames_ms": summary(complete) if len(complete) == len(loads) else None,
        "frames_fetched_min": min(ld.frames_fetched for ld in loads),
        "frames": frames,
        "requests_to_first_image": summary([float(ld.requests) for ld in loads]),
        "requests_total": summary([float(ld.requests_total) for ld in loads]),
        "mbytes_total": summary([ld.mbytes_total for ld in loads]),
        "errors": sum(ld.errors for ld in loads),
        "min_distinct_pixel_values": min(ld.distinct_pixel_values for ld in loads),
        "loads": [asdict(ld) for ld in loads],
    }


def ensure_ct_series(cache: Path, slices: int, size: int, seed: int = 22) -> Path:
    """Write (once) one CT series of ``slices`` ``size`` x ``size`` int16 slices; the directory of .dcm files.

    ``build_benchmark_ct``'s water cylinder (one study, CT attributes, rescale -1024, window 40/400), stored as
    signed 16-bit with Gaussian noise (sigma 10 HU, fresh per slice) as a scanner's images have: identical noiseless
    slices would compress about 100x on the wire, which real CT does not.
    """
    import pydicom

    from oncopacs.phantom import build_benchmark_ct

    root = cache / f"ohif-ct-{slices}x{size}-int16"
    files, marker = root / "dicom", root / "COMPLETE"
    if marker.exists() and marker.read_text().strip() == str(slices):
        log(f"CT series: reusing {slices} cached slices in {files}")
        return files
    shutil.rmtree(root, ignore_errors=True)
    files.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    log(f"CT series: writing {slices} slices {size}x{size} int16 ...")
    for k, ds in enumerate(build_benchmark_ct(slices, 1, rows=size, cols=size, prefix=OHIF_PREFIX), start=1):
        stored = np.frombuffer(ds.PixelData, dtype="<u2").astype(np.int32)
        noisy = stored + np.rint(rng.normal(0.0, 10.0, stored.shape)).astype(np.int32)
        ds.PixelRepresentation = 1
        ds.PixelData = np.clip(noisy, -32768, 32767).astype("<i2").tobytes()
        pydicom.dcmwrite(files / f"{k:04d}.dcm", ds, enforce_file_format=True)
    marker.write_text(f"{slices}\n")
    return files


def _start_orthanc(base: Path, stack: ExitStack, files: Path, n: int) -> tuple[str | None, str | None]:
    """Orthanc with its DICOMweb plugin holding the series: (its DICOMweb root, None) or (None, why not)."""
    if not ORTHANC_PEER.exists():
        return None, f"{ORTHANC_PEER} is missing (it starts Orthanc, installing orthanc and orthanc-dicomweb)"
    try:
        server = start_orthanc(base / "orthanc", dicomweb=True, user=OHIF_USER)
    except BenchError as exc:
        return None, f"Orthanc did not start: {str(exc).splitlines()[0]}"
    stack.callback(server.stop)
    log(f"storing {n} slices in Orthanc with storescu ...")
    store(server, files, n)
    return f"http://127.0.0.1:{server.http_port}/dicom-web", None


def run_ohif(viewer_dir: Path, quick: bool, rounds: int, cache_dir: Path) -> dict:
    """OHIF's time to first image with OncoPACS and with Orthanc behind it (raises BenchError on failure)."""
    import pydicom

    from oncopacs.ohif.app_config import app_config_js
    from oncopacs.ohif.bundle import MOUNT, VERSION, find_installed

    installed = find_installed(viewer_dir)
    if installed is None:
        raise BenchError(f"no OHIF {VERSION} build in {viewer_dir}: `oncopacs viewer install --dir {viewer_dir}` "
                         "(or --tarball FILE) installs it")
    slices, size = (20, 256) if quick else (150, 512)
    cache_dir = cache_dir.resolve()  # the servers run in their own working directories
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = ensure_ct_series(cache_dir, slices, size)
    first_file = sorted(files.iterdir())[0]
    study_uid = pydicom.dcmread(first_file, stop_before_pixels=True).StudyInstanceUID
    base = Path(tempfile.mkdtemp(prefix="run-", dir=cache_dir))
    log(f"working directory {base}")
    frames_wait_s = 20.0 if quick else 90.0
    try:
        with ExitStack() as stack:
            oncopacs = start_oncopacs(base / "oncopacs", user=OHIF_USER)
            stack.callback(oncopacs.stop)
            log(f"storing {slices} slices in OncoPACS with storescu ...")
            store(oncopacs, files, slices)
            roots = {"OncoPACS": f"http://127.0.0.1:{oncopacs.http_port}/dicom-web"}
            orthanc_root, orthanc_skipped = _start_orthanc(base, stack, files, slices)
            if orthanc_root:
                roots["Orthanc"] = orthanc_root
            else:
                log(f"Orthanc column skipped: {orthanc_skipped}")
            config = app_config_js(MOUNT)
            fronts = {name: stack.enter_context(FrontServer(installed.root, config, Target(name, root, OHIF_USER)))
                      for name, root in roots.items()}
            cold: dict[str, Load] = {}
            for name, front in fronts.items():
                log(f"{name}: first load after ingest (server caches cold) ...")
                cold[name] = load_viewer(front, study_uid, slices, frames_wait_s)
                log(f"{name}: first image {cold[name].first_image_ms:.0f} ms")
            loads: dict[str, list[Load]] = {name: [] for name in fronts}
            for k in range(rounds):
                order = list(fronts) if k % 2 == 0 else list(reversed(fronts))  # alternate who goes first
                for name in order:
                    load = load_viewer(fronts[name], study_uid, slices, frames_wait_s)
                    loads[name].append(load)
                    frames = f"{load.all_frames_ms:.0f} ms" if load.all_frames_ms is not None else \
                        f"{load.frames_fetched}/{slices} fetched"
                    log(f"round {k + 1}/{rounds} {name}: first image {load.first_image_ms:.0f} ms, all frames "
                        f"{frames}, {load.requests_total} DICOMweb requests")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = {name: {**_load_row(series, slices), "cold_first_image_ms": cold[name].first_image_ms}
            for name, series in loads.items()}
    ratio = (rows["OncoPACS"]["first_image_ms"]["median"] / rows["Orthanc"]["first_image_ms"]["median"]
             if "Orthanc" in rows else None)
    return {
        "mode": "ohif", "machine": machine_info(), "ohif_version": VERSION, "slices": slices,
        "size": [size, size], "rounds": rounds, "servers": rows, "first_image_ratio": ratio,
        "orthanc_skipped": orthanc_skipped,
        "notes": [
            "first image: navigation start to cornerstone's first IMAGE_RENDERED of a viewport holding an image "
            "(stamped in the page); every load in a new Chromium with an empty profile, WebGL via SwiftShader",
            "both servers behind the same front server (OHIF's files from memory, /dicom-web proxied with HTTP "
            "Basic added, bodies streamed): the same OHIF build and the same proxy overhead for both",
            "'after 1st request': first image minus the start of the first DICOMweb request (the servers' "
            "share; the rest is OHIF's scripts loading and starting, the same for both)",
            "cold: the first load after ingest (server-side caches empty), not in the medians; rounds alternate "
            "which server goes first",
            "requests and MB: DICOMweb only, per load, until all frames were fetched; MB as sent (gzip where "
            "the server chose it for the browser's Accept-Encoding)",
        ],
    }


def _span(s: dict | None, scale: float = 1.0, digits: int = 0) -> str:
    if s is None:
        return "n/a"
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})"


def render_ohif(report: dict) -> str:
    slices, (w, h) = report["slices"], report["size"]
    lines = [machine_line(f"OHIF {report['ohif_version']}: time to first image, CT {slices} slices {w}x{h}, "
                          "headless Chromium", report["machine"]),
             f"{report['rounds']} rounds per server, median (min-max); times in ms from the navigation's start", "",
             f"{'server':<9} {'first image':>20} {'after 1st request':>20} {f'all {slices} frames':>20} "
             f"{'req to 1st':>10} {'requests':>9} {'MB':>6} {'cold 1st':>9} {'errors':>6}"]
    for name, row in report["servers"].items():
        frames = _span(row["all_frames_ms"]) if row["all_frames_ms"] else \
            f"{row['frames_fetched_min']}/{slices} fetched"
        lines.append(f"{name:<9} {_span(row['first_image_ms']):>20} {_span(row['after_first_request_ms']):>20} "
                     f"{frames:>20} {row['requests_to_first_image']['median']:>10.0f} "
                     f"{row['requests_total']['median']:>9.0f} {row['mbytes_total']['median']:>6.1f} "
                     f"{row['cold_first_image_ms']:>9.0f} {row['errors']:>6}")
    if report["orthanc_skipped"]:
        lines.append(f"Orthanc: skipped ({report['orthanc_skipped']})")
    blank = [name for name, row in report["servers"].items() if row["min_distinct_pixel_values"] < BLANK_BELOW]
    if blank:
        lines.append(f"WARNING: a viewport screenshot looked blank after the first image ({', '.join(blank)})")
    lines += ["", f"first image OncoPACS/Orthanc (median): {fmt_ratio(report['first_image_ratio'])} "
              "(lower is better)", *notes_lines(report["notes"])]
    return "\n".join(lines)


def default_viewer_dir() -> Path:
    """``ONCOPACS_VIEWER_DIR``, else ``.viewer`` (where ``.ci/run`` installs OHIF)."""
    return Path(os.environ.get("ONCOPACS_VIEWER_DIR") or REPO / ".viewer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the default 64x64 demo CT (--ohif: 20 slices 256x256, 1 round)")
    parser.add_argument("--repeats", type=int, default=40, help="distinct slices per plane")
    parser.add_argument("--ohif", action="store_true", help="OHIF's time to first image, OncoPACS against Orthanc")
    parser.add_argument("--rounds", type=int, default=5, help="--ohif: timed loads per server (default 5)")
    parser.add_argument("--viewer-dir", type=Path, default=default_viewer_dir(),
                        help="--ohif: where `oncopacs viewer install --dir` put OHIF "
                             "(default ONCOPACS_VIEWER_DIR or .viewer)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench",
                        help="--ohif: generated series and the servers' data directories (default .bench/)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.ohif:
        return emit(run(args.quick, args.repeats), args.json, render)
    if args.rounds < 1:
        parser.error("need --rounds >= 1")
    missing = chromium_missing()
    if missing:
        print(f"benchmark: {missing}", file=sys.stderr)
        return 2
    try:
        report = run_ohif(args.viewer_dir, args.quick, 1 if args.quick else args.rounds, args.cache_dir)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return emit(report, args.json, render_ohif)


if __name__ == "__main__":
    sys.exit(main())
