"""Contour propagation: staircase outlines, RTSTRUCT writing, sphere propagation (Dice >= 0.9), Dice/HD95."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset

from fusion.ct4d import build_derived_series
from fusion.errors import FusionError
from fusion.propagation import (
    compare_with_reference,
    compute_mask_volume_cc,
    compute_overlap,
    compute_roi_mask,
    propagate_structure_set,
)
from fusion.rtstruct_writer import RoiContours, build_rtstruct, compute_mask_polygons
from oncopacs.phantom.shapes import Sphere, compute_cross_section_polygons
from rt.grid import VoxelGrid
from rt.structures import ROI, Contour, StructureSet, compute_mask, read_structure_set

SPACING = (2.0, 2.0, 2.0)


def make_image(shape=(30, 40, 40), spacing=SPACING, origin=(-40.0, -40.0, -30.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros(shape, dtype=np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def sphere_roi(name: str, centre, radius: float, z_planes) -> ROI:
    solid = Sphere(tuple(centre), radius)
    contours = tuple(Contour("CLOSED_PLANAR", polygon) for z in z_planes
                     for polygon in compute_cross_section_polygons(solid, float(z), 64))
    return ROI(1, name, "GTV", (255, 0, 0), "1.2.3", contours)


def structure_set(*rois: ROI) -> StructureSet:
    return StructureSet("1.2.3.4", "test", "1.2.3", rois)


def template() -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.PatientName = "P1", "Test^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3.10", "1.2.3.11", "1.2.3.12"
    return ds


def test_staircase_outline_rasterises_back_to_the_mask_with_holes():
    array = np.zeros((3, 12, 12), dtype=np.uint8)
    array[1, 2:10, 2:10] = 1
    array[1, 4:7, 4:7] = 0  # a hole
    array[1, 0, 11] = 1  # a separate single voxel
    array[1, 10, 0] = 1
    array[1, 11, 1] = 1  # touching the previous one diagonally only
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing((1.5, 2.0, 3.0))
    mask.SetOrigin((10.0, -5.0, 7.0))
    polygons = compute_mask_polygons(mask)
    assert all(np.allclose(p[:, 2], 7.0 + 3.0) for p in polygons)  # in slice 1's plane
    roi = ROI(1, "X", "ORGAN", None, "", tuple(Contour("CLOSED_PLANAR", p) for p in polygons))
    grid = VoxelGrid(origin_mm=(10.0, -5.0, 7.0), spacing_mm=(1.5, 2.0, 3.0), shape=(3, 12, 12))
    np.testing.assert_allclose(compute_mask(roi, grid), array, atol=1e-9)


def test_sphere_propagated_through_a_translation_has_dice_above_0_9():
    fixed = make_image()
    shift = np.array([6.0, -4.0, 9.0])  # fixed point + shift = moving point
    moving_roi = sphere_roi("GTV", (5.0, 3.0, 4.0), 12.0, np.arange(-10.0, 18.0, 2.0))
    transform = sitk.TranslationTransform(3, tuple(shift))
    (result,) = propagate_structure_set(structure_set(moving_roi), transform, fixed)
    reference = sphere_roi("GTV", (5.0 - 6.0, 3.0 + 4.0, 4.0 - 9.0), 12.0, np.arange(-20.0, 10.0, 2.0))
    (stats,) = compare_with_reference([result], structure_set(reference), fixed)
    assert stats.dice >= 0.9
    assert stats.hausdorff95_mm <= 2.0 * SPACING[0]
    assert result.volume_cc == pytest.approx(Sphere((0, 0, 0), 12.0).volume_cc, rel=0.05)


def test_sphere_propagated_through_a_smooth_deformation_has_dice_above_0_9():
    fixed = make_image()
    # displacement (fixed -> moving) along x growing smoothly with z: up to 8 mm over the volume
    zz = np.arange(30, dtype=np.float64)[:, None, None] * 2.0 - 30.0
    field = np.zeros((30, 40, 40, 3))
    field[..., 0] = 8.0 * np.sin(np.pi * (zz + 30.0) / 120.0)
    field_image = sitk.GetImageFromArray(field, isVector=True)
    field_image.CopyInformation(fixed)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field_image, sitk.sitkVectorFloat64))
    moving_roi = sphere_roi("GTV", (0.0, 0.0, 0.0), 10.0, np.arange(-12.0, 14.0, 2.0))
    (result,) = propagate_structure_set(structure_set(moving_roi), transform, fixed)
    # the fixed sphere: each fixed point x maps to x + d(z); sphere centre near x = -d(0) = -8 sin(pi/4)
    expected = sitk.GetArrayFromImage(compute_roi_mask(moving_roi, fixed, transform))
    assert np.array_equal(sitk.GetArrayViewFromImage(result.mask), expected)
    reference = sphere_roi("GTV", (-8.0 * np.sin(np.pi / 4.0), 0.0, 0.0), 10.0, np.arange(-12.0, 14.0, 2.0))
    (stats,) = compare_with_reference([result], structure_set(reference), fixed)
    assert stats.dice >= 0.9


def test_overlap_of_identical_and_shifted_masks():
    a = np.zeros((20, 20, 20), dtype=np.uint8)
    a[5:15, 5:15, 5:15] = 1
    b = np.roll(a, 2, axis=2)
    ma, mb = sitk.GetImageFromArray(a), sitk.GetImageFromArray(b)
    for m in (ma, mb):
        m.SetSpacing((1.5, 1.5, 1.5))
    same = compute_overlap("box", ma, ma)
    assert same.dice == 1.0 and same.hausdorff95_mm == 0.0
    shifted = compute_overlap("box", ma, mb)
    assert shifted.dice == pytest.approx(0.8)
    assert shifted.hausdorff_max_mm == pytest.approx(3.0)
    assert compute_mask_volume_cc(ma) == pytest.approx(1000 * 1.5**3 / 1000.0)
    with pytest.raises(FusionError):
        compute_overlap("box", ma, sitk.GetImageFromArray(np.zeros((20, 20, 20), dtype=np.uint8)))


def test_propagated_rtstruct_references_the_fixed_series_and_reads_back():
    fixed = make_image()
    slices = build_derived_series(fixed, template(), "AIP", series_number=5)  # a CT series on the fixed grid
    moving_roi = sphere_roi("GTV", (0.0, 0.0, 0.0), 10.0, np.arange(-12.0, 14.0, 2.0))
    propagated = propagate_structure_set(structure_set(moving_roi), sitk.TranslationTransform(3, (2.0, 0, 0)), fixed)
    ds = build_rtstruct(slices, [p.to_contours() for p in propagated], entropy=["test"])
    assert ds.FrameOfReferenceUID == "1.2.3.12" and ds.PatientID == "P1"
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == "1.2.3.12"
    slice_uids = {s.SOPInstanceUID for s in slices}
    contours = ds.ROIContourSequence[0].ContourSequence
    assert all(c.ContourImageSequence[0].ReferencedSOPInstanceUID in slice_uids for c in contours)
    read = read_structure_set(ds)
    assert read.roi_names == ("GTV",) and read.rois[0].interpreted_type == "GTV"
    # the written contours rasterise to the propagated mask on the fixed grid
    grid = VoxelGrid(origin_mm=fixed.GetOrigin(), spacing_mm=fixed.GetSpacing(), shape=(30, 40, 40))
    np.testing.assert_allclose(compute_mask(read.rois[0], grid), sitk.GetArrayViewFromImage(propagated[0].mask))
    assert build_rtstruct(slices, [p.to_contours() for p in propagated], entropy=["test"]).SOPInstanceUID \
        == ds.SOPInstanceUID


def test_roi_outside_the_fixed_image_is_an_error():
    roi = sphere_roi("Far", (500.0, 0.0, 0.0), 5.0, np.arange(-4.0, 5.0, 2.0))
    with pytest.raises(FusionError, match="outside"):
        propagate_structure_set(structure_set(roi), sitk.TranslationTransform(3), make_image())
    with pytest.raises(FusionError):
        propagate_structure_set(structure_set(), sitk.TranslationTransform(3), make_image())


def test_written_roi_contours_keep_names_and_colours():
    ds = build_rtstruct(build_derived_series(make_image(), template(), "MIP", series_number=3),
                        [RoiContours("A", (), "ORGAN", (1, 2, 3))])
    assert ds.StructureSetROISequence[0].ROIName == "A"
    assert list(ds.ROIContourSequence[0].ROIDisplayColor) == [1, 2, 3]
