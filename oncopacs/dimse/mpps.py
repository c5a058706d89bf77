"""The Modality Performed Procedure Step SCP (PS3.4 F.7): a modality tells which scheduled step it performs.

N-CREATE (status IN PROGRESS) names the steps in its Scheduled Step Attributes Sequence (accession number,
scheduled procedure step ID, study instance UID); those SCHEDULED steps go IN PROGRESS and leave the worklist.
N-SET with COMPLETED or DISCONTINUED closes them. A procedure nobody scheduled is accepted and remembered for the
life of the process (up to :data:`UNSCHEDULED_KEPT` of them) so that its N-SET is answered too.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from pydicom import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.exc import SQLAlchemyError

from oncopacs.index.db import IndexDatabase
from oncopacs.index.worklist import StepReference, StepStatus, finish_steps, start_steps, steps_of_mpps
from oncopacs.uids import UID_PREFIX, is_valid_uid

log = logging.getLogger(__name__)

SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
UNSCHEDULED_KEPT = 1000
_FINAL = {StepStatus.COMPLETED.value: StepStatus.COMPLETED, StepStatus.DISCONTINUED.value: StepStatus.DISCONTINUED}


def read_step_references(attributes: Dataset) -> list[StepReference]:
    """The steps an MPPS N-CREATE's Scheduled Step Attributes Sequence names."""
    return [
        StepReference(
            accession_number=str(item.get("AccessionNumber", "") or "").strip(),
            scheduled_step_id=str(item.get("ScheduledProcedureStepID", "") or "").strip(),
            study_instance_uid=str(item.get("StudyInstanceUID", "") or "").strip(),
        )
        for item in attributes.get("ScheduledStepAttributesSequence", None) or []
    ]


class MppsService:
    """MPPS N-CREATE and N-SET against one index's worklist."""

    def __init__(self, index: IndexDatabase):
        self.index = index
        self._unscheduled: OrderedDict[str, str] = OrderedDict()  # MPPS UID -> its status
        self._lock = threading.Lock()

    def on_n_create(self, event) -> tuple[int, Dataset | None]:  # a pynetdicom N-CREATE event
        calling_ae = event.assoc.requestor.ae_title
        given = str(event.request.AffectedSOPInstanceUID or "")
        if given and not is_valid_uid(given):
            return INVALID_ATTRIBUTE_VALUE, None
        mpps_uid = given or str(generate_uid(prefix=UID_PREFIX))
        try:
            attributes = event.attribute_list
            status = str(attributes.get("PerformedProcedureStepStatus", "") or "").strip().upper()
            if status != StepStatus.IN_PROGRESS.value:
                log.warning("MPPS N-CREATE from %s refused: status is not IN PROGRESS", calling_ae)
                return INVALID_ATTRIBUTE_VALUE, None
            references = read_step_references(attributes)
            with self.index.writing() as session:
                if steps_of_mpps(session, mpps_uid) or mpps_uid in self._unscheduled:
                    return DUPLICATE_INSTANCE, None
                started = start_steps(session, mpps_uid, references)
        except (SQLAlchemyError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("MPPS N-CREATE from %s failed: %s", calling_ae, type(exc).__name__)
            return PROCESSING_FAILURE, None
        if not started:
            self._remember_unscheduled(mpps_uid, status)
        log.info("MPPS %s from %s: %d scheduled step(s) in progress", mpps_uid, calling_ae, started)
        reply = Dataset()
        if not given:
            reply.AffectedSOPInstanceUID = mpps_uid  # pynetdicom moves it to the response's command set
        return SUCCESS, reply

    def on_n_set(self, event) -> tuple[int, Dataset | None]:  # a pynetdicom N-SET event
        calling_ae = event.assoc.requestor.ae_title
        mpps_uid = str(event.request.RequestedSOPInstanceUID or "")
        try:
            changes = event.modification_list
            status = str(changes.get("PerformedProcedureStepStatus", "") or "").strip().upper()
            if status and status != StepStatus.IN_PROGRESS.value and status not in _FINAL:
                return INVALID_ATTRIBUTE_VALUE, None
            with self.index.writing() as session:
                steps = steps_of_mpps(session, mpps_uid)
                if not steps:
                    return self._set_unscheduled(mpps_uid, status)
                if all(step.status != StepStatus.IN_PROGRESS.value for step in steps):
                    return PROCESSING_FAILURE, None  # completed or discontinued: no longer updated
                finished = finish_steps(session, mpps_uid, _FINAL[status]) if status in _FINAL else 0
        except (SQLAlchemyError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("MPPS N-SET from %s failed: %s", calling_ae, type(exc).__name__)
            return PROCESSING_FAILURE, None
        log.info("MPPS %s from %s: %d scheduled step(s) %s", mpps_uid, calling_ae, finished, status or "updated")
        return SUCCESS, None

    def _remember_unscheduled(self, mpps_uid: str, status: str) -> None:
        with self._lock:
            self._unscheduled[mpps_uid] = status
            while len(self._unscheduled) > UNSCHEDULED_KEPT:
                self._unscheduled.popitem(last=False)

    def _set_unscheduled(self, mpps_uid: str, status: str) -> tuple[int, Dataset | None]:
        with self._lock:
            current = self._unscheduled.get(mpps_uid)
            if current is None:
                return NO_SUCH_INSTANCE, None
            if current in _FINAL:
                return PROCESSING_FAILURE, None
            if status:
                self._unscheduled[mpps_uid] = status
        return SUCCESS, None


__all__ = ["MppsService", "read_step_references"]
