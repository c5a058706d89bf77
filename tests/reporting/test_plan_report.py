"""The plan evaluation report drawn from the analysis the platform stored: the DVH chart has its curves."""

from __future__ import annotations

from oncopacs.platform import Platform
from reporting.plan_report import gather_plan_evaluation
from reporting.plots import build_dvh_plot
from reporting.types import ReportRequest
from tests.reporting.conftest import ingest_demo


def test_the_dvh_chart_of_an_analysed_plan_has_curves(platform: Platform):
    demo = ingest_demo(platform.archive)  # the rule queues the RT analysis; the worker stores it
    assert platform.jobs.new_worker().run_pending() >= 1
    content = gather_plan_evaluation(ReportRequest(platform.archive, str(demo.rt_dose.StudyInstanceUID)))
    dvh = content.data["dvh"]
    assert dvh["source"] == "cached"
    curves = {roi["name"]: roi["curve"] for roi in dvh["rois"]}
    ptv = curves["PTV"]
    assert ptv is not None and len(ptv["dose_gy"]) == len(ptv["volume_pct"]) > 10
    assert ptv["volume_pct"][0] > 99.0 and ptv["volume_pct"][-1] < 1.0  # from all of the PTV to none of it
    assert "<polyline" in build_dvh_plot([roi for roi in dvh["rois"] if roi["curve"]])
