"""Longitudinal PET results in the index (AnalysisResult + MetricValue) and the SR in the archive."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.analysis.pet import measure_time_point, record_patient
from oncopacs.index.models import Instance


def _measure(patient):
    return [measure_time_point(s.pet, s.rtstruct, label=s.spec.label) for s in reversed(patient.scans)]


def test_record_patient_stores_time_points_responses_and_srs(archive, responder) -> None:
    assessments = record_patient(archive, _measure(responder))
    assert [a.percist.category.value for a in assessments] == ["PMR", "CMR"]
    assert [a.followup.label for a in assessments] == ["mid-treatment", "follow-up"]
    with archive.index.reading() as session:
        points = session.scalars(select(AnalysisResult).where(AnalysisResult.kind == "pet_timepoint")
                                 .order_by(AnalysisResult.time_point)).all()
        assert [p.time_point for p in points] == ["20240205", "20240318", "20240506"]
        assert {p.patient_id for p in points} == {"PET-RESP-T1"}
        suvmax = session.execute(select(MetricValue.value).where(
            MetricValue.metric == "SUVmax[g/mL]", MetricValue.structure == "GTV")
            .join(AnalysisResult, AnalysisResult.id == MetricValue.result_pk).order_by(AnalysisResult.time_point)
        ).scalars().all()
        truth = [scan.lesion_suvbw["GTV"] for scan in responder.scans]
        assert suvmax == pytest.approx(truth, rel=0.005)
        responses = session.scalars(select(AnalysisResult).where(AnalysisResult.kind == "pet_response")
                                    .order_by(AnalysisResult.time_point)).all()
        assert [json.loads(r.result_json)["categories"]["PERCIST 1.0"] for r in responses] == ["PMR", "CMR"]
        change = session.scalars(select(MetricValue.value).where(MetricValue.result_pk == responses[0].id,
                                                                 MetricValue.metric == "SULpeakChange[%]")).one()
        assert change == pytest.approx(assessments[0].percist.change_percent)
        sr_uids = [json.loads(p.result_json)["sr_sop_instance_uid"] for p in points]
        stored = session.scalars(select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(sr_uids))).all()
        assert sorted(stored) == sorted(sr_uids)

    record_patient(archive, _measure(responder))  # re-running replaces, never duplicates
    with archive.index.reading() as session:
        assert len(session.scalars(select(AnalysisResult).where(AnalysisResult.kind == "pet_timepoint")).all()) == 3
        assert len(session.scalars(select(MetricValue).where(MetricValue.metric == "SUVmax[g/mL]",
                                                             MetricValue.structure == "GTV")).all()) == 3


def test_progressor_new_lesion_is_progression(sqlite_settings, progressor) -> None:
    from oncopacs.platform import open_archive

    archive = open_archive(sqlite_settings)
    try:
        assessments = record_patient(archive, _measure(progressor))
    finally:
        archive.close()
    assert [a.percist.category.value for a in assessments] == ["PMD", "PMD"]
    assert assessments[1].followup.new_lesions
    assert "new FDG-avid lesion" in assessments[1].percist.reasons
    assert assessments[1].recist.category.value == "PD"


def test_demo_loads_longitudinal_patients_with_results(sqlite_settings) -> None:
    from oncopacs.archive.importer import ImportSummary
    from oncopacs.cli.demo import load_followup_demo
    from oncopacs.platform import open_archive

    archive = open_archive(sqlite_settings)
    summary = ImportSummary()
    try:
        assert load_followup_demo(archive, summary.count) == 2
        with archive.index.reading() as session:
            rows = session.scalars(select(AnalysisResult).where(AnalysisResult.kind == "pet_response")).all()
    finally:
        archive.close()
    # three PET-CTs (CT, PET, RTSTRUCT) each, a planning study each (CT, RTSTRUCT, plan, dose) and the responder's
    # 30 treatment records
    assert summary.stored == 2 * 3 * (20 + 20 + 1) + 2 * (30 + 3) + 30 and not summary.rejected
    categories = {(r.patient_id, r.time_point): json.loads(r.result_json)["categories"]["PERCIST 1.0"] for r in rows}
    assert categories == {("ONCO-RESP-001", "20240318"): "PMR", ("ONCO-RESP-001", "20240506"): "CMR",
                          ("ONCO-RESP-002", "20240325"): "PMD", ("ONCO-RESP-002", "20240513"): "PMD"}
