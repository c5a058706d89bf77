"""Instances whose stored file is damaged (missing, altered, unreadable) in WADO-RS answers.

As C-GET and C-MOVE do (a failed sub-operation, the rest go on), a study or series answer leaves a
damaged instance out and delivers the rest; it says so in a ``Warning: 299`` header counting what was
left out. One instance asked for alone, or every instance of the answer damaged, is a 500 whose JSON
names the problem in words: 500 rather than 404, since the index holds the instance and losing its
copy is the server's fault (a 404 tells a viewer the instance does not exist), and rather than 503,
which dicomweb-client retries five times although nothing will change.

Each left-out instance gets its own failure record in the audit trail and a log line, both naming
the SOP Instance UID and the kind of damage only: never the storage path, never patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from flask import Response, abort

from oncopacs.archive.ingest import Archive
from oncopacs.archive.storage import Damage, DamagedFileError
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.errors import AuditError
from oncopacs.index.query import StoredInstance
from oncopacs.web.access import audit_access
from oncopacs.web.dicomweb.qido import WARN_AGENT

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeftOut:
    """An instance not sent, and why."""

    instance: StoredInstance
    damage: Damage


@dataclass(frozen=True, slots=True)
class Checked:
    """The instances of an answer sorted by the state of their stored files."""

    healthy: tuple[StoredInstance, ...]
    left_out: tuple[LeftOut, ...]


def check_files(archive: Archive, stored: Sequence[StoredInstance]) -> Checked:
    """Hash every stored file against its recorded SHA-256 before an answer starts (one file at a time, in
    256 KiB pieces: memory stays bounded for any study; about 0.1 s per 150 MB from the page cache)."""
    healthy: list[StoredInstance] = []
    left_out: list[LeftOut] = []
    for instance in stored:
        damage = archive.storage.check(instance.file_path, instance.sha256)
        if damage is None:
            healthy.append(instance)
        else:
            left_out.append(LeftOut(instance, damage))
    return Checked(tuple(healthy), tuple(left_out))


def read_or_refuse(archive: Archive, instance: StoredInstance) -> bytes:
    """The stored bytes of one instance asked for alone; a damaged file is audited and answered 500."""
    try:
        return archive.storage.read(instance.file_path, instance.sha256)
    except DamagedFileError as exc:
        refuse([LeftOut(instance, exc.damage)], total=1)


def record_left_out(left_out: Iterable[LeftOut]) -> None:
    """Log and audit each left-out instance as a failed retrieve (raises AuditError: fail closed)."""
    for item in left_out:
        uid = item.instance.sop_instance_uid
        log.error("instance %s not sent: its stored file is %s", uid, item.damage.value)
        audit_access(
            AuditAction.RETRIEVE,
            patient_ids=[item.instance.patient_id],
            study_uids=[item.instance.study_instance_uid],
            outcome=Outcome.SERIOUS_FAILURE,
            note=f"instance {uid} not sent: its stored copy is {item.damage.description}",
        )


def record_left_out_quietly(left_out: Iterable[LeftOut]) -> None:
    """:func:`record_left_out` once a body is streaming and can no longer be refused: an audit failure is logged."""
    try:
        record_left_out(left_out)
    except AuditError as exc:
        log.error("audit record not written: %s", exc)


def refuse(left_out: Sequence[LeftOut], total: int) -> NoReturn:
    """Audit the left-out instances and answer 500 when nothing of the ``total`` asked for can be sent."""
    record_left_out(left_out)
    if total == 1:
        item = left_out[0]
        abort(500, description=(
            f"the stored copy of instance {item.instance.sop_instance_uid} is {item.damage.description}; "
            "the archive's other instances are unaffected"
        ))
    abort(500, description=f"none of the {total} instances can be sent: their stored copies are damaged "
                           f"({_kinds(left_out)}); the archive's other instances are unaffected")


def warn_left_out(response: Response, left_out: Sequence[LeftOut], total: int) -> Response:
    """Add the ``Warning: 299`` header counting the left-out instances (no UIDs, no paths)."""
    if left_out:
        text = (f"{len(left_out)} of {total} instances were left out because their stored copies are damaged "
                f"({_kinds(left_out)}); all the others were sent")
        response.headers.add("Warning", f'299 {WARN_AGENT} "{text}"')
    return response


def audit_delivered(delivered: Iterable[StoredInstance], left_out: Sequence[LeftOut], total: int) -> None:
    """The record of what an answer sends: a minor failure when some of the ``total`` were left out
    (as a C-GET with failed sub-operations); raises AuditError (fail closed)."""
    delivered = list(delivered)
    audit_access(
        AuditAction.RETRIEVE,
        patient_ids=[instance.patient_id for instance in delivered],
        study_uids=[instance.study_instance_uid for instance in delivered],
        outcome=Outcome.MINOR_FAILURE if left_out else Outcome.SUCCESS,
        note=f"{len(left_out)} of {total} instances not sent (stored copies damaged)" if left_out else "",
    )


_SHORT = {Damage.MISSING: "missing", Damage.ALTERED: "SHA-256 mismatch", Damage.UNREADABLE: "unreadable"}


def _kinds(left_out: Iterable[LeftOut]) -> str:
    """E.g. "1 missing, 2 SHA-256 mismatch"."""
    counts: dict[Damage, int] = {}
    for item in left_out:
        counts[item.damage] = counts.get(item.damage, 0) + 1
    return ", ".join(f"{count} {_SHORT[damage]}" for damage, count in counts.items())
