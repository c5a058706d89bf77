"""The tumour-board cohort: rows with course, diagnosis, site and next step, filters, CSV, the PDF by role, links,
text-only rendering of names."""

from __future__ import annotations

import csv
import io
from datetime import date

from pydicom.uid import generate_uid

from dashboards.board import (
    BoardRow,
    board_grid,
    export_csv,
    make_board_pdf,
    read_board,
    render_board,
    rows_to_csv,
)
from oncopacs.auth.roles import Role
from tests.dashboards.conftest import as_json, dash_update, study_uids
from tests.factories import small_ct_series

XSS_NAME = "<script>alert('x')</script>^Mallory"


def _grid_rows(table) -> dict[str, dict]:
    return {row["patient_id"]: row for row in table.rowData}


def test_rows_carry_latest_percist_category_and_status(demo_app):
    rows = {r.patient_id: r for r in read_board(demo_app.extensions["oncopacs.archive"])}
    assert rows["ONCO-RESP-001"].category == "CMR" and rows["ONCO-RESP-001"].status == "assessed"
    assert rows["ONCO-RESP-002"].category == "PMD"
    assert rows["ONCO-RESP-001"].last_time_point == date(2024, 5, 6)
    assert rows["ONCO-DEMO-001"].category == "none" and rows["ONCO-DEMO-001"].status == "planned"


def test_rows_carry_diagnosis_site_course_response_and_next_step(demo_app):
    rows = {r.patient_id: r for r in read_board(demo_app.extensions["oncopacs.archive"], today=date(2024, 6, 3))}
    responder, progressor, demo = rows["ONCO-RESP-001"], rows["ONCO-RESP-002"], rows["ONCO-DEMO-001"]
    assert responder.diagnosis == "Non-small cell lung cancer, right upper lobe" and responder.site == "Lung, right"
    assert responder.prescription == "60 Gy(RBE) / 30 fx" and responder.rt_dates == "19 Feb – 2 Apr 2024"
    assert responder.response == "CMR on 6 May 2024"
    assert responder.next_step == ""  # last PET 6 May 2024: the follow-up is not due before 29 Jul 2024
    assert progressor.rt_dates == "19 Feb – 27 Mar 2024 (planned)"  # no treatment record: from the plan
    assert progressor.next_step == "Review plan: 1 clinical goal failed"
    assert demo.diagnosis == "" and demo.site == "PELVIS"  # no diagnosis recorded; site from BodyPartExamined
    assert demo.next_step == "No PET time point"
    later = {r.patient_id: r for r in read_board(demo_app.extensions["oncopacs.archive"], today=date(2024, 8, 1))}
    assert later["ONCO-RESP-001"].next_step == "Follow-up PET due since 29 Jul 2024"


def test_grid_links_each_patients_pages(demo_app):
    rows = read_board(demo_app.extensions["oncopacs.archive"])
    grid = _grid_rows(board_grid(rows))
    responder = grid["ONCO-RESP-001"]
    planning = study_uids(demo_app, "ONCO-RESP-001")["Proton therapy planning"]
    follow_up = study_uids(demo_app, "ONCO-RESP-001")["FDG PET-CT follow-up"]
    assert responder["pages"].split("  \n") == [
        "[Response](/dashboards/response/ONCO-RESP-001)", f"[Plan review](/dashboards/plan/{planning})",
        f"[PET-CT](/dashboards/pet/{follow_up})"]
    assert responder["patient"] == "PHANTOM, Responder" and responder["response"] == "CMR on 6 May 2024"
    assert grid["ONCO-4D-001"]["pages"] == "[Response](/dashboards/response/ONCO-4D-001)"  # no plan, no PET
    assert grid["ONCO-4D-001"]["prescription"] == "no RT plan" and grid["ONCO-4D-001"]["response"] == "—"


def test_filters_and_role_controls(demo_app, as_role):
    with as_role(Role.TUMOUR_BOARD):
        table, count, _sites, statuses, categories, _patients, csv_off, pdf_off = render_board(
            "/dashboards/board/", None, None, ["PMD"])
        refused = make_board_pdf(1, "ONCO-RESP-002")
    assert [r["category"] for r in table.rowData] == ["PMD"] and "ONCO-RESP-002" in as_json(table)
    assert count.startswith("1 of ")
    assert {"value": "PMD", "label": "PMD"} in categories and {"value": "assessed", "label": "assessed"} in statuses
    assert csv_off is False and pdf_off is True  # tumour board may read reports, not make them
    assert refused[1] == "Your role may not make reports."
    with as_role(Role.ONCOLOGIST):
        *_, pdf_off = render_board("/dashboards/board/", None, ["assessed"], None)
    assert pdf_off is False


def test_csv_export_is_the_filtered_cohort(demo_app, as_role):
    with as_role(Role.TUMOUR_BOARD):
        download = export_csv(1, None, ["assessed"], None)
    rows = list(csv.DictReader(io.StringIO(download["content"])))
    assert {r["PatientID"]: r["PERCIST category"] for r in rows} == {"ONCO-RESP-001": "CMR", "ONCO-RESP-002": "PMD"}
    responder = next(r for r in rows if r["PatientID"] == "ONCO-RESP-001")
    assert (responder["RT start"], responder["RT end"], responder["RT dates from"]) == (
        "2024-02-19", "2024-04-02", "treatment records")
    assert responder["Response date"] == "2024-05-06" and responder["Prescription"] == "60 Gy(RBE) / 30 fx"
    assert download["filename"].endswith(".csv")


def test_pdf_is_made_through_the_reporting_service(demo_app, as_role):
    with as_role(Role.ONCOLOGIST):
        download, message = make_board_pdf(1, "ONCO-RESP-001")
    import base64

    pdf = base64.b64decode(download["content"])
    assert pdf.startswith(b"%PDF") and "Draft report" in message


def test_patient_name_with_script_is_text(demo_app, as_role):
    archive = demo_app.extensions["oncopacs.archive"]
    ds = small_ct_series(1, prefix="X")[0]
    ds.PatientName, ds.PatientID = XSS_NAME, "XSS-1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    assert archive.ingest_dataset(ds, source="test").acknowledged
    with as_role(Role.ONCOLOGIST):
        table = render_board("/dashboards/board/", None, None, None)[0]
    row = _grid_rows(table)["XSS-1"]
    # a text cell: AG Grid renders it as text; only the links column is markdown, built from URL-encoded identifiers
    assert row["patient"] == "<SCRIPT>ALERT('X')</SCRIPT>, Mallory"
    assert next(c for c in table.columnDefs if c["field"] == "patient").get("cellRenderer") is None
    assert row["pages"] == "[Response](/dashboards/response/XSS-1)"
    assert "dangerously_allow_code" not in as_json(table) and '"Script"' not in as_json(table)
    exported = rows_to_csv(read_board(archive))
    assert XSS_NAME in exported


def test_csv_cells_cannot_become_formulas():
    text = rows_to_csv([BoardRow("=HYPERLINK(1)", "+x", "S", "assessed", "PMD", None, "", diagnosis="@SUM(A1)")])
    assert "'=HYPERLINK(1)" in text and "'+x" in text and "'@SUM(A1)" in text


def test_board_over_http(demo_app, bearer):
    client = demo_app.test_client()
    outputs = [("cohort", "children"), ("count", "children"), ("site", "options"), ("status", "options"),
               ("category", "options"), ("pdf-patient", "options"), ("export-csv", "disabled"),
               ("make-pdf", "disabled")]
    inputs = [("url", "pathname", "/dashboards/board/"), ("site", "value", None), ("status", "value", None),
              ("category", "value", None)]
    answer = dash_update(client, "/dashboards/board/", outputs, inputs, bearer(Role.PHYSICIST))
    assert answer.status_code == 200, answer.text
    assert "ONCO-RESP-001" in answer.text and "CMR" in answer.text
    assert client.get("/dashboards/board/", headers=bearer(Role.REFERRER)).status_code == 403
    assert client.get("/dashboards/board/").status_code in (302, 401)
