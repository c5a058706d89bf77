#!/usr/bin/env python
"""Deformable registration: OncoPACS ``fusion.registration.register_deformable`` against plastimatch.

Run from the repository root with the project's virtual environment active (plastimatch: the
Debian package ``plastimatch``)::

    python benchmarks/registration.py            # 256x256x128 CT pair (1 x 1 x 2 mm), known deformation
    python benchmarks/registration.py --quick    # 96x96x48 (2.5 x 2.5 x 5 mm): the issue's case
    python benchmarks/registration.py --repeat 5 # timed runs per tool and case (default 5 with --quick, else 1)
    python benchmarks/registration.py --json > result.json

The pair comes from :mod:`oncopacs.phantom.fusion`: an analytic torso phantom sampled exactly on both
grids, the fixed one through a known smooth deformation (Gaussian bumps up to about 10 mm), without noise and with
10 HU of Gaussian noise on each (two cases). Both tools get the same images; plastimatch runs the fair
three-stage B-spline set-up of ../shared/tools/plastimatch-bspline.txt (MSE, L-BFGS-B, grid
30/15/10 mm), OncoPACS its defaults (a coarse rigid MI stage, then multi-resolution demons). Each tool
uses 2 threads. The tools run interleaved (OncoPACS, plastimatch, OncoPACS, ...) ``--repeat`` times
per case; the table gives the median wall time and the spread (min-max) and the median CPU time
(user + system, all threads). Time is that of the registration call (plastimatch: the whole
``plastimatch register`` process, which includes reading its two .mha inputs and writing its
vector field and warped image).

Accuracy is taken from each tool's first run. TRE is the mean and maximum distance, over 50
landmarks inside the body, between the tool's mapping of each fixed landmark and its true moving
position; "jac min" / "fold %" are the Jacobian determinant minimum and the share of voxels with
det J <= 0. Dice: each of the phantom's five spherical organs (liver, fat, bladder, contrast,
calcification; 10-22 mm radius), as a fractional occupancy on the moving grid, is propagated onto
the fixed grid through the tool's transform and through the true one (linear resampling,
occupancy >= 0.5, as :mod:`fusion.propagation` does) and the two masks are compared; the table
gives the lowest and the mean Dice over the five, the JSON each one.

Progress goes to standard error; the table (or, with ``--json``, one JSON document) to standard
output. Nothing here asserts: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
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
from oncopacs.phantom.fusion import FusionAnatomy, FusionPair, SmoothDeformation, build_fusion_pair  # noqa: E402
from oncopacs.phantom.geometry import ImageGrid  # noqa: E402

THREADS = 2
TARGET_SECONDS = 60.0
TARGET_DICE = 0.95
NOISE_LEVELS_HU = (0.0, 10.0)
ORGAN_NAMES = ("liver", "fat", "bladder", "contrast", "calcification")  # FusionAnatomy.spheres, in order
OCCUPANCY_SUBSAMPLES = 3  # per axis and voxel
PARAMETER_FILE = shared_tool("plastimatch-bspline.txt")
NO_SERIES = SeriesInfo("", "", "", "", "", ())


def to_image(values: np.ndarray, grid: ImageGrid) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetOrigin(grid.origin_mm)
    image.SetSpacing(grid.spacing_mm)
    return image


def compute_sphere_occupancy(grid: ImageGrid, centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """The fraction of each voxel inside the sphere (sampled at 3 x 3 x 3 points per voxel), (nz, ny, nx)."""
    origin, spacing = np.asarray(grid.origin_mm), np.asarray(grid.spacing_mm)
    size = np.asarray(grid.shape[::-1])  # (nx, ny, nz)
    lo = np.clip(np.floor((np.asarray(centre_mm) - radius_mm - origin) / spacing).astype(int) - 1, 0, size)
    hi = np.clip(np.ceil((np.asarray(centre_mm) + radius_mm - origin) / spacing).astype(int) + 2, 0, size)
    axes = [origin[a] + np.arange(lo[a], hi[a]) * spacing[a] - centre_mm[a] for a in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")  # around the sphere only
    offsets = (np.arange(OCCUPANCY_SUBSAMPLES) + 0.5) / OCCUPANCY_SUBSAMPLES - 0.5
    box = np.zeros(zz.shape, dtype=np.float32)
    for ox in offsets:
        for oy in offsets:
            for oz in offsets:
                box += ((xx + ox * spacing[0]) ** 2 + (yy + oy * spacing[1]) ** 2
                        + (zz + oz * spacing[2]) ** 2 <= radius_mm**2)
    occupancy = np.zeros(grid.shape, dtype=np.float32)
    occupancy[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = box / OCCUPANCY_SUBSAMPLES**3
    return occupancy


class Truth:
    """What a registration of one pair is judged against: landmarks, the true transform, the organs."""

    def __init__(self, pair: FusionPair, fixed: sitk.Image) -> None:
        self.fixed = fixed
        self.landmarks = pair.landmarks_mm(50, seed=11)
        xx, yy, zz = pair.grid.compute_voxel_centres_mm()
        mapped = pair.mapping(xx, yy, zz)
        displacement = np.stack([mapped[0] - xx, mapped[1] - yy, mapped[2] - zz], axis=-1)
        true_field = sitk.GetImageFromArray(displacement.astype(np.float64), isVector=True)
        true_field.CopyInformation(fixed)
        self.transform = sitk.DisplacementFieldTransform(true_field)
        anatomy = FusionAnatomy()
        self.organs = {name: to_image(compute_sphere_occupancy(pair.grid, centre, radius), pair.grid)
                       for name, (centre, radius, _) in zip(ORGAN_NAMES, anatomy.spheres, strict=True)}
        self.true_masks = {name: self.propagate(occupancy, self.transform) for name, occupancy in self.organs.items()}

    def propagate(self, occupancy: sitk.Image, transform: sitk.Transform) -> np.ndarray:
        warped = sitk.Resample(occupancy, self.fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(warped) >= 0.5

    def compute_dice(self, transform: sitk.Transform) -> dict[str, float]:
        dice = {}
        for name, occupancy in self.organs.items():
            found, true = self.propagate(occupancy, transform), self.true_masks[name]
            dice[name] = round(2.0 * np.count_nonzero(found & true) / (found.sum() + true.sum()), 4)
        return dice

    @property
    def initial_tre_mm(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0], axis=1).mean())


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_oncopacs(fixed: sitk.Image, moving: sitk.Image) -> tuple[Registration, float, float]:
    """The registration, its wall time and its CPU time (s)."""
    cpu, started = time.process_time(), time.perf_counter()
    registration = register_deformable(fixed, moving)
    return registration, time.perf_counter() - started, time.process_time() - cpu


def run_plastimatch(fixed: sitk.Image, moving: sitk.Image, folder: Path) -> tuple[Registration, float, float]:
    """plastimatch's registration (its vector field), the process's wall time and its CPU time (s)."""
    sitk.WriteImage(fixed, str(folder / "fixed.mha"))
    sitk.WriteImage(moving, str(folder / "moving.mha"))
    text = PARAMETER_FILE.read_text()
    for name, path in (("FIXED.mha", "fixed.mha"), ("MOVING.mha", "moving.mha"), ("VF.mha", "vf.mha"),
                       ("WARPED.mha", "warped.mha")):
        text = text.replace(f"={name}", f"={folder / path}")
    (folder / "parameters.txt").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    cpu, started = children_cpu_seconds(), time.perf_counter()
    completed = subprocess.run(["plastimatch", "register", str(folder / "parameters.txt")], env=env,
                               capture_output=True, text=True, check=False)
    seconds, cpu_seconds = time.perf_counter() - started, children_cpu_seconds() - cpu
    if completed.returncode != 0:
        raise RuntimeError(f"plastimatch failed: {completed.stderr.strip()[-300:]}")
    field_image = sitk.Cast(sitk.ReadImage(str(folder / "vf.mha")), sitk.sitkVectorFloat64)
    registration = Registration(build_field_transform(field_image), RegistrationKind.DEFORMABLE, NO_SERIES, NO_SERIES,
                                seconds, displacement_field=field_image)
    return registration, seconds, cpu_seconds


def measure_accuracy(registration: Registration, truth: Truth) -> dict:
    tre = compute_tre_mm(registration, *truth.landmarks)
    jac_min, _, folding = compute_jacobian_stats(registration, truth.fixed)
    dice = truth.compute_dice(registration.transform)
    return {"tre_mean_mm": round(float(tre.mean()), 3), "tre_max_mm": round(float(tre.max()), 3),
            "jacobian_min": round(jac_min, 3), "folding_percent": round(folding, 4),
            "dice_min": min(dice.values()), "dice_mean": round(float(np.mean(list(dice.values()))), 4),
            "dice": dice}


def summarise_times(walls: list[float], cpus: list[float]) -> dict:
    return {"seconds": round(statistics.median(walls), 2), "seconds_min": round(min(walls), 2),
            "seconds_max": round(max(walls), 2), "cpu_seconds": round(statistics.median(cpus), 2),
            "runs_seconds": [round(w, 2) for w in walls]}


def run_case(noise_hu: float, shape: tuple[int, int, int], spacing: tuple[float, float, float], repeat: int,
             with_plastimatch: bool) -> list[dict]:
    log(f"building the {shape[2]}x{shape[1]}x{shape[0]} phantom pair, {noise_hu:g} HU noise")
    pair = build_fusion_pair(SmoothDeformation(), shape, spacing, noise_hu=noise_hu)
    fixed, moving = to_image(pair.fixed_hu, pair.grid), to_image(pair.moving_hu, pair.grid)
    truth = Truth(pair, fixed)
    tools = ["OncoPACS", "plastimatch"] if with_plastimatch else ["OncoPACS"]
    times: dict[str, tuple[list[float], list[float]]] = {tool: ([], []) for tool in tools}
    accuracy: dict[str, dict] = {}
    for run in range(repeat):
        for tool in tools:
            log(f"run {run + 1}/{repeat}: {tool}")
            if tool == "OncoPACS":
                registration, seconds, cpu = run_oncopacs(fixed, moving)
            else:
                with tempfile.TemporaryDirectory(prefix="bench-reg-") as folder:
                    registration, seconds, cpu = run_plastimatch(fixed, moving, Path(folder))
            times[tool][0].append(seconds)
            times[tool][1].append(cpu)
            if tool not in accuracy:
                accuracy[tool] = measure_accuracy(registration, truth)
            del registration
    return [{"noise_hu": noise_hu, "initial_tre_mm": round(truth.initial_tre_mm, 3), "tool": tool,
             **summarise_times(*times[tool]), **accuracy[tool]} for tool in tools]


def render(report: dict) -> str:
    lines = [machine_line("Deformable registration, CT-CT with a known deformation", report["machine"]),
             f"case: {report['case']}; {report['repeat']} interleaved run(s) per tool, median (min-max)", "",
             f"{'noise [HU]':>10} {'initial [mm]':>12} {'tool':<12} {'time [s]':>18} {'cpu [s]':>8} "
             f"{'TRE mean [mm]':>14} {'TRE max [mm]':>13} {'jac min':>8} {'fold %':>7} {'Dice min':>9} "
             f"{'Dice mean':>10}"]
    for row in report["results"]:
        spread = f"{row['seconds']:.2f} ({row['seconds_min']:.2f}-{row['seconds_max']:.2f})"
        lines.append(f"{row['noise_hu']:>10g} {row['initial_tre_mm']:>12.2f} {row['tool']:<12} {spread:>18} "
                     f"{row['cpu_seconds']:>8.2f} {row['tre_mean_mm']:>14.3f} {row['tre_max_mm']:>13.3f} "
                     f"{row['jacobian_min']:>8.3f} {row['folding_percent']:>7.4f} {row['dice_min']:>9.4f} "
                     f"{row['dice_mean']:>10.4f}")
    lines += ["", *notes_lines(report["notes"])]
    return "\n".join(lines)


def compare(noise_hu: float, ours: dict, theirs: dict) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"
    return (f"{noise_hu:g} HU noise: time at most plastimatch's {verdict(ours['seconds'] <= theirs['seconds'])} "
            f"({ours['seconds']:.2f} vs {theirs['seconds']:.2f} s, {ours['seconds'] / theirs['seconds']:.2f}x; "
            f"CPU {ours['cpu_seconds']:.2f} vs {theirs['cpu_seconds']:.2f} s); "
            f"TRE no worse than plastimatch {verdict(ours['tre_mean_mm'] <= theirs['tre_mean_mm'])} "
            f"({ours['tre_mean_mm']:.3f} vs {theirs['tre_mean_mm']:.3f} mm)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="96x96x48 voxels of 2.5 x 2.5 x 5 mm (the issue's case)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs per tool and case, interleaved (default 5 with --quick, else 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    repeat = args.repeat if args.repeat is not None else (5 if args.quick else 1)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    shape, spacing = ((48, 96, 96), (2.5, 2.5, 5.0)) if args.quick else ((128, 256, 256), (1.0, 1.0, 2.0))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    results, notes = [], []
    with_plastimatch = shutil.which("plastimatch") is not None
    if not with_plastimatch:
        notes.append("plastimatch is not installed (apt-get install plastimatch): no comparison")
    for noise_hu in NOISE_LEVELS_HU:
        rows = run_case(noise_hu, shape, spacing, repeat, with_plastimatch)
        results += rows
        if with_plastimatch:
            notes.append(compare(noise_hu, rows[0], rows[1]))
    ours = [row for row in results if row["tool"] == "OncoPACS"]
    slowest = max(row["seconds"] for row in ours)
    lowest_dice = min(row["dice_min"] for row in ours)
    notes.append(f"Dice of every propagated organ at least {TARGET_DICE:g}: "
                 f"{'met' if lowest_dice >= TARGET_DICE else 'MISSED'} (lowest {lowest_dice:.4f})")
    notes.append(f"target under {TARGET_SECONDS:g} s on {THREADS} threads: "
                 f"{'met' if slowest < TARGET_SECONDS else 'MISSED'} (slowest OncoPACS median {slowest:.1f} s)")
    notes.append("OncoPACS's time includes its rigid stage; plastimatch's includes reading/writing its files; "
                 "plastimatch's parameter file has no regulariser, so noise can make its B-spline fold")
    report = {"machine": machine_info(), "case": f"{shape[2]}x{shape[1]}x{shape[0]} voxels of "
              f"{spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm, 50 landmarks, 5 organs",
              "repeat": repeat, "results": results, "notes": notes}
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
