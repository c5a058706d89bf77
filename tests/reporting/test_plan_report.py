"""The plan evaluation report draws what the plan review page shows: the stored RT analysis of the same dose.

Its DVH chart has the analysis' curves in the ROI colours (checked on the rasterised page, not only in the
SVG), doses in the RT Dose's unit (Gy(RBE) for an EFFECTIVE dose), and the goals in the page's words.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import numpy as np
from PIL import Image

from oncopacs.analysis.rt import find_planning_sets, load_results
from oncopacs.platform import Platform
from oncopacs.viewer.plan_text import goal_rows
from reporting.plan_report import gather_plan_evaluation
from reporting.plots import build_dvh_plot
from reporting.types import ReportRequest
from tests.conftest import require
from tests.reporting.conftest import demo_patient, ingest_demo, make_service, pdf_text, words_past_the_right_edge


def test_the_dvh_chart_draws_the_stored_analysis_the_page_shows(platform: Platform):
    demo = ingest_demo(platform.archive)  # the rule queues the RT analysis; the worker stores it
    assert platform.jobs.new_worker().run_pending() >= 1
    study = str(demo.rt_dose.StudyInstanceUID)
    content = gather_plan_evaluation(ReportRequest(platform.archive, study))
    with platform.archive.index.reading() as session:
        stored = load_results(session, find_planning_sets(session, study)[0])  # what the plan page opens on
    dvh = content.data["dvh"]
    assert dvh["source"] == "stored analysis" and content.data["dose_uid"] == str(demo.rt_dose.SOPInstanceUID)
    for roi, kept in zip(dvh["rois"], stored.dvh["rois"], strict=True):
        assert roi["name"] == kept["name"]
        if kept["curve"]:
            assert roi["curve"] == {"dose_gy": kept["curve"]["dose_gy"], "volume_pct": kept["curve"]["volume_percent"]}
    ptv = next(r for r in dvh["rois"] if r["name"] == "PTV")
    assert ptv["colour"] == "rgb(255, 0, 0)" and ptv["curve"]["volume_pct"][0] > 99.0
    svg = build_dvh_plot(dvh["rois"], dose_unit=dvh["dose_unit"])
    assert svg.count("<polyline") == sum(1 for r in dvh["rois"] if r["curve"]) >= 4
    assert 'stroke="rgb(255, 0, 0)"' in svg and "Dose [Gy(RBE)]" in svg  # the phantom's proton dose is RBE-weighted
    assert [r["goal"] for r in content.data["goals"]["rows"]] == [r.goal for r in goal_rows(stored.goals)]


def _effective_demo(platform: Platform):
    demo = demo_patient()
    dose = copy.deepcopy(demo.rt_dose)
    dose.DoseType = "EFFECTIVE"  # an RBE-weighted proton dose
    for dataset in [d for d in demo.all_datasets() if d is not demo.rt_dose] + [dose]:
        assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
    assert platform.jobs.new_worker().run_pending() >= 1
    return demo


def test_the_pdf_has_its_dvh_curves_in_gy_rbe_and_the_page_words(platform: Platform, tmp_path, clock):
    demo = _effective_demo(platform)
    service = make_service(platform.archive, tmp_path, clock)
    report = service.make("plan", str(demo.rt_dose.StudyInstanceUID), "dr-physicist")
    pdf = service.read_pdf(report)
    text = pdf_text(pdf, tmp_path)
    flat = re.sub(r"\s+", " ", text)
    assert "60.00 Gy(RBE)" in flat and "Dose [Gy(RBE)]" in flat and "Doses (Mean … D2%) in Gy(RBE)" in flat
    assert "60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)" in flat
    assert "Max ≤ 50 Gy(RBE)" in flat and "outside the dose grid" in flat and "Not evaluated" in flat
    assert "not_evaluated" not in flat and "RBE-weighted" not in flat
    assert words_past_the_right_edge(pdf, tmp_path) == []  # every table fits the page
    require(shutil.which("pdftoppm") is not None, "pdftoppm is not installed (apt-get install poppler-utils)")
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(tmp_path / "report.pdf"),
                    str(tmp_path / "page")], check=True)
    (page,) = tmp_path.glob("page-*.png")
    pixels = np.asarray(Image.open(page).convert("RGB")).astype(int)
    red = (np.abs(pixels - (255, 0, 0)).max(axis=2) < 60)  # the PTV curve, in the PTV's colour
    rows = np.nonzero(red.any(axis=1))[0]
    assert red.sum() > 150, "no PTV curve on the rasterised page"
    assert rows.max() - rows.min() > 100  # a curve running down the chart, not a legend swatch alone
    green = (np.abs(pixels - (0, 210, 0)).max(axis=2) < 60)  # BODY, darkened to read on paper
    assert green.sum() > 100
