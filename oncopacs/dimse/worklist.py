"""The Modality Worklist C-FIND SCP (Modality Worklist Information Model – FIND, PS3.4 K.6).

A modality asks for its scheduled procedure steps; each SCHEDULED step matching the keys (PS3.4 K.6.1.2.2, see
:func:`oncopacs.index.worklist.find_worklist`) is answered with the attributes the request asked for, the
Scheduled Procedure Step Sequence holding one item. Every query is audited like any C-FIND, before it is answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.audit.events import Outcome
from oncopacs.dimse.auditing import DimseAudit
from oncopacs.dimse.identifiers import RESPONSE_CHARACTER_SET, read_query_keys
from oncopacs.errors import AuditError
from oncopacs.index.db import IndexDatabase
from oncopacs.index.query import QueryError
from oncopacs.index.worklist import WorklistEntry, find_worklist

log = logging.getLogger(__name__)

SERVICE = "WORKLIST"
PENDING, CANCEL = 0xFF00, 0xFE00
IDENTIFIER_DOES_NOT_MATCH, UNABLE_TO_PROCESS = 0xA900, 0xC000

#: Return keys of the identifier's top level (PS3.4 K.6.1.2.2) -> WorklistEntry field.
TOP_LEVEL = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex",
    "AccessionNumber": "accession_number",
    "RequestedProcedureID": "requested_procedure_id",
    "RequestedProcedureDescription": "requested_procedure_description",
    "StudyInstanceUID": "study_instance_uid",
    "ReferringPhysicianName": "referring_physician_name",
}
#: Return keys of the Scheduled Procedure Step Sequence's item -> WorklistEntry field.
STEP_ITEM = {
    "ScheduledStationAETitle": "scheduled_station_ae",
    "ScheduledProcedureStepStartDate": "scheduled_date",
    "ScheduledProcedureStepStartTime": "scheduled_time",
    "Modality": "modality",
    "ScheduledProcedureStepDescription": "scheduled_step_description",
    "ScheduledProcedureStepID": "scheduled_step_id",
    "ScheduledProcedureStepStatus": "status",
}
_SKIPPED = {"SpecificCharacterSet", "QueryRetrieveLevel"}


def read_worklist_keys(identifier: Dataset) -> dict[str, str]:
    """Matching keys of a worklist query: the top level's and those of the step sequence's first item."""
    keys = read_query_keys(identifier)
    steps = identifier.get("ScheduledProcedureStepSequence")
    if steps:
        keys.update(read_query_keys(steps[0]))
    return keys


def build_worklist_response(identifier: Dataset, entry: WorklistEntry) -> Dataset:
    """The response identifier of one step: each requested attribute with its value (empty when not held).

    A Scheduled Procedure Step Sequence asked for without an item (or with an empty one) returns every step
    attribute held; other sequences come back empty.
    """
    reply = Dataset()
    reply.SpecificCharacterSet = RESPONSE_CHARACTER_SET
    for element in identifier:
        if element.keyword in _SKIPPED:
            continue
        if element.keyword == "ScheduledProcedureStepSequence":
            asked = element.value[0] if element.value else Dataset()
            reply.ScheduledProcedureStepSequence = Sequence([_step_item(asked, entry)])
        elif element.VR == "SQ":
            reply.add(DataElement(element.tag, "SQ", Sequence()))
        else:
            reply.add(DataElement(element.tag, element.VR, _value(TOP_LEVEL, element.keyword, entry)))
    return reply


def _step_item(asked: Dataset, entry: WorklistEntry) -> Dataset:
    item = Dataset()
    if not any(element.keyword not in _SKIPPED for element in asked):
        for keyword, field in STEP_ITEM.items():
            setattr(item, keyword, getattr(entry, field) or None)
        return item
    for element in asked:
        if element.keyword in _SKIPPED:
            continue
        if element.VR == "SQ":
            item.add(DataElement(element.tag, "SQ", Sequence()))
        else:
            item.add(DataElement(element.tag, element.VR, _value(STEP_ITEM, element.keyword, entry)))
    return item


def _value(fields: Mapping[str, str], keyword: str, entry: WorklistEntry) -> str | None:
    field = fields.get(keyword)
    return (getattr(entry, field) or None) if field else None


class WorklistFind:
    """Answers Modality Worklist C-FIND requests from one index."""

    def __init__(self, index: IndexDatabase, audit: DimseAudit):
        self.index = index
        self.audit = audit

    def on_find(self, event) -> Iterator[tuple[int | Dataset, Dataset | None]]:  # a pynetdicom C-FIND event
        calling_ae = event.assoc.requestor.ae_title
        keys: dict[str, str] = {}
        try:
            identifier = event.identifier
            keys = read_worklist_keys(identifier)
            with self.index.reading() as session:
                matches = find_worklist(session, keys)
        except QueryError as exc:
            log.warning("worklist C-FIND from %s refused: %s", calling_ae, exc)
            self._audit_quietly(event, keys, Outcome.MINOR_FAILURE, f"refused: {exc}")
            yield _status(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
            return
        except (SQLAlchemyError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("worklist C-FIND from %s failed: %s", calling_ae, type(exc).__name__)
            self._audit_quietly(event, keys, Outcome.SERIOUS_FAILURE, f"failed: {type(exc).__name__}")
            yield _status(UNABLE_TO_PROCESS, "unable to process the query"), None
            return
        try:  # recorded before any match is sent: no audit record, no answer (fail closed)
            self.audit.query(event.assoc, SERVICE, SERVICE, keys, (_audited(entry) for entry in matches))
        except AuditError as exc:
            log.error("worklist C-FIND from %s refused: %s", calling_ae, exc)
            yield _status(UNABLE_TO_PROCESS, "the audit trail is unavailable"), None
            return
        log.info("worklist C-FIND from %s: %d matches", calling_ae, len(matches))
        for entry in matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, build_worklist_response(identifier, entry)

    def _audit_quietly(self, event, keys: Mapping[str, str], outcome: Outcome, problem: str) -> None:
        try:
            self.audit.query(event.assoc, SERVICE, SERVICE, keys, (), outcome, problem)
        except Exception as exc:  # noqa: BLE001 - pynetdicom must not see it; the failure is logged
            log.error("audit record not written: %s", exc if isinstance(exc, AuditError) else type(exc).__name__)


def _audited(entry: WorklistEntry) -> dict[str, str]:
    return {"PatientID": entry.patient_id, "StudyInstanceUID": entry.study_instance_uid}


def _status(status: int, comment: str) -> Dataset:
    reply = Dataset()
    reply.Status = status
    reply.ErrorComment = comment.encode("ascii", "replace").decode("ascii")[:64]
    return reply


__all__ = ["STEP_ITEM", "TOP_LEVEL", "WorklistFind", "build_worklist_response", "read_worklist_keys"]
