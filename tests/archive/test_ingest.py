"""The one ingest path: validation, durable storage, indexing, duplicates and conflicts."""

from __future__ import annotations

import copy

import pytest
from pydicom import examples
from sqlalchemy import func, select

from oncopacs.archive.ingest import Archive, IngestOutcome, Status
from oncopacs.archive.part10 import dataset_offset
from oncopacs.index.models import IngestConflict, Instance, ObjectReference, Relation, Series, Study
from oncopacs.phantom import build_demo_patient
from tests.factories import part10_bytes, small_ct_series, without


def count(archive: Archive, model) -> int:
    with archive.index.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_stores_bytes_exactly_and_indexes(archive: Archive):
    data = part10_bytes(examples.ct)
    result = archive.ingest(data, source="test")
    assert result.outcome is IngestOutcome.STORED and result.status == Status.SUCCESS
    with archive.index.reading() as session:
        instance = session.scalars(select(Instance)).one()
    assert archive.storage.read(instance.file_path, expected_sha256=instance.sha256) == data
    assert instance.file_size == len(data)
    assert instance.transfer_syntax_uid == str(examples.ct.file_meta.TransferSyntaxUID)
    assert list(archive.storage.incoming.iterdir()) == []


def test_identical_resend_is_a_no_op_success(archive: Archive):
    data = part10_bytes(examples.ct)
    archive.ingest(data, source="a")
    again = archive.ingest(data, source="b")
    assert again.outcome is IngestOutcome.DUPLICATE and again.acknowledged
    assert count(archive, Instance) == 1
    with archive.index.reading() as session:
        assert session.scalar(select(Series.number_of_instances)) == 1


def test_dimse_resend_with_another_calling_ae_is_a_duplicate(archive: Archive):
    data = part10_bytes(examples.ct)
    raw, ds = data[dataset_offset(data) :], examples.ct
    from oncopacs.archive.ingest import ExpectedIdentity

    expected = ExpectedIdentity(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    first = archive.ingest_dimse(raw, transfer_syntax_uid=syntax, expected=expected, calling_ae="ONE")
    second = archive.ingest_dimse(raw, transfer_syntax_uid=syntax, expected=expected, calling_ae="TWO")
    assert (first.outcome, second.outcome) == (IngestOutcome.STORED, IngestOutcome.DUPLICATE)


def test_same_uid_other_content_is_refused_and_first_copy_kept(archive: Archive):
    original = part10_bytes(examples.ct)
    archive.ingest(original, source="a")
    changed = copy.deepcopy(examples.ct)
    changed.PatientName = "Someone^Else"
    result = archive.ingest(part10_bytes(changed), source="b")
    assert result.outcome is IngestOutcome.CONFLICT
    assert result.status == Status.DUPLICATE_SOP_INSTANCE
    assert "different content" in result.reason
    with archive.index.reading() as session:
        instance = session.scalars(select(Instance)).one()
        conflict = session.scalars(select(IngestConflict)).one()
    assert archive.storage.read(instance.file_path) == original
    assert conflict.sop_instance_uid == examples.ct.SOPInstanceUID and conflict.source == "b"


def test_overwrite_setting_replaces_content(archive: Archive):
    archive.allow_overwrite = True
    archive.ingest(part10_bytes(examples.ct), source="a")
    changed = copy.deepcopy(examples.ct)
    changed.PatientName = "Corrected^Name"
    replaced = part10_bytes(changed)
    assert archive.ingest(replaced, source="b").outcome is IngestOutcome.STORED
    with archive.index.reading() as session:
        instance = session.scalars(select(Instance)).one()
        assert session.scalar(select(Series.number_of_instances)) == 1
    assert archive.storage.read(instance.file_path, expected_sha256=instance.sha256) == replaced


def store_then_send_changed(archive: Archive, **changes: str):
    """Store the example CT, then ingest a copy with ``changes``; the second result."""
    archive.ingest(part10_bytes(examples.ct), source="a")
    changed = copy.deepcopy(examples.ct)
    for keyword, value in changes.items():
        setattr(changed, keyword, value)
    return archive.ingest(part10_bytes(changed), source="b")


def test_same_uid_in_another_series_is_refused(archive: Archive):
    result = store_then_send_changed(archive, SeriesInstanceUID="1.2.3.4.5")
    assert result.outcome is IngestOutcome.CONFLICT and result.status == Status.MOVED_INSTANCE
    assert count(archive, Instance) == 1
    assert count(archive, Series) == 1  # the new series' row went with the refused instance
    assert sorted(archive.storage.iter_files()) == list(archive.storage.iter_files())  # no stray file
    assert len(list(archive.storage.iter_files())) == 1


def test_study_under_another_patient_is_refused(archive: Archive):
    result = store_then_send_changed(archive, PatientID="SOMEONE-ELSE", SOPInstanceUID="1.2.3.4.6")
    assert result.status == Status.CONFLICTING_PATIENT
    assert count(archive, Instance) == 1 and len(list(archive.storage.iter_files())) == 1


def test_a_stored_instance_resent_under_another_patient_is_the_stored_instance_with_other_content(archive: Archive):
    """The instance's own conflict is reported before its study's (another patient)."""
    result = store_then_send_changed(archive, PatientID="SOMEONE-ELSE")
    assert result.outcome is IngestOutcome.CONFLICT and result.status == Status.DUPLICATE_SOP_INSTANCE
    assert count(archive, Instance) == 1 and count(archive, IngestConflict) == 1


@pytest.mark.parametrize(
    ("keyword", "problem"),
    [("SOPInstanceUID", "missing"), ("StudyInstanceUID", "missing"), ("SeriesInstanceUID", "missing"),
     ("PatientID", "missing")],
)
def test_missing_identifiers_are_rejected(archive: Archive, keyword: str, problem: str):
    result = archive.ingest(part10_bytes(without(examples.ct, keyword)), source="t")
    assert result.outcome is IngestOutcome.REJECTED and result.status == Status.CANNOT_UNDERSTAND
    assert keyword in result.reason and problem in result.reason
    assert count(archive, Instance) == 0 and list(archive.storage.iter_files()) == []


def test_malformed_uid_is_rejected(archive: Archive):
    bad = copy.deepcopy(examples.ct)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        bad.StudyInstanceUID = "1.2.03.abc"
    result = archive.ingest(part10_bytes(bad), source="t")
    assert result.outcome is IngestOutcome.REJECTED and "StudyInstanceUID malformed" in result.reason


def test_truncated_file_is_rejected(archive: Archive):
    data = part10_bytes(examples.ct)
    result = archive.ingest(data[: len(data) // 2], source="t")
    assert result.outcome is IngestOutcome.REJECTED and "truncated" in result.reason
    assert count(archive, Instance) == 0


def test_not_dicom_is_rejected(archive: Archive):
    result = archive.ingest(b"%PDF-1.7 not a dicom file" * 20, source="t")
    assert result.outcome is IngestOutcome.REJECTED and "not DICOM" in result.reason


def test_file_meta_that_contradicts_the_dataset_is_rejected(archive: Archive):
    ds = copy.deepcopy(examples.ct)
    data = bytearray(part10_bytes(ds))
    uid = str(ds.SOPInstanceUID).encode()
    at = data.index(uid)  # first occurrence: MediaStorageSOPInstanceUID in the meta group
    data[at + len(uid) - 1 : at + len(uid)] = b"9" if uid[-1:] != b"9" else b"8"
    result = archive.ingest(bytes(data), source="t")
    assert result.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "MediaStorageSOPInstanceUID" in result.reason


def test_storage_failure_answers_out_of_resources_and_leaves_no_row(archive: Archive, monkeypatch):
    from oncopacs.errors import StorageError

    def full_disk(_data):
        raise StorageError("cannot write to the storage area: No space left on device")

    monkeypatch.setattr(archive.storage, "stage", full_disk)
    result = archive.ingest(part10_bytes(examples.ct), source="t")
    assert result.outcome is IngestOutcome.FAILED and result.status == Status.OUT_OF_RESOURCES
    assert not result.acknowledged and count(archive, Instance) == 0


def test_fsync_failure_is_never_acknowledged(archive: Archive, monkeypatch):
    import os

    def failing_fsync(_fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(os, "fdatasync", failing_fsync)
    result = archive.ingest(part10_bytes(examples.ct), source="t")
    monkeypatch.undo()
    assert result.status == Status.OUT_OF_RESOURCES and count(archive, Instance) == 0
    assert list(archive.storage.iter_files()) == [] and list(archive.storage.incoming.iterdir()) == []


def test_rt_objects_are_linked(archive: Archive):
    patient = build_demo_patient()
    for dataset in patient.all_datasets():
        assert archive.ingest_dataset(dataset, source="t").outcome is IngestOutcome.STORED
    with archive.index.reading() as session:
        links = {
            (row.relation, row.referenced_uid)
            for row in session.execute(select(ObjectReference.relation, ObjectReference.referenced_uid))
        }
        assert session.scalar(select(func.count()).select_from(Study)) == 2
    ct_series = patient.planning_ct[0].SeriesInstanceUID
    assert (Relation.IMAGE_SERIES, ct_series) in links
    assert (Relation.STRUCTURE_SET, patient.rtstruct.SOPInstanceUID) in links
    assert (Relation.PLAN, patient.rt_ion_plan.SOPInstanceUID) in links


def test_listeners_hear_new_instances_only(archive: Archive):
    heard = []
    archive.subscribe(lambda record: heard.append(record.sop_instance_uid))
    series = small_ct_series(2)
    for dataset in series + series:
        archive.ingest_dataset(dataset, source="t")
    assert heard == [str(ds.SOPInstanceUID) for ds in series]


def test_a_failing_listener_does_not_undo_the_store(archive: Archive, caplog):
    def broken(_record):
        raise RuntimeError("rule crashed")

    archive.subscribe(broken)
    result = archive.ingest_dataset(small_ct_series(1)[0], source="t")
    assert result.outcome is IngestOutcome.STORED and count(archive, Instance) == 1


def test_concurrent_ingest_loses_nothing(archive: Archive):
    from concurrent.futures import ThreadPoolExecutor

    datasets = small_ct_series(40, studies=4, prefix="C")
    payloads = [part10_bytes(ds) for ds in datasets] * 2  # every instance twice, from racing threads
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda data: archive.ingest(data, source="t"), payloads))
    assert all(r.acknowledged for r in results), [r.reason for r in results if not r.acknowledged]
    assert sum(r.outcome is IngestOutcome.STORED for r in results) == 40
    assert count(archive, Instance) == 40
    with archive.index.reading() as session:
        assert session.scalar(select(func.sum(Series.number_of_instances))) == 40


def test_truncated_encapsulated_pixel_data_is_rejected(archive: Archive):
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ct = small_ct_series(1, prefix="E")[0]
    ct.PixelData = encapsulate([ct.PixelData])  # any bytes: only the framing matters here
    ct["PixelData"].VR = "OB"
    ct.file_meta.TransferSyntaxUID = RLELossless
    whole = part10_bytes(ct)
    assert archive.ingest(whole[:-40], source="t").outcome is IngestOutcome.REJECTED
    result = archive.ingest(whole, source="t")
    assert result.outcome is IngestOutcome.STORED, result.reason
