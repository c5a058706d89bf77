"""Issue 23 (item 2), complete coverage: each operation on patient data, at each door, leaves its audit record.

One table, one row per operation and door. Each row performs its operation against real servers on loopback
(DIMSE, HTTP, MLLP) or runs the real CLI, then finds the one record it left after the rows before: its DICOM
audit EventID (through :mod:`oncopacs.audit.atna`), actor, source address, patient or study, and outcome.
"""

from __future__ import annotations

import copy
import getpass
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from dicomweb_client.api import DICOMwebClient
from flask import Flask
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from oncopacs.audit.atna import EVENT_KINDS, build_audit_message
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditEntry, AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.cli.main import main
from oncopacs.dimse.server import start_dimse
from oncopacs.ehr.listener import Hl7Listener
from oncopacs.ehr.wiring import build_dispatcher
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import RemoteAE, Settings
from oncopacs.web.app import create_app
from oncopacs.web.refusal_audit import Folding
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, free_port
from tests.ehr.test_listener import adt, msa, send
from tests.ehr.test_worklist import order_message
from tests.factories import small_ct_series, write_files
from tests.reporting.conftest import ingest_demo
from tests.web.conftest import serve_app

LOOPBACK = "127.0.0.1"
HOST = socket.gethostname()
OS_USER = getpass.getuser()
UNKNOWN_STUDY = "1.2.826.0.1.3680043.8.498.999999"


@dataclass
class Site:
    """Everything the rows act on: one platform, its DIMSE, HTTP and MLLP listeners, and what it holds."""

    platform: Platform
    app: Flask
    dimse: tuple[str, int]
    guarded_dimse: tuple[str, int]  # the same archive behind an allow-list naming only TRUSTED
    url: str
    hl7_port: int
    held: list[Dataset]  # one stored series (patient COV-P)
    report_id: int
    demo_patient: str
    tokens: dict[Role, str] = field(default_factory=dict)
    folder: Path = Path()

    @property
    def patient(self) -> str:
        return str(self.held[0].PatientID)

    @property
    def study(self) -> str:
        return str(self.held[0].StudyInstanceUID)

    def headers(self, role: Role) -> dict[str, str]:
        if role not in self.tokens:
            users = self.platform.users
            users.add_user(f"cov-{role.value}", role, "correct horse battery")
            self.tokens[role] = users.create_token(f"cov-{role.value}")
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: Role | None, **params: str) -> requests.Response:
        return requests.get(self.url + path, params=params, headers=self.headers(role) if role else {}, timeout=30)

    def dicomweb(self, role: Role) -> DICOMwebClient:
        return DICOMwebClient(f"{self.url}/dicom-web", headers=self.headers(role))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("coverage")
    destination = AE(ae_title="DEST")
    destination.add_supported_context(CTImageStorage)
    dest_port = free_port()
    receiver = destination.start_server((LOOPBACK, dest_port), block=False,
                                        evt_handlers=[(evt.EVT_C_STORE, lambda _e: 0)])
    settings = Settings(data_dir=folder / "data", dicom_host=LOOPBACK, dicom_port=0, secret_key="coverage",
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES, remote_aes=(RemoteAE("DEST", LOOPBACK, dest_port),),
                        hl7_listen_host=LOOPBACK, hl7_listen_port=0, hl7_allowed_senders=("EPIC^HOSP", "RIS"))
    with open_platform(settings) as platform:
        held = small_ct_series(2, prefix="COVP")
        for dataset in held:
            assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
        demo = ingest_demo(platform.archive)
        report = platform.reports.service.make("plan", str(demo.rt_ion_plan.StudyInstanceUID), "cov-physicist")
        dimse = start_dimse(settings, platform.archive)
        guarded = start_dimse(settings.with_overrides(allowed_aes=("TRUSTED",)), platform.archive)
        listener = Hl7Listener(settings, build_dispatcher(settings, platform.index, platform.audit,
                                                          platform.ehr_handlers))
        listener.start()
        app = create_app(platform)
        app.extensions["oncopacs.refusal_folding"] = Folding(window_s=0.0)  # each row's 401 recorded; see below
        try:
            with serve_app(app) as url:
                yield Site(platform, app, (LOOPBACK, dimse.server_address[1]), (LOOPBACK, guarded.server_address[1]),
                           url, listener.port, held, report.id, demo.patient.patient_id, folder=folder)
        finally:
            listener.stop()
            dimse.shutdown()
            guarded.shutdown()
            receiver.shutdown()


# -- the operations ------------------------------------------------------------------------------------------------


def _association(site: Site, title: str, *contexts, address: tuple[str, int] | None = None, **options):
    ae = AE(ae_title=title)
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate(*(address or site.dimse), **options)


def _study_query(site: Site) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = site.patient
    query.StudyInstanceUID = site.study
    return query


def c_store(site: Site) -> None:
    assoc = _association(site, "MODALITY", CTImageStorage)
    assert [assoc.send_c_store(ds).Status for ds in small_ct_series(1, prefix="COVS")] == [0]
    assoc.release()


def c_store_refused(site: Site) -> None:
    changed = copy.deepcopy(site.held[0])  # the stored SOP Instance UID with other content: 0x0111
    changed.SeriesDescription = "changed"
    assoc = _association(site, "MODALITY", CTImageStorage)
    assert assoc.send_c_store(changed).Status == 0x0111
    assoc.release()


def c_find(site: Site) -> None:
    assoc = _association(site, "VIEWER", StudyRootQueryRetrieveInformationModelFind)
    statuses = [s.Status for s, _ in assoc.send_c_find(_study_query(site), StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert statuses == [0xFF00, 0]


def c_get(site: Site) -> None:
    assoc = _association(site, "VIEWER", StudyRootQueryRetrieveInformationModelGet, CTImageStorage,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda _e: 0)])
    final = [s for s, _ in assoc.send_c_get(_study_query(site), StudyRootQueryRetrieveInformationModelGet)][-1]
    assoc.release()
    assert final.Status == 0


def c_move(site: Site) -> None:
    assoc = _association(site, "MOVER", StudyRootQueryRetrieveInformationModelMove)
    answers = assoc.send_c_move(_study_query(site), "DEST", StudyRootQueryRetrieveInformationModelMove)
    final = [s for s, _ in answers][-1]
    assoc.release()
    assert final.Status == 0


def association_rejected(site: Site) -> None:
    assert _association(site, "STRANGER", Verification, address=site.guarded_dimse).is_rejected


def stow(site: Site) -> None:
    site.dicomweb(Role.PHYSICIST).store_instances(small_ct_series(1, prefix="COVW"))


def qido(site: Site) -> None:
    assert site.dicomweb(Role.PHYSICIST).search_for_studies(search_filters={"PatientID": site.patient})


def wado(site: Site) -> None:
    assert len(site.dicomweb(Role.PHYSICIST).retrieve_study(site.study)) == len(site.held)


def dicomweb_401(site: Site) -> None:
    assert site.get(f"/dicom-web/studies/{site.study}/metadata", None).status_code == 401


def dicomweb_403(site: Site) -> None:
    assert site.get("/dicom-web/studies", Role.REFERRER, PatientID=site.patient).status_code == 403


def dicomweb_404(site: Site) -> None:
    assert site.get(f"/dicom-web/studies/{UNKNOWN_STUDY}/metadata", Role.PHYSICIST).status_code == 404


def viewer_403(site: Site) -> None:
    assert site.get("/viewer", Role.REFERRER, StudyInstanceUIDs=site.study).status_code == 403


def dashboard_403(site: Site) -> None:
    assert site.get("/dashboards/board/", Role.REFERRER).status_code == 403


def page_sign_in(site: Site) -> None:
    reply = requests.get(f"{site.url}/viewer", params={"StudyInstanceUIDs": site.study}, allow_redirects=False,
                         headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}, timeout=30)
    assert reply.status_code == 302 and reply.headers["Location"].startswith("/login")


def slice_401(site: Site) -> None:
    assert site.get(f"/slices/{site.study}/axial/0.png", None).status_code == 401


def api_read(site: Site) -> None:
    assert site.get(f"/api/patients/{site.patient}", Role.PHYSICIST).status_code == 200


def api_404(site: Site) -> None:
    assert site.get(f"/api/studies/{UNKNOWN_STUDY}", Role.PHYSICIST).status_code == 404


def dashboard(site: Site) -> None:
    body = {
        "output": "..cohort.children...count.children...site.options...status.options...category.options..."
                  "pdf-patient.options...export-csv.disabled...make-pdf.disabled..",
        "outputs": [{"id": i, "property": p} for i, p in (
            ("cohort", "children"), ("count", "children"), ("site", "options"), ("status", "options"),
            ("category", "options"), ("pdf-patient", "options"), ("export-csv", "disabled"), ("make-pdf", "disabled"))],
        "inputs": [{"id": "url", "property": "pathname", "value": "/dashboards/board/"},
                   *({"id": i, "property": "value", "value": None} for i in ("site", "status", "category"))],
        "changedPropIds": ["url.pathname"],
        "state": [],
    }
    reply = requests.post(f"{site.url}/dashboards/board/_dash-update-component", json=body,
                          headers=site.headers(Role.TUMOUR_BOARD), timeout=60)
    assert reply.status_code == 200, reply.text[:300]


def report_view(site: Site) -> None:
    assert site.get(f"/api/reports/{site.report_id}", Role.REFERRER).status_code == 200


def report_pdf(site: Site) -> None:
    reply = site.get(f"/api/reports/{site.report_id}/pdf", Role.REFERRER)
    assert reply.status_code == 200 and reply.content.startswith(b"%PDF")


def _cli(site: Site, *args: str) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(site.platform.settings.data_dir), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def cli_import(site: Site) -> None:
    write_files(small_ct_series(1, prefix="COVI"), site.folder / "import")
    _cli(site, "import", str(site.folder / "import"))


def cli_report(site: Site) -> None:
    study = site.platform.reports.service.store.get(site.report_id).study_uid
    _cli(site, "report", "make", "plan", "--study", study, "--out", str(site.folder / "plan.pdf"))


def cli_backup(site: Site) -> None:
    _cli(site, "backup", "--out", str(site.folder / "backup"), "--json")


def hl7_adt(site: Site) -> None:
    assert msa(send(site.hl7_port, adt("COV-ADT")))[0] in ("AA", "AE")


def hl7_orm(site: Site) -> None:
    assert msa(send(site.hl7_port, order_message("NW", "COV1", patient=("COV-ORM", "DOE^JANE"))))[0] == "AA"


def audit_read(site: Site) -> None:
    assert site.get("/api/audit", Role.ADMIN, limit="5").status_code == 200


def audit_export(site: Site) -> None:
    assert site.get("/api/audit/export", Role.ADMIN, format="json").status_code == 200


def cli_audit_verify(site: Site) -> None:
    _cli(site, "audit", "verify")


# -- the table -----------------------------------------------------------------------------------------------------

Who = Callable[[Site], str]


@dataclass(frozen=True)
class Row:
    """One operation at one door, and the record it must leave."""

    operation: str
    door: str
    perform: Callable[[Site], None]
    action: AuditAction
    event_id: str  # the DICOM audit EventID (PS3.15 A.5.3) that the record is sent as
    outcome: Outcome
    actor: str
    source: str = LOOPBACK
    patient: Who | None = None  # the patient ID the record must name
    study: Who | None = None  # the Study Instance UID the record must name
    detail_has: str = ""


def held_patient(site: Site) -> str:
    return site.patient


def held_study(site: Site) -> str:
    return site.study


def demo_patient(site: Site) -> str:
    return site.demo_patient


def fixed(value: str) -> Who:
    return lambda _site: value


A, U = AuditAction, Outcome
ROWS: tuple[Row, ...] = (
    Row("store", "DIMSE C-STORE", c_store, A.STORE, "110104", U.SUCCESS, "MODALITY", patient=fixed("COVS-00000")),
    Row("refused store", "DIMSE C-STORE", c_store_refused, A.STORE, "110104", U.SERIOUS_FAILURE, "MODALITY",
        patient=held_patient, detail_has="0x0111 already stored with different content"),
    Row("query", "DIMSE C-FIND", c_find, A.QUERY, "110112", U.SUCCESS, "VIEWER", patient=held_patient,
        study=held_study),
    Row("retrieve", "DIMSE C-GET", c_get, A.RETRIEVE, "110104", U.SUCCESS, "VIEWER", patient=held_patient,
        study=held_study),
    Row("retrieve to a peer", "DIMSE C-MOVE", c_move, A.RETRIEVE, "110104", U.SUCCESS, "MOVER", patient=held_patient,
        study=held_study, detail_has="C-MOVE to DEST"),
    Row("association rejected", "DIMSE A-ASSOCIATE", association_rejected, A.ASSOCIATION_REFUSED, "110113",
        U.SERIOUS_FAILURE, "STRANGER"),
    Row("store", "DICOMweb STOW-RS", stow, A.STORE, "110104", U.SUCCESS, "cov-physicist", patient=fixed("COVW-00000")),
    Row("query", "DICOMweb QIDO-RS", qido, A.QUERY, "110112", U.SUCCESS, "cov-physicist", patient=held_patient),
    Row("retrieve", "DICOMweb WADO-RS", wado, A.RETRIEVE, "110104", U.SUCCESS, "cov-physicist", patient=held_patient,
        study=held_study),
    Row("401 no credentials", "DICOMweb", dicomweb_401, A.LOGIN_FAILED, "110114", U.SERIOUS_FAILURE, "anonymous",
        study=held_study, detail_has="GET /dicom-web/studies/"),
    Row("403 role may not", "DICOMweb QIDO-RS", dicomweb_403, A.QUERY, "110112", U.SERIOUS_FAILURE, "cov-referrer",
        patient=held_patient, detail_has="GET /dicom-web/studies?PatientID=…: 403"),
    Row("404 unknown study", "DICOMweb WADO-RS", dicomweb_404, A.RETRIEVE, "110104", U.MINOR_FAILURE, "cov-physicist",
        study=fixed(UNKNOWN_STUDY)),
    Row("sign-in required", "viewer link (browser)", page_sign_in, A.LOGIN_FAILED, "110114", U.SERIOUS_FAILURE,
        "anonymous", study=held_study, detail_has="GET /viewer?StudyInstanceUIDs=…: sign-in required"),
    Row("403 role may not", "viewer link", viewer_403, A.RETRIEVE, "110104", U.SERIOUS_FAILURE, "cov-referrer",
        study=held_study),
    Row("401 no credentials", "slice image", slice_401, A.LOGIN_FAILED, "110114", U.SERIOUS_FAILURE, "anonymous",
        study=held_study),
    Row("read patient", "API", api_read, A.READ, "110110", U.SUCCESS, "cov-physicist", patient=held_patient),
    Row("404 unknown study", "API", api_404, A.READ, "110110", U.MINOR_FAILURE, "cov-physicist",
        study=fixed(UNKNOWN_STUDY)),
    Row("tumour board", "dashboard", dashboard, A.READ, "110110", U.SUCCESS, "cov-tumour_board"),
    Row("403 role may not", "dashboard", dashboard_403, A.READ, "110110", U.SERIOUS_FAILURE, "cov-referrer",
        detail_has="GET /dashboards/board/: 403 Forbidden"),
    Row("report view", "API", report_view, A.REPORT_VIEW, "110110", U.SUCCESS, "cov-referrer", patient=demo_patient),
    Row("report PDF export", "API", report_pdf, A.EXPORT, "110106", U.SUCCESS, "cov-referrer", patient=demo_patient),
    Row("import", "CLI", cli_import, A.STORE, "110104", U.SUCCESS, OS_USER, HOST, patient=fixed("COVI-00000")),
    Row("report PDF export", "CLI", cli_report, A.EXPORT, "110106", U.SUCCESS, OS_USER, HOST, patient=demo_patient,
        detail_has="cli: report make"),
    Row("backup", "CLI", cli_backup, A.EXPORT, "110106", U.SUCCESS, OS_USER, HOST, detail_has="oncopacs backup"),
    Row("ADT", "HL7 MLLP", hl7_adt, A.PATIENT_RECORD, "110110", U.SUCCESS, "EPIC^HOSP", patient=fixed("PAT-7731")),
    Row("ORM order", "HL7 MLLP", hl7_orm, A.ORDER_RECORD, "110109", U.SUCCESS, "RIS^HOSP", patient=fixed("COV-ORM")),
    Row("read the audit trail", "API", audit_read, A.AUDIT_LOG_USED, "110101", U.SUCCESS, "cov-admin"),
    Row("export the audit trail", "API", audit_export, A.EXPORT, "110106", U.SUCCESS, "cov-admin",
        detail_has="GET /api/audit/export"),
    Row("verify the audit trail", "CLI", cli_audit_verify, A.AUDIT_LOG_USED, "110101", U.SUCCESS, OS_USER, HOST),
)


def _newest_id(site: Site) -> int:
    page = site.platform.audit.query(AuditFilter(), limit=1, offset=0)
    total = page.total
    last = site.platform.audit.query(AuditFilter(), limit=1, offset=max(total - 1, 0)).entries
    return last[0].id if last else 0


def _records_after(site: Site, after: int, action: AuditAction, timeout_s: float = 10.0) -> list[AuditEntry]:
    """The records of ``action`` newer than ``after``, waiting for the first (DIMSE writes at association end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in site.platform.audit.iter_entries(AuditFilter(action=action)) if e.id > after]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.door}: {r.operation}" for r in ROWS])
def test_each_operation_leaves_its_record(site: Site, row: Row) -> None:
    before = _newest_id(site)
    row.perform(site)
    found = _records_after(site, before, row.action)
    assert len(found) == 1, [(e.actor, e.outcome, e.detail) for e in found]
    (record,) = found
    message = build_audit_message(record, "ONCOPACS")
    event = message.find("EventIdentification")
    assert event is not None and event.get("EventOutcomeIndicator") == str(row.outcome.value)
    assert event.find("EventID").get("csd-code") == EVENT_KINDS[row.action].event_id.value == row.event_id
    assert (record.actor, record.source) == (row.actor, row.source)
    if row.patient is not None:
        assert row.patient(site) in record.patient_ids, record.patient_ids
    if row.study is not None:
        assert row.study(site) in record.study_uids, record.study_uids
    assert row.detail_has in record.detail


def test_a_refusal_carries_no_query_values(site: Site) -> None:
    before = _newest_id(site)
    reply = site.get("/dicom-web/studies", Role.REFERRER, PatientName="Quill*", PatientID=site.patient)
    assert reply.status_code == 403
    (record,) = _records_after(site, before, AuditAction.QUERY)
    assert "Quill" not in record.detail and f"={site.patient}" not in record.detail
    assert record.patient_ids == (site.patient,)


def test_bad_credentials_leave_only_the_failed_sign_in(site: Site) -> None:
    before = _newest_id(site)
    reply = requests.get(f"{site.url}/dicom-web/studies/{site.study}/metadata", timeout=30,
                         headers={"Authorization": "Bearer not-a-token"})
    assert reply.status_code == 401
    (record,) = _records_after(site, before, AuditAction.LOGIN_FAILED)
    assert record.actor == "(token)" and "bearer" in record.detail


def test_doors_that_hold_no_patient_data_are_not_audited(site: Site) -> None:
    before = _newest_id(site)
    for path in ("/health", "/static/nowhere.css", "/login", "/api/me", "/viewer/app-config.js",
                 "/dashboards/board/_dash-component-suites/dash/nowhere.js", "/dashboards/board/assets/x.css"):
        assert site.get(path, None).status_code in (200, 401, 404), path
    assert site.get("/static/nowhere.css", Role.PHYSICIST).status_code == 404
    time.sleep(0.2)
    assert _newest_id(site) == before


def test_an_anonymous_401_flood_is_folded_per_address_and_second(site: Site) -> None:
    site.app.extensions["oncopacs.refusal_folding"] = Folding(window_s=1.0)
    try:
        before = _newest_id(site)
        started = time.monotonic()
        for _ in range(20):
            assert site.get(f"/dicom-web/studies/{site.study}/metadata", None).status_code == 401
        elapsed = time.monotonic() - started
        records = _records_after(site, before, AuditAction.LOGIN_FAILED)
        assert 1 <= len(records) <= int(elapsed) + 1
        time.sleep(1.0)
        assert site.get(f"/dicom-web/studies/{site.study}/metadata", None).status_code == 401
        last = _records_after(site, before, AuditAction.LOGIN_FAILED)[-1]
        assert "more such refusal(s) from this address folded into this record" in last.detail
    finally:
        site.app.extensions["oncopacs.refusal_folding"] = Folding(window_s=0.0)


def test_folding_keeps_a_bounded_table() -> None:
    folding = Folding(window_s=1.0, max_sources=2)
    assert [folding.admit(a, 0.0) for a in ("a", "a", "b", "c", "d")] == [0, None, 0, 0, None]
    assert folding.admit("a", 1.5) == 1  # a's folded refusal is counted in its next record
