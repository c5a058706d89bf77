"""RT Dose (RTDoseStorage): the analytic dose of the phantom plan on its own grid.

Multi-frame, uint32, DoseUnits GY, DoseType EFFECTIVE, DoseSummationType PLAN: as proton planning
systems write it, the dose is RBE-weighted with a constant RBE of 1.1 (the DoseComment says so), so
readers label it Gy(RBE). The dose in Gy(RBE) at a voxel is ``stored * DoseGridScaling``;
stored = round(D(voxel centre) / DoseGridScaling), so the decoded value differs from the analytic D
by at most DoseGridScaling / 2 (5e-7 Gy).

:func:`build_dose_check` is an independent secondary dose check of the same plan, as a physicist
compares with the planning system's dose: the analytic model recomputed :data:`DOSE_CHECK_SCALE`
times the plan dose (2 % lower everywhere), in a series of its own.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID, RTDoseStorage, RTIonPlanStorage, RTStructureSetStorage

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
#: The phantom plans are proton plans: their doses are RBE-weighted (constant RBE 1.1), as proton TPSs write them.
DOSE_TYPE = "EFFECTIVE"
PLAN_DOSE_COMMENT = "RBE-weighted dose, constant RBE 1.1 (analytic phantom plan)"
#: The independent dose check is this fraction of the plan dose (a 2 % lower secondary-check result).
DOSE_CHECK_SCALE = 0.98
DOSE_CHECK_COMMENT = "Independent dose check: 2 % below the plan dose; RBE 1.1"


def compute_dose_array_gy(grid: ImageGrid, model: RadialDoseModel) -> np.ndarray:
    """Analytic dose (Gy) at the voxel centres of ``grid``, shape (nz, ny, nx)."""
    return model.compute_dose_gy(*grid.compute_voxel_centres_mm())


def make_rt_dose_uid(series: SeriesSpec) -> UID:
    """The SOP Instance UID of the RT Dose of ``series`` (the plan references it before the dose is built)."""
    return uid_for(series.series_instance_uid, "rtdose")


def build_rt_dose(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    grid: ImageGrid,
    model: RadialDoseModel,
    plan: Dataset,
    rtstruct: Dataset | None = None,
    *,
    comment: str = PLAN_DOSE_COMMENT,
) -> Dataset:
    """The plan dose of ``model`` sampled on ``grid`` (FrameOfReferenceUID from ``series``; DoseComment ``comment``)."""
    scaling = float(DOSE_GRID_SCALING)
    stored = np.rint(compute_dose_array_gy(grid, model) / scaling)
    if stored.max() > np.iinfo(np.uint32).max:
        raise ValueError("dose too high for the uint32 grid at this DoseGridScaling")
    sop_uid = make_rt_dose_uid(series)
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
    ds.DoseType = DOSE_TYPE
    ds.DoseComment = comment
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


def build_dose_check(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    grid: ImageGrid,
    model: RadialDoseModel,
    plan: Dataset,
    rtstruct: Dataset | None = None,
) -> Dataset:
    """An independent dose check of ``plan``: ``model`` scaled by :data:`DOSE_CHECK_SCALE`, a PLAN dose of its own."""
    check_model = replace(model, dmax_gy=model.dmax_gy * DOSE_CHECK_SCALE)
    return build_rt_dose(patient, study, series, grid, check_model, plan, rtstruct, comment=DOSE_CHECK_COMMENT)
