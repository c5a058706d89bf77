"""The platform arrives whole: nothing can be stored before the ingest rules exist.

The start-up order bug of the first wave: ``oncopacs serve`` opened the DICOM port before the app
factory installed the rules, so what arrived in that window was never analysed. Here an RTSTRUCT,
RT Ion Plan and RT Dose are stored over C-STORE the moment the DICOM listener accepts, and their
DVH metrics must appear through ``/api/studies/<uid>/rt`` with no other call.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import RTDoseStorage, RTIonPlanStorage, RTStructureSetStorage

from oncopacs.auth.roles import Role
from oncopacs.phantom import build_demo_patient
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from tests.conftest import ServerProcess

PASSWORD = "correct horse battery"


def _wait_for_port(port: int, process: ServerProcess, timeout_s: float = 60.0) -> float:
    """Poll the DICOM port every 5 ms; the monotonic time it first accepted a connection."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.process is not None and process.process.poll() is None, process.log_path.read_text()[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                return time.monotonic()
        except OSError:
            time.sleep(0.005)
    raise AssertionError("the DICOM listener never opened")


def _get_json(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
    except OSError:
        return 0, {}  # HTTP not listening yet


@pytest.mark.slow
def test_rt_objects_stored_in_the_first_second_of_serve_are_analysed(tmp_path: Path):
    server = ServerProcess(tmp_path / "served")
    with open_platform(Settings(data_dir=server.data_dir)) as platform:  # an account for the API, before serve
        platform.users.add_user("physicist", Role.PHYSICIST, PASSWORD)
    patient = build_demo_patient("ONCO-START-001", "Phantom^Early")
    study_uid = str(patient.rt_dose.StudyInstanceUID)

    launched = time.monotonic()
    server.launch()
    try:
        opened = _wait_for_port(server.dicom_port, server)
        ae = AE(ae_title="EARLYSCU")
        for sop_class in (RTStructureSetStorage, RTIonPlanStorage, RTDoseStorage):
            ae.add_requested_context(sop_class)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ONCOPACS")
        assert assoc.is_established
        statuses = [assoc.send_c_store(ds).Status for ds in (patient.rtstruct, patient.rt_ion_plan, patient.rt_dose)]
        assoc.release()
        stored = time.monotonic()
        assert statuses == [0x0000, 0x0000, 0x0000]
        # The scenario, not a speed target: the objects arrive while the server is still starting (a loaded
        # CI machine may take a few seconds for three C-STOREs).
        assert stored - opened < 15.0, f"the three objects took {stored - opened:.2f} s after the listener opened"

        token = {"Authorization": "Basic " + base64.b64encode(f"physicist:{PASSWORD}".encode()).decode()}
        base = f"http://127.0.0.1:{server.http_port}/api"
        # /api/metrics/search only reads the index: the metrics are there because the ingest rule queued the
        # analysis (a GET of /rt would queue it on demand and hide a missing rule).
        search = f"{base}/metrics/search?structure=PTV&metric=D95%25[Gy]&gt=0"
        deadline = time.monotonic() + 120
        found: list[dict] = []
        while time.monotonic() < deadline and not found:
            status, body = _get_json(search, token)
            assert status in (0, 200), body  # 0: HTTP not listening yet
            found = [m for m in body.get("results", []) if m["study_instance_uid"] == study_uid]
            time.sleep(0.2)
        assert found, f"no DVH metrics {time.monotonic() - launched:.0f} s after launch"
        assert found[0]["value"] > 55.0

        status, body = _get_json(f"{base}/studies/{study_uid}/rt", token)
        assert status == 200, body  # computed already, not 202
        (planning_set,) = body["planning_sets"]
        assert planning_set["computed"] and planning_set["inputs"]["dose_uid"] == patient.rt_dose.SOPInstanceUID
        rois = {roi["name"]: roi for roi in planning_set["dvh"]["rois"]}
        assert rois["PTV"]["metrics"]["D95%[Gy]"] > 55.0
        assert planning_set["goals"]["goals"]
    finally:
        assert server.stop() == 0
