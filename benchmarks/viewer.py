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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import (  # benchmarks/report.py
    emit,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default 64x64 demo CT")
    parser.add_argument("--repeats", type=int, default=40, help="distinct slices per plane")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return emit(run(args.quick, args.repeats), args.json, render)


if __name__ == "__main__":
    sys.exit(main())
