"""The tumour-board cohort: rows, filters, CSV, the PDF by role, text-only rendering of names."""

from __future__ import annotations

import csv
import io

from pydicom.uid import generate_uid

from dashboards.board import (
    export_csv,
    make_board_pdf,
    read_board,
    render_board,
    rows_to_csv,
)
from oncopacs.auth.roles import Role
from tests.dashboards.conftest import as_json, dash_update, texts, with_class
from tests.factories import small_ct_series

XSS_NAME = "<script>alert('x')</script>^Mallory"


def test_rows_carry_latest_percist_category_and_status(demo_app):
    rows = {r.patient_id: r for r in read_board(demo_app.extensions["oncopacs.archive"])}
    assert rows["ONCO-RESP-001"].category == "CMR" and rows["ONCO-RESP-001"].status == "assessed"
    assert rows["ONCO-RESP-002"].category == "PMD"
    assert rows["ONCO-RESP-001"].last_time_point.startswith("2024-")
    assert rows["ONCO-DEMO-001"].category == "none" and rows["ONCO-DEMO-001"].status == "planned"


def test_filters_and_role_controls(demo_app, as_role):
    with as_role(Role.TUMOUR_BOARD):
        table, count, _sites, statuses, categories, _patients, csv_off, pdf_off = render_board(
            "/dashboards/board/", None, None, ["PMD"])
        refused = make_board_pdf(1, "ONCO-RESP-002")
    assert with_class(table, "percist") == ["PMD"] and "ONCO-RESP-002" in as_json(table)
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
    assert XSS_NAME in texts(table)  # a string child: React renders it as text, never as markup
    assert "dangerously_allow_html" not in as_json(table) and '"Script"' not in as_json(table)
    exported = rows_to_csv(read_board(archive))
    assert XSS_NAME in exported


def test_csv_cells_cannot_become_formulas():
    from dashboards.board import BoardRow

    text = rows_to_csv([BoardRow("=HYPERLINK(1)", "+x", "S", "assessed", "PMD", "", "")])
    assert "'=HYPERLINK(1)" in text and "'+x" in text


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
