"""De-identified export to a remote AE (dcmtk's storescp) and to a DICOMweb server (a second OncoPACS), for real.

The planted patient of :mod:`tests.orchestration.test_deid_sentinel` (a sentinel in every text attribute) is
exported; what the peer received is scanned for the sentinels and its RT references are resolved.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import Dataset, dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditFilter
from oncopacs.auth.roles import Role
from oncopacs.cli import main
from oncopacs.errors import ConfigError, RemoteNodeError
from oncopacs.index.models import Instance, Patient, Series, Study
from oncopacs.orchestration import DirectorySink, export_deidentified
from oncopacs.orchestration.deid_sinks import AeSink, StowSink, TargetKind, parse_export_target, sink_for
from oncopacs.orchestration.dicomweb_auth import parse_dicomweb_auth
from oncopacs.orchestration.rule_actions import EXPORT_JOB
from oncopacs.platform import Platform, open_platform
from oncopacs.settings import RemoteAE, Settings
from tests.conftest import TEST_AUDIT_SPOOL_BYTES, TEST_SECRET_KEY, free_port
from tests.factories import small_ct_series
from tests.orchestration.conftest import assert_references_resolve, ingest, patient_datasets, small_patient, uid_map
from tests.orchestration.test_deid_sentinel import ACCESSION, BIRTH_DATE, FAMILY, GIVEN, MARKER, NAME, PATIENT_ID, plant
from tests.orchestration.test_outbox_delivery import StoreSCP
from tests.web.conftest import serve_app

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

SENTINELS = [w.lower().encode() for w in (FAMILY, GIVEN, PATIENT_ID, BIRTH_DATE, ACCESSION, MARKER)]


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """dcmtk's storescp as AE DEST on a free loopback port, started."""
    scp = StoreSCP(free_port(), tmp_path / "received", tmp_path / "storescp.log")
    scp.start()
    yield scp
    scp.stop()


@pytest.fixture
def planted(deid_platform: Platform) -> tuple[Platform, list[Dataset]]:
    """A phantom patient (CT, RTSTRUCT, RT Ion Plan, RTDOSE, PET-CT, REG), every text attribute a sentinel."""
    datasets = patient_datasets(small_patient(PATIENT_ID, NAME))
    counter = itertools.count(1000)
    for ds in datasets:
        ds.AccessionNumber, ds.PatientBirthDate = ACCESSION, BIRTH_DATE
        ds.OtherPatientIDs, ds.InstitutionName, ds.ImageComments = f"{PATIENT_ID}-B", NAME, f"{NAME} {PATIENT_ID}"
        plant(ds, counter)
    ingest(deid_platform, datasets)
    return deid_platform, datasets


def studies_of(datasets: list[Dataset]) -> list[str]:
    return sorted({str(ds.StudyInstanceUID) for ds in datasets})


def assert_no_sentinel(parts: list[bytes]) -> None:
    for word in SENTINELS:
        leaks = sum(word in part.lower() for part in parts)
        assert not leaks, f"{word!r} survives in {leaks} received object(s)"


def last_export_outcome(platform: Platform) -> Outcome:
    entries = platform.audit.query(AuditFilter(action=AuditAction.EXPORT), limit=1000).entries
    return Outcome(entries[-1].outcome)


# -- C-STORE ------------------------------------------------------------------------------------------------


def test_export_to_an_ae_arrives_de_identified_in_one_association(planted, storescp: StoreSCP):
    platform, datasets = planted
    sink = sink_for("DEST", [RemoteAE("DEST", "127.0.0.1", storescp.port)], timeout_s=10.0)
    assert isinstance(sink, AeSink)
    summary = export_deidentified(platform.archive, platform.audit, studies_of(datasets), sink, actor="t", source="t")
    files = sorted(storescp.out_dir.iterdir())
    assert summary.instances == sink.sent == len(files) == len(datasets)
    assert_no_sentinel([path.read_bytes() for path in files])
    received = [dcmread(path) for path in files]
    assert {ds.PatientID for ds in received} == set(summary.pseudonyms)
    assert {ds.PatientIdentityRemoved for ds in received} == {"YES"}
    assert assert_references_resolve(datasets, received, uid_map(platform)) > 100
    assert storescp.log_path.read_text().count("Association Acknowledged") == 1  # (TCP probes are received too)
    assert last_export_outcome(platform) is Outcome.SUCCESS


def test_a_refused_store_names_the_ae_and_the_dimse_status(planted):
    platform, datasets = planted
    ae = AE("DEST")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0xA700)])
    try:
        remote = RemoteAE("DEST", "127.0.0.1", server.server_address[1])
        with pytest.raises(RemoteNodeError, match=r"DEST at 127\.0\.0\.1:\d+ refused .*C-STORE status 0xA700"):
            export_deidentified(platform.archive, platform.audit, studies_of(datasets),
                                sink_for("DEST", [remote], timeout_s=10.0), actor="t", source="t")
    finally:
        server.shutdown()
    assert last_export_outcome(platform) is Outcome.MAJOR_FAILURE


# -- STOW-RS to a second OncoPACS -----------------------------------------------------------------------------


class _CountingPosts:
    """A WSGI wrapper counting the POST requests that reach the app (the app checks their credentials itself)."""

    def __init__(self, app) -> None:
        self.app, self.posts = app, 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            with self._lock:
                self.posts += 1
        return self.app(environ, start_response)


def token_auth(tmp_path: Path, url: str, token: str) -> dict[str, str]:
    """A ``[[dicomweb_auth]]`` table giving ``url`` the bearer ``token`` (kept in a file)."""
    token_file = tmp_path / "stow-token"
    token_file.write_text(f"{token}\n", encoding="utf-8")
    return {"url": url, "bearer_token_file": str(token_file)}


def token_auth_file(tmp_path: Path, url: str, token: str) -> str:
    """A TOML file of one such table, as ``ONCOPACS_DICOMWEB_AUTH`` names it."""
    entry = token_auth(tmp_path, url, token)
    path = tmp_path / "dicomweb-auth.toml"
    path.write_text(f'[[dicomweb_auth]]\nurl = "{entry["url"]}"\nbearer_token_file = "{entry["bearer_token_file"]}"\n')
    return str(path)


@pytest.fixture
def receiving(tmp_path: Path) -> Iterator[tuple[Platform, object]]:
    """A second OncoPACS platform and its web app (import deferred: only this fixture needs Flask)."""
    from oncopacs.web.app import create_app

    settings = Settings(data_dir=tmp_path / "receiving", dicom_host="127.0.0.1", dicom_port=0,
                        secret_key=TEST_SECRET_KEY, audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    with open_platform(settings) as platform:
        app = create_app(platform)
        yield platform, app


def test_export_to_a_dicomweb_url_lands_de_identified_in_batches(planted, receiving, tmp_path: Path):
    platform, datasets = planted
    other, app = receiving
    users = app.extensions["oncopacs.users"]
    users.add_user("uploader", Role.PHYSICIST, "correct horse battery")
    front = _CountingPosts(app.wsgi_app)
    app.wsgi_app = front
    with serve_app(app) as url:
        assert parse_export_target(f"{url}/dicom-web/", []).kind is TargetKind.STOW
        settings = platform.settings.with_overrides(
            dicomweb_auth=(token_auth(tmp_path, f"{url}/dicom-web", users.create_token("uploader")),))
        credentials = parse_dicomweb_auth(settings.dicomweb_auth)
        sink = StowSink(f"{url}/dicom-web", batch_size=10,
                        authorization=credentials.authorization_for(f"{url}/dicom-web"))
        summary = export_deidentified(platform.archive, platform.audit, studies_of(datasets), sink,
                                      actor="t", source="t")
    assert summary.instances == len(datasets) and sink.requests == front.posts == -(-len(datasets) // 10)
    with other.index.reading() as session:
        patients = session.execute(select(Patient.patient_id)).scalars().all()
        stored = session.execute(select(Instance.file_path, Instance.sha256).join(Instance.series)
                                 .join(Series.study).join(Study.patient)).all()
    assert patients == list(summary.pseudonyms) and len(stored) == len(datasets)
    assert_no_sentinel([other.archive.storage.read(path, sha) for path, sha in stored])


# -- the CLI ------------------------------------------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[Path, list[str]]:
    """A data directory holding two phantom CT slices; their study UID."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, dicom_host="127.0.0.1", dicom_port=0, secret_key=TEST_SECRET_KEY,
                        audit_spool_bytes=TEST_AUDIT_SPOOL_BYTES)
    series = small_ct_series(2, prefix="DEIDREMOTE")
    with open_platform(settings) as platform:
        ingest(platform, series)
    return data_dir, studies_of(series)


def invoke(data_dir: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), "deid", "export", *args], env=env)


def test_the_cli_sends_to_an_ae_title(loaded, storescp: StoreSCP):
    data_dir, studies = loaded
    result = invoke(data_dir, "--study", studies[0], "--to", "DEST", "--json",
                    env={"ONCOPACS_REMOTE_AES": f"DEST@127.0.0.1:{storescp.port}"})
    assert result.exit_code == 0, result.output
    assert '"to": "DEST"' in result.stdout and '"instances": 2' in result.stdout
    received = storescp.received()
    assert len(received) == 2 and {ds.PatientIdentityRemoved for ds in received} == {"YES"}


def test_an_ae_that_is_down_is_one_line_and_a_non_zero_exit(loaded):
    data_dir, studies = loaded
    port = free_port()  # nothing listens there
    result = invoke(data_dir, "--study", studies[0], "--to", "DEST",
                    env={"ONCOPACS_REMOTE_AES": f"DEST@127.0.0.1:{port}"})
    assert result.exit_code == 2
    assert result.stderr.startswith(f"oncopacs: DEST at 127.0.0.1:{port} could not be reached")
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_a_dicomweb_server_refusing_us_is_named_with_its_http_status(loaded, receiving, tmp_path: Path):
    data_dir, studies = loaded
    _, app = receiving
    with serve_app(app) as url:  # no credentials, then a token the server does not know: it answers 401
        result = invoke(data_dir, "--study", studies[0], "--to", f"{url}/dicom-web")
        refused = invoke(data_dir, "--study", studies[0], "--to", f"{url}/dicom-web",
                         env={"ONCOPACS_DICOMWEB_AUTH": token_auth_file(tmp_path, url, "not-a-token-of-the-server")})
    assert result.exit_code == 2 == refused.exit_code
    assert result.stderr.strip() == (f"oncopacs: STOW-RS to {url}/dicom-web answered HTTP 401: the server wants "
                                     "credentials and no dicomweb_auth entry covers this URL")
    assert refused.stderr.strip() == (f"oncopacs: STOW-RS to {url}/dicom-web answered HTTP 401: the server refused "
                                      "our credentials (see dicomweb_auth)")
    assert "Traceback" not in result.output + refused.output and "not-a-token" not in refused.output


def test_the_cli_sends_to_a_dicomweb_url_with_the_configured_token(loaded, receiving, tmp_path: Path):
    data_dir, studies = loaded
    other, app = receiving
    users = app.extensions["oncopacs.users"]
    users.add_user("uploader", Role.PHYSICIST, "correct horse battery")
    with serve_app(app) as url:
        auth_file = token_auth_file(tmp_path, f"{url}/dicom-web", users.create_token("uploader"))
        result = invoke(data_dir, "--study", studies[0], "--to", f"{url}/dicom-web", "--json",
                        env={"ONCOPACS_DICOMWEB_AUTH": auth_file})
    assert result.exit_code == 0, result.output
    assert '"instances": 2' in result.stdout
    with other.index.reading() as session:
        assert len(session.execute(select(Instance.sop_instance_uid)).all()) == 2


@pytest.mark.parametrize(("args", "says"), [
    (("--out", "/tmp/x", "--to", "DEST"), "exactly one of --out"),
    ((), "exactly one of --out"),
    (("--to", "nowhere"), "export to 'nowhere': give an absolute folder path, an AE title"),
])
def test_a_target_that_is_not_exactly_one_known_place_is_refused(loaded, args, says):
    data_dir, studies = loaded
    result = invoke(data_dir, "--study", studies[0], *args)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output


# -- rules ---------------------------------------------------------------------------------------------------------


def _rule_settings(settings: Settings, rules: list[dict], port: int) -> Settings:
    return settings.with_overrides(rules=tuple(rules), remote_aes=(RemoteAE("DEST", "127.0.0.1", port),),
                                   stable_seconds=0)


def test_a_rule_exporting_to_an_ae_lands_at_storescp(settings: Settings, storescp: StoreSCP):
    rule = {"name": "research-ae", "on": "study", "match": {"Modality": "CT"}, "export": ["DEST"]}
    series = small_ct_series(2, prefix="RULEAE")
    with open_platform(_rule_settings(settings, [rule], storescp.port)) as platform:
        ingest(platform, series)
        assert [f.rule.name for f in platform.rules.engine.fire_stable()] == ["research-ae"]
        assert platform.jobs.new_worker().run_pending() >= 1
        (job,) = platform.jobs.queue.list(kind=EXPORT_JOB).jobs
        assert job.status.value == "succeeded", job.message
    received = storescp.received()
    assert len(received) == 2
    assert {ds.PatientIdentityRemoved for ds in received} == {"YES"}
    assert {ds.PatientID for ds in received}.isdisjoint({ds.PatientID for ds in series})


def test_rules_export_to_a_folder_an_ae_or_a_url_and_nowhere_else(settings: Settings, tmp_path: Path):
    good = {"name": "fine", "on": "study", "export": [str(tmp_path / "out"), "DEST", "https://research.example/dw"]}
    with open_platform(_rule_settings(settings, [good], 11112)):
        pass  # nothing is contacted or created when the platform opens
    assert not (tmp_path / "out").exists()
    bad = {"name": "lost", "on": "study", "export": ["nowhere"]}
    with pytest.raises(ConfigError, match="rule 'lost': export to 'nowhere': give an absolute folder path"):
        open_platform(_rule_settings(settings, [bad], 11112))


def test_a_folder_target_is_a_directory_sink(tmp_path: Path):
    assert isinstance(sink_for(str(tmp_path / "out"), []), DirectorySink)
    with pytest.raises(ConfigError, match="ONCOPACS_REMOTE_AES"):
        sink_for("DEST", [])
