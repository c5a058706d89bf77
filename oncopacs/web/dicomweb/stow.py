"""STOW-RS routes: ``POST /studies`` and ``POST /studies/{study}`` with multipart/related DICOM parts.

Every part goes through :meth:`Archive.ingest`, the one ingest path. The answer is a Store
Instances Response (PS3.18 Annex I) in DICOM JSON: ReferencedSOPSequence for what is stored (an
identical resend counts as stored), FailedSOPSequence with the ingest status as FailureReason for
the rest; HTTP 200 when all are stored, 202 when some are, 409 when none are, 415 for a body that
is not ``multipart/related; type="application/dicom"`` and 400 for a malformed one. The framing of
the whole body is checked (parts spooled, see :func:`read_multipart`) before any part is stored.

Bodies are limited to :data:`STOW_MAX_BYTES` (2 GiB, set on the request as Flask's
``max_content_length``; a larger Content-Length, or a chunked body that grows past it, gets 413).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, replace

from flask import Response, abort, current_app, request
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from oncopacs.archive.decoding import decoding
from oncopacs.archive.extract import uid_or_none
from oncopacs.archive.ingest import Archive, IngestResult
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.auth.roles import Permission
from oncopacs.dicomweb.multipart import (
    MediaTypeError,
    MultipartError,
    ReceivedPart,
    read_multipart,
)
from oncopacs.dimse.auditing import refusal_text
from oncopacs.web.access import audit_access, current_principal, requires
from oncopacs.web.dicomweb import bp
from oncopacs.web.dicomweb.qido import DICOM_JSON, check_path_uids, dicomweb_base_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
STOW_MAX_BYTES = 2 << 30  # 2 GiB per request
#: FailureReason for an instance of another study than the one in the URL (A9xx: does not match).
STUDY_MISMATCH = 0xA900
_IDENTITY_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID"]


@dataclass(frozen=True, slots=True)
class PartIdentity:
    """What the header of a received part says it is (empty strings where it could not be read)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """What became of one part: stored (or already stored), or failed with a DICOM status."""

    identity: PartIdentity
    stored: bool
    status: int
    reason: str = ""


@bp.post("/studies")
@requires(Permission.ARCHIVE_WRITE)
def store_instances():
    return _store(None)


@bp.post("/studies/<study>")
@requires(Permission.ARCHIVE_WRITE)
def store_study_instances(study: str):
    check_path_uids(study=study)
    return _store(study)


def _store(study: str | None) -> Response:
    request.max_content_length = STOW_MAX_BYTES
    try:
        body = read_multipart(request.stream, request.headers.get("Content-Type"), root_type=DICOM)
    except MediaTypeError as exc:
        abort(415, description=str(exc))
    except MultipartError as exc:
        abort(400, description=str(exc))
    archive: Archive = current_app.extensions["oncopacs.archive"]
    source = f"STOW-RS {current_principal().name}"
    with body:
        outcomes = [_store_part(archive, part, study, source) for part in body.parts]
    stored = [o for o in outcomes if o.stored]
    status = 200 if len(stored) == len(outcomes) else 202 if stored else 409
    audit_access(
        AuditAction.STORE,
        patient_ids=[o.identity.patient_id for o in outcomes],
        study_uids=[o.identity.study_instance_uid for o in outcomes],
        outcome=Outcome.SUCCESS if status == 200 else Outcome.MINOR_FAILURE if stored else Outcome.SERIOUS_FAILURE,
        note=_refusals(outcomes),
    )
    document = build_store_response(outcomes, dicomweb_base_url(), study)
    return Response(json.dumps(document), status=status, mimetype=DICOM_JSON)


def _refusals(outcomes: list[PartOutcome]) -> str:
    """The refused parts as the STORE record names them: DICOM status (hex) and reason (UIDs, never values)."""
    refused = [refusal_text(o.status, o.reason) for o in outcomes if not o.stored]
    return f"refused: {'; '.join(refused)}" if refused else ""


def _store_part(archive: Archive, part: ReceivedPart, study: str | None, source: str) -> PartOutcome:
    data = part.read_bytes()
    identity = read_part_identity(data)
    if study is not None and identity.study_instance_uid and identity.study_instance_uid != study:
        log.warning("STOW-RS refused %s: it belongs to another study than the request's", identity.sop_instance_uid)
        return PartOutcome(identity, False, STUDY_MISMATCH, "the instance belongs to another study")
    result: IngestResult = archive.ingest(data, source=source)
    if not identity.sop_instance_uid and result.sop_instance_uid:
        identity = replace(identity, sop_instance_uid=result.sop_instance_uid)
    return PartOutcome(identity, result.acknowledged, int(result.status), result.reason)


def read_part_identity(data: bytes) -> PartIdentity:
    """The UIDs and Patient ID in a part's header; empty where the header cannot be read, or a UID is not valid
    (a damaged part's bytes are never echoed back: ingest judges it and says why)."""
    values = dict.fromkeys(_IDENTITY_TAGS, "")
    try:
        with decoding():  # pydicom's reports quote values: counted here, never logged
            dataset = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True, specific_tags=_IDENTITY_TAGS)
            for keyword in _IDENTITY_TAGS:
                value = dataset.get(keyword, "")
                values[keyword] = value.strip() if isinstance(value, str) else ""
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds of error on damaged input
        log.info("STOW-RS part header unreadable (%s); ingest will judge it", type(exc).__name__)
    for keyword in _IDENTITY_TAGS[:-1]:
        values[keyword] = uid_or_none(values[keyword]) or ""
    return PartIdentity(*values.values())


def build_store_response(outcomes: list[PartOutcome], base_url: str, study: str | None) -> dict:
    """The Store Instances Response Module (PS3.18 Annex I) as DICOM JSON."""
    response = Dataset()
    studies = {o.identity.study_instance_uid for o in outcomes if o.stored}
    target = study or (next(iter(studies)) if len(studies) == 1 else None)
    response.RetrieveURL = f"{base_url}/studies/{target}" if target and any(o.stored for o in outcomes) else None
    referenced, failed = Sequence(), Sequence()
    for outcome in outcomes:
        item = Dataset()
        identity = outcome.identity
        item.ReferencedSOPClassUID = identity.sop_class_uid or None
        item.ReferencedSOPInstanceUID = identity.sop_instance_uid or None
        if outcome.stored:
            item.RetrieveURL = (
                f"{base_url}/studies/{identity.study_instance_uid}/series/{identity.series_instance_uid}"
                f"/instances/{identity.sop_instance_uid}"
            )
            referenced.append(item)
        else:
            item.FailureReason = outcome.status
            failed.append(item)
    if referenced:
        response.ReferencedSOPSequence = referenced
    if failed:
        response.FailedSOPSequence = failed
    return response.to_json_dict()
