"""Fast generation of many CT instances for load tests and benchmarks.

One water-cylinder pixel buffer (HU 0 in air) is computed once and shared by every instance;
only UIDs, positions and instance numbers vary. Instances are spread over ``n_studies``
studies (one series each) and ``n_patients`` patients, contiguously: study j holds instances
[j * n / n_studies, (j + 1) * n / n_studies), and study j belongs to patient j % n_patients.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset

from oncopacs.phantom.anatomy import HU_AIR, HU_WATER
from oncopacs.phantom.ct import CT_RESCALE_INTERCEPT, build_ct_slice
from oncopacs.phantom.geometry import centred_grid
from oncopacs.phantom.shapes import Cylinder
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.uids import uid_for


def compute_water_cylinder_pixels(rows: int, cols: int, spacing_mm: float) -> bytes:
    """Little-endian uint16 bytes (HU + 1024) of a water cylinder filling 80 % of the field."""
    grid = centred_grid((1, rows, cols), (spacing_mm, spacing_mm, 1.0))
    xx, yy = grid.compute_slice_xy_mm()
    radius = 0.4 * min(rows, cols) * spacing_mm
    inside = Cylinder((0.0, 0.0), radius, -1.0, 1.0).contains(xx, yy, 0.0)
    hu = np.where(inside, HU_WATER, HU_AIR)
    return (hu - CT_RESCALE_INTERCEPT).astype("<u2").tobytes()


def build_benchmark_ct(
    n_instances: int,
    n_studies: int = 1,
    *,
    rows: int = 512,
    cols: int = 512,
    n_patients: int | None = None,
    pixel_spacing_mm: float = 0.9765625,
    slice_thickness_mm: float = 1.0,
    prefix: str = "BENCH",
) -> Iterator[Dataset]:
    """Yield ``n_instances`` CT slices (rows x cols) over ``n_studies`` studies lazily.

    n_patients defaults to n_studies (one study per patient). Patient IDs are
    ``f"{prefix}-{p:05d}"``; everything is deterministic in the arguments.
    """
    if n_instances < 0 or n_studies < 1 or not 0 < (n_patients or n_studies) <= n_studies:
        raise ValueError("need n_instances >= 0 and 1 <= n_patients <= n_studies")
    n_patients = n_patients or n_studies
    pixels = compute_water_cylinder_pixels(rows, cols, pixel_spacing_mm)
    patients = [
        PatientSpec(patient_id=f"{prefix}-{p:05d}", name=f"Bench^Patient{p:05d}", sex="MFO"[p % 3])
        for p in range(n_patients)
    ]
    for j in range(n_studies):
        lo, hi = j * n_instances // n_studies, (j + 1) * n_instances // n_studies
        if hi == lo:
            continue
        patient = patients[j % n_patients]
        day = 1 + j % 28
        study = make_study_spec(
            patient,
            f"{prefix}/bench-study/{j}",
            study_id=f"S{j + 1:05d}",
            description=f"Benchmark CT {j + 1}",
            study_date=f"2023{1 + (j // 28) % 12:02d}{day:02d}",
            study_time=f"{8 + j % 10:02d}{j % 60:02d}00",
        )
        for_uid = uid_for(study.study_instance_uid, "for")
        series = make_series_spec(
            study, "ct", series_number=1, description="Benchmark CT", modality="CT",
            frame_of_reference_uid=for_uid,
        )
        grid = centred_grid((hi - lo, rows, cols), (pixel_spacing_mm, pixel_spacing_mm, slice_thickness_mm))
        for k in range(hi - lo):
            yield build_ct_slice(patient, study, series, grid, k, pixels)


def build_ct_instances(
    n: int, *, rows: int = 512, cols: int = 512, studies: int = 1, prefix: str = "BENCH"
) -> list[Dataset]:
    """``list(build_benchmark_ct(n, studies, rows=rows, cols=cols, prefix=prefix))``."""
    return list(build_benchmark_ct(n, studies, rows=rows, cols=cols, prefix=prefix))
