"""``oncopacs fusion … --store``: the objects written also go into the archive of the configured data directory."""

from __future__ import annotations

import getpass
import json
import socket

from click.testing import CliRunner
from sqlalchemy import select

from oncopacs.analysis.models import AnalysisResult, MetricValue
from oncopacs.analysis.registration import REGISTRATION_QA
from oncopacs.audit.events import AuditAction
from oncopacs.audit.trail import AuditFilter
from oncopacs.cli import main
from oncopacs.index.models import Instance, ObjectReference, Relation, Series
from oncopacs.phantom import write_datasets
from oncopacs.phantom.ct4d import Ct4dSpec, build_ct4d_phantom
from oncopacs.phantom.fusion import build_fusion_ct_series
from oncopacs.platform import open_archive, open_platform
from oncopacs.settings import Settings
from tests.fusion.test_cli_fusion_more import pair  # noqa: F401  (fixture: registration, structure set, dose)


def invoke(settings: Settings, *args: str):
    """``oncopacs --data-dir … fusion ARGS`` with the fixture's database (SQLite or PostgreSQL)."""
    return CliRunner(env={"ONCOPACS_DATABASE_URL": settings.database_url or ""}).invoke(
        main, ["--data-dir", str(settings.data_dir), "fusion", *args], catch_exceptions=False)


def modalities(settings: Settings) -> dict[str, int]:
    archive = open_archive(settings)
    try:
        with archive.index.reading() as session:
            rows = session.execute(select(Series.modality, Instance.id).join(Instance.series)).all()
    finally:
        archive.close()
    counts: dict[str, int] = {}
    for modality, _ in rows:
        counts[modality] = counts.get(modality, 0) + 1
    return counts


def test_register_store_ingests_the_reg_and_its_qa(settings, rigid_pair, tmp_path):
    for key, hu in (("fixed", rigid_pair.fixed_hu), ("moving", rigid_pair.moving_hu)):
        write_datasets(build_fusion_ct_series(hu, rigid_pair.grid, key), tmp_path / key)
    result = invoke(settings, "register", "--fixed", str(tmp_path / "fixed"), "--moving", str(tmp_path / "moving"),
                    "--out", str(tmp_path / "out"), "--store", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    stored = document["stored"]
    assert stored["sop_instance_uid"] == document["sop_instance_uid"] and stored["outcome"] == "stored"
    assert stored["flagged"] is False and stored["qa"] == document["qa"]
    archive = open_archive(settings)
    try:
        with archive.index.reading() as session:
            instance = session.scalars(select(Instance).where(
                Instance.sop_instance_uid == document["sop_instance_uid"])).one()
            linked = set(session.scalars(select(ObjectReference.referenced_uid).where(
                ObjectReference.instance_pk == instance.id, ObjectReference.relation == Relation.REGISTERED_SERIES)))
            row = session.scalars(select(AnalysisResult).where(AnalysisResult.kind == REGISTRATION_QA)).one()
            metrics = set(session.scalars(select(MetricValue.metric).where(MetricValue.result_pk == row.id)))
            assert linked == {document["fixed_series_uid"], document["moving_series_uid"]}
            assert json.loads(row.result_json)["qa"] == document["qa"]
            assert {"jacobian_min", "folding[%]", "inverse_consistency[mm]"} <= metrics
    finally:
        archive.close()


def test_register_without_store_leaves_the_archive_alone(sqlite_settings, pair):  # noqa: F811
    out = pair / "out-nostore"
    result = invoke(sqlite_settings, "propagate", "--registration", str(pair / "reg.dcm"), "--rtstruct",
                    str(pair / "moving_rs.dcm"), "--fixed", str(pair / "fixed"), "--out", str(out / "rs.dcm"),
                    "--json")
    assert result.exit_code == 0, result.output
    assert "stored" not in json.loads(result.stdout)
    assert not (sqlite_settings.data_dir).exists() or modalities(sqlite_settings) == {}


def test_propagate_and_warp_dose_store_their_objects(sqlite_settings, pair):  # noqa: F811
    out = pair / "out-store"
    result = invoke(sqlite_settings, "propagate", "--registration", str(pair / "reg.dcm"), "--rtstruct",
                    str(pair / "moving_rs.dcm"), "--fixed", str(pair / "fixed"), "--out", str(out / "rs.dcm"),
                    "--store", "--json")
    assert result.exit_code == 0, result.output
    (stored,) = json.loads(result.stdout)["stored"]
    assert stored["modality"] == "RTSTRUCT" and stored["outcome"] == "stored"
    result = invoke(sqlite_settings, "warp-dose", "--dose", str(pair / "dose.dcm"), "--registration",
                    str(pair / "reg.dcm"), "--fixed", str(pair / "fixed"), "--out", str(out / "dose.dcm"),
                    "--store", "--json")
    assert result.exit_code == 0, result.output
    (stored,) = json.loads(result.stdout)["stored"]
    assert stored["modality"] == "RTDOSE"
    assert modalities(sqlite_settings) == {"RTSTRUCT": 1, "RTDOSE": 1}
    with open_platform(sqlite_settings) as platform:  # each --store run is audited, as an import is
        records = list(platform.audit.iter_entries(AuditFilter(action=AuditAction.STORE)))
    assert [r.detail for r in records] == ["oncopacs fusion propagate --store: 1 object(s)",
                                           "oncopacs fusion warp-dose --store: 1 object(s)"]
    assert all(r.actor == getpass.getuser() and r.source == socket.gethostname() and r.patient_ids for r in records)


def test_4d_store_ingests_the_projections_and_the_itv(sqlite_settings, tmp_path):
    spec = Ct4dSpec(phases=3, shape=(12, 32, 32), amplitude_mm=(0.0, 2.0, 8.0), supersampling=1)
    write_datasets(build_ct4d_phantom(spec).all_datasets(), tmp_path / "in")
    result = invoke(sqlite_settings, "4d", str(tmp_path / "in"), "--gtv", "GTV", "--out", str(tmp_path / "out"),
                    "--store", "--json")
    assert result.exit_code == 0, result.output
    stored = json.loads(result.stdout)["stored"]
    assert len(stored) == 3 * spec.shape[0] + 1 and all(s["outcome"] == "stored" for s in stored)
    assert modalities(sqlite_settings) == {"CT": 3 * spec.shape[0], "RTSTRUCT": 1}


def test_store_into_an_unusable_data_directory_fails_with_one_line(pair, tmp_path):  # noqa: F811
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the data directory's parent should be")
    result = CliRunner().invoke(main, ["--data-dir", str(blocker / "data"), "fusion", "propagate", "--registration",
                                       str(pair / "reg.dcm"), "--rtstruct", str(pair / "moving_rs.dcm"), "--fixed",
                                       str(pair / "fixed"), "--out", str(tmp_path / "rs.dcm"), "--store", "--json"])
    assert result.exit_code != 0 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "cannot open the archive" in line
