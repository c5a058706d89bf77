"""WADO-RS routes: instances (study, series, instance), frames, rendered images and thumbnails.

Instances go out as ``multipart/related; type="application/dicom"``: the stored bytes exactly as
stored (each read checks its SHA-256) when the Accept header allows the stored transfer syntax or
``transfer-syntax=*`` (and with no Accept header at all), or transcoded to explicit VR little endian
when that is what the client asks for (``type="application/dicom"`` without a transfer-syntax means
explicit VR little endian, as PS3.18 says). An Accept header that cannot be met gets 406.
Multi-instance bodies are streamed one instance at a time; an instance whose stored file is damaged is
left out of them with a ``Warning: 299`` header, and refused with a 500 when asked for alone
(:mod:`oncopacs.web.dicomweb.damaged`).
"""

from __future__ import annotations

import io
import itertools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

from flask import Response, abort, current_app, request, stream_with_context
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from oncopacs.archive.ingest import Archive
from oncopacs.archive.storage import DamagedFileError
from oncopacs.archive.transcode import TranscodeError, fit_transfer_syntax
from oncopacs.audit.events import AuditAction
from oncopacs.auth.roles import Permission
from oncopacs.dicomweb.frames import (
    MAX_FRAME_NUMBER,
    FrameRequestError,
    choose_frame_encoding,
    parse_frame_list,
    parse_frame_number,
    read_frames,
    read_number_of_frames,
)
from oncopacs.dicomweb.multipart import (
    BodyPart,
    MediaType,
    MediaTypeError,
    MultipartError,
    build_multipart_content_type,
    new_boundary,
    parse_accept,
    write_multipart,
)
from oncopacs.dicomweb.rendering import (
    RenderError,
    choose_rendered_type,
    parse_render_spec,
    parse_viewport,
    render_frame,
    render_thumbnail,
)
from oncopacs.errors import NotFoundError
from oncopacs.index.demographics import CurrentPatient, coerce_part10, current_demographics
from oncopacs.index.query import QueryLevel, StoredInstance, find, find_instances
from oncopacs.web.access import audit_access, requires
from oncopacs.web.dicomweb import bp
from oncopacs.web.dicomweb.damaged import (
    LeftOut,
    audit_delivered,
    check_files,
    read_or_refuse,
    record_left_out,
    record_left_out_quietly,
    refuse,
    warn_left_out,
)
from oncopacs.web.dicomweb.qido import check_path_uids, dicomweb_base_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
MAX_THUMBNAIL_SERIES_TRIED = 20


# -- instances ----------------------------------------------------------------------------------


@bp.get("/studies/<study>")
@requires(Permission.ARCHIVE_READ)
def retrieve_study(study: str):
    return _retrieve_instances(StudyInstanceUID=study)


@bp.get("/studies/<study>/series/<series>")
@requires(Permission.ARCHIVE_READ)
def retrieve_series(study: str, series: str):
    return _retrieve_instances(StudyInstanceUID=study, SeriesInstanceUID=series)


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
@requires(Permission.ARCHIVE_READ)
def retrieve_instance(study: str, series: str, instance: str):
    return _retrieve_instances(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)


def _retrieve_instances(**uids: str) -> Response:
    """The instances these UIDs select as one multipart body, streamed one instance at a time.

    Every stored file is hashed before the answer starts (:func:`check_files`): once the first byte of a
    streamed body is out neither its status nor its headers can change, and HTTP/1.1 multipart has no trailer
    a client reads, so this pre-check is what lets a damaged instance be left out with a ``Warning`` that
    counts it. Memory stays one file at a time; the price is reading each file twice, the second time mostly
    from the page cache (SHA-256 runs at about 1.5 GB/s, so about 0.1 s per 150 MB before the first byte).
    A file damaged between the check and its turn is still never sent: it is left out of the stream (framing
    intact), logged and audited, though the Warning already sent cannot count it.
    """
    stored = _stored_instances(**uids)
    accept = _accept_header()
    plan = {instance.sop_instance_uid: choose_instance_syntax(accept, instance.transfer_syntax_uid)
            for instance in stored}
    refused = sorted({instance.transfer_syntax_uid for instance in stored if plan[instance.sop_instance_uid] is None})
    if refused:
        abort(406, description=(
            "the Accept header allows none of the syntaxes these instances can be sent in "
            f"(stored: {', '.join(refused)})"
        ))
    archive = _archive()
    checked = check_files(archive, stored)
    if not checked.healthy:
        refuse(checked.left_out, total=len(stored))
    record_left_out(checked.left_out)
    base = dicomweb_base_url()
    series_of = _series_by_sop(uids)
    current = _current_patients(archive, list(checked.healthy))
    parts = _instance_parts(
        archive,
        [
            (instance, cast(str, plan[instance.sop_instance_uid]))  # a None was refused above
            for instance in checked.healthy
        ],
        current,
        lambda instance: (
            f"{base}/studies/{instance.study_instance_uid}/series/{series_of.get(instance.sop_instance_uid, '')}"
        ),
    )
    body = write_multipart(parts, boundary := new_boundary())
    try:
        first = next(body)  # reads the first file now: a failure is an error status, not a broken stream
    except MultipartError:  # every file checked whole was damaged by its turn (left out and audited)
        abort(500, description="none of the instances can be sent: their stored copies are damaged; "
                               "the archive's other instances are unaffected")
    except TranscodeError as exc:
        abort(406, description=str(exc))
    audit_delivered(checked.healthy, checked.left_out, len(stored))
    response = Response(
        stream_with_context(itertools.chain([first], body)),  # a late left-out instance is audited mid-stream
        status=200,
        content_type=build_multipart_content_type(DICOM, boundary),
    )
    return warn_left_out(response, checked.left_out, len(stored))


def _instance_parts(archive: Archive, plan: list[tuple[StoredInstance, str]], current: dict[str, CurrentPatient],
                    series_url: Callable[[StoredInstance], str]) -> Iterator[BodyPart]:
    """Each instance's part, read when its turn comes; one whose file is damaged by then is left out."""
    for instance, syntax in plan:
        try:
            part = _instance_part(archive, instance, current.get(instance.study_instance_uid), syntax,
                                  series_url(instance))
        except DamagedFileError as exc:
            record_left_out_quietly([LeftOut(instance, exc.damage)])
            continue
        yield part


def choose_instance_syntax(accept: list[MediaType], stored_syntax: str) -> str | None:
    """The transfer syntax to send an instance stored in ``stored_syntax`` in; None when none fits."""
    if not accept:
        return stored_syntax
    for entry in accept:
        if entry.essence in ("*/*", "*"):
            return stored_syntax
        if entry.essence != "multipart/related":
            continue
        part_type = entry.parameters.get("type", DICOM).lower()
        if part_type not in (DICOM, "application/*", "*/*"):
            continue
        syntax = entry.parameters.get("transfer-syntax")
        if syntax in ("*", stored_syntax) or (syntax is None and part_type != DICOM):
            return stored_syntax
        if syntax in (None, ExplicitVRLittleEndian) and (
            stored_syntax == ExplicitVRLittleEndian or _can_transcode(UID(stored_syntax))
        ):
            return ExplicitVRLittleEndian
    return None


def _can_transcode(stored: UID) -> bool:
    if stored == ImplicitVRLittleEndian:
        return True
    if not stored.is_transfer_syntax or not stored.is_compressed:  # an unknown syntax, kept as received
        return False
    try:
        return get_decoder(stored).is_available
    except NotImplementedError:
        return False


def _instance_part(archive: Archive, instance: StoredInstance, current: CurrentPatient | None, syntax: str,
                   series_url: str) -> BodyPart:
    data = archive.storage.read(instance.file_path, instance.sha256)  # DamagedFileError: left out by the caller
    if current is not None:  # the EHR changed the patient: the stored file is not, the copy sent is
        try:
            with tolerant_pydicom():
                data = coerce_part10(data, current)
        except Exception as exc:  # noqa: BLE001 - a damaged element; pydicom's text quotes its value
            raise TranscodeError(f"the stored instance cannot be re-encoded with the current patient "
                                 f"demographics ({type(exc).__name__})") from None
    if syntax != instance.transfer_syntax_uid:
        data = encode_explicit_little_endian(data)
    return BodyPart(f"{DICOM}; transfer-syntax={syntax}", data, f"{series_url}/instances/{instance.sop_instance_uid}")


def encode_explicit_little_endian(data: bytes) -> bytes:
    """A Part 10 file re-encoded in explicit VR little endian (decompressing its pixel data if needed).

    TranscodeError when the stored file (kept as received) has an element pydicom cannot re-encode.
    """
    buffer = io.BytesIO()
    try:
        with tolerant_pydicom():
            dataset = fit_transfer_syntax(dcmread(io.BytesIO(data)), {ExplicitVRLittleEndian})
            meta = FileMetaDataset(dataset.file_meta)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset.file_meta = meta
            dcmwrite(buffer, dataset, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except TranscodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged element; pydicom's text quotes its value
        raise TranscodeError(f"the stored instance cannot be re-encoded in explicit VR little endian "
                             f"({type(exc).__name__}); ask for transfer-syntax=* to get it as stored") from None
    return buffer.getvalue()


@contextmanager
def tolerant_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings on harmless deviations of stored files (a UID with a leading zero ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _current_patients(archive: Archive, stored: list[StoredInstance]) -> dict[str, CurrentPatient]:
    """Current demographics of the studies whose patient an ADT message changed; none when the site keeps the
    original bytes on retrieve (``keep_original_on_retrieve``)."""
    if current_app.extensions["oncopacs.settings"].keep_original_on_retrieve:
        return {}
    with archive.index.reading() as session:
        return current_demographics(session, (instance.study_instance_uid for instance in stored))


def _series_by_sop(uids: dict[str, str]) -> dict[str, str]:
    """SOP Instance UID -> Series Instance UID of the instances these UIDs select (for Content-Location)."""
    with _archive().index.reading() as session:
        return {
            m.values["SOPInstanceUID"]: m.values["SeriesInstanceUID"] for m in find(session, QueryLevel.IMAGE, uids)
        }


# -- frames -------------------------------------------------------------------------------------


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>")
@requires(Permission.ARCHIVE_READ)
def retrieve_frames(study: str, series: str, instance: str, frame_list: str):
    try:
        numbers = parse_frame_list(frame_list)
    except FrameRequestError as exc:
        abort(400, description=str(exc))
    stored = _one_instance(study, series, instance)
    encoding = choose_frame_encoding(_accept_header(), stored.transfer_syntax_uid)
    if encoding is None:
        abort(
            406, description=f"the Accept header allows no media type for frames stored in {stored.transfer_syntax_uid}"
        )
    try:
        with tolerant_pydicom():
            frames = read_frames(_read_dataset(stored), numbers, encoding)
    except NotFoundError as exc:
        abort(404, description=str(exc))
    except FrameRequestError as exc:
        abort(400, description=str(exc))
    _audit_retrieve(stored)
    location = f"{dicomweb_base_url()}/studies/{study}/series/{series}/instances/{instance}/frames/"
    parts = [BodyPart(frame.encoding.content_type, frame.data, f"{location}{frame.number}") for frame in frames]
    boundary = new_boundary()
    return Response(
        write_multipart(parts, boundary),
        status=200,
        content_type=build_multipart_content_type(encoding.media_type, boundary),
    )


# -- rendered and thumbnails --------------------------------------------------------------------


@bp.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
@requires(Permission.ARCHIVE_READ)
def retrieve_rendered_instance(study: str, series: str, instance: str):
    return _rendered(_one_instance(study, series, instance), 1)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame>/rendered")
@requires(Permission.ARCHIVE_READ)
def retrieve_rendered_frame(study: str, series: str, instance: str, frame: str):
    return _rendered(_one_instance(study, series, instance), _frame_number(frame, "a rendered frame"))


@bp.get("/studies/<study>/thumbnail")
@requires(Permission.ARCHIVE_READ)
def retrieve_study_thumbnail(study: str):
    check_path_uids(study=study)
    with _archive().index.reading() as session:
        series_uids = [
            m.values["SeriesInstanceUID"] for m in find(session, QueryLevel.SERIES, {"StudyInstanceUID": study})
        ]
    if not series_uids:
        abort(404, description=f"no stored instances with StudyInstanceUID {study}")
    for series in series_uids[:MAX_THUMBNAIL_SERIES_TRIED]:
        stored = _middle_instance(study, series)
        dataset = _read_dataset(stored)
        if read_number_of_frames(dataset):
            return _thumbnail(stored, dataset, None)
    abort(404, description=f"study {study} has no image to make a thumbnail of")


@bp.get("/studies/<study>/series/<series>/thumbnail")
@requires(Permission.ARCHIVE_READ)
def retrieve_series_thumbnail(study: str, series: str):
    check_path_uids(study=study, series=series)
    stored = _middle_instance(study, series)
    return _thumbnail(stored, _read_dataset(stored), None)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
@requires(Permission.ARCHIVE_READ)
def retrieve_instance_thumbnail(study: str, series: str, instance: str):
    stored = _one_instance(study, series, instance)
    return _thumbnail(stored, _read_dataset(stored), None)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame>/thumbnail")
@requires(Permission.ARCHIVE_READ)
def retrieve_frame_thumbnail(study: str, series: str, instance: str, frame: str):
    number = _frame_number(frame, "a thumbnail frame")
    stored = _one_instance(study, series, instance)
    return _thumbnail(stored, _read_dataset(stored), number)


def _frame_number(frame: str, what: str) -> int:
    """The one frame number of a ``/frames/{frame}/...`` path (400 naming the frame otherwise)."""
    try:
        return parse_frame_number(frame)
    except FrameRequestError:
        abort(400, description=f"{what} is one frame number from 1 to {MAX_FRAME_NUMBER}, got {frame[:20]!r}")


def _rendered(stored: StoredInstance, frame_number: int) -> Response:
    media_type = _rendered_media_type()
    try:
        spec = parse_render_spec(request.args, media_type)
    except RenderError as exc:
        abort(400, description=str(exc))
    dataset = _read_dataset(stored)
    _check_frame_exists(dataset, frame_number)
    try:
        with tolerant_pydicom():
            image = render_frame(dataset, frame_number, spec)
    except RenderError as exc:
        abort(400, description=str(exc))
    _audit_retrieve(stored)
    return Response(image.data, status=200, mimetype=image.media_type)


def _thumbnail(stored: StoredInstance, dataset: Dataset, frame_number: int | None) -> Response:
    media_type = _rendered_media_type()
    if frame_number is not None:
        _check_frame_exists(dataset, frame_number)
    try:
        viewport = parse_viewport(request.args["viewport"]) if request.args.get("viewport") else None
        with tolerant_pydicom():
            image = render_thumbnail(dataset, media_type, viewport_px=viewport, frame_number=frame_number)
    except RenderError as exc:
        abort(400, description=str(exc))
    _audit_retrieve(stored)
    return Response(image.data, status=200, mimetype=image.media_type)


def _rendered_media_type() -> str:
    """The rendered type from the ``accept`` query parameter, else the Accept header (406 if none fits)."""
    try:
        accept = parse_accept(request.args.get("accept") or request.headers.get("Accept"))
    except MediaTypeError as exc:
        abort(400, description=str(exc))
    media_type = choose_rendered_type(accept)
    if media_type is None:
        abort(406, description="rendered images are image/jpeg, image/png or image/gif")
    return media_type


def _check_frame_exists(dataset: Dataset, frame_number: int) -> None:
    count = read_number_of_frames(dataset)
    if count == 0:
        abort(400, description=f"instance {dataset.get('SOPInstanceUID', '')} has no pixel data to render")
    if frame_number > count:
        abort(404, description=f"frame {frame_number} does not exist: the instance has {count} frame(s)")


# -- shared -------------------------------------------------------------------------------------


def _archive() -> Archive:
    return current_app.extensions["oncopacs.archive"]


def _accept_header() -> list[MediaType]:
    try:
        return parse_accept(request.headers.get("Accept"))
    except MediaTypeError as exc:
        abort(400, description=str(exc))


def _stored_instances(**uids: str) -> list[StoredInstance]:
    """The stored instances with these UIDs (400 for a malformed UID, 404 when there are none)."""
    check_path_uids(**uids)
    with _archive().index.reading() as session:
        found = find_instances(session, uids)
    if not found:
        what = ", ".join(f"{keyword} {uid}" for keyword, uid in uids.items())
        abort(404, description=f"no stored instances with {what}")
    return found


def _one_instance(study: str, series: str, instance: str) -> StoredInstance:
    return _stored_instances(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)[0]


def _middle_instance(study: str, series: str) -> StoredInstance:
    """The instance in the middle of a series, by Instance Number (then by arrival)."""
    stored = _stored_instances(StudyInstanceUID=study, SeriesInstanceUID=series)
    with _archive().index.reading() as session:
        numbers = {
            m.values["SOPInstanceUID"]: m.values.get("InstanceNumber")
            for m in find(session, QueryLevel.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})
        }
    ordered = sorted(stored, key=lambda s: (_as_number(numbers.get(s.sop_instance_uid)),))
    return ordered[(len(ordered) - 1) // 2]


def _as_number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("inf")


def _read_dataset(stored: StoredInstance) -> Dataset:
    """One instance's dataset; a damaged stored file is audited and answered 500 (no path in the answer)."""
    data = read_or_refuse(_archive(), stored)
    with tolerant_pydicom():
        return dcmread(io.BytesIO(data))


def _audit_retrieve(stored: StoredInstance) -> None:
    audit_access(AuditAction.RETRIEVE, patient_ids=[stored.patient_id], study_uids=[stored.study_instance_uid])

