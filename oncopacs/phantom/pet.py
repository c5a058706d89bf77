"""PET image series (PositronEmissionTomographyImageStorage, Modality PT) of the phantom.

Units BQML, decay corrected to series START. Stored values are int16 with a per-slice
RescaleSlope (Bq/mL per count, RescaleIntercept 0) chosen so the slice maximum maps to
32000 counts; activity (Bq/mL) = stored * RescaleSlope, to within RescaleSlope / 2.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PositronEmissionTomographyImageStorage

from oncopacs.phantom.activity import F18_POSITRON_FRACTION, PetPhantom
from oncopacs.phantom.common import apply_image_plane, apply_pixel_data, build_base_dataset, format_ds
from oncopacs.phantom.geometry import ImageGrid
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for

MAX_COUNTS = 32000
FRAME_DURATION_MS = 180000


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_radiopharmaceutical_information(pet: PetPhantom) -> Dataset:
    """RadiopharmaceuticalInformationSequence item for the FDG administration of ``pet``."""
    item = Dataset()
    item.RadionuclideCodeSequence = DicomSequence([_code("77004003", "SCT", "^18^Fluorine")])
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    item.RadiopharmaceuticalStartTime = pet.injection_time
    item.RadiopharmaceuticalStartDateTime = pet.scan_date + pet.injection_time
    item.RadionuclideTotalDose = format_ds(pet.injected_dose_bq)
    item.RadionuclideHalfLife = format_ds(pet.half_life_s)
    item.RadionuclidePositronFraction = format_ds(F18_POSITRON_FRACTION)
    item.RadiopharmaceuticalCodeSequence = DicomSequence([_code("35321007", "SCT", "Fluorodeoxyglucose F^18^")])
    return item


def compute_rescale_slope(max_bqml: float) -> str:
    """RescaleSlope (DS, Bq/mL per count) mapping ``max_bqml`` to MAX_COUNTS; "1" for empty slices."""
    return format_ds(max_bqml / MAX_COUNTS) if max_bqml > 0 else "1"


def build_pet_series(
    patient: PatientSpec, study: StudySpec, series: SeriesSpec, grid: ImageGrid, pet: PetPhantom
) -> list[Dataset]:
    """All axial PET slices of ``pet`` sampled at the voxel centres of ``grid`` (Bq/mL)."""
    xx, yy = grid.compute_slice_xy_mm()
    slices = []
    for k, z in enumerate(grid.z_mm()):
        activity = pet.compute_activity_bqml(xx, yy, float(z))
        slope = compute_rescale_slope(float(activity.max()))
        stored = np.rint(activity / float(slope)).astype("<i2")
        sop_uid = uid_for(series.series_instance_uid, "pt", str(k))
        ds = build_base_dataset(PositronEmissionTomographyImageStorage, sop_uid, patient, study, series, k + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PatientPosition = "HFS"
        ds.ContentDate = series.series_date
        ds.ContentTime = series.series_time
        ds.AcquisitionDate = pet.scan_date
        ds.AcquisitionTime = pet.series_time
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN"]
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "CT-based"
        ds.ScatterCorrectionMethod = "Model-based"
        ds.DecayCorrection = "START"
        ds.ReconstructionMethod = "OSEM 3i21s"
        ds.CollimatorType = "NONE"
        ds.NumberOfSlices = grid.nz
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([build_radiopharmaceutical_information(pet)])
        ds.ImageIndex = k + 1
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = FRAME_DURATION_MS
        ds.DecayFactor = "1"
        apply_image_plane(ds, grid, k)
        apply_pixel_data(ds, stored.tobytes(), grid.ny, grid.nx, signed=True)
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = slope
        slices.append(ds)
    return slices
