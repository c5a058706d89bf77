"""The PET SR (TID 1500) is valid DICOM, reads back with highdicom and pydicom, and carries the values."""

from __future__ import annotations

from io import BytesIO

import highdicom as hd
import pytest
from pydicom import dcmread

from fusion.pet.sr import read_pet_report
from oncopacs.analysis.pet import (
    assess_response,
    build_time_point_sr,
    measure_time_point,
)


def _roundtrip(ds):
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


def test_sr_reads_back_with_values_and_categories(responder) -> None:
    baseline, follow = (measure_time_point(s.pet, s.rtstruct, label=s.spec.label) for s in
                        (responder.scans[0], responder.scans[2]))
    assessment = assess_response([baseline.time_point, follow.time_point])
    sr = _roundtrip(build_time_point_sr(follow, 3, assessment.categories))

    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == follow.image.study_instance_uid
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    parsed = hd.sr.Comprehensive3DSR.from_dataset(sr)
    assert parsed.SOPInstanceUID == sr.SOPInstanceUID
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == set(follow.image.sop_instance_uids)

    values = read_pet_report(sr)
    gtv = next(s for s in follow.lesions if s.name == "GTV")
    assert values["GTV"]["SUVbw (Maximum)"] == pytest.approx(gtv.suv_max)
    assert values["GTV"]["SUVbw (Mean)"] == pytest.approx(gtv.suv_mean)
    assert values["GTV"]["SUVbw (Peak Value Within ROI)"] == pytest.approx(gtv.suv_peak)
    assert values["GTV"]["SUVlbm (Peak Value Within ROI)"] == pytest.approx(gtv.sul_peak)
    assert values["GTV"]["Metabolic Volume"] == pytest.approx(gtv.mtv41_cc)
    assert values["GTV"]["Total Lesion Glycolysis"] == pytest.approx(gtv.tlg41)
    assert values["GTV"]["Diameter (Maximum)"] == pytest.approx(follow.time_point.lesions[0].longest_diameter_mm)
    assert values["GTV"]["Time Point Order"] == 3
    assert "Liver" in values
    assert values["Response"]["PERCIST 1.0 response"] == assessment.percist.category.value == "CMR"
    assert values["Response"]["EORTC 1999 PET response"] == assessment.eortc.category.value
    assert values["Response"]["RECIST-style CT response"] == assessment.recist.category.value
    assert gtv.suv_max == pytest.approx(responder.scans[2].lesion_suvbw["GTV"], rel=0.005)


def test_sr_is_deterministic(responder) -> None:
    measured = measure_time_point(responder.scans[0].pet, responder.scans[0].rtstruct, label="baseline")
    a, b = build_time_point_sr(measured, 1), build_time_point_sr(measured, 1)
    assert a.SOPInstanceUID == b.SOPInstanceUID
    assert read_pet_report(_roundtrip(a)) == read_pet_report(_roundtrip(b))
