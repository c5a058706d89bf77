"""The ``body-contour`` algorithm (External, Lungs, Bones by thresholds and morphology) and its DICOM writers.

Phantoms with analytic volumes: a family (hypothesis) of ellipsoid bodies with two ellipsoid lungs and a bone
cylinder, on anisotropic grids, with or without a couch under the patient and CT noise; the project's breathing
thorax (4D CT phantom, one phase). The RT Structure Set must read back through :mod:`rt.structures` with the
volumes of the masks, the Segmentation through highdicom with the masks as frames, both with their provenance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from io import BytesIO

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom import examples as pydicom_examples
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sr.codedict import codes

from fusion.volume import load_series
from oncopacs.phantom.ct import CT_RESCALE_INTERCEPT, build_ct_slice
from oncopacs.phantom.ct4d import CT4D_FAMILY, build_ct4d_phantom
from oncopacs.phantom.geometry import centred_grid
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.phantom.thorax import HU_LUNG
from oncopacs.uids import uid_for
from rt.autocontour import (
    ALGORITHM_NAME,
    ALGORITHM_VERSION,
    BONES,
    EXTERNAL,
    LUNGS,
    AutoContourResult,
    build_hu_image,
    contour_body,
)
from rt.errors import GeometryError
from rt.grid import VoxelGrid
from rt.rtstruct_writer import build_autocontour_rtstruct
from rt.seg_writer import build_autocontour_seg
from rt.structures import compute_mask, read_structure_set

PROPERTY = settings(deadline=None, database=None, derandomize=True, print_blob=True, max_examples=6,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))

#: Relative tolerance of a found volume against the analytic one.
VOLUME_TOLERANCE = 0.03
BODY_SEMI_AXES_MM = (90.0, 65.0, 55.0)
LUNG_SEMI_AXES_MM = (28.0, 36.0, 38.0)
LUNG_CENTRE_X_MM = 42.0
BONE_RADIUS_MM, BONE_HALF_LENGTH_MM, BONE_CENTRE_Y_MM = 10.0, 35.0, 45.0


@dataclass(frozen=True)
class Phantom:
    """HU (z, y, x) on a centred grid, the analytic volumes (cc) and the voxels of the couch."""

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    volumes_cc: dict[str, float]
    couch: np.ndarray

    def image(self) -> sitk.Image:
        grid = centred_grid(self.hu.shape, self.spacing_mm)
        return build_hu_image(self.hu, self.spacing_mm, grid.origin_mm)


#: Couches under the patient (100 HU, the width of the image): (gap under the body, thickness), mm.
COUCHES = {"none": None, "separate": (4.0, 12.0), "thin shell touching": (-0.5, 3.0)}


def build_phantom(spacing_mm: tuple[float, float, float], *, lungs: bool = True, couch: str = "none",
                  noise_hu: float = 0.0, scale: float = 1.0) -> Phantom:
    """An ellipsoid body (40 HU) with two ellipsoid lungs (-800 HU) and a flat-ended bone cylinder (700 HU), air
    (-1000 HU) around, a couch of :data:`COUCHES` under it; ``scale`` shrinks the body and its organs."""
    ax, ay, az = (s * scale for s in BODY_SEMI_AXES_MM)
    dx, dy, dz = spacing_mm
    shape = (2 * math.ceil((az + 6) / dz), 2 * math.ceil((ay + 24 * scale + 4) / dy), 2 * math.ceil((ax + 6) / dx))
    grid = centred_grid(shape, spacing_mm)
    z, y, x = np.meshgrid(*(grid.origin_mm[a] + grid.spacing_mm[a] * np.arange(shape[2 - a]) for a in (2, 1, 0)),
                          indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2 <= 1.0] = 40.0
    la, lb, lc = (s * scale for s in LUNG_SEMI_AXES_MM)
    # The cylinder's flat ends as the slices (centred, an even number) sample them: whole slices long.
    bone_length_mm = 2 * dz * math.floor(BONE_HALF_LENGTH_MM * scale / dz + 0.5)
    volumes = {EXTERNAL: 4.0 / 3.0 * math.pi * ax * ay * az / 1000.0, LUNGS: 0.0,
               BONES: math.pi * (BONE_RADIUS_MM * scale) ** 2 * bone_length_mm / 1000.0}
    if lungs:
        for side in (-1.0, 1.0):
            hu[((x - side * LUNG_CENTRE_X_MM * scale) / la) ** 2 + (y / lb) ** 2 + (z / lc) ** 2 <= 1.0] = -800.0
        volumes[LUNGS] = 2 * 4.0 / 3.0 * math.pi * la * lb * lc / 1000.0
    hu[(x**2 + (y - BONE_CENTRE_Y_MM * scale) ** 2 <= (BONE_RADIUS_MM * scale) ** 2)
       & (np.abs(z) <= BONE_HALF_LENGTH_MM * scale)] = 700.0
    couch_mask = np.zeros(shape, dtype=bool)
    if (placement := COUCHES[couch]) is not None:
        gap, thickness = placement
        couch_mask = (y >= ay + gap) & (y <= ay + gap + thickness) & (hu == -1000.0)
    hu[couch_mask] = 100.0
    if noise_hu:
        hu += np.random.default_rng(7).normal(0.0, noise_hu, shape)
    return Phantom(hu, spacing_mm, volumes, couch_mask)


def assert_volume(result: AutoContourResult, name: str, expected_cc: float,
                  tolerance: float = VOLUME_TOLERANCE) -> None:
    found = result.structure(name).volume_cc
    assert found == pytest.approx(expected_cc, rel=tolerance), f"{name}: {found:.2f} cc, expected {expected_cc:.2f}"


@PROPERTY
@example(dx=1.2, dz=2.5, couch="thin shell touching", noise_hu=20.0)
@example(dx=0.9, dz=4.0, couch="separate", noise_hu=0.0)
@given(dx=st.sampled_from([0.9, 1.2, 1.6]), dz=st.sampled_from([1.5, 2.5, 4.0]), couch=st.sampled_from(list(COUCHES)),
       noise_hu=st.sampled_from([0.0, 20.0, 60.0]))
def test_phantom_family_volumes_match_the_analytic_ones(dx: float, dz: float, couch: str, noise_hu: float) -> None:
    phantom = build_phantom((dx, dx * 1.1, dz), couch=couch, noise_hu=noise_hu)
    result = contour_body(phantom.image())
    for name in (EXTERNAL, LUNGS, BONES):
        assert_volume(result, name, phantom.volumes_cc[name])
        assert result.structure(name).empty_reason == ""
    body = result.structure(EXTERNAL).mask
    assert not (result.structure(LUNGS).mask & ~body).any(), "lungs outside the body"
    assert not (result.structure(BONES).mask & ~body).any(), "bone outside the body"
    # A couch shell touching the skin stays part of the outline within about 5 mm of the contact.
    couch_cc = np.count_nonzero(body & phantom.couch) * float(np.prod(phantom.spacing_mm)) / 1000.0
    assert couch_cc <= 0.01 * phantom.volumes_cc[EXTERNAL], f"{couch_cc:.1f} cc of the couch in the body"


def test_a_ct_without_air_in_the_lungs_gives_empty_lungs_with_a_reason() -> None:
    phantom = build_phantom((1.5, 1.5, 3.0), lungs=False)
    result = contour_body(phantom.image())
    lungs = result.structure(LUNGS)
    assert lungs.volume_cc == 0.0 and not lungs.mask.any()
    assert "no air" in lungs.empty_reason
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["structures"][1] == {"name": LUNGS, "interpreted_type": "ORGAN", "volume_cc": 0.0,
                                        "empty_reason": lungs.empty_reason}
    assert summary["algorithm"] == {"name": ALGORITHM_NAME, "version": ALGORITHM_VERSION}
    assert summary["parameters"]["body_threshold_hu"] == -400.0
    assert_volume(result, EXTERNAL, phantom.volumes_cc[EXTERNAL])
    assert_volume(result, BONES, phantom.volumes_cc[BONES])


def test_a_tiny_body_is_found_and_its_lungs_reported_too_small() -> None:
    phantom = build_phantom((0.5, 0.5, 1.0), scale=0.15)  # body 4.5 cc, lungs 1.1 cc, bone 0.07 cc
    result = contour_body(phantom.image())
    assert_volume(result, EXTERNAL, phantom.volumes_cc[EXTERNAL], tolerance=0.05)
    assert "at least 30 cc" in result.structure(LUNGS).empty_reason
    assert not (result.structure(BONES).mask & ~result.structure(EXTERNAL).mask).any()


def test_a_ct_of_air_only_finds_nothing_and_the_writers_refuse_it() -> None:
    slices = build_ct_slices(np.full((4, 32, 32), -1000.0), (1.0, 1.0, 2.0))
    result = contour_body(load_series(slices))
    assert all(s.volume_cc == 0.0 and s.empty_reason for s in result.structures)
    with pytest.raises(GeometryError, match="no structure found"):
        build_autocontour_rtstruct(result, slices)
    with pytest.raises(GeometryError, match="no structure found"):
        build_autocontour_seg(result, slices)


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(GeometryError, match="3D"):
        contour_body(sitk.Image(8, 8, sitk.sitkFloat32))
    with pytest.raises(GeometryError, match="3 dimensions"):
        build_hu_image(np.zeros((8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(GeometryError, match="spacing"):
        build_hu_image(np.zeros((2, 8, 8)), (1.0, 0.0, 1.0))


def build_ct_slices(hu: np.ndarray, spacing_mm: tuple[float, float, float], key: str = "autocontour") -> list[Dataset]:
    """CT datasets (the phantom's writer, HU + 1024 stored) of ``hu`` on a grid centred on the origin."""
    patient = PatientSpec(patient_id="PHAC001", name="Phantom^AutoContour")
    study = make_study_spec(patient, key, study_id="AC", description="Auto-contour phantom")
    series = make_series_spec(study, "ct", series_number=1, description="CT", modality="CT",
                              frame_of_reference_uid=uid_for(study.study_instance_uid, "frame"))
    grid = centred_grid(hu.shape, spacing_mm)
    stored = np.clip(np.rint(hu - CT_RESCALE_INTERCEPT), 0, 65535).astype("<u2")
    return [build_ct_slice(patient, study, series, grid, k, stored[k].tobytes()) for k in range(hu.shape[0])]


@pytest.fixture(scope="module")
def written() -> tuple[list[Dataset], AutoContourResult]:
    """A phantom written as CT slices, read back as a volume by fusion.volume, contoured."""
    phantom = build_phantom((1.2, 1.2, 3.0), couch="separate")
    slices = build_ct_slices(phantom.hu, phantom.spacing_mm)
    return slices, contour_body(load_series(slices))


def reread(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_rtstruct_reads_back_with_the_volumes_of_the_masks(written: tuple[list[Dataset], AutoContourResult]) -> None:
    slices, result = written
    rtstruct = reread(build_autocontour_rtstruct(result, slices[::-1]))
    structure_set = read_structure_set(rtstruct)
    assert structure_set.roi_names == (EXTERNAL, LUNGS, BONES)
    grid = VoxelGrid(tuple(float(v) for v in slices[0].ImagePositionPatient), result.spacing_mm,
                     result.structure(EXTERNAL).mask.shape)
    for name in (EXTERNAL, LUNGS, BONES):
        roi = structure_set.roi(name)
        mask = result.structure(name).mask
        rasterised = compute_mask(roi, grid, supersampling=2)
        assert np.array_equal(rasterised > 0.5, mask), name
        assert roi.compute_volume_cc() == pytest.approx(result.structure(name).volume_cc, rel=VOLUME_TOLERANCE)
    assert [roi.interpreted_type for roi in structure_set.rois] == ["EXTERNAL", "ORGAN", "ORGAN"]
    assert structure_set.frame_of_reference_uid == slices[0].FrameOfReferenceUID


def test_rtstruct_references_the_ct_and_names_its_algorithm(written: tuple[list[Dataset], AutoContourResult]) -> None:
    slices, result = written
    rtstruct = reread(build_autocontour_rtstruct(result, slices))
    series = rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == slices[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in series.ContourImageSequence} == {
        ds.SOPInstanceUID for ds in slices}
    sop_uids = {ds.SOPInstanceUID for ds in slices}
    for roi_contour in rtstruct.ROIContourSequence:
        assert all(c.ContourImageSequence[0].ReferencedSOPInstanceUID in sop_uids for c in roi_contour.ContourSequence)
    assert rtstruct.StudyInstanceUID == slices[0].StudyInstanceUID
    assert rtstruct.PatientID == slices[0].PatientID
    equipment = rtstruct.ContributingEquipmentSequence[0]
    assert (equipment.Manufacturer, equipment.ManufacturerModelName, equipment.SoftwareVersions) == (
        "OncoPACS", ALGORITHM_NAME, ALGORITHM_VERSION)
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    for item in rtstruct.StructureSetROISequence:
        assert item.ROIGenerationAlgorithm == "AUTOMATIC"
        assert f"{ALGORITHM_NAME} {ALGORITHM_VERSION}" in item.ROIGenerationDescription
    assert rtstruct.SOPInstanceUID == build_autocontour_rtstruct(result, slices).SOPInstanceUID  # deterministic


def test_seg_reads_back_with_the_masks_as_frames(written: tuple[list[Dataset], AutoContourResult]) -> None:
    slices, result = written
    seg = hd.seg.Segmentation.from_dataset(reread(build_autocontour_seg(result, slices[::-1])))
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [EXTERNAL, LUNGS, BONES]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in slices],
                                               segment_numbers=[1, 2, 3], combine_segments=False)
    for number, name in enumerate((EXTERNAL, LUNGS, BONES)):
        assert np.array_equal(pixels[..., number] > 0, result.structure(name).mask), name
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == slices[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    for description in seg.SegmentSequence:
        assert description.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (ALGORITHM_NAME, ALGORITHM_VERSION)
        family = algorithm.AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == (codes.cid7162.MorphologicalOperations.value,
                                                                     codes.cid7162.MorphologicalOperations.scheme_designator)
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.SoftwareVersions) == (
        "OncoPACS", ALGORITHM_NAME, ALGORITHM_VERSION)
    ours = [item for item in seg.ContributingEquipmentSequence if item.ManufacturerModelName == ALGORITHM_NAME]
    assert len(ours) == 1 and ours[0].SoftwareVersions == ALGORITHM_VERSION
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_writers_refuse_slices_of_another_grid(written: tuple[list[Dataset], AutoContourResult]) -> None:
    slices, result = written
    with pytest.raises(GeometryError, match="slices given"):
        build_autocontour_rtstruct(result, slices[1:])
    moved = [reread(ds) for ds in slices]
    moved[3].ImagePositionPatient = [float(v) + 5.0 for v in moved[3].ImagePositionPatient]
    with pytest.raises(GeometryError, match="does not lie"):
        build_autocontour_seg(result, moved)


def test_breathing_thorax_phantom() -> None:
    """The project's 4D thorax (one phase): elliptic-cylinder body, ribs and spine, lungs above a diaphragm."""
    spec = replace(CT4D_FAMILY["issue_case"], phases=1, gtv_phase=0, supersampling=1)
    phantom = build_ct4d_phantom(spec)
    slices = list(phantom.phases[0])
    result = contour_body(load_series(slices))
    thorax = spec.thorax
    assert thorax is not None
    grid = spec.grid
    length_mm = grid.nz * grid.spacing_mm[2]
    ax, ay = thorax.body_semi_axes_mm
    assert_volume(result, EXTERNAL, math.pi * ax * ay * length_mm / 1000.0)
    z, y, x = np.meshgrid(*(grid.origin_mm[a] + grid.spacing_mm[a] * np.arange(grid.shape[2 - a]) for a in (2, 1, 0)),
                          indexing="ij")
    truth_lungs = thorax.compute_hu(x, y, z, thorax.compute_apex_mm(0, 1)) == HU_LUNG
    assert_volume(result, LUNGS, float(truth_lungs.sum()) * grid.voxel_volume_cc)
    assert not (result.structure(LUNGS).mask & ~result.structure(EXTERNAL).mask).any()
    assert result.structure(BONES).volume_cc > 0.0
    rtstruct = build_autocontour_rtstruct(result, slices)
    assert read_structure_set(reread(rtstruct)).roi_names == (EXTERNAL, LUNGS, BONES)


def test_a_real_ct_slice_gives_a_plausible_body() -> None:
    """pydicom's CT_small (a 128 x 128 crop of a clinical CT, one slice): a file this project did not write."""
    ct = pydicom_examples.ct
    result = contour_body(load_series([ct]))
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    body = result.structure(EXTERNAL).mask[0]
    assert 0.5 < body.mean() < 0.95
    assert body[hu > -400].mean() > 0.99, "tissue left outside the body"
    assert not body[hu < -700].any(), "the air around the patient is in the body"
    assert result.structure(BONES).volume_cc > 0.5
    assert result.structure(LUNGS).empty_reason
    rtstruct = read_structure_set(reread(build_autocontour_rtstruct(result, [ct])))
    pixel_mm2 = float(ct.PixelSpacing[0]) * float(ct.PixelSpacing[1])
    assert rtstruct.roi(EXTERNAL).compute_plane_areas_mm2().sum() == pytest.approx(body.sum() * pixel_mm2)
    seg = hd.seg.Segmentation.from_dataset(reread(build_autocontour_seg(result, [ct])))
    frames = seg.get_pixels_by_source_instance([ct.SOPInstanceUID], segment_numbers=[1], combine_segments=False)
    assert np.array_equal(frames[0, ..., 0] > 0, body)


@pytest.mark.slow
def test_a_clinical_size_ct_512_by_512() -> None:
    """512 x 512 pixels of 0.98 mm, 98 slices of 1.25 mm, a separate couch: the size the plug-in meets."""
    phantom = build_phantom((0.98, 0.98, 1.25), couch="separate", noise_hu=20.0)
    hu = np.pad(phantom.hu, [(0, 0), ((512 - phantom.hu.shape[1]) // 2,) * 2, ((512 - phantom.hu.shape[2]) // 2,) * 2],
                constant_values=-1000.0)
    assert hu.shape[1:] == (512, 512)
    slices = build_ct_slices(hu, phantom.spacing_mm, key="large")
    result = contour_body(load_series(slices))
    for name in (EXTERNAL, LUNGS, BONES):
        assert_volume(result, name, phantom.volumes_cc[name])
    structure_set = read_structure_set(reread(build_autocontour_rtstruct(result, slices)))
    for name in (EXTERNAL, LUNGS, BONES):
        assert structure_set.roi(name).compute_volume_cc() == pytest.approx(result.structure(name).volume_cc,
                                                                            rel=VOLUME_TOLERANCE)
    seg = build_autocontour_seg(result, slices)
    assert len(seg.SegmentSequence) == 3
