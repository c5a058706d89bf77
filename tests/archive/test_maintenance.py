"""verify: missing, altered and unindexed files; recovery of files a crash left unindexed."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from sqlalchemy import delete, func, select

from oncopacs.archive import maintenance
from oncopacs.archive.ingest import ORPHAN_WAIT_S, Archive, IngestOutcome, IngestResult
from oncopacs.archive.maintenance import recover_orphans, verify
from oncopacs.archive.storage import relative_path_for
from oncopacs.cli.serve import recover_if_needed
from oncopacs.index.models import IngestConflict, Instance, ObjectReference
from oncopacs.settings import Settings
from tests.factories import part10_bytes, small_ct_series


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
    assert recover_orphans(archive, grace_s=0.5) == 1  # the file was placed a moment ago: a short grace
    report = verify(archive)
    assert report.ok and report.checked == 4
    assert list(archive.storage.incoming.iterdir()) == []


def test_recovery_does_not_wait_for_a_writer_per_orphan(sqlite_settings: Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once its grace is over, each orphan is taken at once: the ingest path's wait for another writer's index
    row (ORPHAN_WAIT_S per file) is skipped, so rebuilding thousands of rows after a power loss takes seconds."""
    from oncopacs.platform import open_platform

    with open_platform(sqlite_settings) as platform:
        storage = platform.archive.storage
        for dataset in small_ct_series(5, prefix="ORPH"):
            storage.place(storage.stage(part10_bytes(dataset)), relative_path_for(
                dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID))
        waits: list[float] = []
        monkeypatch.setattr("oncopacs.archive.ingest.time.sleep", waits.append)
        assert recover_orphans(platform.archive, grace_s=0) == 5
        assert waits == []
        assert verify(platform.archive).ok


def test_recovery_runs_only_after_an_unclean_stop(sqlite_settings: Settings, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    from oncopacs.platform import open_archive

    monkeypatch.setattr(maintenance, "IN_FLIGHT_GRACE_S", 0.5)  # its files were placed a moment ago

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


# -- two nodes over one storage area and index (deploy/local-cluster) ------------------------------------------

@dataclass(frozen=True, slots=True)
class Node:
    settings: Settings
    archive: Archive


@pytest.fixture
def two_nodes(settings: Settings) -> Iterator[tuple[Node, Node]]:
    """Nodes ``node1`` and ``node2``: one data directory and index, each its own staging folder and crash marker."""
    from oncopacs.platform import open_archive

    nodes = [Node(s, open_archive(s)) for s in (settings.with_overrides(node_name=n) for n in ("node1", "node2"))]
    yield nodes[0], nodes[1]
    for node in nodes:
        node.archive.close()


def _path_of(dataset: Dataset) -> str:
    return relative_path_for(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID),
                             str(dataset.SOPInstanceUID))


def _recovered(caplog: pytest.LogCaptureFixture) -> int:
    """How many files the last crash recovery re-indexed, as it logged."""
    counts = re.findall(r"recovery done: (\d+) file\(s\) re-indexed", caplog.text)
    assert counts, "no crash recovery ran"
    return int(counts[-1])


def test_a_nodes_crash_recovery_leaves_the_other_nodes_staged_file(two_nodes: tuple[Node, Node],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture):
    one, two = two_nodes
    monkeypatch.setattr(maintenance, "IN_FLIGHT_GRACE_S", 0.5)
    orphan = store(two.archive, 2)[1]  # node 2 crashed between placing a file and committing its row ...
    with two.archive.index.writing() as session:
        session.execute(delete(ObjectReference))
        session.execute(delete(Instance).where(Instance.file_path == orphan))
    (two.archive.storage.incoming / "dead.part").write_bytes(b"half a file")  # ... and while receiving another
    two.settings.running_marker.write_text("1234")

    arriving = small_ct_series(1, prefix="N1")[0]  # node 1 is receiving an instance, half of it staged
    data = part10_bytes(arriving)
    stream = one.archive.storage.open_stream()
    stream.write(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="oncopacs"):
        recover_if_needed(two.settings, two.archive)
    assert _recovered(caplog) == 1 and not (two.archive.storage.incoming / "dead.part").exists()
    assert stream.path.exists() and one.archive.storage.incoming != two.archive.storage.incoming

    stream.write(data[len(data) // 2 :])
    assert one.archive.ingest(data, source="dimse:NODE1", staged=stream).outcome is IngestOutcome.STORED
    report = verify(one.archive)
    assert report.ok and report.checked == 3
    assert two.archive.storage.read(_path_of(arriving)) == data  # node 2 serves what node 1 stored, as received


def test_a_nodes_crash_recovery_leaves_the_instance_the_other_node_is_indexing(two_nodes: tuple[Node, Node],
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               caplog: pytest.LogCaptureFixture):
    """Node 1 placed a file whose rows wait (on a lock) while node 2 starts after a crash: node 2 leaves it to node 1.

    Recovering it at once (before IN_FLIGHT_GRACE_S), node 2 waited ORPHAN_WAIT_S for node 1's row, then put its own
    copy over node 1's file and committed it as ``recovered``; node 1's rows then met that row, it took its placed
    file back (removing the file node 2's row points at) and had to store it again ("is missing; replacing it").
    """
    one, two = two_nodes
    monkeypatch.setattr(maintenance, "IN_FLIGHT_GRACE_S", ORPHAN_WAIT_S + 2.0)
    arriving = small_ct_series(1, prefix="N2")[0]
    data = part10_bytes(arriving)
    path = one.archive.storage.path_of(_path_of(arriving))
    placed, release = threading.Event(), threading.Event()
    write = one.archive._writer.write

    def held_write(*args, **kwargs):  # node 1's file placed, its rows waiting (a lock held by another writer)
        for _ in range(500):
            if path.exists():
                break
            time.sleep(0.01)
        placed.set()
        assert release.wait(30)
        return write(*args, **kwargs)

    monkeypatch.setattr(one.archive._writer, "write", held_write)
    results: list[IngestResult] = []
    storing = threading.Thread(target=lambda: results.append(one.archive.ingest(data, source="dimse:NODE1")))
    storing.start()
    try:
        assert placed.wait(10) and path.exists()
        two.settings.running_marker.write_text("1234")
        threading.Timer(ORPHAN_WAIT_S + 0.5, release.set).start()  # longer than a recovering ingest waits
        with caplog.at_level(logging.INFO, logger="oncopacs"):
            recover_if_needed(two.settings, two.archive)
    finally:
        release.set()
        storing.join(30)
    assert [r.outcome for r in results] == [IngestOutcome.STORED]
    assert _recovered(caplog) == 0 and "is missing" not in caplog.text  # node 1 never took back node 2's copy
    with one.archive.index.reading() as session:
        rows = session.execute(select(Instance.source, Instance.sha256)
                               .where(Instance.sop_instance_uid == str(arriving.SOPInstanceUID))).all()
        conflicts = session.scalar(select(func.count()).select_from(IngestConflict))
    assert [row.source for row in rows] == ["dimse:NODE1"] and conflicts == 0
    assert verify(two.archive).ok and two.archive.storage.read(_path_of(arriving)) == data
