"""Volumes from DICOM series: any orientation, sorting, missing/uneven slices, rescaling, resampling."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import SimpleITK as sitk

from fusion.errors import VolumeError
from fusion.volume import load_series, read_series_info, resample_to
from oncopacs.phantom.fusion import build_fusion_ct_series
from oncopacs.phantom.geometry import ImageGrid


@pytest.fixture
def grid() -> ImageGrid:
    return ImageGrid(origin_mm=(-10.0, 20.0, -30.0), spacing_mm=(2.0, 1.5, 3.0), shape=(6, 5, 4))


@pytest.fixture
def hu(grid) -> np.ndarray:
    return (np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape) * 7.0 - 1000.0)


def test_axial_series_in_any_order_gives_lps_volume(grid, hu):
    slices = build_fusion_ct_series(hu, grid, "vol")
    shuffled = slices[:]
    random.Random(4).shuffle(shuffled)
    image = load_series(shuffled)
    assert image.GetSize() == (4, 5, 6) and image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSpacing() == pytest.approx((2.0, 1.5, 3.0))
    assert image.GetOrigin() == pytest.approx((-10.0, 20.0, -30.0))
    assert np.array_equal(sitk.GetArrayFromImage(image), hu)  # HU = stored + RescaleIntercept
    info = read_series_info(image)
    assert info.series_instance_uid == slices[0].SeriesInstanceUID and info.modality == "CT"
    assert info.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in slices)  # volume (position) order


def test_oblique_sagittal_series_places_voxels_in_patient_space(grid, hu):
    slices = build_fusion_ct_series(hu, grid, "sag")
    row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    rotation = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    row, col = rotation @ row, rotation @ col
    normal = np.cross(row, col)
    start = np.array([5.0, -7.0, 40.0])
    for k, ds in enumerate(slices):
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in start + (len(slices) - 1 - k) * 3.0 * normal]  # reversed stack
    image = load_series(slices)
    assert np.allclose(np.array(image.GetDirection()).reshape(3, 3), np.column_stack([row, col, normal]), atol=1e-6)
    assert image.GetSpacing()[2] == pytest.approx(3.0)
    # pixel (column i, row j) of the slice at position p lies at p + i*dc*row + j*dr*col
    top = slices[-1]  # the slice with the smallest position along the normal comes first
    i, j = 2, 3
    dr, dc = (float(v) for v in top.PixelSpacing)  # (between rows, between columns)
    expected = start + i * dc * row + j * dr * col
    assert np.allclose(image.TransformIndexToPhysicalPoint((i, j, 0)), expected, atol=1e-4)
    assert sitk.GetArrayFromImage(image)[0, j, i] == pytest.approx(hu[-1, j, i])


def test_missing_slice_is_named(grid, hu):
    slices = build_fusion_ct_series(hu, grid, "gap")
    del slices[3]
    with pytest.raises(VolumeError, match=r"1 missing slice\(s\) between -24.00 and -18.00 mm"):
        load_series(slices)


def test_uneven_spacing_and_duplicates_are_refused(grid, hu):
    slices = build_fusion_ct_series(hu, grid, "uneven")
    slices[-1].ImagePositionPatient = [-10.0, 20.0, -13.5]  # 1.5 mm after the previous slice
    with pytest.raises(VolumeError, match="uneven slice spacing"):
        load_series(slices)
    slices = build_fusion_ct_series(hu, grid, "dup")
    twin = copy.deepcopy(slices[2])
    twin.SOPInstanceUID = "1.2.3.4.5"
    with pytest.raises(VolumeError, match="share the position"):
        load_series([*slices, twin])


def test_mixed_series_orientation_and_tilt_are_refused(grid, hu):
    first, second = build_fusion_ct_series(hu, grid, "a"), build_fusion_ct_series(hu, grid, "b")
    with pytest.raises(VolumeError, match="2 image series"):
        load_series([*first, *second])
    assert load_series([*first, *second], series_instance_uid=second[0].SeriesInstanceUID).GetSize() == (4, 5, 6)
    slices = build_fusion_ct_series(hu, grid, "tilt")
    slices[2].ImagePositionPatient = [-9.0, 20.0, -24.0]
    with pytest.raises(VolumeError, match=r"shifted 1\.000 mm in-plane"):
        load_series(slices)
    slices = build_fusion_ct_series(hu, grid, "orient")
    slices[1].ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    with pytest.raises(VolumeError, match="another orientation"):
        load_series(slices)


def test_rescale_slope_per_slice_and_folder_loading(tmp_path, grid, hu):
    slices = build_fusion_ct_series(hu, grid, "slope")
    slices[0].RescaleSlope, slices[0].RescaleIntercept = "2", "-2048"
    for ds in slices:
        ds.save_as(tmp_path / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    (tmp_path / "README.txt").write_text("not DICOM")
    volume = sitk.GetArrayFromImage(load_series(tmp_path))
    assert np.array_equal(volume[0], (hu[0] + 1024) * 2 - 2048)
    assert np.array_equal(volume[1:], hu[1:])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VolumeError, match="no DICOM files"):
        load_series(empty)


def test_resample_to_with_and_without_a_transform(grid, hu):
    image = load_series(build_fusion_ct_series(hu, grid, "resample"))
    same = resample_to(image, image)
    assert np.allclose(sitk.GetArrayFromImage(same), hu)
    shift = sitk.TranslationTransform(3, (2.0, 0.0, 0.0))  # reference point x -> image point x + 2 mm = next column
    shifted = sitk.GetArrayFromImage(resample_to(image, image, shift, default=-1000.0))
    assert np.allclose(shifted[:, :, :-1], hu[:, :, 1:]) and np.all(shifted[:, :, -1] == -1000.0)
    labels = sitk.Cast(image > -800, sitk.sitkUInt8)
    nearest = resample_to(labels, image, shift, interpolator=sitk.sitkNearestNeighbor)
    assert nearest.GetPixelID() == sitk.sitkUInt8
    assert nearest.GetMetaData("SeriesInstanceUID") == image.GetMetaData("SeriesInstanceUID")  # the reference's
