"""PET response and tumour-board reports from the results in the index, and honest gaps where there are none."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.platform import open_archive
from reporting.plots import build_dvh_plot, build_trend_plot
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
    assert "2024-01-22" in text  # the PET time point the index does hold
    assert report.data["key_image"]["png_base64"]  # a coronal MIP of the stored PET


def test_pet_response_with_results(sqlite_demo, tmp_path, clock) -> None:
    archive, demo = sqlite_demo
    _add_results(archive, demo)
    service = make_service(archive, tmp_path, clock)
    report = service.approve(service.make("pet-response", str(demo.pet[0].StudyInstanceUID), "dr").id, PHYSICIST)
    assert report.conclusion == "PERCIST 1.0: PMR"
    text = pdf_text(service.read_pdf(report), tmp_path)
    for expected in ("PERCIST 1.0: PMR", "ONCO-DEMO-001", "9.80", "4.10", "42.50", "11.75", "SULpeak[g/mL]", "-57.9"):
        assert expected in text
    assert report.data["trend_metric"] == "SULpeak[g/mL]"


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
    trend = build_trend_plot({"L1": [("20240122", 9.8), ("20240301", 4.1)]}, "SULpeak[g/mL]")
    assert "2024-03-01" in trend and trend.count("<circle") == 2
