"""RT Dose (RTDoseStorage): the analytic dose of the phantom plan on its own grid.

Multi-frame, uint32, DoseUnits GY, DoseType PHYSICAL, DoseSummationType PLAN. The dose in Gy
at a voxel is ``stored * DoseGridScaling``; stored = round(D(voxel centre) / DoseGridScaling),
so the decoded value differs from the analytic D by at most DoseGridScaling / 2 (5e-7 Gy).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import RTDoseStorage, RTIonPlanStorage, RTStructureSetStorage

from oncopacs.phantom.common import (
    PIXEL_DATA_TAG,
    build_base_dataset,
    build_reference,
    format_ds,
    format_ds_list,
    format_position,
)
from oncopacs.phantom.dose_model import RadialDoseModel
from oncopacs.phantom.geometry import ImageGrid
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for

#: Gy per stored unit.
DOSE_GRID_SCALING = "0.000001"
GRID_FRAME_OFFSET_VECTOR = Tag(0x3004, 0x000C)


def compute_dose_array_gy(grid: ImageGrid, model: RadialDoseModel) -> np.ndarray:
    """Analytic dose (Gy) at the voxel centres of ``grid``, shape (nz, ny, nx)."""
    return model.compute_dose_gy(*grid.compute_voxel_centres_mm())


def build_rt_dose(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    grid: ImageGrid,
    model: RadialDoseModel,
    plan: Dataset,
    rtstruct: Dataset | None = None,
) -> Dataset:
    """The plan dose of ``model`` sampled on ``grid`` (FrameOfReferenceUID from ``series``)."""
    scaling = float(DOSE_GRID_SCALING)
    stored = np.rint(compute_dose_array_gy(grid, model) / scaling)
    if stored.max() > np.iinfo(np.uint32).max:
        raise ValueError("dose too high for the uint32 grid at this DoseGridScaling")
    sop_uid = uid_for(series.series_instance_uid, "rtdose")
    ds = build_base_dataset(RTDoseStorage, sop_uid, patient, study, series)
    ds.ContentDate = series.series_date
    ds.ContentTime = series.series_time
    dx, dy, dz = grid.spacing_mm
    ds.ImagePositionPatient = format_position(grid.origin_mm)
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = format_ds_list((dy, dx))
    ds.SliceThickness = format_ds(dz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = grid.nz
    ds.FrameIncrementPointer = GRID_FRAME_OFFSET_VECTOR
    ds.Rows = grid.ny
    ds.Columns = grid.nx
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseComment = "Analytic radial dose of the OncoPACS phantom"
    ds.DoseSummationType = "PLAN"
    ds.GridFrameOffsetVector = format_position(grid.z_mm() - grid.origin_mm[2])
    ds.DoseGridScaling = DOSE_GRID_SCALING
    ds.ReferencedRTPlanSequence = DicomSequence([build_reference(RTIonPlanStorage, plan.SOPInstanceUID)])
    if rtstruct is not None:
        ds.ReferencedStructureSetSequence = DicomSequence(
            [build_reference(RTStructureSetStorage, rtstruct.SOPInstanceUID)]
        )
    ds.add_new(PIXEL_DATA_TAG, "OW", stored.astype("<u4").tobytes())
    return ds
