"""SUV against closed forms for every Units x DecayCorrection, and a clear error for every bad tag."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest
from pydicom.dataset import Dataset

from fusion.pet.errors import PetGeometryError, SuvTagError
from fusion.pet.suv import (
    SuvType,
    compute_bsa_dubois_cm2,
    compute_lbm_james_kg,
    compute_lbm_janmahasatian_kg,
    read_suv_calibration,
    read_suv_image,
)
from tests.pet.pet_factories import (
    PetSpec,
    build_pet_slices,
    expected_bsa_cm2,
    expected_lbm_kg,
    expected_suvbw,
)

HOT_BQML = 24000.0
WARM_BQML = 5000.0


def _activity() -> np.ndarray:
    activity = np.full((4, 6, 6), WARM_BQML)
    activity[:, 2:4, 2:4] = HOT_BQML
    return activity


COMBINATIONS = [
    PetSpec(units=units, decay_correction=decay, philips_suv_factor=philips, sex=sex)
    for units, philips in (("BQML", False), ("CNTS", False), ("CNTS", True), ("GML", False))
    for decay in ("START", "ADMIN", "NONE")
    for sex in ("M", "F")
]


@pytest.mark.parametrize("spec", COMBINATIONS, ids=lambda s: f"{s.units}{'-suvfactor' if s.philips_suv_factor else ''}"
                         f"-{s.decay_correction}-{s.sex}")
@pytest.mark.parametrize("suv_type", list(SuvType))
def test_suv_matches_closed_form_within_half_a_percent(spec: PetSpec, suv_type: SuvType) -> None:
    image = read_suv_image(build_pet_slices(_activity(), spec), suv_type)
    bw = expected_suvbw(HOT_BQML, spec)
    expected = {SuvType.BW: bw,
                SuvType.LBM: bw * expected_lbm_kg(spec) / spec.weight_kg,
                SuvType.BSA: bw * expected_bsa_cm2(spec) / (spec.weight_kg * 1000.0)}[suv_type]
    hot = image.values[:, 2:4, 2:4]  # every slice: NONE has a different decay per slice
    assert np.abs(hot / expected - 1.0).max() < 0.005
    warm = image.values[:, 0, 0]
    assert np.abs(warm / (expected * WARM_BQML / HOT_BQML) - 1.0).max() < 0.005


def test_body_size_formulas_pinned() -> None:
    # Janmahasatian (SUL): 80 kg, 1.80 m man -> BMI 24.69; 9270*80/(6680+216*24.69)
    assert compute_lbm_janmahasatian_kg(80.0, 1.80, "M") == pytest.approx(9270 * 80 / (6680 + 216 * 80 / 1.8**2))
    assert compute_lbm_janmahasatian_kg(60.0, 1.65, "F") == pytest.approx(9270 * 60 / (8780 + 244 * 60 / 1.65**2))
    # James with the 128 (men) / 148 (women) coefficients, not cornerstone's 120
    assert compute_lbm_james_kg(80.0, 1.80, "M") == pytest.approx(1.10 * 80 - 128 * (80 / 180) ** 2)
    assert compute_lbm_james_kg(60.0, 1.65, "F") == pytest.approx(1.07 * 60 - 148 * (60 / 165) ** 2)
    assert compute_bsa_dubois_cm2(80.0, 1.80) == pytest.approx(71.84 * 80**0.425 * 180**0.725)
    with pytest.raises(SuvTagError, match="PatientSex"):
        compute_lbm_janmahasatian_kg(80.0, 1.8, "O")


def test_calibration_reports_sources_and_uptake() -> None:
    spec = PetSpec()
    calibration = read_suv_calibration(build_pet_slices(_activity(), spec))
    assert calibration.uptake_s == spec.uptake_s == 3900.0
    assert calibration.injection_time_source == "RadiopharmaceuticalStartDateTime"
    assert calibration.scan_time_source == "SeriesDate/SeriesTime"
    assert calibration.to_dict()["lbm_formula"] == "Janmahasatian"


def test_injection_from_start_time_and_series_date() -> None:
    slices = build_pet_slices(_activity())
    for ds in slices:
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    calibration = read_suv_calibration(slices)
    assert calibration.injection_time_source == "RadiopharmaceuticalStartTime + SeriesDate"
    assert calibration.injection_datetime == datetime(2024, 3, 1, 9, 15)


def test_post_processed_series_uses_earliest_acquisition() -> None:
    spec = PetSpec()
    slices = build_pet_slices(_activity(), spec)
    for k, ds in enumerate(slices):
        ds.SeriesTime = "113000"  # reconstructed later
        ds.AcquisitionTime = f"1020{k:02d}"
    calibration = read_suv_calibration(slices)
    assert calibration.scan_datetime == datetime(2024, 3, 1, 10, 20, 0)
    assert "earliest" in calibration.scan_time_source
    image = read_suv_image(slices)
    assert image.values[0, 2, 2] == pytest.approx(expected_suvbw(HOT_BQML, spec), rel=0.005)


def test_post_processed_series_prefers_ge_private_scan_time() -> None:
    slices = build_pet_slices(_activity())
    for ds in slices:
        ds.SeriesTime = "113000"
        ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", "20240301101500")
    calibration = read_suv_calibration(slices)
    assert calibration.scan_datetime == datetime(2024, 3, 1, 10, 15)
    assert "0009,100D" in calibration.scan_time_source


def test_enhanced_pet_dose_is_megabecquerel() -> None:
    from fusion.pet.suv import read_injected_dose_bq

    ds = build_pet_slices(_activity())[0]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.130"
    ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = "370"
    assert read_injected_dose_bq(ds) == pytest.approx(370e6)


def test_net_dose_override() -> None:
    slices = build_pet_slices(_activity())
    calibration = read_suv_calibration(slices, injected_dose_bq=185.0e6)
    image = read_suv_image(slices, calibration=calibration)
    assert image.values[0, 2, 2] == pytest.approx(2 * expected_suvbw(HOT_BQML, PetSpec()), rel=0.005)


def _delete(keyword: str):
    def edit(ds: Dataset) -> None:
        delattr(ds, keyword)
    return edit


def _delete_item(*keywords: str):
    def edit(ds: Dataset) -> None:
        for keyword in keywords:
            delattr(ds.RadiopharmaceuticalInformationSequence[0], keyword)
    return edit


def _set(keyword: str, value):
    def edit(ds: Dataset) -> None:
        setattr(ds, keyword, value)
    return edit


def _set_item(keyword: str, value):
    def edit(ds: Dataset) -> None:
        setattr(ds.RadiopharmaceuticalInformationSequence[0], keyword, value)
    return edit


BAD_TAGS = [
    ("Units", PetSpec(), _delete("Units"), SuvType.BW),
    ("Units", PetSpec(), _set("Units", "PROPCNTS"), SuvType.BW),
    ("DecayCorrection", PetSpec(), _delete("DecayCorrection"), SuvType.BW),
    ("DecayCorrection", PetSpec(), _set("DecayCorrection", "LATER"), SuvType.BW),
    ("CorrectedImage", PetSpec(), _delete("CorrectedImage"), SuvType.BW),
    ("CorrectedImage", PetSpec(), _set("CorrectedImage", ["ATTN"]), SuvType.BW),  # START without DECY
    ("CorrectedImage", PetSpec(decay_correction="NONE"), _set("CorrectedImage", ["ATTN", "DECY"]), SuvType.BW),
    ("CorrectedImage", PetSpec(), _set("CorrectedImage", ["DECY"]), SuvType.BW),  # no attenuation correction
    ("RadiopharmaceuticalInformationSequence", PetSpec(), _delete("RadiopharmaceuticalInformationSequence"),
     SuvType.BW),
    ("RadionuclideTotalDose", PetSpec(), _delete_item("RadionuclideTotalDose"), SuvType.BW),
    ("RadionuclideTotalDose", PetSpec(), _set_item("RadionuclideTotalDose", "370"), SuvType.BW),  # MBq as Bq
    ("RadionuclideTotalDose", PetSpec(), _set_item("RadionuclideTotalDose", "0"), SuvType.BW),
    ("RadionuclideHalfLife", PetSpec(), _delete_item("RadionuclideHalfLife"), SuvType.BW),
    ("RadiopharmaceuticalStartDateTime", PetSpec(),
     _delete_item("RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime"), SuvType.BW),
    ("RadiopharmaceuticalStartTime", PetSpec(), _set_item("RadiopharmaceuticalStartTime", "080000"), SuvType.BW),
    ("RadiopharmaceuticalStartDateTime", PetSpec(),
     lambda ds: (_set_item("RadiopharmaceuticalStartDateTime", "20240301120000")(ds),
                 _delete_item("RadiopharmaceuticalStartTime")(ds)), SuvType.BW),  # after the scan
    ("PatientWeight", PetSpec(), _delete("PatientWeight"), SuvType.BW),
    ("PatientWeight", PetSpec(), _set("PatientWeight", "0"), SuvType.BW),
    ("SeriesTime", PetSpec(), _delete("SeriesTime"), SuvType.BW),
    ("SeriesDate", PetSpec(), _delete("SeriesDate"), SuvType.BW),
    ("PatientSize", PetSpec(), _delete("PatientSize"), SuvType.LBM),
    ("PatientSize", PetSpec(), _delete("PatientSize"), SuvType.BSA),
    ("PatientSize", PetSpec(), _set("PatientSize", "180"), SuvType.BW),  # centimetres
    ("PatientSex", PetSpec(), _delete("PatientSex"), SuvType.LBM),
    ("FrameReferenceTime", PetSpec(decay_correction="NONE"), _delete("FrameReferenceTime"), SuvType.BW),
    ("Philips private SUV Scale Factor (7053,1000)", PetSpec(units="CNTS"),
     lambda ds: ds.__delitem__(0x70531009), SuvType.BW),
]


@pytest.mark.parametrize("keyword, spec, edit, suv_type", BAD_TAGS,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(BAD_TAGS)])
def test_bad_tag_gives_error_naming_it(keyword: str, spec: PetSpec, edit, suv_type: SuvType) -> None:
    slices = build_pet_slices(_activity(), spec)
    for ds in slices:
        edit(ds)
    with pytest.raises(SuvTagError) as info:
        read_suv_image(slices, suv_type)
    assert info.value.keyword == keyword
    assert keyword in str(info.value)


def test_midnight_crossing_without_datetime_is_an_error() -> None:
    spec = PetSpec(injection_time="233000", series_time="003000", series_date="20240302")
    slices = build_pet_slices(_activity(), replace(spec, injection_time="000000"))
    for ds in slices:
        item = ds.RadiopharmaceuticalInformationSequence[0]
        del item.RadiopharmaceuticalStartDateTime
        item.RadiopharmaceuticalStartTime = "233000"
    with pytest.raises(SuvTagError, match="midnight") as info:
        read_suv_calibration(slices)
    assert info.value.keyword == "RadiopharmaceuticalStartDateTime"
    # with the DateTime (previous day) the uptake is one hour
    for ds in slices:
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = "20240301233000"
    assert read_suv_calibration(slices).uptake_s == 3600.0


def test_slices_that_disagree_are_an_error() -> None:
    slices = build_pet_slices(_activity())
    slices[2] = copy.deepcopy(slices[2])
    slices[2].PatientWeight = "81"
    with pytest.raises(SuvTagError, match="differs between slices") as info:
        read_suv_calibration(slices)
    assert info.value.keyword == "PatientWeight"


def test_uneven_slices_are_a_geometry_error() -> None:
    slices = build_pet_slices(_activity())
    slices[3].ImagePositionPatient = [slices[3].ImagePositionPatient[0], slices[3].ImagePositionPatient[1], "100"]
    with pytest.raises(PetGeometryError, match="evenly"):
        read_suv_image(slices)


def test_demo_phantom_lesion_suv_matches_truth() -> None:
    from oncopacs.phantom import build_demo_patient

    patient = build_demo_patient()
    image = read_suv_image(list(patient.pet))
    assert image.values.max() == pytest.approx(patient.truth.lesion_suvbw, rel=0.005)


def test_injection_datetime_with_utc_offset_is_converted_to_local_time() -> None:
    slices = build_pet_slices(_activity())
    for ds in slices:
        ds.TimezoneOffsetFromUTC = "+0100"
        item = ds.RadiopharmaceuticalInformationSequence[0]
        item.RadiopharmaceuticalStartDateTime = "20240301081500+0000"  # 09:15 local
    assert read_suv_calibration(slices).uptake_s == PetSpec().uptake_s
