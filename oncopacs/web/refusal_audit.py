"""The audit record of every refused request for patient data: the 401, 403 and 404 answers, whatever made them.

One ``after_request`` hook sees every answer (a view's ``abort``, the authentication hook's challenge or its
redirect to sign-in, an error handler's), so no route records its own refusal. Only the doors to patient data
(:data:`DOORS`) are audited: never ``/login`` (it records LOGIN_FAILED itself), ``/health``, static files, Dash's
bundles or OHIF's build. A request whose refusal is already recorded (a route's own 404 record, a failed
sign-in's LOGIN_FAILED) gets no second record.

Event IDs (DICOM PS3.15 A.5.3): a 401, or a page's redirect to sign-in, failed before any patient data was
touched and names no user, so it is User Authentication (110114) with outcome 8 (serious failure: the action
was terminated). A 403 or 404 is the attempted event itself (Query, DICOM Instances Transferred, Patient Record,
Export, Audit Log Used: what the route records when it succeeds) with a failure outcome, as IHE ATNA reports a
refused access: 8 for a 403 (terminated), 4 for a 404 (minor: the caller may ask again; the routes that record
their own 404 already use 4).

Flooding: anonymous 401s (and redirects to sign-in) are recorded at most once per second per source address;
the next record from that address counts those folded into it. A flood of them therefore writes at most one
record per second per address, where one failed sign-in writes one record per attempt. The folding table keeps
at most :data:`MAX_SOURCES` addresses; beyond that every address shares one slot.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from werkzeug.http import HTTP_STATUS_CODES

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.errors import AuditError
from oncopacs.web.access import FAILURE_AUDITED, audit_trail, is_public

log = logging.getLogger(__name__)

MAX_SOURCES = 4096  # addresses whose anonymous refusals are folded one by one
MAX_IDENTIFIERS = 16  # patient IDs or study UIDs taken from one request
_REFUSED = frozenset({401, 403, 404})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SEARCHES = frozenset({"studies", "series", "instances", "patients", "reports"})
_DASH_FILES = ("/_dash-component-suites/", "/assets/")
_DASH_ENDINGS = ("/_favicon.ico", "/_reload-hash", "/_dash-dependencies")
_PATIENT_KEYS = ("PatientID", "00100020")
_STUDY_KEYS = ("StudyInstanceUID", "0020000D", "StudyInstanceUIDs")
_PATIENT_ARGS = ("patient_id",)
_STUDY_ARGS = ("study", "study_uid")


@dataclass(frozen=True, slots=True)
class Door:
    """Paths at ``prefix`` hold patient data: a refused GET is recorded as ``read``, any other method as ``write``."""

    prefix: str
    read: AuditAction
    write: AuditAction = AuditAction.PATIENT_RECORD
    suffix: str = ""  # only paths ending so
    exact: bool = False  # only the prefix itself

    def admits(self, path: str) -> bool:
        if self.exact:
            return path == self.prefix
        under = path == self.prefix.rstrip("/") or path.startswith(self.prefix.rstrip("/") + "/")
        return under and path.endswith(self.suffix)


#: The doors to patient data, first match wins. A GET of a collection (``.../studies``) is a Query.
DOORS: tuple[Door, ...] = (
    Door("/dicom-web", AuditAction.RETRIEVE, AuditAction.STORE),
    Door("/api/audit", AuditAction.AUDIT_LOG_USED),
    Door("/api/patients", AuditAction.READ),
    Door("/api/studies", AuditAction.READ),
    Door("/api/series", AuditAction.READ),
    Door("/api/metrics", AuditAction.QUERY),
    Door("/api/hl7/messages", AuditAction.READ),
    Door("/api/reports", AuditAction.EXPORT, suffix="/pdf"),
    Door("/api/reports", AuditAction.REPORT_VIEW),
    Door("/reports", AuditAction.REPORT_VIEW),
    Door("/studies", AuditAction.QUERY),
    Door("/", AuditAction.QUERY, exact=True),  # the study browser
    Door("/viewer", AuditAction.RETRIEVE, exact=True),  # /viewer?StudyInstanceUIDs=...; OHIF's own files are not
    Door("/slices", AuditAction.RETRIEVE),
    Door("/dashboards", AuditAction.READ),
)


def refused_action(method: str, path: str) -> AuditAction | None:
    """The event a refused ``method path`` is recorded as; None when the path is no door to patient data."""
    if path.startswith("/dashboards/") and (any(p in path for p in _DASH_FILES) or path.endswith(_DASH_ENDINGS)):
        return None
    door = next((d for d in DOORS if d.admits(path)), None)
    if door is None:
        return None
    if method not in ("GET", "HEAD"):
        return door.write
    if path.startswith(("/dicom-web/", "/api/")) and path.rsplit("/", 1)[-1] in _SEARCHES:
        return AuditAction.QUERY
    return door.read


class Folding:
    """At most one record per ``window_s`` per source address; how many were folded into the next one."""

    def __init__(self, window_s: float = 1.0, max_sources: int = MAX_SOURCES) -> None:
        self.window_s = window_s
        self.max_sources = max_sources
        self._slots: dict[str, tuple[float, int]] = {}  # address -> (last recorded, folded since)
        self._lock = threading.Lock()

    def admit(self, source: str, now: float) -> int | None:
        """The count folded since the last record from ``source`` when this one is recorded; None to fold it."""
        with self._lock:
            if source not in self._slots and len(self._slots) >= self.max_sources:
                self._slots = {s: v for s, v in self._slots.items() if now - v[0] < self.window_s or v[1]}
                if len(self._slots) >= self.max_sources:
                    source = ""  # every further address shares one slot
            last, folded = self._slots.get(source, (float("-inf"), 0))
            if now - last < self.window_s:
                self._slots[source] = (last, folded + 1)
                return None
            self._slots[source] = (now, 0)
            return folded


def install_refusal_audit(app: Flask) -> None:
    """Record every 401, 403 and 404 answer (and redirect to sign-in) on a door to patient data."""
    app.extensions["oncopacs.refusal_folding"] = Folding()
    app.after_request(_audit_refusal)


def _audit_refusal(response: Response) -> Response:
    status = response.status_code
    principal = g.get("principal")
    to_sign_in = principal is None and status in _REDIRECTS and not _is_public_endpoint()
    if (status not in _REFUSED and not to_sign_in) or request.method == "OPTIONS" or g.get(FAILURE_AUDITED):
        return response
    resource_action = refused_action(request.method, request.path)
    if resource_action is None:
        return response
    source = request.remote_addr or ""
    unauthenticated = status == 401 or to_sign_in
    note = "sign-in required (redirected)" if to_sign_in else f"{status} {HTTP_STATUS_CODES.get(status, '')}"
    if unauthenticated:
        folded = current_app.extensions["oncopacs.refusal_folding"].admit(source, time.monotonic())
        if folded is None:
            return response
        if folded:
            note += f"; {folded} more such refusal(s) from this address folded into this record"
    if unauthenticated:
        action, outcome = AuditAction.LOGIN_FAILED, Outcome.SERIOUS_FAILURE
    else:
        action, outcome = resource_action, Outcome.MINOR_FAILURE if status == 404 else Outcome.SERIOUS_FAILURE
    event = AuditEvent(
        action=action, outcome=outcome, actor=principal.name if principal is not None else "anonymous",
        actor_kind=ActorKind.USER, source=source, patient_ids=_identifiers(_PATIENT_ARGS, _PATIENT_KEYS),
        study_uids=_identifiers(_STUDY_ARGS, _STUDY_KEYS), detail=f"{_request_line()}: {note}"[:2000],
    )
    try:
        audit_trail().record(event)
    except AuditError as exc:  # the request is refused either way: nothing was disclosed
        log.error("refusal not audited: %s", exc)
    return response


def _is_public_endpoint() -> bool:
    return request.endpoint is not None and is_public(current_app.view_functions.get(request.endpoint))


def _identifiers(arg_names: tuple[str, ...], query_keys: tuple[str, ...]) -> tuple[str, ...]:
    """The patient IDs or study UIDs the request names, in its path or its query (commas separate UIDs)."""
    found = [str(value) for name, value in (request.view_args or {}).items() if name in arg_names]
    for key in query_keys:
        for value in request.args.getlist(key):
            found.extend(value.split(",") if key == "StudyInstanceUIDs" else [value])
    return tuple(dict.fromkeys(v.strip()[:64] for v in found if v.strip()))[:MAX_IDENTIFIERS]


def _request_line() -> str:
    """The method and path, and the query's keys without their values (which may hold patient data)."""
    keys = dict.fromkeys(request.args.keys())
    return f"{request.method} {request.path}" + ("?" + "&".join(f"{k[:64]}=…" for k in keys) if keys else "")


__all__ = ["DOORS", "Door", "Folding", "install_refusal_audit", "refused_action"]
