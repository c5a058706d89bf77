"""WADO-RS metadata and bulk data routes (PS3.18 10.4).

``…/metadata`` answers the DICOM JSON of every instance of a study, series or instance, read from
storage with the SHA-256 check; binary values over 1 KiB (pixel data above all) are replaced by a
``BulkDataURI`` pointing at ``…/instances/{in}/bulkdata/{tag path}``, which answers
``multipart/related; type="application/octet-stream"`` (or the bare bytes when the client asks for
``application/octet-stream`` alone, as OHIF's ``singlepart: 'bulkdata'`` does). An instance whose
stored file is damaged is left out of a study or series answer with a ``Warning: 299`` header, and
refused with a 500 when asked for alone (:mod:`oncopacs.web.dicomweb.damaged`).
"""

from __future__ import annotations

import json
import logging

from flask import Response, abort, current_app, request

from oncopacs.archive.ingest import Archive
from oncopacs.archive.storage import DamagedFileError
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.dicomweb.dicom_json import (
    build_instance_json,
    parse_tag_path,
    read_bulk_element,
    read_metadata_dataset,
)
from oncopacs.dicomweb.multipart import (
    BodyPart,
    MediaTypeError,
    build_multipart_content_type,
    new_boundary,
    parse_accept,
    write_multipart,
)
from oncopacs.errors import DicomInputError, NotFoundError
from oncopacs.index.demographics import CurrentPatient, coerce, current_demographics, needs_coercion
from oncopacs.index.query import StoredInstance, find_instances
from oncopacs.web.access import audit_access, requires
from oncopacs.web.dicomweb import bp
from oncopacs.web.dicomweb.damaged import (
    LeftOut,
    audit_delivered,
    read_or_refuse,
    record_left_out,
    refuse,
    warn_left_out,
)
from oncopacs.web.dicomweb.qido import DICOM_JSON, check_path_uids, dicomweb_base_url

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"


@bp.get("/studies/<study>/metadata")
@requires(Permission.ARCHIVE_READ)
def retrieve_study_metadata(study: str):
    return _metadata(StudyInstanceUID=study)


@bp.get("/studies/<study>/series/<series>/metadata")
@requires(Permission.ARCHIVE_READ)
def retrieve_series_metadata(study: str, series: str):
    return _metadata(StudyInstanceUID=study, SeriesInstanceUID=series)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
@requires(Permission.ARCHIVE_READ)
def retrieve_instance_metadata(study: str, series: str, instance: str):
    return _metadata(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<path:tag_path>")
@requires(Permission.ARCHIVE_READ)
def retrieve_bulkdata(study: str, series: str, instance: str, tag_path: str):
    try:
        parse_tag_path(tag_path)
    except ValueError as exc:
        abort(400, description=str(exc))
    (stored,) = _stored_instances(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)
    data = read_or_refuse(_archive(), stored)
    try:
        element = read_bulk_element(read_metadata_dataset(data), tag_path)
    except NotFoundError as exc:
        abort(404, description=str(exc))
    except DicomInputError as exc:
        log.error("bulk data %s of %s cannot be served: %s", tag_path, stored.sop_instance_uid, exc)
        abort(500, description=f"the bulk data {tag_path} of {stored.sop_instance_uid} cannot be read")
    audit_access(AuditAction.RETRIEVE, patient_ids=[stored.patient_id], study_uids=[stored.study_instance_uid])
    parts = element.parts
    part_type = OCTET_STREAM
    if element.transfer_syntax_uid:
        part_type += f"; transfer-syntax={element.transfer_syntax_uid}"
    if _wants_single_part() and len(parts) == 1:
        return Response(parts[0], mimetype=OCTET_STREAM)
    boundary = new_boundary()
    body = write_multipart([BodyPart(part_type, part) for part in parts], boundary)
    return Response(body, status=200, content_type=build_multipart_content_type(OCTET_STREAM, boundary))


def _metadata(**uids: str) -> Response:
    """The DICOM JSON of the instances these UIDs select; a damaged stored file leaves its instance out (the
    whole answer is built before it is sent, so the Warning can count what was left out)."""
    stored_instances = _stored_instances(**uids)
    base = dicomweb_base_url()
    archive = _archive()
    with archive.index.reading() as session:
        current = current_demographics(session, (s.study_instance_uid for s in stored_instances))
    documents, delivered, left_out = [], [], []
    for stored in stored_instances:
        try:
            data = archive.storage.read(stored.file_path, stored.sha256)
        except DamagedFileError as exc:
            left_out.append(LeftOut(stored, exc.damage))
            continue
        documents.append(_instance_json(data, stored, base, current.get(stored.study_instance_uid)))
        delivered.append(stored)
    total = len(stored_instances)
    if not delivered:
        refuse(left_out, total)
    record_left_out(left_out)
    audit_delivered(delivered, left_out, total)
    response = Response(json.dumps(documents), status=200, mimetype=DICOM_JSON)
    return warn_left_out(response, left_out, total)


def _instance_json(data: bytes, stored: StoredInstance, base: str, current: CurrentPatient | None) -> dict:
    dataset = read_metadata_dataset(data)
    if current is not None and needs_coercion(dataset, current):  # as QIDO-RS answers: the current demographics
        dataset = coerce(dataset, current)
    series = dataset.get("SeriesInstanceUID", "")
    prefix = f"{base}/studies/{stored.study_instance_uid}/series/{series}/instances/{stored.sop_instance_uid}/bulkdata/"
    return build_instance_json(dataset, lambda tag_path: prefix + tag_path)


def _stored_instances(**uids: str) -> list[StoredInstance]:
    """The stored instances with these UIDs; 404 when there are none."""
    check_path_uids(**uids)
    archive: Archive = current_app.extensions["oncopacs.archive"]
    with archive.index.reading() as session:
        found = find_instances(session, uids)
    if not found:
        what = ", ".join(f"{k} {v}" for k, v in uids.items())
        abort(404, description=f"no stored instances with {what}")
    return found


def _archive() -> Archive:
    return current_app.extensions["oncopacs.archive"]


def _wants_single_part() -> bool:
    """True when the client accepts application/octet-stream but neither multipart/related nor */*."""
    try:
        essences = {entry.essence for entry in parse_accept(request.headers.get("Accept"))}
    except MediaTypeError:
        return False
    return OCTET_STREAM in essences and not essences & {"multipart/related", "*/*"}
