"""Analytic PET series for the PET tests: any activity array, any Units x DecayCorrection convention.

``activity_bqml`` is the true activity concentration (Bq/mL) at the scan reference time (series
start), indexed (z, y, x) on an axial grid. The stored pixels encode it the way a scanner would
for the chosen convention, so a correct SUV reader recovers the closed-form SUV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class PetSpec:
    """Acquisition parameters of an analytic PET series (dose Bq, weight kg, height m, times HHMMSS)."""

    units: str = "BQML"
    decay_correction: str = "START"
    weight_kg: float = 80.0
    height_m: float = 1.80
    sex: str = "M"
    injected_dose_bq: float = 370.0e6
    series_date: str = "20240301"
    injection_time: str = "091500"
    series_time: str = "102000"
    #: FrameReferenceTime step per slice, ms (used by DecayCorrection NONE; slice k has k * step).
    frame_step_ms: float = 30000.0
    #: CNTS: use the Philips SUV Scale Factor (7053,1000) rather than the activity factor (7053,1009).
    philips_suv_factor: bool = False
    activity_per_count: float = 2.5  # Bq/mL per rescaled count for CNTS (7053,1009)
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    origin_mm: tuple[float, float, float] = (-40.0, -40.0, -20.0)
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.1"
    patient_id: str = "PET-TEST"

    @property
    def uptake_s(self) -> float:
        def seconds(t: str) -> int:
            return int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:6])
        return float(seconds(self.series_time) - seconds(self.injection_time))


def expected_suvbw(activity_bqml: float, spec: PetSpec) -> float:
    """Closed form: C * W[g] / (D * 2^(-uptake / T1/2))."""
    return activity_bqml * spec.weight_kg * 1000.0 / (spec.injected_dose_bq * 2.0 ** (-spec.uptake_s / HALF_LIFE_S))


def expected_lbm_kg(spec: PetSpec) -> float:
    bmi = spec.weight_kg / spec.height_m**2
    if spec.sex == "M":
        return 9270.0 * spec.weight_kg / (6680.0 + 216.0 * bmi)
    return 9270.0 * spec.weight_kg / (8780.0 + 244.0 * bmi)


def expected_bsa_cm2(spec: PetSpec) -> float:
    return 71.84 * spec.weight_kg**0.425 * (spec.height_m * 100.0) ** 0.725


def _stored_values(activity: np.ndarray, k: int, spec: PetSpec) -> np.ndarray:
    """Pixel values in the series' Units for slice k (before quantisation)."""
    decay_to = {"START": 1.0,
                "ADMIN": 2.0 ** (spec.uptake_s / HALF_LIFE_S),
                "NONE": 2.0 ** (-(k * spec.frame_step_ms / 1000.0) / HALF_LIFE_S)}[spec.decay_correction]
    bqml = activity * decay_to
    if spec.units == "GML":
        return expected_suvbw(1.0, spec) * activity
    if spec.units == "CNTS":
        return bqml / spec.activity_per_count
    return bqml


def build_pet_slices(activity_bqml: np.ndarray, spec: PetSpec = PetSpec()) -> list[Dataset]:
    """One classic PET dataset per z slice of ``activity_bqml`` (Bq/mL at series start)."""
    nz, ny, nx = activity_bqml.shape
    series_uid = generate_uid(entropy_srcs=[spec.patient_id, "series", spec.units, spec.decay_correction])
    study_uid = generate_uid(entropy_srcs=[spec.patient_id, "study", spec.series_date])
    slices = []
    for k in range(nz):
        values = _stored_values(activity_bqml[k], k, spec)
        peak = float(np.abs(values).max())
        slope = peak / 32000.0 if peak > 0 else 1.0
        stored = np.rint(values / slope).astype("<i2")
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPClassUID = PositronEmissionTomographyImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "PT"
        ds.PatientID = spec.patient_id
        ds.PatientName = "Analytic^PET"
        ds.PatientWeight = f"{spec.weight_kg:g}"
        ds.PatientSize = f"{spec.height_m:g}"
        ds.PatientSex = spec.sex
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = spec.frame_of_reference_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = spec.series_date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = spec.series_time
        ds.Units = spec.units
        ds.DecayCorrection = spec.decay_correction
        ds.CorrectedImage = ["ATTN", "SCAT"] + (["DECY"] if spec.decay_correction != "NONE" else [])
        ds.FrameReferenceTime = f"{k * spec.frame_step_ms:g}"
        item = Dataset()
        item.RadiopharmaceuticalStartTime = spec.injection_time
        item.RadiopharmaceuticalStartDateTime = spec.series_date + spec.injection_time
        item.RadionuclideTotalDose = f"{spec.injected_dose_bq:g}"
        item.RadionuclideHalfLife = f"{HALF_LIFE_S:g}"
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([item])
        if spec.units == "CNTS":
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            if spec.philips_suv_factor:
                suv_per_bqml = expected_suvbw(1.0, spec) / (
                    2.0 ** (spec.uptake_s / HALF_LIFE_S) if spec.decay_correction == "ADMIN" else
                    2.0 ** (-(k * spec.frame_step_ms / 1000.0) / HALF_LIFE_S) if spec.decay_correction == "NONE"
                    else 1.0)
                block.add_new(0x00, "DS", f"{suv_per_bqml * spec.activity_per_count:.10g}")
            else:
                block.add_new(0x09, "DS", f"{spec.activity_per_count:g}")
        ox, oy, oz = spec.origin_mm
        dx, dy, dz = spec.spacing_mm
        ds.ImagePositionPatient = [f"{ox:g}", f"{oy:g}", f"{oz + k * dz:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [f"{dy:g}", f"{dx:g}"]
        ds.SliceThickness = f"{dz:g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = "0"
        ds.PixelData = stored.tobytes()
        ds.InstanceNumber = k + 1
        slices.append(ds)
    return slices


def grid_coordinates(shape: tuple[int, int, int], spec: PetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre x, y, z (mm) arrays of shape (nz, ny, nx) for ``spec``'s origin and spacing."""
    nz, ny, nx = shape
    ox, oy, oz = spec.origin_mm
    dx, dy, dz = spec.spacing_mm
    z, y, x = np.meshgrid(oz + dz * np.arange(nz), oy + dy * np.arange(ny), ox + dx * np.arange(nx), indexing="ij")
    return x, y, z
