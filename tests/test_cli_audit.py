"""``oncopacs audit verify`` and ``oncopacs audit export`` as an administrator runs them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import text

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.cli import main
from oncopacs.platform import open_archive
from oncopacs.settings import Settings


def invoke(data_dir: Path, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def fill(data_dir: Path, count: int = 5) -> None:
    archive = open_archive(Settings(data_dir=data_dir))
    try:
        AuditTrail(archive.index).record_many([
            AuditEvent(AuditAction.RETRIEVE, Outcome.SUCCESS, "VIEWER", ActorKind.AE, "10.1.2.3",
                       (f"PAT{n}",), (f"1.2.3.{n}",), f"C-GET {n}")
            for n in range(count)
        ])
    finally:
        archive.close()


def tamper(data_dir: Path, sql: str) -> None:
    archive = open_archive(Settings(data_dir=data_dir))
    try:
        with archive.index.write_connection() as connection:
            connection.execute(text(sql))
    finally:
        archive.close()


def test_verify_intact_then_tampered(tmp_path: Path):
    data_dir = tmp_path / "data"
    fill(data_dir)
    intact = invoke(data_dir, "audit", "verify")
    assert intact.exit_code == 0
    # five records written before the trail had a key: sealed from the sixth on, the five anchored by a checkpoint
    assert intact.stdout.strip() == ("audit trail intact: 5 record(s) checked, last id 5; sealed with the audit key "
                                     "from record 6, records before it predate the key (unkeyed SHA-256); "
                                     "1 checkpoint(s) agree, the newest anchoring record 5")
    as_json = json.loads(invoke(data_dir, "audit", "verify", "--json").stdout)
    assert as_json["ok"] is True and as_json["checked"] == 6  # the first check is itself a record (Audit Log Used)

    tamper(data_dir, "UPDATE audit_records SET patient_ids = 'SOMEONE-ELSE' WHERE id = 3")
    broken = invoke(data_dir, "audit", "verify")
    assert broken.exit_code == 1
    assert "record 3: altered" in broken.stdout
    assert "the first: record 3: altered" in broken.stderr

    tamper(data_dir, "UPDATE audit_records SET patient_ids = 'PAT2' WHERE id = 3")
    tamper(data_dir, "DELETE FROM audit_records WHERE id = 2")
    deleted = invoke(data_dir, "audit", "verify")
    assert deleted.exit_code == 1 and "record 2: missing" in deleted.stdout


def test_export_atna_and_json(tmp_path: Path):
    data_dir = tmp_path / "data"
    fill(data_dir, 3)
    output = tmp_path / "audit.xml"
    result = invoke(data_dir, "audit", "export", "--output", str(output))
    assert result.exit_code == 0 and "audit.xml" in result.stderr
    root = ET.parse(output).getroot()
    assert root.tag == "AuditMessages"
    # the three records, then the export itself (recorded before it is written)
    codes = [m.find("EventIdentification/EventID").get("csd-code") for m in root]
    assert codes == ["110104", "110104", "110104", "110106"]
    assert root[0].find("ParticipantObjectIdentification").get("ParticipantObjectID") == "PAT0"

    exported = json.loads(invoke(data_dir, "audit", "export", "--format", "json").stdout)
    assert [r["id"] for r in exported] == [1, 2, 3, 4, 5]
    assert exported[4]["action"] == "export" and exported[0]["patient_ids"] == ["PAT0"]
    none = json.loads(invoke(data_dir, "audit", "export", "--format", "json", "--until", "2000-01-01").stdout)
    assert none == []
    assert invoke(data_dir, "audit", "verify").exit_code == 0


def test_export_rejects_a_bad_time(tmp_path: Path):
    result = invoke(tmp_path / "data", "audit", "export", "--since", "yesterday")
    assert result.exit_code == 2 and "ISO 8601" in result.stderr
