"""Registrations as DICOM objects: round trips, references, QA block, and linking on ingest."""

from __future__ import annotations

import dataclasses
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread

from fusion.dicom_reg import (
    DEFORMABLE_SPATIAL_REGISTRATION,
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    SPATIAL_REGISTRATION,
    build_registration_dataset,
    read_registration,
)
from fusion.errors import RegistrationError
from fusion.qa import compute_registration_qa
from fusion.registration import RegistrationKind
from oncopacs.index.models import Instance, Level, ObjectReference, Relation


def round_trip(dataset):
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def rigid_dataset(rigid_result, rigid_images):
    qa = compute_registration_qa(rigid_result, rigid_images[0])
    return build_registration_dataset(rigid_result, *rigid_images, qa=qa), qa


@pytest.fixture(scope="module")
def deformable_dataset(deformable_result, deformed_images):
    result, _ = deformable_result
    qa = compute_registration_qa(result, deformed_images[0])
    return build_registration_dataset(dataclasses.replace(result, qa=qa), *deformed_images), qa


def test_rigid_spatial_registration_round_trip(rigid_dataset, rigid_result):
    dataset, qa = rigid_dataset
    assert dataset.SOPClassUID == SPATIAL_REGISTRATION and dataset.Modality == "REG"
    assert dataset.FrameOfReferenceUID == rigid_result.fixed.frame_of_reference_uid
    back = read_registration(round_trip(dataset))
    assert back.kind is RegistrationKind.RIGID
    assert back.fixed.series_instance_uid == rigid_result.fixed.series_instance_uid
    assert back.moving.series_instance_uid == rigid_result.moving.series_instance_uid
    assert back.moving.frame_of_reference_uid == rigid_result.moving.frame_of_reference_uid
    points = np.array([[0.0, 0.0, 0.0], [50.0, -40.0, 30.0], [-80.0, 60.0, -20.0]])
    assert np.allclose(back.map_points_mm(points), rigid_result.map_points_mm(points), atol=1e-4)
    assert back.qa.to_dict() == qa.to_dict() and back.seconds == pytest.approx(rigid_result.seconds, abs=1e-3)


def test_moving_item_holds_the_moving_to_fixed_matrix(rigid_dataset, rigid_result):
    dataset, _ = rigid_dataset
    fixed_item, moving_item = dataset.RegistrationSequence
    identity = np.array(fixed_item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix,
                        dtype=float)
    assert np.allclose(identity, np.eye(4).ravel())
    matrix = np.array(moving_item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix,
                      dtype=float).reshape(4, 4)
    moving_point = rigid_result.map_points_mm(np.array([[10.0, 20.0, 30.0]]))[0]
    assert np.allclose((matrix @ np.append(moving_point, 1.0))[:3], [10.0, 20.0, 30.0], atol=1e-4)


def test_deformable_registration_round_trip(deformable_dataset, deformable_result):
    dataset, qa = deformable_dataset
    result, _ = deformable_result
    assert dataset.SOPClassUID == DEFORMABLE_SPATIAL_REGISTRATION
    grid = dataset.DeformableRegistrationSequence[0].DeformableRegistrationGridSequence[0]
    assert list(grid.GridDimensions) == list(result.displacement_field.GetSize())
    back = read_registration(round_trip(dataset))
    assert back.kind is RegistrationKind.DEFORMABLE and back.qa.to_dict() == qa.to_dict()
    assert back.moving.series_instance_uid == result.moving.series_instance_uid
    assert back.fixed.series_instance_uid == result.fixed.series_instance_uid
    assert back.displacement_field.GetOrigin() == pytest.approx(result.displacement_field.GetOrigin())
    points = np.array([[0.0, 0.0, 0.0], [30.0, -20.0, 15.0], [-50.0, 30.0, -40.0]])
    assert np.allclose(back.map_points_mm(points), result.map_points_mm(points), atol=1e-4)


def test_qa_is_in_the_private_block_and_summarised(deformable_dataset):
    dataset, _ = deformable_dataset
    block = dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert '"folding_percent"' in block[0x01].value
    assert dataset.ContentDescription.startswith("deformable: QA pass")


def test_non_registration_objects_are_refused(rigid_images):
    from oncopacs.phantom.fusion import build_fusion_ct_series
    from oncopacs.phantom.geometry import ImageGrid

    ct = build_fusion_ct_series(np.zeros((1, 2, 2), np.float32), ImageGrid((0, 0, 0), (1, 1, 1), (1, 2, 2)), "x")[0]
    with pytest.raises(RegistrationError, match="not a spatial registration"):
        read_registration(ct)


@pytest.mark.parametrize("which", ["rigid", "deformable"])
def test_ingested_registration_links_both_series_and_frames(which, archive, rigid_dataset, deformable_dataset):
    dataset, _ = rigid_dataset if which == "rigid" else deformable_dataset
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    result = archive.ingest(buffer.getvalue(), source="test")
    assert result.acknowledged, result
    with archive.index.reading() as session:
        instance = session.query(Instance).filter_by(sop_instance_uid=dataset.SOPInstanceUID).one()
        references = {(r.relation, r.level, r.referenced_uid)
                      for r in session.query(ObjectReference).filter_by(instance_pk=instance.id)}
    series = {ref.SeriesInstanceUID for ref in dataset.ReferencedSeriesSequence}
    series |= {ref.SeriesInstanceUID for study in dataset.get("StudiesContainingOtherReferencedInstancesSequence", [])
               for ref in study.ReferencedSeriesSequence}
    assert len(series) == 2
    for uid in series:
        assert (Relation.REGISTERED_SERIES, Level.SERIES, uid) in references
    frames = {r[2] for r in references if r[0] is Relation.FRAME_OF_REFERENCE}
    assert len(frames) == 2
