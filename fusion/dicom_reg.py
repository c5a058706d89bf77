"""Registrations as DICOM: Spatial Registration (rigid) and Deformable Spatial Registration objects.

Both objects live in the FIXED image's study and frame of reference (the *registered* RCS) and
reference both series (Common Instance Reference module), so an archive links them to both.

* Rigid (Spatial Registration Storage): RegistrationSequence item 1 = fixed frame, identity matrix;
  item 2 = moving frame, FrameOfReferenceTransformationMatrix = the moving → fixed matrix, i.e. the
  inverse of :attr:`Registration.transform` (DICOM matrices map the source RCS to the registered RCS).
* Deformable (Deformable Spatial Registration Storage): DeformableRegistrationSequence item for the
  moving frame with identity pre/post-deformation matrices and a DeformableRegistrationGridSequence on
  the fixed grid whose VectorGridData holds, per fixed voxel centre (x fastest, then y, then z),
  the float32 vector (dx, dy, dz) in mm to the corresponding moving point (``T(x) − x``, the ITK and
  plastimatch convention); a second item for the fixed frame carries only an identity matrix.
* QA: the JSON of :meth:`fusion.qa.RegistrationQA.to_dict` plus the registration time, in the private
  block :data:`PRIVATE_CREATOR` of group :data:`PRIVATE_GROUP`, element 0x01 (UT), and a one-line
  summary in ContentDescription.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from fusion.errors import RegistrationError
from fusion.qa import RegistrationQA
from fusion.registration import (
    Registration,
    RegistrationKind,
    build_field_transform,
    build_rigid_transform,
    compute_affine_matrix,
)
from fusion.volume import SeriesInfo, read_series_info
from rt.derived import PATIENT_STUDY_KEYWORDS

SPATIAL_REGISTRATION = UID("1.2.840.10008.5.1.4.1.1.66.1")
DEFORMABLE_SPATIAL_REGISTRATION = UID("1.2.840.10008.5.1.4.1.1.66.3")
PRIVATE_GROUP = 0x0075
PRIVATE_CREATOR = "ONCOPACS FUSION QA"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root (as oncopacs.uids)


def build_registration_dataset(registration: Registration, fixed: sitk.Image, moving: sitk.Image, *,
                               qa: RegistrationQA | None = None, series_number: int = 900,
                               description: str = "OncoPACS registration") -> Dataset:
    """The (Deformable) Spatial Registration dataset of ``registration`` (``qa`` or ``registration.qa`` stored)."""
    fixed_info, moving_info = read_series_info(fixed), read_series_info(moving)
    for role, info in (("fixed", fixed_info), ("moving", moving_info)):
        if not info.series_instance_uid or not info.frame_of_reference_uid:
            raise RegistrationError(f"the {role} image has no series/frame of reference UIDs "
                                    "(load it with load_series)")
    deformable = registration.kind is RegistrationKind.DEFORMABLE
    sop_class = DEFORMABLE_SPATIAL_REGISTRATION if deformable else SPATIAL_REGISTRATION
    fingerprint = _fingerprint(registration)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(UID_PREFIX, [fingerprint, "instance"])
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    for keyword in PATIENT_STUDY_KEYWORDS[1:]:  # from the fixed image's metadata; the REG is UTF-8 (set above)
        value = fixed.GetMetaData(keyword) if fixed.HasMetaDataKey(keyword) else ""
        setattr(ds, keyword, value)
    now = datetime.now()
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.Modality = "REG"
    ds.SeriesInstanceUID = generate_uid(UID_PREFIX, [fingerprint, "series"])
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = 1
    ds.Manufacturer = "OncoPACS"
    ds.FrameOfReferenceUID = fixed_info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentLabel = "REGISTRATION"
    ds.ContentCreatorName = ""
    qa = qa or registration.qa
    ds.ContentDescription = _summary(registration, qa)
    ds.ReferencedSeriesSequence, ds.StudiesContainingOtherReferencedInstancesSequence = _instance_references(
        fixed_info, moving_info, ds.StudyInstanceUID)
    if not ds.StudiesContainingOtherReferencedInstancesSequence:
        del ds.StudiesContainingOtherReferencedInstancesSequence
    if deformable:
        ds.DeformableRegistrationSequence = Sequence([
            _deformable_item(moving_info, registration),
            _deformable_item(fixed_info, None),
        ])
    else:
        moving_to_fixed = np.linalg.inv(compute_affine_matrix(registration.transform))
        ds.RegistrationSequence = Sequence([_rigid_item(fixed_info, np.eye(4)),
                                            _rigid_item(moving_info, moving_to_fixed)])
    document = {"qa": qa.to_dict() if qa is not None else None, "registration_seconds": round(registration.seconds, 3),
                "metric_value": registration.metric_value, "kind": registration.kind.value}
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "UT", json.dumps(document))
    return ds


def read_registration(ds: Dataset) -> Registration:
    """The :class:`Registration` of a Spatial or Deformable Spatial Registration dataset (QA when stored)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    registered_frame = str(ds.get("FrameOfReferenceUID", ""))
    series_of = _series_by_instance(ds)
    extra = _read_private(ds)
    qa = RegistrationQA.from_dict(extra["qa"]) if extra.get("qa") else None
    seconds = float(extra.get("registration_seconds") or 0.0)
    metric = extra.get("metric_value")
    if sop_class == SPATIAL_REGISTRATION:
        items = list(ds.get("RegistrationSequence") or [])
        fixed_item = next((i for i in items if str(i.get("FrameOfReferenceUID", "")) == registered_frame), None)
        moving_item = next((i for i in items if i is not fixed_item), None)
        if fixed_item is None or moving_item is None:
            raise RegistrationError("RegistrationSequence needs an item for the registered and for the source frame")
        fixed_to_registered, moving_to_registered = _read_matrix(fixed_item), _read_matrix(moving_item)
        transform = build_rigid_transform(np.linalg.inv(moving_to_registered) @ fixed_to_registered)
        return Registration(transform, RegistrationKind.RIGID, _info(fixed_item, "FrameOfReferenceUID", series_of),
                            _info(moving_item, "FrameOfReferenceUID", series_of), seconds, None, metric, qa)
    if sop_class == DEFORMABLE_SPATIAL_REGISTRATION:
        items = list(ds.get("DeformableRegistrationSequence") or [])
        moving_item = next((i for i in items if "DeformableRegistrationGridSequence" in i), None)
        if moving_item is None:
            raise RegistrationError("no DeformableRegistrationGridSequence in the deformable registration")
        for keyword in ("PreDeformationMatrixRegistrationSequence", "PostDeformationMatrixRegistrationSequence"):
            if keyword in moving_item and not np.allclose(_read_matrix(moving_item[keyword][0], direct=True), np.eye(4),
                                                          atol=1e-6):
                raise RegistrationError(f"a non-identity {keyword} is not supported")
        field_image = _read_grid(moving_item.DeformableRegistrationGridSequence[0])
        fixed_item = next((i for i in items if i is not moving_item), None)
        fixed = (_info(fixed_item, "SourceFrameOfReferenceUID", series_of) if fixed_item is not None
                 else SeriesInfo("", registered_frame, "", "", "", ()))
        return Registration(build_field_transform(field_image), RegistrationKind.DEFORMABLE, fixed,
                            _info(moving_item, "SourceFrameOfReferenceUID", series_of),
                            seconds, field_image, metric, qa)
    raise RegistrationError(f"SOP class {sop_class or '(none)'} is not a spatial registration")


def _fingerprint(registration: Registration) -> str:
    digest = hashlib.sha256()
    digest.update(registration.fixed.series_instance_uid.encode())
    digest.update(registration.moving.series_instance_uid.encode())
    if registration.displacement_field is not None:
        digest.update(sitk.GetArrayViewFromImage(registration.displacement_field).tobytes())
    else:
        digest.update(np.asarray(registration.transform.GetParameters()).tobytes())
    return digest.hexdigest()


def _summary(registration: Registration, qa: RegistrationQA | None) -> str:
    if qa is None:
        return f"{registration.kind.value} registration, no QA"
    verdict = "QA pass" if qa.passed else "QA FLAGGED"
    return f"{registration.kind.value}: {verdict}, folding {qa.folding_percent:.3f}%"[:64]


def _instance_references(fixed: SeriesInfo, moving: SeriesInfo, study_uid: str) -> tuple[Sequence, Sequence]:
    same_study = Sequence()
    other_studies: dict[str, Sequence] = {}
    for info in (fixed, moving):
        series = Dataset()
        series.SeriesInstanceUID = info.series_instance_uid
        series.ReferencedInstanceSequence = Sequence([_image_reference(info, uid) for uid in info.sop_instance_uids])
        if info.study_instance_uid in ("", study_uid):
            same_study.append(series)
        else:
            other_studies.setdefault(info.study_instance_uid, Sequence()).append(series)
    studies = Sequence()
    for uid, series_items in other_studies.items():
        study = Dataset()
        study.StudyInstanceUID = uid
        study.ReferencedSeriesSequence = series_items
        studies.append(study)
    return same_study, studies


def _image_reference(info: SeriesInfo, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = info.sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _matrix_item(matrix: npt.NDArray[np.floating[Any]]) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceTransformationMatrixType = "RIGID"
    item.FrameOfReferenceTransformationMatrix = [_ds(v) for v in np.asarray(matrix, dtype=float).ravel()]
    return item


def _rigid_item(info: SeriesInfo, matrix: npt.NDArray[np.floating[Any]]) -> Dataset:
    item = Dataset()
    item.FrameOfReferenceUID = info.frame_of_reference_uid
    item.ReferencedImageSequence = Sequence([_image_reference(info, uid) for uid in info.sop_instance_uids])
    registration = Dataset()
    registration.MatrixSequence = Sequence([_matrix_item(matrix)])
    item.MatrixRegistrationSequence = Sequence([registration])
    return item


def _deformable_item(info: SeriesInfo, registration: Registration | None) -> Dataset:
    item = Dataset()
    item.SourceFrameOfReferenceUID = info.frame_of_reference_uid
    item.ReferencedImageSequence = Sequence([_image_reference(info, uid) for uid in info.sop_instance_uids])
    item.PreDeformationMatrixRegistrationSequence = Sequence([_matrix_item(np.eye(4))])
    if registration is None:
        return item
    item.PostDeformationMatrixRegistrationSequence = Sequence([_matrix_item(np.eye(4))])
    field_image = registration.displacement_field
    if field_image is None:
        raise RegistrationError("a deformable registration without a displacement field")
    direction = np.array(field_image.GetDirection()).reshape(3, 3)
    if not np.allclose(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2], atol=1e-4):
        raise RegistrationError("the fixed grid's third axis is not the row x column direction")
    grid = Dataset()
    grid.ImagePositionPatient = [_ds(v) for v in field_image.GetOrigin()]
    grid.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    grid.GridDimensions = list(field_image.GetSize())
    grid.GridResolution = [float(v) for v in field_image.GetSpacing()]
    grid.VectorGridData = sitk.GetArrayViewFromImage(field_image).astype("<f4").tobytes()
    item.DeformableRegistrationGridSequence = Sequence([grid])
    return item


def _ds(value: float) -> str:
    value = float(value)
    return "0" if abs(value) < 1e-12 else format_number_as_ds(value)


def _read_matrix(item: Dataset, direct: bool = False) -> npt.NDArray[np.float64]:
    try:
        matrix_item = item if direct else item.MatrixRegistrationSequence[0].MatrixSequence[0]
        values = [float(v) for v in matrix_item.FrameOfReferenceTransformationMatrix]
    except (AttributeError, IndexError, TypeError, ValueError):
        raise RegistrationError("a registration item without a readable FrameOfReferenceTransformationMatrix") from None
    if len(values) != 16:
        raise RegistrationError("FrameOfReferenceTransformationMatrix needs 16 values")
    return np.array(values).reshape(4, 4)


def _read_grid(grid: Dataset) -> sitk.Image:
    try:
        size = [int(v) for v in grid.GridDimensions]
        spacing = [float(v) for v in grid.GridResolution]
        origin = [float(v) for v in grid.ImagePositionPatient]
        cosines = np.array([float(v) for v in grid.ImageOrientationPatient])
        vectors = np.frombuffer(grid.VectorGridData, dtype="<f4")
    except (AttributeError, TypeError, ValueError):
        raise RegistrationError("an incomplete DeformableRegistrationGridSequence item") from None
    if vectors.size != 3 * int(np.prod(size)):
        raise RegistrationError(f"VectorGridData holds {vectors.size} values, "
                                f"GridDimensions {size} need {3 * np.prod(size)}")
    row, col = cosines[:3], cosines[3:]
    field_image = sitk.GetImageFromArray(vectors.reshape(size[2], size[1], size[0], 3).astype(np.float64),
                                         isVector=True)
    field_image.SetOrigin(origin)
    field_image.SetSpacing(spacing)
    field_image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, np.cross(row, col)]).ravel()))
    return field_image


def _series_by_instance(ds: Dataset) -> dict[str, tuple[str, str, str]]:
    """SOPInstanceUID → (series UID, study UID, SOP class UID) from the Common Instance Reference module."""
    found: dict[str, tuple[str, str, str]] = {}
    studies = [(str(ds.get("StudyInstanceUID", "")), ds.get("ReferencedSeriesSequence") or [])]
    studies += [(str(s.get("StudyInstanceUID", "")), s.get("ReferencedSeriesSequence") or [])
                for s in ds.get("StudiesContainingOtherReferencedInstancesSequence") or []]
    for study_uid, series_items in studies:
        for series in series_items:
            for ref in series.get("ReferencedInstanceSequence") or []:
                found[str(ref.ReferencedSOPInstanceUID)] = (str(series.SeriesInstanceUID), study_uid,
                                                            str(ref.get("ReferencedSOPClassUID", "")))
    return found


def _info(item: Dataset, frame_keyword: str, series_of: dict[str, tuple[str, str, str]]) -> SeriesInfo:
    instances = tuple(str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedImageSequence") or [])
    series_uid, study_uid, sop_class = series_of.get(instances[0], ("", "", "")) if instances else ("", "", "")
    return SeriesInfo(series_uid, str(item.get(frame_keyword, "")), study_uid, "", sop_class, instances)


def _read_private(ds: Dataset) -> dict[str, Any]:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        value = block[0x01].value
    except KeyError:
        return {}
    try:
        document = json.loads(value.decode() if isinstance(value, bytes) else str(value))
    except ValueError:
        raise RegistrationError(f"the {PRIVATE_CREATOR} block does not hold JSON") from None
    return document if isinstance(document, dict) else {}

