"""CT image series of the phantom (CTImageStorage, one dataset per axial slice).

Stored values are uint16 with RescaleSlope 1 and RescaleIntercept -1024, so
HU = stored - 1024. Each voxel takes the CT number of the anatomy at its centre.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from oncopacs.phantom.anatomy import PhantomAnatomy
from oncopacs.phantom.common import apply_image_plane, apply_pixel_data, build_base_dataset, format_ds
from oncopacs.phantom.geometry import ImageGrid
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for

CT_RESCALE_INTERCEPT = -1024
CT_KVP = 120


def compute_ct_sop_instance_uid(series: SeriesSpec, k: int) -> str:
    """SOPInstanceUID of slice ``k`` (0-based) of a phantom CT series."""
    return uid_for(series.series_instance_uid, "ct", str(k))


def build_ct_slice(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    grid: ImageGrid,
    k: int,
    pixels: bytes,
    *,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """One CT slice ``k`` of ``grid`` with the given little-endian uint16 pixel bytes (HU + 1024)."""
    sop_uid = sop_instance_uid or compute_ct_sop_instance_uid(series, k)
    ds = build_base_dataset(CTImageStorage, sop_uid, patient, study, series, instance_number=k + 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.ContentDate = series.series_date
    ds.ContentTime = series.series_time
    ds.AcquisitionDate = series.series_date
    ds.AcquisitionTime = series.series_time
    ds.AcquisitionNumber = 1
    ds.KVP = format_ds(CT_KVP)
    ds.XRayTubeCurrent = 300
    ds.ExposureTime = 1000
    ds.ConvolutionKernel = "STANDARD"
    ds.ReconstructionDiameter = format_ds(grid.nx * grid.spacing_mm[0])
    ds.BodyPartExamined = "PELVIS"
    apply_image_plane(ds, grid, k)
    apply_pixel_data(ds, pixels, grid.ny, grid.nx, signed=False)
    ds.RescaleIntercept = format_ds(CT_RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def build_ct_series(
    patient: PatientSpec, study: StudySpec, series: SeriesSpec, grid: ImageGrid, anatomy: PhantomAnatomy
) -> list[Dataset]:
    """All axial slices of ``anatomy`` sampled at the voxel centres of ``grid`` (inferior first)."""
    xx, yy = grid.compute_slice_xy_mm()
    slices = []
    for k, z in enumerate(grid.z_mm()):
        hu = anatomy.compute_hu(xx, yy, float(z))
        stored = (hu - CT_RESCALE_INTERCEPT).round().astype("<u2")
        slices.append(build_ct_slice(patient, study, series, grid, k, stored.tobytes()))
    return slices
