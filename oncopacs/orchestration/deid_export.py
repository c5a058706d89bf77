"""De-identified export of whole studies: read through the archive, transform, hand to a sink, audit.

:func:`export_deidentified` takes study UIDs and a :class:`DeidSink`; :class:`DirectorySink` writes Part 10
files to ``DIR/<pseudonym>/<study>/<series>/<sop>.dcm``. The sinks of a remote AE and a DICOMweb server
(:mod:`oncopacs.orchestration.deid_sinks`) implement the same protocol. The re-identification key stays in
the index database.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.audit.trail import AuditTrail
from oncopacs.errors import NotFoundError, StorageError
from oncopacs.index.models import Instance, Patient, Series, Study
from oncopacs.orchestration.deid_mapping import map_uids, patient_keys
from oncopacs.orchestration.deid_profile import (
    DeidOptions,
    check_burned_in_annotation,
    deidentify,
    iter_instance_uids,
    skip_reason,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ObjectKind:
    """A SOP class an export delivers, in one transfer syntax (what a sink proposes to a remote AE)."""

    sop_class_uid: str
    transfer_syntax_uid: str


class DeidSink(Protocol):
    """Where de-identified objects go (a folder, a remote AE, a DICOMweb server).

    A sink may also define ``begin(kinds: frozenset[ObjectKind])``, called once after every check and before
    the first write (a remote AE's association opens there), and ``close(completed: bool)``, called once at the
    end: ``completed`` true flushes what is batched (its failure fails the export), false after a failure
    releases without delivering more and raises nothing.
    """

    def write(self, dataset: Dataset, pseudonym: str) -> None:
        """Deliver one de-identified object (with file meta); raise an OncopacsError when it cannot."""


class DirectorySink:
    """Part 10 files under ``root``: ``<pseudonym>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``."""

    def __init__(self, root: Path):
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK | os.X_OK):
                raise PermissionError(13, "permission denied")
        except OSError as exc:
            raise StorageError(f"cannot write to {root}: {exc.strerror or exc}") from None

    def write(self, dataset: Dataset, pseudonym: str) -> None:
        folder = self.root / pseudonym / dataset.StudyInstanceUID / dataset.SeriesInstanceUID
        path = folder / f"{dataset.SOPInstanceUID}.dcm"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            dcmwrite(partial, dataset, enforce_file_format=True)
            partial.replace(path)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What one export delivered: counts only, no identity (safe to print and log)."""

    studies: int
    instances: int
    skipped: int  # objects left out (encapsulated documents)
    pseudonyms: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"studies": self.studies, "instances": self.instances, "skipped": self.skipped,
                "pseudonyms": list(self.pseudonyms)}


@dataclass(frozen=True, slots=True)
class _StudyFiles:
    study_uid: str
    patient_id: str
    issuer_of_patient_id: str
    files: tuple[tuple[str, str], ...]  # (file path, SHA-256) per instance, series by series
    kinds: frozenset[ObjectKind]


def count_instances(archive: Archive, study_uids: Sequence[str]) -> int:
    """How many stored instances the studies hold (for a progress bar); NotFoundError for an unknown study."""
    return sum(len(study.files) for study in _find_studies(archive, study_uids))


def export_deidentified(
    archive: Archive,
    audit: AuditTrail,
    study_uids: Sequence[str],
    sink: DeidSink,
    options: DeidOptions | None = None,
    *,
    actor: str,
    source: str,
    on_instance: Callable[[], None] | None = None,
) -> ExportSummary:
    """Export every instance of ``study_uids`` de-identified to ``sink``, recorded as one EXPORT audit event.

    ``options`` default to all three PS3.15 options a research team needs (dates shifted, characteristics
    kept, descriptors cleaned).

    Every study is checked before anything is delivered: NotFoundError for an unknown study,
    DeidentificationError for an image flagged with burned-in annotation (unless the options allow it).
    """
    options = options or DeidOptions()
    studies = _find_studies(archive, study_uids)
    outcome, delivered, skipped, pseudonyms = Outcome.MAJOR_FAILURE, 0, 0, []
    try:
        plans = [_prepare(archive, study, options) for study in studies]
        begin = getattr(sink, "begin", None)
        if begin is not None:
            begin(frozenset().union(*(study.kinds for study in studies)))
        for study, (keys, uid_map) in zip(studies, plans, strict=True):
            pseudonyms.append(keys.pseudonym)
            for path, sha256 in study.files:
                original = archive.read_dataset(path, sha256)
                if skip_reason(original):
                    skipped += 1
                else:
                    sink.write(_with_file_meta(deidentify(original, options, keys, uid_map), original), keys.pseudonym)
                    delivered += 1
                if on_instance is not None:
                    on_instance()
        _close(sink, completed=True)
        outcome = Outcome.SUCCESS
    except BaseException:
        _close(sink, completed=False)
        raise
    finally:
        audit.record(AuditEvent(
            action=AuditAction.EXPORT, outcome=outcome, actor=actor, actor_kind=ActorKind.USER, source=source,
            patient_ids=tuple(sorted({s.patient_id for s in studies})), study_uids=tuple(s.study_uid for s in studies),
            detail=f"de-identified export (PS3.15 basic profile): {delivered} instance(s), {skipped} skipped",
        ))
    log.info("de-identified export of %d study(ies): %d instance(s), %d skipped", len(studies), delivered, skipped)
    return ExportSummary(len(studies), delivered, skipped, tuple(dict.fromkeys(pseudonyms)))


def _close(sink: DeidSink, *, completed: bool) -> None:
    close = getattr(sink, "close", None)
    if close is not None:
        close(completed)


def _prepare(archive: Archive, study: _StudyFiles, options: DeidOptions):
    """The patient's keys and the study's UID map, after checking every header (no pixels read)."""
    originals: set[str] = set()
    for path, sha256 in study.files:
        header = archive.read_dataset(path, sha256, stop_before_pixels=True)
        if skip_reason(header):
            continue
        check_burned_in_annotation(header, options)
        originals.update(iter_instance_uids(header))
    keys = patient_keys(archive.index, study.patient_id, study.issuer_of_patient_id)
    return keys, map_uids(archive.index, originals)


def _find_studies(archive: Archive, study_uids: Sequence[str]) -> list[_StudyFiles]:
    if not study_uids:
        raise NotFoundError("no study to export: name at least one StudyInstanceUID")
    found = []
    with archive.index.reading() as session:
        for uid in dict.fromkeys(study_uids):
            patient = session.execute(select(Patient.patient_id, Patient.issuer_of_patient_id).join(Study.patient)
                                      .where(Study.study_instance_uid == uid)).first()
            if patient is None:
                raise NotFoundError(f"study {uid} is not in the archive")
            rows = session.execute(select(Instance.file_path, Instance.sha256, Instance.sop_class_uid,
                                          Instance.transfer_syntax_uid).join(Instance.series)
                                   .join(Series.study).where(Study.study_instance_uid == uid)
                                   .order_by(Series.id, Instance.id)).all()
            found.append(_StudyFiles(uid, patient[0], patient[1], tuple((row[0], row[1]) for row in rows),
                                     frozenset(ObjectKind(str(row[2]), str(row[3])) for row in rows)))
    return found


def _with_file_meta(ds: Dataset, original: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    original_meta = getattr(original, "file_meta", None)
    meta.TransferSyntaxUID = getattr(original_meta, "TransferSyntaxUID", None) or ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
