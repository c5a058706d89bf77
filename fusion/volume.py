"""3D volumes from DICOM image series, as SimpleITK images in LPS patient space, and resampling.

A volume is a ``float32`` :class:`SimpleITK.Image` whose origin, spacing (mm) and direction cosines
place every voxel centre in the DICOM patient coordinate system (LPS, mm), which is also ITK's
physical space. Pixel values are rescaled (RescaleSlope/Intercept): HU for CT, stored units otherwise.
The series identity travels as image metadata (keys are DICOM keywords, see :data:`META_KEYWORDS`)
and is read back with :func:`read_series_info`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, overload

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from fusion.errors import VolumeError
from rt.derived import PATIENT_STUDY_KEYWORDS

log = logging.getLogger(__name__)

#: Series attributes kept as image metadata (copied from the first slice).
META_KEYWORDS = ("SeriesInstanceUID", "FrameOfReferenceUID", "Modality", "SOPClassUID",
                 *PATIENT_STUDY_KEYWORDS[1:])  # the character set stays with the slices
#: Metadata key of the backslash-joined SOPInstanceUIDs of the slices, in volume order.
INSTANCES_KEY = "SOPInstanceUIDs"

ORIENTATION_TOLERANCE = 1e-4  # direction cosine difference
POSITION_TOLERANCE_MM = 0.01  # in-plane position difference between slices
SPACING_TOLERANCE = 0.01  # relative slice-gap deviation from the median

_Values = TypeVar("_Values", bound=tuple[float, ...])


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Identity of the series a volume came from (empty strings where the slices had none)."""

    series_instance_uid: str
    frame_of_reference_uid: str
    study_instance_uid: str
    modality: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]


def load_series(datasets_or_paths: str | Path | Iterable[Dataset | str | Path], *,
                series_instance_uid: str | None = None) -> sitk.Image:
    """The 3D volume (float32, LPS) of one image series.

    ``datasets_or_paths``: a folder (every DICOM file in it, recursively), or datasets and/or file paths.
    When the input holds several image series, ``series_instance_uid`` picks one (else VolumeError).
    Slices are sorted by their position along the slice normal (any orientation); missing, duplicated
    or unevenly spaced slices, mixed orientations and gantry tilt raise :class:`VolumeError` naming them.
    """
    slices = _image_slices(_read_all(datasets_or_paths), series_instance_uid)
    row, col, normal = _orientation(slices)
    pixel_spacing = _common(slices, "PixelSpacing", lambda ds: tuple(float(v) for v in ds.PixelSpacing))
    _common(slices, "Rows/Columns", lambda ds: (int(ds.Rows), int(ds.Columns)))
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    slices = [slices[i] for i in order]
    positions, distances = positions[order], distances[order]
    slice_spacing = _slice_spacing(slices, positions, distances, row, col)
    voxels = np.stack([_rescaled(ds) for ds in slices]).astype(np.float32, copy=False)
    image = sitk.GetImageFromArray(voxels)
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], slice_spacing))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    first = slices[0]
    for keyword in META_KEYWORDS:
        image.SetMetaData(keyword, str(first.get(keyword, "") or ""))
    image.SetMetaData(INSTANCES_KEY, "\\".join(str(ds.SOPInstanceUID) for ds in slices))
    log.debug("volume %s: %s voxels, spacing %s mm", first.get("SeriesInstanceUID"), image.GetSize(),
              image.GetSpacing())
    return image


def read_series_info(image: sitk.Image) -> SeriesInfo:
    """The series identity stored on a volume by :func:`load_series` (empty strings when absent)."""

    def meta(key: str) -> str:
        return image.GetMetaData(key) if image.HasMetaDataKey(key) else ""

    instances = meta(INSTANCES_KEY)
    return SeriesInfo(meta("SeriesInstanceUID"), meta("FrameOfReferenceUID"), meta("StudyInstanceUID"),
                      meta("Modality"), meta("SOPClassUID"), tuple(instances.split("\\")) if instances else ())


def resample_to(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None,
                default: float = 0.0, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """``image`` resampled onto the grid of ``reference``.

    ``transform`` maps reference (fixed) physical points to ``image`` (moving) physical points, as
    SimpleITK's registrations return it (identity when None). ``default`` fills points outside
    ``image`` (e.g. -1000 for CT in HU, 0 for dose). Use ``sitk.sitkNearestNeighbor`` for label maps.
    The pixel type of ``image`` is kept; the metadata of ``reference`` is copied.
    """
    resampled = sitk.Resample(image, reference, transform or sitk.Transform(3, sitk.sitkIdentity), interpolator,
                              float(default), image.GetPixelID())
    for key in reference.GetMetaDataKeys():
        resampled.SetMetaData(key, reference.GetMetaData(key))
    return resampled


def _read_all(source: str | Path | Iterable[Dataset | str | Path]) -> list[Dataset]:
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise VolumeError(f"{folder}: not a folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        datasets = [ds for ds in (_read_file(p, strict=False) for p in files) if ds is not None]
        if not datasets:
            raise VolumeError(f"{folder}: no DICOM files")
        return datasets
    items = list(source)
    if not items:
        raise VolumeError("no datasets given")
    return [item if isinstance(item, Dataset) else _read_file(Path(item), strict=True) for item in items]


@overload
def _read_file(path: Path, *, strict: Literal[True]) -> Dataset: ...


@overload
def _read_file(path: Path, *, strict: bool) -> Dataset | None: ...


def _read_file(path: Path, *, strict: bool) -> Dataset | None:
    try:
        return dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        if strict:
            raise VolumeError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
        return None


def _image_slices(datasets: Sequence[Dataset], series_instance_uid: str | None) -> list[Dataset]:
    images = [ds for ds in datasets if "PixelData" in ds and "ImagePositionPatient" in ds
              and "ImageOrientationPatient" in ds]
    if not images:
        raise VolumeError("no image slices with ImagePositionPatient/ImageOrientationPatient and pixel data")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in images})
    if series_instance_uid is not None:
        images = [ds for ds in images if str(ds.get("SeriesInstanceUID", "")) == series_instance_uid]
        if not images:
            raise VolumeError(f"no image slices of series {series_instance_uid}; have {', '.join(series)}")
    elif len(series) > 1:
        raise VolumeError(f"{len(series)} image series given ({', '.join(series)}); choose one")
    try:
        multi = [ds for ds in images if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    except (TypeError, ValueError):
        raise VolumeError("NumberOfFrames is not an integer in a slice") from None
    if multi:
        raise VolumeError(f"multi-frame image {multi[0].SOPInstanceUID} is not supported (single-frame slices only)")
    uids = [str(ds.get("SOPInstanceUID", "")) for ds in images]
    if len(set(uids)) != len(uids):
        raise VolumeError("the same SOPInstanceUID occurs twice in the series")
    return images


def _orientation(
    slices: Sequence[Dataset],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    cosines = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in slices])
    if cosines.shape[1] != 6:
        raise VolumeError("ImageOrientationPatient must have 6 values")
    spread = np.abs(cosines - cosines[0]).max()
    if spread > ORIENTATION_TOLERANCE:
        odd = next(ds for ds, c in zip(slices, cosines, strict=True)
                   if np.abs(c - cosines[0]).max() > ORIENTATION_TOLERANCE)
        raise VolumeError(f"slice {odd.SOPInstanceUID} has another orientation than the first slice")
    row, col = cosines[0, :3], cosines[0, 3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise VolumeError(f"ImageOrientationPatient {list(cosines[0])} is not two orthonormal directions")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


def _common(slices: Sequence[Dataset], what: str, read: Callable[[Dataset], _Values]) -> _Values:
    try:
        values = [read(ds) for ds in slices]
    except (AttributeError, TypeError, ValueError):
        raise VolumeError(f"{what} missing or invalid in a slice") from None
    for ds, value in zip(slices, values, strict=True):
        if not np.allclose(value, values[0], rtol=1e-5, atol=1e-6):
            raise VolumeError(f"slice {ds.SOPInstanceUID} has {what} {value}, the first slice {values[0]}")
    return values[0]


def _slice_spacing(slices: Sequence[Dataset], positions: npt.NDArray[np.float64], distances: npt.NDArray[np.float64],
                   row: npt.NDArray[np.float64], col: npt.NDArray[np.float64]) -> float:
    in_plane = positions[:, None, :] @ np.column_stack([row, col])
    shift = np.abs(in_plane[:, 0, :] - in_plane[0, 0, :]).max(axis=1)
    if shift.max() > POSITION_TOLERANCE_MM:
        k = int(np.argmax(shift))
        raise VolumeError(f"slice {slices[k].SOPInstanceUID} is shifted {shift[k]:.3f} mm in-plane "
                          "(gantry tilt or mixed stacks are not supported)")
    if len(slices) == 1:
        thickness = float(slices[0].get("SpacingBetweenSlices") or slices[0].get("SliceThickness") or 0)
        if thickness <= 0:
            raise VolumeError("a single slice without SliceThickness has no slice spacing")
        return thickness
    gaps = np.diff(distances)
    duplicated = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
    if duplicated.size:
        k = int(duplicated[0])
        raise VolumeError(f"slices {slices[k].SOPInstanceUID} and {slices[k + 1].SOPInstanceUID} share the "
                          f"position {distances[k]:.3f} mm along the slice normal")
    spacing = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing)
    if uneven.size:
        problems = []
        for k in uneven[:5]:
            missing = round(gaps[k] / spacing) - 1
            where = f"between {distances[k]:.2f} and {distances[k + 1]:.2f} mm"
            if missing >= 1 and abs(gaps[k] - (missing + 1) * spacing) <= SPACING_TOLERANCE * spacing:
                problems.append(f"{missing} missing slice(s) {where}")
            else:
                problems.append(f"gap of {gaps[k]:.3f} mm {where}")
        more = f" and {uneven.size - 5} more" if uneven.size > 5 else ""
        raise VolumeError(f"uneven slice spacing (median {spacing:.3f} mm): {'; '.join(problems)}{more}")
    return spacing


def _rescaled(ds: Dataset) -> npt.NDArray[np.float32]:
    try:
        pixels = ds.pixel_array
    except (AttributeError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise VolumeError(f"pixel data of {ds.get('SOPInstanceUID')} cannot be decoded "
                          f"({type(exc).__name__})") from None
    if pixels.ndim != 2:
        raise VolumeError(f"slice {ds.get('SOPInstanceUID')} is not a single-frame greyscale image")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
