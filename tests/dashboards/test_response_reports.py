"""The PET response and tumour-board PDFs draw the response page's data: its timeline, RT course and chart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oncopacs.analysis.timeline import read_patient_timeline
from tests.conftest import require
from tests.dashboards.conftest import study_uids
from tests.reporting.conftest import pdf_text, words_past_the_right_edge

BAND_FILL = (0xEF, 0xE6, 0xF4)  # reporting.plots.BAND_FILL: the RT course band
SULPEAK_RED = (0xD6, 0x27, 0x28)  # the SULpeak curve, as on the page


def _pages(pdf: bytes, folder: Path) -> list[np.ndarray]:
    require(shutil.which("pdftoppm") is not None, "pdftoppm is not installed (apt-get install poppler-utils)")
    (folder / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(folder / "report.pdf"), str(folder / "page")], check=True)
    return [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in sorted(folder.glob("page*.png"))]


def _pixels(page: np.ndarray, colour: tuple[int, int, int], tolerance: int = 10) -> int:
    return int((np.abs(page - np.array(colour)).max(axis=2) <= tolerance).sum())


@pytest.mark.parametrize("kind", ["pet-response", "tumour-board"])
def test_pdf_shows_the_pages_timeline_course_and_chart(demo_app, kind, tmp_path):
    archive = demo_app.extensions["oncopacs.archive"]
    service = demo_app.extensions["oncopacs.reports"].service
    follow_up = study_uids(demo_app, "ONCO-RESP-001")["FDG PET-CT follow-up"]
    report = service.make(kind, follow_up, "dr-test")
    timeline = read_patient_timeline(archive, "ONCO-RESP-001")
    assert report.data["timeline"] == [p.to_dict() for p in timeline.points]  # the page's numbers, as stored
    assert report.data["course"] == [p.to_dict() for p in timeline.plans]
    pdf = service.read_pdf(report)
    text = pdf_text(pdf, tmp_path)
    assert "RT PROTON_PTV: 60 Gy(RBE) in 30 fractions (2 Gy(RBE) per fraction)" in text  # the band's label
    assert "19 Feb 2024 – 2" in text and "30 of 30 fractions" in text  # (table cells wrap their lines)
    follow = timeline.points[-1]
    assert f"{follow.sul_peak_change_pct:+.1f} %".replace("-", "−") in text  # Δ SULpeak, as on the page
    assert "1.47 ± 0.17" in text  # the liver reference
    assert words_past_the_right_edge(pdf, tmp_path) == []  # every table and label fits the page
    pages = _pages(pdf, tmp_path)
    assert max(_pixels(p, BAND_FILL) for p in pages) > 2000, "no RT course band on any page"
    assert max(_pixels(p, SULPEAK_RED, 40) for p in pages) > 30, "no SULpeak curve on any page"


def test_board_pdf_lists_failed_goals_as_an_open_question(demo_app, tmp_path):
    service = demo_app.extensions["oncopacs.reports"].service
    report = service.make("tumour-board", study_uids(demo_app, "ONCO-RESP-002")["FDG PET-CT follow-up"], "dr-test")
    assert "Plan PROTON_PTV: 1 clinical goal(s) failed." in report.data["gaps"]
    assert report.data["diagnosis"] == "Oesophageal adenocarcinoma, distal third"
    text = pdf_text(service.read_pdf(report), tmp_path)
    assert "planned:" in text and "(planned)" in text  # the table's basis and the chart's band label
