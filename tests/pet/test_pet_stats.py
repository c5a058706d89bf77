"""SUVmax/mean/peak, MTV and TLG on analytic spheres and Gaussian blobs; RTSTRUCT ROIs on the PET grid."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
from scipy.special import erf

from fusion.pet.errors import PetGeometryError
from fusion.pet.stats import (
    PEAK_SPHERE_RADIUS_MM,
    compute_roi_stats,
    compute_sphere_kernel,
    compute_structure_stats,
    segment_from_seed,
)
from fusion.pet.suv import (
    DecayCorrection,
    SuvCalibration,
    SuvImage,
    SuvType,
    Units,
    read_suv_image,
)
from rt.grid import VoxelGrid
from rt.structures import read_structure_set

CALIBRATION = SuvCalibration(Units.BQML, DecayCorrection.START, 370e6, 6586.2, datetime(2024, 1, 1, 9),
                             "test", datetime(2024, 1, 1, 10), "test", 80.0, 1.80, "M")


def _image(values: np.ndarray, spacing_mm: float) -> tuple[SuvImage, tuple[np.ndarray, ...]]:
    n = values.shape[0]
    origin = -(n - 1) / 2.0 * spacing_mm
    grid = VoxelGrid((origin,) * 3, (spacing_mm,) * 3, values.shape)
    image = SuvImage(SuvType.BW, grid, values, CALIBRATION, "1.2.3", "1.2.3.4", "1.2.3.5", "P", "20240101", ())
    z, y, x = np.meshgrid(*(grid.z_mm(), grid.y_mm(), grid.x_mm()), indexing="ij")
    return image, (x, y, z)


def _ball(coords, radius_mm: float) -> np.ndarray:
    x, y, z = coords
    return ((x * x + y * y + z * z) <= radius_mm**2).astype(np.float64)


def test_peak_sphere_is_one_cc() -> None:
    assert 4.0 / 3.0 * math.pi * PEAK_SPHERE_RADIUS_MM**3 == pytest.approx(1000.0)
    offsets, weights = compute_sphere_kernel((1.0, 1.0, 1.0))
    assert weights.sum() == pytest.approx(1.0)
    assert len(offsets) > 900  # about 1000 voxels of 1 mm^3 share the sphere


def test_uniform_sphere_peak_max_mean_and_mtv() -> None:
    image, coords = _image(np.zeros((41, 41, 41)), 2.0)
    lesion = _ball(coords, 20.0)
    values = 1.0 + 7.0 * lesion  # SUV 8 in the lesion, 1 around
    image = SuvImage(**{**{f: getattr(image, f) for f in image.__slots__}, "values": values})
    stats = compute_roi_stats(image, _ball(coords, 24.0), "lesion")
    assert stats.suv_max == pytest.approx(8.0)
    assert stats.suv_peak == pytest.approx(8.0)  # a 1 cc sphere fits inside the lesion
    lattice_cc = lesion.sum() * 0.008
    assert stats.mtv41_cc == pytest.approx(lattice_cc)  # 41 % of 8 = 3.28: exactly the lesion voxels
    assert stats.mtv41_cc == pytest.approx(4 / 3 * math.pi * 20.0**3 / 1000, rel=0.02)
    assert stats.tlg41 == pytest.approx(8.0 * stats.mtv41_cc)
    assert stats.mtv25_cc == pytest.approx(lattice_cc)
    roi = _ball(coords, 24.0) > 0
    assert stats.suv_mean == pytest.approx(values[roi].mean())
    lbm = 9270 * 80 / (6680 + 216 * 80 / 1.8**2)
    assert stats.sul_peak == pytest.approx(8.0 * lbm / 80.0)


def _gaussian_ball_integral(amplitude: float, sigma: float, radius: float) -> float:
    """Integral (SUV * mL) of A exp(-r^2 / 2 sigma^2) over the ball of ``radius`` (mm), in mm^3 * SUV."""
    inner = sigma**3 * (math.sqrt(math.pi / 2) * erf(radius / (sigma * math.sqrt(2)))
                        - radius / sigma * math.exp(-radius**2 / (2 * sigma**2)))
    return 4 * math.pi * amplitude * inner


def test_gaussian_peak_mtv_tlg_against_closed_form() -> None:
    amplitude, sigma, spacing = 10.0, 10.0, 1.5
    image, coords = _image(np.zeros((41, 41, 41)), spacing)
    x, y, z = coords
    values = amplitude * np.exp(-(x * x + y * y + z * z) / (2 * sigma**2))
    image = SuvImage(**{**{f: getattr(image, f) for f in image.__slots__}, "values": values})
    stats = compute_roi_stats(image, _ball(coords, 28.0), "blob")
    a = PEAK_SPHERE_RADIUS_MM
    expected_peak = _gaussian_ball_integral(amplitude, sigma, a) / (4 / 3 * math.pi * a**3)
    assert stats.suv_peak == pytest.approx(expected_peak, rel=0.005)
    r41 = sigma * math.sqrt(2 * math.log(1 / 0.41))
    assert stats.mtv41_cc == pytest.approx(4 / 3 * math.pi * r41**3 / 1000, rel=0.02)
    assert stats.tlg41 == pytest.approx(_gaussian_ball_integral(amplitude, sigma, r41) / 1000, rel=0.02)
    r25 = sigma * math.sqrt(2 * math.log(amplitude / 2.5))
    assert stats.mtv25_cc == pytest.approx(4 / 3 * math.pi * r25**3 / 1000, rel=0.02)


def test_seeded_segmentation_grows_41_percent_region() -> None:
    amplitude, sigma = 10.0, 6.0
    image, coords = _image(np.zeros((31, 31, 31)), 2.0)
    x, y, z = coords
    values = amplitude * np.exp(-((x - 4) ** 2 + y * y + z * z) / (2 * sigma**2))
    values += 9.0 * (np.abs(x + 24) < 3)  # a separate hot slab: not connected, must not be included
    image = SuvImage(**{**{f: getattr(image, f) for f in image.__slots__}, "values": values})
    mask = segment_from_seed(image, (2.0, 0.0, 0.0))
    stats = compute_roi_stats(image, mask, "seed")
    assert stats.suv_max == pytest.approx(amplitude)
    r41 = sigma * math.sqrt(2 * math.log(1 / 0.41))
    assert mask.sum() * 0.008 == pytest.approx(4 / 3 * math.pi * r41**3 / 1000, rel=0.05)
    assert stats.mtv41_cc == pytest.approx(mask.sum() * 0.008)
    absolute = segment_from_seed(image, (4.0, 0.0, 0.0), threshold=5.0)
    assert absolute.sum() < mask.sum()
    with pytest.raises(PetGeometryError, match="outside"):
        segment_from_seed(image, (500.0, 0.0, 0.0))
    with pytest.raises(PetGeometryError, match="below the threshold"):
        segment_from_seed(image, (4.0, 0.0, 0.0), threshold=50.0)


def test_rtstruct_rois_on_the_pet_grid() -> None:
    from oncopacs.phantom import build_demo_patient

    patient = build_demo_patient()
    image = read_suv_image(list(patient.pet))
    structure_set = read_structure_set(patient.rtstruct)
    with pytest.raises(PetGeometryError, match="frame of reference"):
        compute_structure_stats(image, structure_set, ["PTV"])
    (ptv,) = compute_structure_stats(image, structure_set, ["PTV"], allow_other_frame=True)
    assert ptv.suv_max == pytest.approx(patient.truth.lesion_suvbw, rel=0.005)
    assert ptv.suv_peak <= ptv.suv_max
    assert ptv.volume_cc == pytest.approx(patient.truth.compute_volume_cc("PTV"), rel=0.05)


def test_roi_outside_the_grid_is_an_error() -> None:
    image, _ = _image(np.ones((11, 11, 11)), 2.0)
    with pytest.raises(PetGeometryError, match="covers no voxel"):
        compute_roi_stats(image, np.zeros((11, 11, 11)), "empty")
