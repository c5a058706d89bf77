"""Draft -> final -> superseded, the archived Encapsulated PDF (WADO-RS byte-identical), and the PDF's content."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage

from oncopacs.auth.roles import Principal, Role
from oncopacs.errors import OncopacsError, PermissionDeniedError
from oncopacs.reports.store import ReportStatus
from oncopacs.web.app import create_app
from reporting.encapsulated import read_encapsulated_pdf, report_series_uid
from tests.conftest import require
from tests.reporting.conftest import PHYSICIST, make_service, pdf_text
from tests.web.conftest import serve_app


def test_plan_report_draft_approve_amend_and_archive(platform, archive, demo, settings, tmp_path, clock) -> None:
    service = make_service(archive, tmp_path, clock)
    study_uid = str(demo.rt_ion_plan.StudyInstanceUID)
    draft = service.make("plan", study_uid, "dr-physicist")
    assert draft.status is ReportStatus.DRAFT and draft.version == 1 and draft.pdf_size > 1000
    assert "DRAFT" in pdf_text(service.read_pdf(draft), tmp_path)

    with pytest.raises(PermissionDeniedError):
        service.approve(draft.id, Principal("someone", Role.REFERRER, "test"))
    final = service.approve(draft.id, PHYSICIST)
    assert final.status is ReportStatus.FINAL and final.approved_by == "dr-physicist" and final.sop_instance_uid
    with pytest.raises(OncopacsError):
        service.approve(draft.id, PHYSICIST)  # nothing final is approved (changed) again

    # Stored in the patient's study, retrievable over WADO-RS: the very PDF of the final report.
    pdf = service.read_pdf(final)
    app = create_app(platform)
    store = app.extensions["oncopacs.users"]
    store.add_user("reader", Role.PHYSICIST, "correct horse battery")
    with serve_app(app) as base_url:
        client = DICOMwebClient(f"{base_url}/dicom-web",
                                headers={"Authorization": f"Bearer {store.create_token('reader')}"})
        found = client.search_for_instances(study_uid, search_filters={"Modality": "DOC"})
        assert [item["00080018"]["Value"][0] for item in found] == [final.sop_instance_uid]
        archived = client.retrieve_instance(study_uid, str(report_series_uid(study_uid, "plan")),
                                            final.sop_instance_uid)
    assert (archived.SOPClassUID == EncapsulatedPDFStorage
            and archived.MIMETypeOfEncapsulatedDocument == "application/pdf")
    assert archived.PatientID == demo.patient.patient_id and archived.StudyInstanceUID == study_uid
    assert read_encapsulated_pdf(archived) == pdf
    assert read_encapsulated_pdf(_c_get_instance(settings, archive, study_uid, final.sop_instance_uid)) == pdf

    amendment = service.amend(final.id, "dr-physicist")
    assert amendment.version == 2 and amendment.supersedes_id == final.id
    assert service.store.get(final.id).status is ReportStatus.FINAL  # until the amendment is approved
    approved = service.approve(amendment.id, PHYSICIST)
    assert approved.status is ReportStatus.FINAL
    old = service.store.get(final.id)
    assert old.status is ReportStatus.SUPERSEDED and old.pdf_sha256 == final.pdf_sha256  # kept, not edited
    with pytest.raises(OncopacsError):
        service.amend(final.id, "dr-physicist")  # a superseded version cannot be amended


def _c_get_instance(settings, archive, study_uid: str, sop_instance_uid: str):
    """The instance as a DICOM C-GET from the archive's own DIMSE service returns it."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    from oncopacs.dimse.server import start_dimse

    received = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    server = start_dimse(settings.with_overrides(dicom_host="127.0.0.1", dicom_port=0), archive)
    try:
        ae = AE(ae_title="REPORTSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(EncapsulatedPDFStorage)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title=settings.ae_title,
                             ext_neg=[build_role(EncapsulatedPDFStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = str(report_series_uid(study_uid, "plan"))
        query.SOPInstanceUID = sop_instance_uid
        statuses = [status.Status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses[-1] == 0x0000 and len(received) == 1
    return received[0]


def test_plan_pdf_text_fonts_and_pages(sqlite_settings, tmp_path, clock) -> None:
    from oncopacs.platform import open_archive
    from tests.reporting.conftest import ingest_demo

    archive = open_archive(sqlite_settings)
    try:
        demo = ingest_demo(archive)
        service = make_service(archive, tmp_path, clock)
        report = service.approve(service.make("plan", str(demo.rt_ion_plan.StudyInstanceUID), "dr-physicist").id,
                                 PHYSICIST)
        pdf = service.read_pdf(report)
        data = report.data
    finally:
        archive.close()
    text = pdf_text(pdf, tmp_path)
    pages = [page for page in text.split("\f") if page.strip()]
    assert len(pages) >= 2
    for number, page in enumerate(pages, start=1):  # patient identification and page number on every page
        assert "ONCO-DEMO-001" in page and f"Page {number} of {len(pages)}" in page
    ptv = next(r for r in data["dvh"]["rois"] if r["name"] == "PTV")
    for metric in ("Mean[Gy]", "D95%[Gy]", "D2%[Gy]"):
        assert f"{ptv['metrics'][metric]:.2f}" in text
    assert "60.00 Gy" in text and "30 × 2.000 Gy" in text and "L_LAT_G90" in text and "131.6 MeV" in text
    assert "Pass" in text and "Not evaluated" in text and "FINAL" in text and "dr-physicist" in text
    assert "Max ≤ 110 %" in text and "outside the dose grid" in text  # the goals as the plan page words them
    assert "entirely outside the dose grid" in text  # SpinalCord: reported, not dropped
    statuses = {row["status"] for row in data["goals"]["rows"]}
    assert "pass" in statuses
    if shutil.which("pdffonts"):
        fonts = subprocess.run(["pdffonts", str(tmp_path / "report.pdf")], capture_output=True, text=True,
                               check=True).stdout
        rows = fonts.splitlines()[2:]
        assert rows and all(" yes " in row for row in rows)  # every font embedded
    require(shutil.which("pdftoppm") is not None, "pdftoppm is not installed (apt-get install poppler-utils)")
    subprocess.run(["pdftoppm", "-png", "-r", "40", str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True)
    assert len(list(tmp_path.glob("page-*.png"))) == len(pages)


def test_unknown_study_and_type(archive, tmp_path, clock) -> None:
    service = make_service(archive, tmp_path, clock)
    with pytest.raises(OncopacsError):
        service.make("plan", "1.2.3.4", "x")
    with pytest.raises(ValueError):
        service.make("nonsense", "1.2.3.4", "x")


