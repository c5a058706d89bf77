"""PET response and tumour-board reports from the results in the index, and honest gaps where there are none."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.platform import open_archive
from reporting.plots import build_dvh_plot, build_timeline_plot
from reporting.types import REPORT_TYPE_NAMES, report_type
from tests.reporting.conftest import PHYSICIST, ingest_demo, make_service, pdf_text


@pytest.fixture
def sqlite_demo(sqlite_settings):
    archive = open_archive(sqlite_settings)
    demo = ingest_demo(archive)
    yield archive, demo
    archive.close()


def _add_results(archive, demo) -> None:
    pet_study = str(demo.pet[0].StudyInstanceUID)
    now = datetime(2024, 3, 1, tzinfo=UTC)
    with archive.index.writing() as session:
        for key, time_point, values in (("a", "20240122", (9.8, 7.6, 42.5)), ("b", "20240301", (4.1, 3.2, 11.75))):
            result = AnalysisResult(kind="pet_timepoint", input_key=key * 64, patient_id="ONCO-DEMO-001",
                                    study_instance_uid=pet_study, time_point=time_point, inputs="",
                                    result_json=json.dumps({"suv_type": "lbm"}), created_at=now)
            session.add(result)
            session.flush()
            for metric, value in zip(("SUVmax[g/mL]", "SULpeak[g/mL]", "MTV[cc]"), values, strict=False):
                session.add(MetricValue(result_pk=result.id, patient_id="ONCO-DEMO-001", study_instance_uid=pet_study,
                                        structure="Lesion1", metric=metric, value=value))
        session.add(AnalysisResult(kind="pet_response", input_key="c" * 64, patient_id="ONCO-DEMO-001",
                                   study_instance_uid=pet_study, time_point="20240301", inputs="",
                                   result_json=json.dumps({"percist": {"category": "PMR"},
                                                           "sulpeak_change_percent": -57.9}),
                                   created_at=now))


def test_pet_response_without_results_says_so(sqlite_demo, tmp_path, clock) -> None:
    archive, demo = sqlite_demo
    service = make_service(archive, tmp_path, clock)
    report = service.make("pet-response", str(demo.pet[0].StudyInstanceUID), "dr")
    text = pdf_text(service.read_pdf(report), tmp_path)
    assert "No PET quantification or response assessment is in the archive yet." in text
    assert "No response assessment (PERCIST)" in text and "No SUV/SUL/MTV/TLG quantification" in text
    assert "22 Jan 2024" in text  # the PET time point the index does hold, as people read dates
    # the header too: the birth date and sex as people read them, not DICOM's 19580312 / M
    assert re.search(r"born \d{1,2} [A-Z][a-z]{2} \d{4} · (Male|Female|Other)", " ".join(text.split())), text[:300]
    assert report.data["key_image"]["png_base64"]  # a coronal MIP of the stored PET


def test_pet_response_with_results(sqlite_demo, tmp_path, clock) -> None:
    archive, demo = sqlite_demo
    _add_results(archive, demo)
    service = make_service(archive, tmp_path, clock)
    report = service.approve(service.make("pet-response", str(demo.pet[0].StudyInstanceUID), "dr").id, PHYSICIST)
    assert report.conclusion == "PERCIST 1.0: PMR"
    text = pdf_text(service.read_pdf(report), tmp_path)
    for expected in ("PERCIST 1.0: PMR", "ONCO-DEMO-001", "9.80", "4.10", "42.50", "11.75", "SULpeak [g/mL]", "-57.9"):
        assert expected in text
    # the trend chart is the response page's timeline: these hand-made rows carry no time-point document,
    # so the page has no point to draw and neither has the PDF
    assert report.data["timeline"] == [] and "No PET time point with lesion statistics" in text


def test_tumour_board_summary(sqlite_demo, tmp_path, clock) -> None:
    archive, demo = sqlite_demo
    service = make_service(archive, tmp_path, clock)
    study = str(demo.rt_ion_plan.StudyInstanceUID)
    empty = service.make("tumour-board", study, "dr", {"questions": ["Re-plan after week 3?"]})
    text = pdf_text(service.read_pdf(empty), tmp_path)
    assert "PROTON_PTV" in text and "Re-plan after week 3?" in text
    assert "No PET response assessment yet." in text and "No approved plan evaluation report yet." in text
    plan = service.approve(service.make("plan", study, "dr").id, PHYSICIST)
    _add_results(archive, demo)
    board = service.make("tumour-board", study, "dr")
    text = pdf_text(service.read_pdf(board), tmp_path)
    assert "PERCIST 1.0: PMR" in text and board.data["plan_evaluations"][0]["report_id"] == plan.id
    assert board.conclusion == "RT course: PROTON_PTV 60 Gy/30 fx. Latest response: PERCIST 1.0: PMR."


def test_registry_and_plots() -> None:
    assert tuple(REPORT_TYPE_NAMES) == ("plan", "pet-response", "tumour-board")
    assert all(report_type(name).template.endswith(".html") for name in REPORT_TYPE_NAMES)
    with pytest.raises(ValueError, match="valid"):
        report_type("x")
    svg = build_dvh_plot([{"name": "PTV <1>", "curve": {"dose_gy": [0, 30, 60], "volume_pct": [100, 100, 0]}}])
    assert svg.startswith("<svg") and "PTV &lt;1&gt;" in svg and "<polyline" in svg
    points = [{"date": "2024-01-22", "SUVmax": 9.8, "SUVpeak": 9.1, "SULpeak": 7.0, "measurability_threshold": 2.5,
               "category": "baseline"},
              {"date": "2024-03-01", "SUVmax": 4.1, "SUVpeak": 3.9, "SULpeak": 3.0, "measurability_threshold": 2.4,
               "category": "PMR"}]
    course = [{"label": "PLAN<1>", "prescription": "60 Gy in 30 fractions",
               "dates": {"start": "2024-01-29", "end": "2024-03-08", "basis": "estimated from the plan"}}]
    timeline = build_timeline_plot(points, course)
    assert "1 Mar 2024" in timeline and timeline.count("<circle") == 8  # 4 series x 2 time points
    assert "PMR" in timeline and "stroke-dasharray" in timeline  # category label, dashed PERCIST threshold
    assert "RT PLAN&lt;1&gt;: 60 Gy in 30 fractions (planned)" in timeline and 'fill="#efe6f4"' in timeline
    assert build_timeline_plot([], course) == ""
