#!/usr/bin/env python
"""Deformable registration: OncoPACS ``fusion.registration.register_deformable`` against plastimatch.

Run from the repository root with the project's virtual environment active (plastimatch: the
Debian package ``plastimatch``)::

    python benchmarks/registration.py            # 256x256x128 CT pair (1 x 1 x 2 mm), known deformation
    python benchmarks/registration.py --quick    # smoke test: 96x96x48
    python benchmarks/registration.py --json > result.json

The pair comes from :mod:`oncopacs.phantom.fusion`: an analytic torso phantom sampled exactly on both
grids, the fixed one through a known smooth deformation (Gaussian bumps up to about 10 mm), without noise and with
10 HU of Gaussian noise on each (two cases). Both tools get the same images; plastimatch runs the fair
three-stage B-spline set-up of ../shared/tools/plastimatch-bspline.txt (MSE, L-BFGS-B, grid
30/15/10 mm), OncoPACS its defaults (rigid MI, then multi-resolution demons). Each tool uses
2 threads. Time is wall time of the registration call (plastimatch: the whole ``plastimatch
register`` process, which includes reading its two .mha inputs and writing its vector field).
TRE is the mean and maximum distance, over 50 landmarks inside the body, between the tool's
mapping of each fixed landmark and its true moving position; "jac min" / "fold %" are the
Jacobian determinant minimum and the share of voxels with det J <= 0.

Progress goes to standard error; the table (or, with ``--json``, one JSON document) to standard
output. Nothing here asserts: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import (  # benchmarks/report.py
    emit,
    log,
    machine_info,
    machine_line,
    notes_lines,
)
from shared import shared_tool  # benchmarks/shared.py

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import SimpleITK as sitk  # noqa: E402

from fusion.qa import compute_jacobian_stats, compute_tre_mm  # noqa: E402
from fusion.registration import (  # noqa: E402
    Registration,
    RegistrationKind,
    build_field_transform,
    register_deformable,
)
from fusion.volume import SeriesInfo  # noqa: E402
from oncopacs.phantom.fusion import SmoothDeformation, build_fusion_pair  # noqa: E402

THREADS = 2
TARGET_SECONDS = 60.0
NOISE_LEVELS_HU = (0.0, 10.0)
PARAMETER_FILE = shared_tool("plastimatch-bspline.txt")
NO_SERIES = SeriesInfo("", "", "", "", "", ())


def to_image(hu: np.ndarray, grid) -> sitk.Image:
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetOrigin(grid.origin_mm)
    image.SetSpacing(grid.spacing_mm)
    return image


def run_oncopacs(fixed: sitk.Image, moving: sitk.Image) -> tuple[Registration, float]:
    started = time.perf_counter()
    registration = register_deformable(fixed, moving)
    return registration, time.perf_counter() - started


def run_plastimatch(fixed: sitk.Image, moving: sitk.Image, folder: Path) -> tuple[Registration, float]:
    sitk.WriteImage(fixed, str(folder / "fixed.mha"))
    sitk.WriteImage(moving, str(folder / "moving.mha"))
    text = PARAMETER_FILE.read_text()
    for name, path in (("FIXED.mha", "fixed.mha"), ("MOVING.mha", "moving.mha"), ("VF.mha", "vf.mha"),
                       ("WARPED.mha", "warped.mha")):
        text = text.replace(f"={name}", f"={folder / path}")
    (folder / "parameters.txt").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    started = time.perf_counter()
    completed = subprocess.run(["plastimatch", "register", str(folder / "parameters.txt")], env=env,
                               capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"plastimatch failed: {completed.stderr.strip()[-300:]}")
    field_image = sitk.Cast(sitk.ReadImage(str(folder / "vf.mha")), sitk.sitkVectorFloat64)
    registration = Registration(build_field_transform(field_image), RegistrationKind.DEFORMABLE, NO_SERIES, NO_SERIES,
                                seconds, displacement_field=field_image)
    return registration, seconds


def measure(name: str, registration: Registration, seconds: float, fixed: sitk.Image,
            landmarks: tuple[np.ndarray, np.ndarray]) -> dict:
    tre = compute_tre_mm(registration, *landmarks)
    jac_min, _, folding = compute_jacobian_stats(registration, fixed)
    return {"tool": name, "seconds": round(seconds, 2), "tre_mean_mm": round(float(tre.mean()), 3),
            "tre_max_mm": round(float(tre.max()), 3), "jacobian_min": round(jac_min, 3),
            "folding_percent": round(folding, 4)}


def render(report: dict) -> str:
    lines = [machine_line("Deformable registration, CT-CT with a known deformation", report["machine"]),
             f"case: {report['case']}", "",
             f"{'noise [HU]':>10} {'initial [mm]':>12} {'tool':<12} {'time [s]':>9} {'TRE mean [mm]':>14} "
             f"{'TRE max [mm]':>13} {'jac min':>8} {'fold %':>7}"]
    for row in report["results"]:
        lines.append(f"{row['noise_hu']:>10g} {row['initial_tre_mm']:>12.2f} {row['tool']:<12} {row['seconds']:>9.2f} "
                     f"{row['tre_mean_mm']:>14.3f} {row['tre_max_mm']:>13.3f} "
                     f"{row['jacobian_min']:>8.3f} {row['folding_percent']:>7.4f}")
    lines += ["", *notes_lines(report["notes"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 96x96x48 voxels of 2.5 x 2.5 x 5 mm")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    shape, spacing = ((48, 96, 96), (2.5, 2.5, 5.0)) if args.quick else ((128, 256, 256), (1.0, 1.0, 2.0))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    results, notes = [], []
    plastimatch = shutil.which("plastimatch")
    if plastimatch is None:
        notes.append("plastimatch is not installed (apt-get install plastimatch): no comparison")
    for noise_hu in NOISE_LEVELS_HU:
        log(f"building the {shape[2]}x{shape[1]}x{shape[0]} phantom pair, {noise_hu:g} HU noise")
        pair = build_fusion_pair(SmoothDeformation(), shape, spacing, noise_hu=noise_hu)
        fixed, moving = to_image(pair.fixed_hu, pair.grid), to_image(pair.moving_hu, pair.grid)
        landmarks = pair.landmarks_mm(50, seed=11)
        initial = float(np.linalg.norm(landmarks[1] - landmarks[0], axis=1).mean())
        log("OncoPACS: rigid MI + multi-resolution demons ...")
        registration, seconds = run_oncopacs(fixed, moving)
        ours = {"noise_hu": noise_hu, "initial_tre_mm": round(initial, 3),
                **measure("OncoPACS", registration, seconds, fixed, landmarks)}
        results.append(ours)
        del registration
        if plastimatch is None:
            continue
        log("plastimatch: B-spline, 3 stages ...")
        with tempfile.TemporaryDirectory(prefix="bench-reg-") as folder:
            registration, seconds = run_plastimatch(fixed, moving, Path(folder))
        theirs = {"noise_hu": noise_hu, "initial_tre_mm": round(initial, 3),
                  **measure("plastimatch", registration, seconds, fixed, landmarks)}
        results.append(theirs)
        notes.append(f"{noise_hu:g} HU noise: TRE no worse than plastimatch "
                     f"{'met' if ours['tre_mean_mm'] <= theirs['tre_mean_mm'] else 'MISSED'} "
                     f"({ours['tre_mean_mm']:.3f} vs {theirs['tre_mean_mm']:.3f} mm); time at most plastimatch's "
                     f"{'met' if ours['seconds'] <= theirs['seconds'] else 'MISSED'} "
                     f"({ours['seconds']:.1f} vs {theirs['seconds']:.1f} s, "
                     f"{theirs['seconds'] / ours['seconds']:.2f}x)")
    slowest = max(row["seconds"] for row in results if row["tool"] == "OncoPACS")
    notes.append(f"target under {TARGET_SECONDS:g} s on {THREADS} threads: "
                 f"{'met' if slowest < TARGET_SECONDS else 'MISSED'} (slowest OncoPACS run {slowest:.1f} s)")
    notes.append("OncoPACS's time includes its rigid stage; plastimatch's includes reading/writing its files; "
                 "plastimatch's parameter file has no regulariser, so noise can make its B-spline fold")
    report = {"machine": machine_info(), "case": f"{shape[2]}x{shape[1]}x{shape[0]} voxels of "
              f"{spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm, 50 landmarks",
              "results": results, "notes": notes}
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
