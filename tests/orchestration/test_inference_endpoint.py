"""External inference endpoints: a real inference service on loopback, run as a plug-in and as a job."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import SimpleITK as sitk
from pydicom import Dataset, dcmread

from fusion.rtstruct_writer import RoiContours, build_rtstruct, compute_mask_polygons
from fusion.volume import load_series
from oncopacs.analysis.results import find_results
from oncopacs.archive.ingest import Archive
from oncopacs.archive.part10 import encode_dataset
from oncopacs.dicomweb.multipart import BodyPart, build_multipart_content_type, read_multipart, write_multipart
from oncopacs.errors import ConfigError
from oncopacs.index.oncology import summarize_study
from oncopacs.jobs.queue import JobRecord
from oncopacs.jobs.worker import JobRegistry, Worker
from oncopacs.orchestration.inference import (
    EndpointConfig,
    InferenceEndpoint,
    InferenceError,
    endpoint_entries,
    merge_plugins,
    parse_endpoints,
)
from oncopacs.orchestration.plugin_metrics import KIND
from oncopacs.orchestration.plugins import PluginEntry, discover_plugins, run_plugin
from oncopacs.orchestration.rule_actions import PLUGIN_JOB, build_plugin_handler
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import Settings
from rt.structures import read_structure_set
from tests.conftest import free_port
from tests.factories import small_ct_series

THRESHOLD_HU = -300.0


def body_mask_rtstruct(ct: list[Dataset]) -> Dataset:
    """What the service's model makes: the voxels above -300 HU as an RT Structure Set on the received CT."""
    volume = load_series(ct)
    mask = sitk.BinaryThreshold(volume, lowerThreshold=THRESHOLD_HU, upperThreshold=1e6)
    roi = RoiContours("Body", compute_mask_polygons(mask), "EXTERNAL")
    return build_rtstruct(ct, [roi], label="SegAI", series_description="Body (seg-ai)", entropy=("seg-ai",))


def count_above_threshold(ct: list[Dataset]) -> int:
    """Voxels above -300 HU in ``ct``, from its stored pixels and rescale."""
    return int(sum((ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) > THRESHOLD_HU).sum()
                   for ds in ct))


class InferenceService:
    """A small inference service on 127.0.0.1 speaking the endpoint protocol; ``mode`` says what it answers."""

    def __init__(self) -> None:
        self.mode = "rtstruct"
        self.received: list[Dataset] = []
        self.received_json: dict | None = None
        self.release = threading.Event()  # ends a "sleep" answer early at teardown
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                service.answer(self, body, self.headers.get("Content-Type", ""))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/infer"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, request: BaseHTTPRequestHandler, body: bytes, content_type: str) -> None:
        if content_type.startswith("application/json"):
            self.received_json = json.loads(body)
            return self.reply(request, 200, "application/json",
                              json.dumps({"instances": len(self.received_json["sop_instance_uids"])}).encode())
        with read_multipart(io.BytesIO(body), content_type) as parts:
            self.received = [dcmread(io.BytesIO(part.read_bytes())) for part in parts.parts]
        if self.mode == "rtstruct":
            return self.reply_dicom(request, [body_mask_rtstruct(self.received)])
        if self.mode == "metrics":
            voxels = count_above_threshold(self.received)
            volume_cc = voxels * 0.9765625 * 0.9765625 * 1.0 / 1000
            return self.reply(request, 200, "application/json", json.dumps(
                {"voxels_above_-300HU": voxels, "Body": {"volume_cc": volume_cc}, "model": "threshold"}).encode())
        if self.mode == "sleep":
            self.release.wait(10)
            return self.reply(request, 200, "application/json", b"{}")
        if self.mode == "error":
            return self.reply(request, 500, "text/html", b"<html>Internal Server Error</html>")
        if self.mode == "html":
            return self.reply(request, 200, "text/html", b"<html>model output</html>")
        if self.mode == "other-study":
            product = body_mask_rtstruct(self.received)
            product.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
            return self.reply_dicom(request, [product])
        if self.mode == "ct":
            return self.reply_dicom(request, self.received[:1])
        if self.mode == "not-dicom":
            boundary = "b0undary"
            data = b"".join(write_multipart([BodyPart("application/dicom", b"not a DICOM file")], boundary))
            return self.reply(request, 200, build_multipart_content_type("application/dicom", boundary), data)
        if self.mode == "huge":
            return self.reply(request, 200, "application/json", b'{"x": "' + b"a" * (2 << 20) + b'"}')
        raise AssertionError(self.mode)

    def reply_dicom(self, request: BaseHTTPRequestHandler, datasets: list[Dataset]) -> None:
        boundary = "service-boundary"
        data = b"".join(write_multipart([BodyPart("application/dicom", encode_dataset(ds)) for ds in datasets],
                                        boundary))
        self.reply(request, 200, build_multipart_content_type("application/dicom", boundary), data)

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, content_type: str, data: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


@pytest.fixture
def service() -> Iterator[InferenceService]:
    running = InferenceService()
    running.thread.start()
    yield running
    running.release.set()
    running.server.shutdown()
    running.server.server_close()


def endpoint_table(url: str, **more: object) -> dict[str, object]:
    return {"name": "seg-ai", "url": url, "accepts": ["CT"], "produces": ["RTSTRUCT"], "version": "2.1", **more}


def endpoint(url: str, **more: object) -> InferenceEndpoint:
    (config,) = parse_endpoints([endpoint_table(url, **more)])
    return InferenceEndpoint(config)


def store_ct(archive: Archive, n: int = 3) -> list[Dataset]:
    ct = small_ct_series(n)
    for ds in ct:
        assert archive.ingest_dataset(ds, source="test").acknowledged
    return ct


@pytest.fixture
def sqlite_platform(sqlite_settings: Settings) -> Iterator[Platform]:
    with open_platform(sqlite_settings) as platform:
        yield platform


def run_as_job(platform: Platform, plugin: InferenceEndpoint, series: str) -> JobRecord:
    """Run ``plugin`` on ``series`` as the rules' plug-in job, through the job queue and a worker."""
    registry = JobRegistry()
    registry.register(PLUGIN_JOB, build_plugin_handler(platform.archive, {plugin.name: PluginEntry(
        plugin.name, f"endpoint:{plugin.config.url}", plugin)}))
    job_id = platform.jobs.queue.enqueue(PLUGIN_JOB, {"plugin": plugin.name, "series_instance_uid": series}, "test")
    assert Worker(platform.jobs.queue, registry).run_pending() == 1
    job = platform.jobs.queue.get(job_id)
    assert job is not None
    return job


# -- products and metrics -------------------------------------------------------------------------


def test_the_series_goes_out_as_multipart_and_the_rtstruct_comes_back_archived_with_provenance(
        archive: Archive, service: InferenceService):
    ct = store_ct(archive)
    series = str(ct[0].SeriesInstanceUID)
    run = run_plugin(archive, endpoint(service.url), series)
    assert sorted(str(ds.SOPInstanceUID) for ds in service.received) == sorted(str(ds.SOPInstanceUID) for ds in ct)
    assert len(run.stored) == 1 and run.refused == () and run.metrics is None
    assert (run.plugin, run.version) == ("seg-ai", "2.1")
    rtstruct = archive.read_instance(run.stored[0])
    assert rtstruct.Modality == "RTSTRUCT"
    equipment = rtstruct.ContributingEquipmentSequence[-1]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == ("seg-ai", "2.1")
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    body = next(r for r in read_structure_set(rtstruct).rois if r.name == "Body")
    assert body.contours  # the service's mask came back as contours
    with archive.index.reading() as session:  # linked to the CT it was drawn on
        summary = summarize_study(session, str(ct[0].StudyInstanceUID))
    drawn_on = [s for s in summary.structure_sets if s.sop_instance_uid == str(rtstruct.SOPInstanceUID)]
    assert drawn_on and series in drawn_on[0].image_series_uids
    again = run_plugin(archive, endpoint(service.url), series)  # the same answer: stored once
    assert again.stored == run.stored


def test_an_object_that_names_the_endpoint_already_is_not_given_a_second_item(service: InferenceService):
    plugin = endpoint(service.url)
    product = plugin.run(small_ct_series(3))[0]
    assert [i.ManufacturerModelName for i in product.ContributingEquipmentSequence] == ["seg-ai"]
    assert [i.ManufacturerModelName for i in plugin._name_producer(product).ContributingEquipmentSequence] == [
        "seg-ai"]


def test_json_metrics_are_stored_as_an_analysis_result_of_the_study(archive: Archive, service: InferenceService):
    service.mode = "metrics"
    ct = store_ct(archive)
    run = run_plugin(archive, endpoint(service.url), str(ct[0].SeriesInstanceUID))
    expected = count_above_threshold(ct)
    assert expected > 0 and run.stored == () and run.metrics is not None
    assert run.metrics["voxels_above_-300HU"] == expected and run.metrics["model"] == "threshold"
    with archive.index.reading() as session:
        (result,) = find_results(session, KIND, study_instance_uid=str(ct[0].StudyInstanceUID))
    assert result.document["plugin"] == "seg-ai" and result.document["metrics"] == run.metrics
    assert result.document["series_instance_uid"] == str(ct[0].SeriesInstanceUID)
    figures = {(m.structure, m.name): m.value for m in result.metrics}
    assert figures[("", "voxels_above_-300HU")] == expected
    assert figures[("Body", "volume_cc")] == pytest.approx(expected * 0.9765625**2 / 1000)
    assert len(figures) == 2  # the string "model" stays in the document only
    run_plugin(archive, endpoint(service.url), str(ct[0].SeriesInstanceUID))  # the same inputs: replaced, not added
    with archive.index.reading() as session:
        assert len(find_results(session, KIND, study_instance_uid=str(ct[0].StudyInstanceUID))) == 1


def test_metrics_land_in_the_job_result(sqlite_platform: Platform, service: InferenceService):
    service.mode = "metrics"
    ct = store_ct(sqlite_platform.archive)
    job = run_as_job(sqlite_platform, endpoint(service.url), str(ct[0].SeriesInstanceUID))
    assert job.status.value == "succeeded", job.message
    assert job.result["metrics"]["voxels_above_-300HU"] == count_above_threshold(ct)


def test_references_send_the_series_uids_and_its_dicomweb_urls(service: InferenceService):
    plugin = endpoint(service.url, send="references", dicomweb_url="https://pacs.example.org/dicom-web/")
    ct = small_ct_series(2)
    output = plugin.run_with_metrics(ct)
    sent = service.received_json
    study, series = str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)
    assert sent is not None and sent["sop_instance_uids"] == [str(ds.SOPInstanceUID) for ds in ct]
    assert sent["series_url"] == f"https://pacs.example.org/dicom-web/studies/{study}/series/{series}"
    assert sent["series_instance_uid"] == series and sent["modality"] == "CT"
    assert output.metrics == {"instances": 2} and output.products == ()
    assert service.received == []  # no pixel data left the archive


# -- failures are recorded on the job, in a sentence ------------------------------------------------


@pytest.mark.parametrize(("mode", "more", "says"), [
    ("sleep", {"timeout_seconds": 0.5}, "endpoint seg-ai timed out after 0.5 s"),
    ("error", {}, "endpoint seg-ai answered HTTP 500"),
    ("ct", {}, "endpoint seg-ai returned Modality CT, expected RTSTRUCT"),
    ("html", {}, 'endpoint seg-ai answered text/html, expected multipart/related; type="application/dicom" or '
                 "application/json"),
    ("not-dicom", {}, "endpoint seg-ai returned a part (1) that is not DICOM"),
    ("other-study", {}, "endpoint seg-ai returned an object of another patient or study"),
    ("huge", {"max_reply_mb": 1}, "endpoint seg-ai answered more than 1 MiB"),
])
def test_a_failing_endpoint_fails_its_job_with_a_sentence_and_stores_nothing(
        sqlite_platform: Platform, service: InferenceService, mode: str, more: dict, says: str):
    service.mode = mode
    ct = store_ct(sqlite_platform.archive)
    job = run_as_job(sqlite_platform, endpoint(service.url, **more), str(ct[0].SeriesInstanceUID))
    assert job.status.value == "failed" and job.message == says
    assert str(ct[0].PatientID) not in job.message and str(ct[0].PatientName) not in job.message
    with sqlite_platform.index.reading() as session:
        summary = summarize_study(session, str(ct[0].StudyInstanceUID))
    assert not summary.structure_sets


def test_an_endpoint_nobody_listens_on_fails_its_job(sqlite_platform: Platform):
    ct = store_ct(sqlite_platform.archive)
    port = free_port()
    job = run_as_job(sqlite_platform, endpoint(f"http://127.0.0.1:{port}/infer"), str(ct[0].SeriesInstanceUID))
    assert job.status.value == "failed"
    assert job.message == f"endpoint seg-ai at http://127.0.0.1:{port}/infer could not be reached (Connection refused)"


def test_the_plugin_raises_inference_error_not_a_library_exception(service: InferenceService):
    service.mode = "error"
    with pytest.raises(InferenceError, match=r"^endpoint seg-ai answered HTTP 500$"):
        endpoint(service.url).run(small_ct_series(1))


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("tables", "says"), [
    ([endpoint_table("ftp://models.example.org/x")], "inference endpoint 'seg-ai': url 'ftp://models.example.org/x' "
                                                     "is not an http:// or https:// URL"),
    ([endpoint_table("http://a/x"), endpoint_table("http://b/y")], "inference endpoint 'seg-ai' is configured twice"),
    ([endpoint_table("http://a/x", produce=["SEG"])], "inference endpoint 'seg-ai': unknown keys produce"),
    ([endpoint_table("http://a/x", accepts="CT")], "inference endpoint 'seg-ai': accepts must be a list"),
    ([endpoint_table("http://a/x", timeout_seconds=0)], "inference endpoint 'seg-ai': timeout_seconds 0 is not"),
    ([endpoint_table("http://a/x", send="dicomweb")], "inference endpoint 'seg-ai': send 'dicomweb' is neither"),
    ([endpoint_table("http://a/x", send="references")], "inference endpoint 'seg-ai': dicomweb_url '' "),
    ([{"url": "http://a/x"}], "inference endpoint #1: give a name"),
])
def test_a_malformed_endpoint_table_is_refused_naming_it(tables: list, says: str):
    with pytest.raises(ConfigError, match="^" + re.escape(says)):
        parse_endpoints(tables)


def test_endpoints_are_read_from_the_toml_file_as_plugin_entries(tmp_path: Path):
    config = tmp_path / "oncopacs.toml"
    config.write_text('[[inference]]\nname = "seg-ai"\nurl = "https://user:secret@ai.example.org:8443/infer?k=1"\n'
                      'accepts = ["ct"]\nproduces = ["SEG", "SR"]\ntimeout_seconds = 5\n', encoding="utf-8")
    settings = Settings.load(env={}, config_file=config)
    entries = endpoint_entries(settings)
    entry = entries["seg-ai"]
    assert entry.source == "endpoint:https://ai.example.org:8443/infer"  # no credentials in listings
    assert entry.to_dict()["accepts"] == {"modalities": ["CT"], "sop_classes": []}
    assert entry.to_dict()["produces"] == ["SEG", "SR"] and entry.to_dict()["version"] == "external"
    plugin = entry.plugin
    assert isinstance(plugin, InferenceEndpoint) and plugin.config == EndpointConfig(
        "seg-ai", "https://user:secret@ai.example.org:8443/infer?k=1", ("CT",), ("SEG", "SR"), 5.0,
        dicomweb_url="http://127.0.0.1:8042/dicom-web")  # this server, from its HTTP settings
    with pytest.raises(ConfigError, match="inference endpoint 'body-contour' has the name of an installed plug-in"):
        merge_plugins(discover_plugins(), {"body-contour": entry})


def test_oncopacs_inference_names_a_file_of_endpoint_tables(tmp_path: Path):
    tables = tmp_path / "inference.toml"
    tables.write_text('[[inference]]\nname = "dose-ai"\nurl = "http://10.0.0.7:9000/"\naccepts = ["CT", "RTDOSE"]\n'
                      'produces = ["SR"]\nsend = "references"\ndicomweb_url = "http://10.0.0.2:8042/dicom-web"\n',
                      encoding="utf-8")
    (config,) = parse_endpoints(Settings.load(env={"ONCOPACS_INFERENCE": str(tables)}).inference)
    assert (config.name, config.accepts, config.send) == ("dose-ai", ("CT", "RTDOSE"), "references")
    with pytest.raises(ConfigError, match=r"inference file .* cannot be read as TOML"):
        Settings.load(env={"ONCOPACS_INFERENCE": str(tmp_path / "missing.toml")})


# -- end to end: a rule runs the endpoint -----------------------------------------------------------


def test_a_series_rule_runs_the_endpoint_and_archives_its_answer(settings: Settings, service: InferenceService):
    configured = settings.with_overrides(
        inference=(endpoint_table(service.url),), stable_seconds=0,
        rules=({"name": "seg", "on": "series", "match": {"Modality": "CT"}, "analyse": ["seg-ai"]},))
    with open_platform(configured) as platform:
        ct = store_ct(platform.archive)
        assert "seg" in [f.rule.name for f in platform.rules.engine.fire_stable()]
        assert platform.jobs.new_worker().run_pending() >= 1
        (job,) = platform.jobs.queue.list(kind=PLUGIN_JOB).jobs
        assert job.status.value == "succeeded", job.message
        (uid,) = job.result["stored"]
        product = platform.archive.read_instance(uid)
        assert product.Modality == "RTSTRUCT" and product.ContributingEquipmentSequence[-1].ManufacturerModelName == (
            "seg-ai")
        assert sorted(str(d.SOPInstanceUID) for d in service.received) == sorted(str(d.SOPInstanceUID) for d in ct)
