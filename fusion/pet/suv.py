"""Standardised uptake values from PET DICOM, following the QIBA SUV pseudo-code.

Definitions (C activity concentration in Bq/mL, D' decay-corrected injected activity in Bq):

- SUVbw  = C * W[g] / D'             (g/mL)
- SUVlbm = C * LBM[g] / D'           (g/mL; SUL, LBM by Janmahasatian 2005)
- SUVbsa = C * BSA[cm^2] / D'        (cm^2/mL; BSA by DuBois & DuBois 1916)

Body size (W in kg, H in m, BMI = W / H^2):
  Janmahasatian LBM = 9270 W / (6680 + 216 BMI) men, 9270 W / (8780 + 244 BMI) women (kg);
  James LBM (for reference only) = 1.10 W - 128 (W / H_cm)^2 men, 1.07 W - 148 (W / H_cm)^2 women;
  DuBois BSA = 71.84 W^0.425 H_cm^0.725 cm^2.

Tags (every slice must agree; a missing, invalid or contradictory tag raises :class:`SuvTagError`
naming it, never a silent wrong number):

- Units (0054,1001): ``BQML`` (rescaled values are Bq/mL); ``CNTS`` (Philips: rescaled counts times
  the private "SUV Scale Factor" (7053,1000) are SUVbw, or, when that is absent or 0, times the
  private "Activity Concentration Scale Factor" (7053,1009) are Bq/mL; private creator
  ``Philips PET Private Group``); ``GML`` (rescaled values already are SUVbw).
- CorrectedImage (0028,0051) must contain ``ATTN``; it contains ``DECY`` exactly when DecayCorrection
  is ``START`` or ``ADMIN``.
- DecayCorrection (0054,1102): ``START`` D' = D 2^(-dt/T1/2), dt = scan reference time - injection
  time (>= 0); ``ADMIN`` (pixels decay corrected to the administration) D' = D; ``NONE`` D' =
  D 2^(-(dt + FrameReferenceTime/1000)/T1/2) per slice (FrameReferenceTime (0054,1300), ms, is the
  offset of the slice's activity from the scan reference time).
- Scan reference time: SeriesDate/SeriesTime when not later than the earliest acquisition
  (AcquisitionDateTime, or AcquisitionDate/AcquisitionTime) of the series; otherwise (a post-processed
  series) the GE private scan DateTime (0009,100D, creator ``GEMS_PETD_01``), otherwise the earliest
  acquisition.
- Injection time: RadiopharmaceuticalStartDateTime (0018,1078); else RadiopharmaceuticalStartTime
  (0018,1072) on the SeriesDate (an error when that falls after the scan: a midnight crossing needs
  the DateTime). Both present and disagreeing is an error. A UTC offset in the DateTime is converted
  to TimezoneOffsetFromUTC (0008,0201) when present and otherwise ignored (local times assumed).
- RadionuclideTotalDose (0018,1074) is in Bq (MBq for Enhanced PET, C.8.22.4); RadionuclideHalfLife
  (0018,1075) in s; both from the first RadiopharmaceuticalInformationSequence (0054,0016) item.
- RescaleSlope/RescaleIntercept per slice; PatientWeight (0010,1030) kg, PatientSize (0010,1020) m
  and PatientSex (0010,0040) (needed for LBM only).

Residual syringe activity is not in the standard: pass ``injected_dose_bq`` (net activity) to
:func:`read_suv_calibration` to override the tag.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from fusion.pet.errors import PetGeometryError, SuvTagError
from rt.grid import VoxelGrid

#: Enhanced PET Image Storage: RadionuclideTotalDose is in MBq there.
ENHANCED_PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.130"
PHILIPS_PET_CREATOR = "Philips PET Private Group"
GE_PET_CREATOR = "GEMS_PETD_01"
#: Below this a RadionuclideTotalDose in Bq is taken to be a unit mistake (MBq written as Bq).
MIN_PLAUSIBLE_DOSE_BQ = 1.0e5
_MAX_WEIGHT_KG = 500.0
_MAX_HEIGHT_M = 3.0
_TIME_TOLERANCE_S = 1.0

_DicomTemporal = TypeVar("_DicomTemporal", DA, TM, DT)


class SuvType(str, Enum):
    """Body-size normalisation: body weight, lean body mass (SUL, Janmahasatian) or body surface area."""

    BW = "bw"
    LBM = "lbm"
    BSA = "bsa"

    @property
    def unit(self) -> str:
        return "cm2/mL" if self is SuvType.BSA else "g/mL"


class Units(str, Enum):
    BQML = "BQML"
    CNTS = "CNTS"
    GML = "GML"


class DecayCorrection(str, Enum):
    START = "START"
    ADMIN = "ADMIN"
    NONE = "NONE"


def compute_decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """2^(-elapsed / half-life): the fraction of activity left after ``elapsed_s`` seconds."""
    fraction: float = 2.0 ** (-elapsed_s / half_life_s)
    return fraction


def compute_bmi(weight_kg: float, height_m: float) -> float:
    """Body-mass index, kg/m^2."""
    return weight_kg / (height_m * height_m)


def compute_lbm_janmahasatian_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Lean body mass (kg), Janmahasatian: 9270 W / (6680 + 216 BMI) men, 9270 W / (8780 + 244 BMI) women."""
    bmi = compute_bmi(weight_kg, height_m)
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    if sex == "F":
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise SuvTagError("PatientSex", f"is {sex!r}; lean body mass needs M or F")


def compute_lbm_james_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Lean body mass (kg), James: 1.10 W - 128 (W/H_cm)^2 men, 1.07 W - 148 (W/H_cm)^2 women (not used for SUL)."""
    ratio = weight_kg / (height_m * 100.0)
    if sex == "M":
        return 1.10 * weight_kg - 128.0 * ratio * ratio
    if sex == "F":
        return 1.07 * weight_kg - 148.0 * ratio * ratio
    raise SuvTagError("PatientSex", f"is {sex!r}; lean body mass needs M or F")


def compute_bsa_dubois_cm2(weight_kg: float, height_m: float) -> float:
    """Body surface area (cm^2), DuBois: 71.84 W^0.425 H_cm^0.725."""
    bsa: float = 71.84 * weight_kg**0.425 * (height_m * 100.0) ** 0.725
    return bsa


def compute_suv(concentration_bqml: float, body_size: float, injected_dose_bq: float, elapsed_s: float,
                half_life_s: float) -> float:
    """Closed form C * body_size / (D * 2^(-dt/T1/2)); body_size in g (bw, lbm) or cm^2 (bsa)."""
    return concentration_bqml * body_size / (injected_dose_bq * compute_decay_factor(elapsed_s, half_life_s))


@dataclass(frozen=True, slots=True)
class SuvCalibration:
    """Everything SUV needs from a PET series, read once and checked for consistency.

    injected_dose_bq: activity at injection, Bq; half_life_s: s; weight_kg: kg; height_m: m or None;
    sex: "M", "F" or None; scan/injection datetimes are naive local times; *_source say which tags gave them.
    """

    units: Units
    decay_correction: DecayCorrection
    injected_dose_bq: float
    half_life_s: float
    injection_datetime: datetime
    injection_time_source: str
    scan_datetime: datetime
    scan_time_source: str
    weight_kg: float
    height_m: float | None
    sex: str | None

    @property
    def uptake_s(self) -> float:
        """Scan reference time minus injection time, s (>= 0)."""
        return (self.scan_datetime - self.injection_datetime).total_seconds()

    def compute_body_size(self, suv_type: SuvType) -> float:
        """W (g) for bw, LBM (g, Janmahasatian) for lbm, BSA (cm^2, DuBois) for bsa."""
        if suv_type is SuvType.BW:
            return self.weight_kg * 1000.0
        if self.height_m is None:
            raise SuvTagError("PatientSize", f"missing (SUV{suv_type.value} needs the height)")
        if suv_type is SuvType.BSA:
            return compute_bsa_dubois_cm2(self.weight_kg, self.height_m)
        if self.sex is None:
            raise SuvTagError("PatientSex", "missing (SUVlbm needs the sex)")
        return compute_lbm_janmahasatian_kg(self.weight_kg, self.height_m, self.sex) * 1000.0

    def compute_decayed_dose_bq(self, frame_offset_s: float = 0.0) -> float:
        """D' (Bq) for this decay-correction convention; ``frame_offset_s`` is FrameReferenceTime for NONE."""
        if self.decay_correction is DecayCorrection.ADMIN:
            return self.injected_dose_bq
        elapsed = self.uptake_s + (frame_offset_s if self.decay_correction is DecayCorrection.NONE else 0.0)
        return self.injected_dose_bq * compute_decay_factor(elapsed, self.half_life_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "units": self.units.value, "decay_correction": self.decay_correction.value,
            "injected_dose_bq": self.injected_dose_bq, "half_life_s": self.half_life_s,
            "injection_datetime": self.injection_datetime.isoformat(),
            "injection_time_source": self.injection_time_source,
            "scan_datetime": self.scan_datetime.isoformat(), "scan_time_source": self.scan_time_source,
            "uptake_s": self.uptake_s, "weight_kg": self.weight_kg, "height_m": self.height_m, "sex": self.sex,
            "lbm_formula": "Janmahasatian", "bsa_formula": "DuBois",
        }


# -- tag reading ---------------------------------------------------------------------------------


def _uid(ds: Dataset) -> str | None:
    return str(ds.get("SOPInstanceUID", "")) or None


def _value(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 0:
        return None
    return value


def _required(ds: Dataset, keyword: str, problem: str = "missing") -> Any:
    value = _value(ds, keyword)
    if value is None:
        raise SuvTagError(keyword, problem, _uid(ds))
    return value


def _positive_float(ds: Dataset, keyword: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SuvTagError(keyword, f"is not a number ({value!r})", _uid(ds)) from None
    if not math.isfinite(number) or number <= 0.0:
        raise SuvTagError(keyword, f"must be positive (is {value!r})", _uid(ds))
    return number


def _parse(ds: Dataset, keyword: str, value: object, kind: type[_DicomTemporal]) -> _DicomTemporal:
    try:
        return kind(str(value).strip())
    except (TypeError, ValueError):
        raise SuvTagError(keyword, f"is not a valid {kind.__name__} ({value!r})", _uid(ds)) from None


def _date(ds: Dataset, keyword: str) -> date | None:
    value = _value(ds, keyword)
    return None if value is None else _parse(ds, keyword, value, DA)


def _time(ds: Dataset, keyword: str) -> time | None:
    value = _value(ds, keyword)
    return None if value is None else _parse(ds, keyword, value, TM)


def _naive(ds: Dataset, moment: datetime) -> datetime:
    """A DT as naive local time: converted to TimezoneOffsetFromUTC when both carry an offset."""
    if moment.tzinfo is None:
        return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                        moment.microsecond)
    offset = _value(ds, "TimezoneOffsetFromUTC")
    if offset is not None:
        text = str(offset).strip()
        sign = -1 if text.startswith("-") else 1
        hours, minutes = int(text.lstrip("+-")[:2]), int(text.lstrip("+-")[2:4] or 0)
        local = timezone(sign * timedelta(hours=hours, minutes=minutes))
        moment = moment.astimezone(local)
    return _naive(ds, datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                               moment.microsecond))


def _datetime(ds: Dataset, keyword: str, context: Dataset | None = None) -> datetime | None:
    """A DT attribute of ``ds`` as naive local time (``context`` holds TimezoneOffsetFromUTC; default ``ds``)."""
    value = _value(ds, keyword)
    return None if value is None else _naive(context or ds, _parse(ds, keyword, value, DT))


def _combine(day: date, moment: time) -> datetime:
    return datetime.combine(day, time(moment.hour, moment.minute, moment.second, moment.microsecond))


def _acquisition_datetime(ds: Dataset, series_date: date | None) -> datetime | None:
    combined = _datetime(ds, "AcquisitionDateTime")
    if combined is not None:
        return combined
    moment = _time(ds, "AcquisitionTime")
    if moment is None:
        return None
    day = _date(ds, "AcquisitionDate") or series_date
    if day is None:
        raise SuvTagError("AcquisitionDate", "missing (and SeriesDate)", _uid(ds))
    return _combine(day, moment)


def read_private(ds: Dataset, creator: str, group: int, element_offset: int) -> Any:
    """Value of the private element (group, xx00 + offset) reserved by ``creator``; None if absent."""
    try:
        return ds.private_block(group, creator)[element_offset].value
    except KeyError:
        return None


def read_philips_scale_factors(ds: Dataset) -> tuple[float | None, float | None]:
    """Philips (SUV Scale Factor (7053,1000), Activity Concentration Scale Factor (7053,1009)); 0 reads as None."""
    factors = []
    for offset in (0x00, 0x09):
        value = read_private(ds, PHILIPS_PET_CREATOR, 0x7053, offset)
        try:
            number = float(value) if value not in (None, b"", "") else 0.0
        except (TypeError, ValueError):
            raise SuvTagError(f"Philips private (7053,10{offset:02X})", f"is not a number ({value!r})",
                              _uid(ds)) from None
        factors.append(number if number > 0 else None)
    return factors[0], factors[1]


def read_injected_dose_bq(ds: Dataset) -> float:
    """RadionuclideTotalDose in Bq (converted from MBq for Enhanced PET), checked for plausibility."""
    item = _radiopharmaceutical(ds)
    dose = _positive_float(ds, "RadionuclideTotalDose", _required(item, "RadionuclideTotalDose"))
    if str(ds.get("SOPClassUID", "")) == ENHANCED_PET_SOP_CLASS:
        return dose * 1.0e6
    if dose < MIN_PLAUSIBLE_DOSE_BQ:
        raise SuvTagError("RadionuclideTotalDose", f"{dose:g} Bq is implausibly small (MBq written as Bq?)", _uid(ds))
    return dose


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise SuvTagError("RadiopharmaceuticalInformationSequence", "missing or empty", _uid(ds))
    item: Dataset = sequence[0]
    return item


def _read_injection(ds: Dataset, series_date: date | None, scan: datetime) -> tuple[datetime, str]:
    item = _radiopharmaceutical(ds)
    start = _datetime(item, "RadiopharmaceuticalStartDateTime", ds)
    start_time = _time(item, "RadiopharmaceuticalStartTime")
    if start is not None:
        if start_time is not None:
            gap = abs((_combine(start.date(), start_time) - start).total_seconds())
            if gap > _TIME_TOLERANCE_S:
                raise SuvTagError("RadiopharmaceuticalStartTime", "contradicts RadiopharmaceuticalStartDateTime",
                                  _uid(ds))
        return start, "RadiopharmaceuticalStartDateTime"
    if start_time is None:
        raise SuvTagError("RadiopharmaceuticalStartDateTime", "missing (and RadiopharmaceuticalStartTime)", _uid(ds))
    if series_date is None:
        raise SuvTagError("SeriesDate", "missing (RadiopharmaceuticalStartTime needs a date)", _uid(ds))
    injection = _combine(series_date, start_time)
    if injection > scan:
        raise SuvTagError("RadiopharmaceuticalStartDateTime",
                          "missing, and RadiopharmaceuticalStartTime on the SeriesDate falls after the scan "
                          "(a scan across midnight needs the DateTime)", _uid(ds))
    return injection, "RadiopharmaceuticalStartTime + SeriesDate"


def _read_scan_time(datasets: Sequence[Dataset]) -> tuple[datetime, str]:
    first = datasets[0]
    series_date = _date(first, "SeriesDate")
    series_time = _time(first, "SeriesTime")
    acquisitions = [a for a in (_acquisition_datetime(ds, series_date) for ds in datasets) if a is not None]
    earliest = min(acquisitions) if acquisitions else None
    if series_date is None:
        raise SuvTagError("SeriesDate", "missing", _uid(first))
    if series_time is None:
        raise SuvTagError("SeriesTime", "missing", _uid(first))
    series = _combine(series_date, series_time)
    if earliest is None or series <= earliest:
        return series, "SeriesDate/SeriesTime"
    ge = read_private(first, GE_PET_CREATOR, 0x0009, 0x0D)
    if ge not in (None, "", b""):
        ge_text = ge.decode("ascii", "replace") if isinstance(ge, bytes) else str(ge)
        return _naive(first, _parse(first, "GE private scan DateTime (0009,100D)", ge_text, DT)), \
            "GE private scan DateTime (0009,100D)"
    return earliest, "earliest AcquisitionDate/AcquisitionTime (series is later: post-processed)"


_SERIES_KEYWORDS = ("SeriesInstanceUID", "Units", "DecayCorrection", "CorrectedImage", "SeriesDate", "SeriesTime",
                    "PatientWeight", "PatientSize", "PatientSex", "RadiopharmaceuticalInformationSequence")


def _check_consistent(datasets: Sequence[Dataset]) -> None:
    first = datasets[0]
    for ds in datasets[1:]:
        for keyword in _SERIES_KEYWORDS:
            a, b = first.get(keyword), ds.get(keyword)
            if keyword == "RadiopharmaceuticalInformationSequence":
                a, b = (_radiopharmaceutical_key(x) for x in (a, b))
            if a != b:
                raise SuvTagError(keyword, f"differs between slices ({a!r} in {_uid(first)} vs {b!r})", _uid(ds))


def _radiopharmaceutical_key(sequence: Sequence[Dataset] | None) -> tuple[str, ...]:
    if not sequence:
        return ()
    item = sequence[0]
    return tuple(str(item.get(k, "")) for k in ("RadionuclideTotalDose", "RadionuclideHalfLife",
                                                 "RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime"))


def read_suv_calibration(datasets: Sequence[Dataset], *, injected_dose_bq: float | None = None) -> SuvCalibration:
    """The series-level SUV calibration of PET slices (one series).

    ``injected_dose_bq`` overrides the tag (net dose).
    """
    if not datasets:
        raise ValueError("no PET slices")
    _check_consistent(datasets)
    ds = datasets[0]
    units_text = str(_required(ds, "Units")).strip().upper()
    try:
        units = Units(units_text)
    except ValueError:
        raise SuvTagError("Units", f"is {units_text!r}; SUV supports BQML, CNTS and GML", _uid(ds)) from None
    decay_text = str(_required(ds, "DecayCorrection")).strip().upper()
    try:
        decay = DecayCorrection(decay_text)
    except ValueError:
        raise SuvTagError("DecayCorrection", f"is {decay_text!r}; expected START, ADMIN or NONE", _uid(ds)) from None
    corrected_value = _required(ds, "CorrectedImage")
    corrected = {str(v).strip().upper() for v in ([corrected_value] if isinstance(corrected_value, str)
                                                   else corrected_value)}
    if "ATTN" not in corrected:
        raise SuvTagError("CorrectedImage", "lacks ATTN (no attenuation correction: SUV is meaningless)", _uid(ds))
    if decay is DecayCorrection.NONE and "DECY" in corrected:
        raise SuvTagError("CorrectedImage", "has DECY but DecayCorrection is NONE (contradictory)", _uid(ds))
    if decay is not DecayCorrection.NONE and "DECY" not in corrected:
        raise SuvTagError("CorrectedImage", f"lacks DECY but DecayCorrection is {decay.value} (contradictory)",
                          _uid(ds))

    item = _radiopharmaceutical(ds)
    half_life = _positive_float(ds, "RadionuclideHalfLife", _required(item, "RadionuclideHalfLife"))
    dose = injected_dose_bq if injected_dose_bq is not None else read_injected_dose_bq(ds)
    if dose <= 0:
        raise ValueError("injected_dose_bq must be positive")
    scan, scan_source = _read_scan_time(datasets)
    injection, injection_source = _read_injection(ds, _date(ds, "SeriesDate"), scan)
    if injection > scan:
        raise SuvTagError(injection_source.split(" ")[0], f"is after the scan reference time ({scan_source})", _uid(ds))

    weight = _positive_float(ds, "PatientWeight", _required(ds, "PatientWeight"))
    if weight > _MAX_WEIGHT_KG:
        raise SuvTagError("PatientWeight", f"{weight:g} kg is implausible", _uid(ds))
    height = None
    if _value(ds, "PatientSize") is not None:
        height = _positive_float(ds, "PatientSize", ds.PatientSize)
        if height > _MAX_HEIGHT_M:
            raise SuvTagError("PatientSize", f"{height:g} m is implausible (DICOM stores metres, not cm)", _uid(ds))
    sex_text = str(ds.get("PatientSex", "") or "").strip().upper()
    return SuvCalibration(
        units=units, decay_correction=decay, injected_dose_bq=dose, half_life_s=half_life,
        injection_datetime=injection, injection_time_source=injection_source,
        scan_datetime=scan, scan_time_source=scan_source,
        weight_kg=weight, height_m=height, sex=sex_text if sex_text in ("M", "F") else None,
    )


def compute_slice_suv_factor(ds: Dataset, calibration: SuvCalibration, suv_type: SuvType) -> float:
    """SUV per rescaled stored value of one slice (g/mL, or cm^2/mL for bsa, per unit of Units)."""
    body = calibration.compute_body_size(suv_type)
    weight_g = calibration.weight_kg * 1000.0
    if calibration.units is Units.GML:
        return body / weight_g
    activity_per_value = 1.0
    if calibration.units is Units.CNTS:
        suv_factor, activity_factor = read_philips_scale_factors(ds)
        if suv_factor is not None:
            return suv_factor * body / weight_g
        if activity_factor is None:
            raise SuvTagError("Philips private SUV Scale Factor (7053,1000)",
                              "missing (and Activity Concentration Scale Factor (7053,1009)): CNTS cannot be "
                              "converted", _uid(ds))
        activity_per_value = activity_factor
    offset_s = 0.0
    if calibration.decay_correction is DecayCorrection.NONE:
        offset_s = float(_required(ds, "FrameReferenceTime", "missing (DecayCorrection NONE needs it)")) / 1000.0
    return activity_per_value * body / calibration.compute_decayed_dose_bq(offset_s)


# -- images --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SuvImage:
    """A PET series as SUV on an axial voxel grid (values in g/mL, cm^2/mL for bsa), indices (z, y, x)."""

    suv_type: SuvType
    grid: VoxelGrid
    values: npt.NDArray[np.float64] = field(repr=False)
    calibration: SuvCalibration
    frame_of_reference_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    study_date: str
    sop_instance_uids: tuple[str, ...]

    def compute_ratio_to(self, suv_type: SuvType) -> float:
        """Factor turning these values into ``suv_type`` values (body-size ratio; same D' and C)."""
        return self.calibration.compute_body_size(suv_type) / self.calibration.compute_body_size(self.suv_type)


_ORIENTATION_TOLERANCE = 1e-4
_SPACING_TOLERANCE = 0.01


def _float_list(ds: Dataset, keyword: str) -> list[float]:
    value = ds.get(keyword)
    if not value:
        raise PetGeometryError(f"{keyword} missing in {_uid(ds)}")
    return [float(v) for v in value]


def read_pet_grid(datasets: Sequence[Dataset]) -> tuple[VoxelGrid, list[Dataset]]:
    """The axial grid of PET slices and the slices sorted by increasing z (mm)."""
    if str(datasets[0].get("SOPClassUID", "")) == ENHANCED_PET_SOP_CLASS:
        raise PetGeometryError("Enhanced (multi-frame) PET pixel data is not supported; use classic PET slices")
    for ds in datasets:
        orientation = np.array(_float_list(ds, "ImageOrientationPatient"))
        if np.abs(orientation - [1, 0, 0, 0, 1, 0]).max() > _ORIENTATION_TOLERANCE:
            raise PetGeometryError(f"slice {_uid(ds)} is not axial (ImageOrientationPatient {orientation.tolist()})")
    ordered = sorted(datasets, key=lambda d: _float_list(d, "ImagePositionPatient")[2])
    first = ordered[0]
    rows, columns = int(first.Rows), int(first.Columns)
    row_spacing, column_spacing = _float_list(first, "PixelSpacing")
    x0, y0, _ = _float_list(first, "ImagePositionPatient")
    z = np.array([_float_list(d, "ImagePositionPatient")[2] for d in ordered])
    for ds in ordered:
        x, y, _ = _float_list(ds, "ImagePositionPatient")
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns) or _float_list(ds, "PixelSpacing") != [row_spacing,
                                                                                                    column_spacing]:
            raise PetGeometryError(f"slice {_uid(ds)} has another matrix or pixel spacing")
        if abs(x - x0) > 0.01 or abs(y - y0) > 0.01:
            raise PetGeometryError(f"slice {_uid(ds)} is shifted in-plane")
    if len(ordered) > 1:
        gaps = np.diff(z)
        dz = float(np.median(gaps))
        if dz <= 0 or np.abs(gaps - dz).max() > _SPACING_TOLERANCE * dz:
            raise PetGeometryError(f"PET slices are not evenly spaced (gaps {sorted(set(np.round(gaps, 3)))} mm)")
    else:
        dz = float(first.get("SliceThickness") or 1.0)
    grid = VoxelGrid((x0, y0, float(z[0])), (column_spacing, row_spacing, dz), (len(ordered), rows, columns))
    return grid, ordered


def read_suv_image(datasets: Sequence[Dataset], suv_type: SuvType | str = SuvType.BW, *,
                   calibration: SuvCalibration | None = None) -> SuvImage:
    """SUV of every voxel of a classic PET series (one dataset per slice, any order)."""
    suv_type = SuvType(suv_type)
    calibration = calibration or read_suv_calibration(datasets)
    grid, ordered = read_pet_grid(datasets)
    values = np.empty(grid.shape, dtype=np.float64)
    for k, ds in enumerate(ordered):
        if "PixelData" not in ds:
            raise SuvTagError("PixelData", "missing", _uid(ds))
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        stored = ds.pixel_array.astype(np.float64)
        values[k] = (stored * slope + intercept) * compute_slice_suv_factor(ds, calibration, suv_type)
    first = ordered[0]
    return SuvImage(
        suv_type=suv_type, grid=grid, values=values, calibration=calibration,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        patient_id=str(first.get("PatientID", "")),
        study_date=str(first.get("StudyDate", "") or first.get("SeriesDate", "")),
        sop_instance_uids=tuple(str(d.SOPInstanceUID) for d in ordered),
    )
