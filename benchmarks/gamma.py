#!/usr/bin/env python
"""Gamma index: OncoPACS ``rt.gamma.compute_gamma`` against ``pymedphys.gamma``.

Run from the repository root with the project's virtual environment active::

    python benchmarks/gamma.py                 # 60^3 and 100x100x40 voxels of 1 mm + a convergence study
    python benchmarks/gamma.py --quick         # smoke test: 40^3 voxels, short convergence study
    python benchmarks/gamma.py --json > result.json

Both tools get the same reference and evaluated arrays (an analytic, smooth 3D dose; the
evaluated one is shifted by 1-2 mm and scaled by +2-3 %) and the same criteria: dose
difference, distance to agreement, low-dose cutoff (percent of the reference maximum), global
or local normalisation, and a search step of dta/10 (OncoPACS ``search_step_fraction=0.1``,
pymedphys ``interp_fraction=10``) out to 1.5 x dta (pymedphys ``max_gamma=1.5``: pass/fail is
decided exactly and neither searches further). OncoPACS runs twice: with pymedphys' own search
pattern (``search="shells"``), which must give the same gamma voxel for voxel (the "same pass
rate" the speed-up is measured at), and with its default cubic lattice, which samples steep
gradients better and so passes more voxels at the same step. Each tool runs once, untimed, on
a tiny case first so that imports and numba's JIT compilation are not timed.

The convergence study then runs a 2D slice (61x61, 1 mm) at 2%/2 mm with finer and finer
steps: both tools' pass rates rise towards the same limit, the lattice's in fewer steps. This
is the evidence that the lattice/pymedphys difference at dta/10 is search resolution only.

Progress goes to standard error; the table (or, with ``--json``, one JSON document) to
standard output. Nothing here asserts: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import cast

import numpy as np
from report import (  # benchmarks/report.py (the script's own folder)
    emit,
    fmt_ratio,
    log,
    machine_info,
    machine_line,
    notes_lines,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rt.gamma import compute_gamma  # noqa: E402
from rt.grid import VoxelGrid  # noqa: E402

TARGET_SPEEDUP = 2.0
PRESCRIPTION_GY = 60.0


class Dose:
    """The two attributes ``compute_gamma`` needs."""

    def __init__(self, dose_gy: np.ndarray, grid: VoxelGrid) -> None:
        self.dose_gy = dose_gy
        self.grid = grid



def centred_grid(shape: tuple[int, int, int], spacing_mm: float) -> VoxelGrid:
    nz, ny, nx = shape
    origin = tuple(-(n - 1) * spacing_mm / 2.0 for n in (nx, ny, nz))
    return VoxelGrid(cast(tuple[float, float, float], origin), (spacing_mm,) * 3, shape)


def analytic_dose(
    grid: VoxelGrid, shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: float = 1.0
) -> np.ndarray:
    """A flat-topped target dose (super-Gaussian) on a low Gaussian bath, shifted (x, y, z) mm and scaled."""
    x = grid.x_mm() - shift_mm[0]
    y = grid.y_mm() - shift_mm[1]
    z = grid.z_mm() - shift_mm[2]
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    half = np.array([len(x), len(y), len(z)], dtype=float) * np.asarray(grid.spacing_mm) / 2.0
    rx, ry, rz = 0.45 * half  # target semi-axes, mm
    r2 = (xx / rx) ** 2 + (yy / ry) ** 2 + (zz / rz) ** 2
    target = np.exp(-(r2**2))  # flat top, steep edge
    bath = 0.3 * np.exp(-r2 / 4.0)
    off_axis = 0.15 * np.exp(-(((xx - 0.4 * half[0]) / (0.2 * half[0])) ** 2 + (yy / (0.3 * half[1])) ** 2))
    return scale * PRESCRIPTION_GY * (target + bath + off_axis) / 1.3


def run_oncopacs(ref: Dose, ev: Dose, crit: dict, search: str) -> tuple[float, float, int, np.ndarray]:
    start = time.perf_counter()
    result = compute_gamma(
        ref, ev,
        dose_diff_percent=crit["dose_percent"], dta_mm=crit["dta_mm"], local=crit["local"],
        threshold_percent=crit["cutoff_percent"], search=search, search_step_fraction=1.0 / crit["interp_fraction"],
    )
    seconds = time.perf_counter() - start
    return seconds, float(result.pass_rate_percent), int(result.number_evaluated), result.gamma


def run_pymedphys(
    ref: Dose, ev: Dose, crit: dict, interp_algo: str, max_gamma: float | None
) -> tuple[float, float, int, np.ndarray]:
    """pymedphys.gamma on the axes with more than one voxel (array order z, y, x)."""
    import pymedphys

    def axes(grid: VoxelGrid) -> tuple[np.ndarray, ...]:
        return tuple(a for a, n in zip((grid.z_mm(), grid.y_mm(), grid.x_mm()), grid.shape, strict=True) if n > 1)

    start = time.perf_counter()
    with warnings.catch_warnings():  # pymedphys 0.41 flags ``quiet`` as deprecated but still prints without it
        warnings.simplefilter("ignore", DeprecationWarning)
        gamma = pymedphys.gamma(
            axes(ref.grid), np.squeeze(ref.dose_gy), axes(ev.grid), np.squeeze(ev.dose_gy),
            dose_percent_threshold=crit["dose_percent"], distance_mm_threshold=crit["dta_mm"],
            lower_percent_dose_cutoff=crit["cutoff_percent"], interp_fraction=crit["interp_fraction"],
            max_gamma=max_gamma, local_gamma=crit["local"], quiet=True, interp_algo=interp_algo,
        )
    seconds = time.perf_counter() - start
    gamma = gamma.reshape(ref.dose_gy.shape)
    valid = gamma[~np.isnan(gamma)]
    rate = 100.0 * float(np.count_nonzero(valid <= 1.0)) / valid.size if valid.size else float("nan")
    return seconds, rate, int(valid.size), gamma


def max_gamma_difference(ours: np.ndarray, theirs: np.ndarray, max_gamma: float | None) -> float:
    """Largest |gamma difference| over voxels both evaluated (ours clipped at max_gamma, as pymedphys clips)."""
    both = np.isfinite(ours) & ~np.isnan(theirs)
    if not both.any():
        return float("nan")
    clipped = ours[both] if max_gamma is None else np.minimum(ours[both], max_gamma)
    return float(np.abs(clipped - theirs[both]).max())


CRITERIA = [
    {"name": "3%/3mm global", "dose_percent": 3.0, "dta_mm": 3.0, "local": False},
    {"name": "2%/2mm local", "dose_percent": 2.0, "dta_mm": 2.0, "local": True},
]


def build_cases(quick: bool) -> list[dict]:
    if quick:
        return [{"shape": (40, 40, 40), "shift_mm": (1.5, 1.0, 0.0), "scale": 1.025}]
    return [
        {"shape": (60, 60, 60), "shift_mm": (1.5, 1.0, 0.0), "scale": 1.025},
        {"shape": (40, 100, 100), "shift_mm": (2.0, 0.0, 1.0), "scale": 1.03},
    ]


def warm_up(interp_algo: str, max_gamma: float | None) -> None:
    grid = centred_grid((8, 8, 8), 1.0)
    ref, ev = Dose(analytic_dose(grid), grid), Dose(analytic_dose(grid, (1.0, 0, 0), 1.02), grid)
    crit = {"dose_percent": 3.0, "dta_mm": 3.0, "local": False, "cutoff_percent": 10.0, "interp_fraction": 10}
    for search in ("lattice", "shells"):
        run_oncopacs(ref, ev, crit, search)
    for local in (False, True):
        run_pymedphys(ref, ev, {**crit, "local": local}, interp_algo, max_gamma)


CONVERGENCE_FRACTIONS = (10, 20, 40, 80, 160)


def convergence(quick: bool, cutoff: float, interp_algo: str, max_gamma: float | None) -> list[dict]:
    """Pass rates of both tools on a 2D slice at finer and finer search steps (2%/2 mm)."""
    grid = centred_grid((1, 61, 61), 1.0)
    ref, ev = Dose(analytic_dose(grid), grid), Dose(analytic_dose(grid, (1.5, 1.0, 0.0), 1.025), grid)
    rows = []
    for local in (False, True):
        for fraction in CONVERGENCE_FRACTIONS[: 3 if quick else None]:
            crit = {"dose_percent": 2.0, "dta_mm": 2.0, "local": local, "cutoff_percent": cutoff,
                    "interp_fraction": fraction}
            log(f"convergence 2%/2mm {'local' if local else 'global'} dta/{fraction} ...")
            o_s, o_rate, o_n, _ = run_oncopacs(ref, ev, crit, "lattice")
            p_s, p_rate, p_n, _ = run_pymedphys(ref, ev, crit, interp_algo, max_gamma)
            rows.append({"criteria": f"2%/2mm {'local' if local else 'global'}", "interp_fraction": fraction,
                         "pass_lattice": o_rate, "pass_pymedphys": p_rate, "lattice_s": o_s, "pymedphys_s": p_s,
                         "evaluated_oncopacs": o_n, "evaluated_pymedphys": p_n})
    return rows



def render(report: dict) -> str:
    lines = []
    m, v = report["machine"], report["versions"]
    lines.append(machine_line("OncoPACS gamma benchmark", m))
    lines.append(f"versions: OncoPACS {v['oncopacs']} | pymedphys {v['pymedphys']} "
                 f"(interp_algo={report['interp_algo']}) | numpy {v['numpy']}")
    lines.append(f"search: step dta/{report['interp_fraction']}, radius 1.5 x dta (pymedphys max_gamma="
                 f"{report['pymedphys_max_gamma']}), low-dose cutoff {report['cutoff_percent']:g}% of max")
    lines.append("")
    lines.append("  same search pattern (OncoPACS search='shells' = pymedphys' shells): time and agreement")
    lines.append(f"  {'case':<34} {'criteria':<14} {'evaluated':>9} {'Onco s':>7} {'pmp s':>7} {'speed-up':>9} "
                 f"{'pass% Onco':>10} {'pass% pmp':>9} {'diff pp':>8} {'max|dγ|':>8}")
    for row in report["results"]:
        lines.append(
            f"  {row['case']:<34} {row['criteria']:<14} {row['evaluated_oncopacs']:>9} {row['shells_s']:>7.2f} "
            f"{row['pymedphys_s']:>7.2f} {fmt_ratio(row['speedup']):>9} {row['pass_shells']:>10.2f} "
            f"{row['pass_pymedphys']:>9.2f} {row['pass_diff_pp']:>+8.2f} {row['max_gamma_diff']:>8.1e}"
        )
    lines.append("")
    lines.append("  OncoPACS default search (cubic lattice, same step): time and pass rate")
    lines.append(f"  {'case':<34} {'criteria':<14} {'lattice s':>9} {'vs pmp':>8} {'pass% lattice':>13} "
                 f"{'- pmp pp':>8}")
    for row in report["results"]:
        lines.append(
            f"  {row['case']:<34} {row['criteria']:<14} {row['lattice_s']:>9.2f} "
            f"{fmt_ratio(row['lattice_speedup']):>8} "
            f"{row['pass_lattice']:>13.2f} {row['pass_lattice'] - row['pass_pymedphys']:>+8.2f}"
        )
    lines.append("")
    total = report["total"]
    target = "met" if total["speedup"] is not None and total["speedup"] >= TARGET_SPEEDUP else "NOT met"
    lines.append(f"  total at the same pass rate: OncoPACS (shells) {total['shells_s']:.2f} s, pymedphys "
                 f"{total['pymedphys_s']:.2f} s; speed-up {fmt_ratio(total['speedup'])} (higher is better; "
                 f"target >= {TARGET_SPEEDUP:.2f}x: {target})")
    lines.append(f"  total OncoPACS default (lattice) {total['lattice_s']:.2f} s: "
                 f"{fmt_ratio(total['lattice_speedup'])} pymedphys' speed")
    worst = max(abs(r["pass_diff_pp"]) for r in report["results"])
    agree = "met" if worst <= 0.5 else "NOT met"
    lines.append(
        f"  largest pass-rate difference, same pattern: {worst:.2f} percentage points (target <= 0.5: {agree})"
    )
    if report["convergence"]:
        lines.append("")
        lines.append("  convergence, 2D slice 61x61 1 mm, shift (1.5, 1) mm x1.025: pass % vs search step")
        lines.append(f"  {'criteria':<16} {'step':>8} {'lattice':>8} {'pymedphys':>9} {'diff pp':>8} "
                     f"{'lattice s':>9} {'pmp s':>7}")
        for row in report["convergence"]:
            lines.append(
                f"  {row['criteria']:<16} {'dta/' + str(row['interp_fraction']):>8} {row['pass_lattice']:>8.2f} "
                f"{row['pass_pymedphys']:>9.2f} {row['pass_lattice'] - row['pass_pymedphys']:>+8.2f} "
                f"{row['lattice_s']:>9.2f} {row['pymedphys_s']:>7.2f}"
            )
    lines.append("")
    lines.extend(notes_lines(report["notes"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: one 40^3 case")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--interp-fraction", type=int, default=10, help="search lattice = dta / this (default 10)")
    parser.add_argument("--cutoff", type=float, default=10.0, help="low-dose cutoff, percent of max (default 10)")
    parser.add_argument("--interp-algo", default=None, choices=["pymedphys", "scipy"],
                        help="pymedphys interpolation (default: pymedphys if numba imports, else scipy)")
    parser.add_argument("--pymedphys-max-gamma", default="1.5",
                        help="pymedphys max_gamma; 'none' for its default (unbounded search) (default 1.5)")
    parser.add_argument("--skip-convergence", action="store_true", help="leave out the 2D convergence study")
    args = parser.parse_args()

    import pymedphys

    interp_algo = args.interp_algo
    if interp_algo is None:
        try:
            import numba  # noqa: F401

            interp_algo = "pymedphys"
        except ImportError:
            interp_algo = "scipy"
    max_gamma = None if args.pymedphys_max_gamma.lower() == "none" else float(args.pymedphys_max_gamma)

    from oncopacs import __version__ as oncopacs_version

    log(f"warming up (imports, numba JIT; untimed), pymedphys interp_algo={interp_algo}")
    warm_up(interp_algo, max_gamma)

    results = []
    for case in build_cases(args.quick):
        grid = centred_grid(case["shape"], 1.0)
        ref = Dose(analytic_dose(grid), grid)
        ev = Dose(analytic_dose(grid, case["shift_mm"], case["scale"]), grid)
        nz, ny, nx = case["shape"]
        sx, sy, sz = case["shift_mm"]
        label = f"{nx}x{ny}x{nz} 1mm ({sx:g},{sy:g},{sz:g})mm x{case['scale']:g}"
        for c in CRITERIA:
            crit = {**c, "cutoff_percent": args.cutoff, "interp_fraction": args.interp_fraction}
            log(f"{label} {c['name']}: OncoPACS lattice ...")
            l_s, l_rate, l_n, _ = run_oncopacs(ref, ev, crit, "lattice")
            log(f"  lattice {l_s:.2f} s, pass {l_rate:.2f}% of {l_n}; OncoPACS shells ...")
            o_s, o_rate, o_n, o_gamma = run_oncopacs(ref, ev, crit, "shells")
            log(f"  shells {o_s:.2f} s, pass {o_rate:.2f}% of {o_n}; pymedphys ...")
            p_s, p_rate, p_n, p_gamma = run_pymedphys(ref, ev, crit, interp_algo, max_gamma)
            log(f"  pymedphys {p_s:.2f} s, pass {p_rate:.2f}% of {p_n}")
            results.append({
                "case": label, "shape_zyx": list(case["shape"]), "shift_mm_xyz": list(case["shift_mm"]),
                "scale": case["scale"], "criteria": c["name"],
                "shells_s": o_s, "lattice_s": l_s, "pymedphys_s": p_s,
                "speedup": p_s / o_s if o_s > 0 else None, "lattice_speedup": p_s / l_s if l_s > 0 else None,
                "pass_shells": o_rate, "pass_lattice": l_rate, "pass_pymedphys": p_rate,
                "pass_diff_pp": o_rate - p_rate, "max_gamma_diff": max_gamma_difference(o_gamma, p_gamma, max_gamma),
                "evaluated_oncopacs": o_n, "evaluated_pymedphys": p_n,
            })

    o_total = sum(r["shells_s"] for r in results)
    l_total = sum(r["lattice_s"] for r in results)
    p_total = sum(r["pymedphys_s"] for r in results)
    converged = [] if args.skip_convergence else convergence(args.quick, args.cutoff, interp_algo, max_gamma)
    report = {
        "machine": machine_info(),
        "versions": {"oncopacs": oncopacs_version, "pymedphys": pymedphys.__version__, "numpy": np.__version__},
        "interp_algo": interp_algo, "interp_fraction": args.interp_fraction, "cutoff_percent": args.cutoff,
        "pymedphys_max_gamma": max_gamma,
        "results": results,
        "convergence": converged,
        "total": {"shells_s": o_total, "lattice_s": l_total, "pymedphys_s": p_total,
                  "speedup": p_total / o_total if o_total else None,
                  "lattice_speedup": p_total / l_total if l_total else None},
        "notes": [
            "ratios, not absolute times, are the result: both tools ran on this machine in this run, one after "
            "the other, after an untimed warm-up (imports, numba JIT).",
            "same arrays, same axes (mm), same criteria; normalisation is the reference maximum for both (global); "
            "local gamma normalises by the reference voxel's dose in both.",
            "pass rate = gamma <= 1 over the voxels each tool evaluated (reference dose >= cutoff); the evaluated "
            "columns should match.",
            "same pattern: OncoPACS search='shells' samples pymedphys' shells (radii 0, step, 2 step, ..., dta; "
            "points no farther apart than the step); max|dγ| is the largest gamma difference over evaluated voxels "
            "(ours clipped at max_gamma as pymedphys clips), so threshold, normalisation, edges and interpolation "
            "agree voxel for voxel.",
            "any sampling of the search sphere gives an upper bound of the continuous gamma, so every pass rate is at "
            "or below the converged one and approaches it as the step shrinks; OncoPACS' default cubic lattice gets "
            "there in fewer steps (convergence table: dta/20-40 against pymedphys' dta/80-160), which is why it "
            "passes more voxels than pymedphys at the same dta/10. Same inputs, same sampling: same pass rate.",
            "the evaluated dose is the same analytic function shifted and scaled, so pass rates near 100% for "
            "3%/3mm and lower for 2%/2mm local are expected.",
        ],
    }
    return emit(report, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
