"""verify: missing, altered and unindexed files; recovery of files a crash left unindexed."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, select

from oncopacs.archive.ingest import Archive
from oncopacs.archive.maintenance import recover_orphans, verify
from oncopacs.cli.serve import recover_if_needed
from oncopacs.index.models import Instance, ObjectReference
from oncopacs.settings import Settings
from tests.factories import small_ct_series


def store(archive: Archive, n: int) -> list[str]:
    for dataset in small_ct_series(n, prefix="V"):
        archive.ingest_dataset(dataset, source="t")
    with archive.index.reading() as session:
        return list(session.scalars(select(Instance.file_path).order_by(Instance.id)))


def test_clean_archive_verifies(archive: Archive):
    store(archive, 5)
    report = verify(archive)
    assert report.ok and report.checked == 5


def test_one_flipped_byte_among_many_is_found(archive: Archive):
    paths = store(archive, 60)
    target = archive.storage.path_of(paths[37])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    archive.storage.path_of(paths[3]).unlink()
    report = verify(archive)
    assert report.altered == [paths[37]] and report.missing == [paths[3]] and not report.ok


def test_unindexed_files_are_reported_and_recovered(archive: Archive):
    paths = store(archive, 4)
    with archive.index.writing() as session:  # as if a crash struck between the file and the commit
        pk = session.scalar(select(Instance.id).where(Instance.file_path == paths[2]))
        session.execute(delete(ObjectReference).where(ObjectReference.instance_pk == pk))
        session.execute(delete(Instance).where(Instance.id == pk))
    (archive.storage.incoming / "dead.part").write_bytes(b"half a file")
    assert verify(archive).unindexed == [paths[2]]
    assert recover_orphans(archive) == 1
    report = verify(archive)
    assert report.ok and report.checked == 4
    assert list(archive.storage.incoming.iterdir()) == []


def test_recovery_runs_only_after_an_unclean_stop(sqlite_settings: Settings, tmp_path: Path):
    from oncopacs.platform import open_archive

    archive = open_archive(sqlite_settings)
    paths = store(archive, 2)
    with archive.index.writing() as session:
        session.execute(delete(ObjectReference))
        session.execute(delete(Instance).where(Instance.file_path == paths[0]))
    recover_if_needed(sqlite_settings, archive)  # no marker: clean stop, nothing to do
    assert verify(archive).unindexed == [paths[0]]
    sqlite_settings.running_marker.write_text("1234")
    recover_if_needed(sqlite_settings, archive)
    assert verify(archive).ok
    archive.close()
