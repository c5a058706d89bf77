"""Orders from the EHR (ORM^O01, OMI^O23) into scheduled procedure steps of the modality worklist.

ORC-1, the order control: ``NW`` (new) and ``XO`` (change) create or update the order's steps (as dcm4chee-arc
does, a change of an unknown order creates it); ``CA``/``OC`` cancel and ``DC``/``OD`` discontinue every step of
the order; ``SC`` sets the status ORC-5 names (``SC``, ``IP``, ``CM``, ``CA``, ``DC``). The order is ORC-2 (the
placer order number; ORC-3, the filler's, when ORC-2 is empty).

Field mapping (IHE Radiology SWF, the defaults of dcm4chee-arc's HL7 order service):

============================== =========================================== =========================================
DICOM                          ORM^O01                                     OMI^O23 (one step per IPC segment)
============================== =========================================== =========================================
Accession Number               OBR-18.1 (placer field 1)                   IPC-1.1
Requested Procedure ID         OBR-19.1, else the accession number         IPC-2.1
Study Instance UID             ZDS-1.1, else generated                     IPC-3.1, else generated
Scheduled Procedure Step ID    OBR-20.1, else the requested procedure ID   IPC-4.1
Modality                       OBR-24.1 (diagnostic service section)       IPC-5.1, else OBR-24.1
Scheduled Station AE Title     OBR-21.1, else the configured default       IPC-9.1, else the configured default
SPS Start Date/Time            TQ1-7, OBR-27.4 or ORC-7.4 (first given)    the same
Requested Procedure / SPS      OBR-4.2 (universal service ID's text)       OBR-4.2
Description
Referring Physician's Name     PV1-8, else ORC-12, else OBR-16             the same
Patient                        PID-3 (MR), PID-5, PID-7, PID-8             the same
============================== =========================================== =========================================

A generated Study Instance UID is derived from the order and accession number, so a retransmitted order gets the
same one. Required: PID-3, ORC-2 or ORC-3, the accession number, the modality and the start date; a message that
lacks one is answered AE naming it. A handler never raises for bad content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from oncopacs.archive.extract import InstanceRecord
from oncopacs.ehr.dispatch import Handler
from oncopacs.ehr.messages import HandlerOutcome, Hl7FormatError, Hl7Message, hl7_date, hl7_time
from oncopacs.index.db import IndexDatabase
from oncopacs.index.worklist import (
    ScheduledStep,
    StepStatus,
    has_unlinked,
    link_study,
    set_order_status,
    upsert_step,
)
from oncopacs.uids import is_valid_uid, uid_for

log = logging.getLogger(__name__)

ORDER_KINDS = ("ORM^O01", "OMI^O23")
_CANCELS = {"CA": StepStatus.CANCELLED, "OC": StepStatus.CANCELLED,
            "DC": StepStatus.DISCONTINUED, "OD": StepStatus.DISCONTINUED}
_ORDER_STATUS = {"SC": StepStatus.SCHEDULED, "IP": StepStatus.IN_PROGRESS, "CM": StepStatus.COMPLETED,
                 "CA": StepStatus.CANCELLED, "DC": StepStatus.DISCONTINUED}
_ACCESSION_LENGTH = 16  # SH


class OrderContentError(ValueError):
    """An order lacks, or has an unusable, field; the text names it (no patient data)."""


@dataclass(frozen=True, slots=True)
class _OrderGroup:
    """One ORC and the segments that follow it, as occurrence numbers of each segment name in the message."""

    orc: int
    occurrences: dict[str, list[int]]

    def first(self, name: str) -> int | None:
        found = self.occurrences.get(name)
        return found[0] if found else None


def _order_groups(message: Hl7Message) -> list[_OrderGroup]:
    counts: dict[str, int] = {}
    groups: list[_OrderGroup] = []
    for segment in message.parsed:
        name = str(segment[0])
        counts[name] = counts.get(name, 0) + 1
        if name == "ORC":
            groups.append(_OrderGroup(counts[name], {}))
        elif groups and name in ("OBR", "TQ1", "IPC", "ZDS"):
            groups[-1].occurrences.setdefault(name, []).append(counts[name])
    return groups


def _get(message: Hl7Message, segment: str, occurrence: int | None, field: int, component: int = 1) -> str:
    return message.field(segment, field, component, occurrence=occurrence) if occurrence else ""


def _xcn_name(message: Hl7Message, segment: str, occurrence: int | None, field: int) -> str:
    """An XCN (a person with an ID: ID^family^given^middle^suffix^prefix) as a DICOM PN."""
    parts = [_get(message, segment, occurrence, field, c) for c in (2, 3, 4, 6, 5)]
    return "^".join(parts).rstrip("^")


class OrderHandlers:
    """Applies orders to the worklist of one index."""

    def __init__(self, index: IndexDatabase, *, default_station_ae: str = ""):
        self.index = index
        self.default_station_ae = default_station_ae[:16]

    def handle(self, message: Hl7Message, message_pk: int | None) -> HandlerOutcome:
        """ORM^O01 or OMI^O23: every order group of the message, in one transaction."""
        groups = _order_groups(message)
        if not groups:
            return HandlerOutcome.not_applied(f"{message.kind} has no ORC segment")
        try:
            with self.index.writing() as session:
                counts = [self._apply(session, message, group, message_pk) for group in groups]
        except (OrderContentError, Hl7FormatError) as exc:
            return HandlerOutcome.not_applied(str(exc))
        except SQLAlchemyError as exc:
            log.error("%s %s not applied: %s", message.kind, message.control_id, type(exc).__name__)
            return HandlerOutcome.not_applied("the worklist could not be updated")
        log.info("%s %s: %d scheduled procedure step(s) changed", message.kind, message.control_id, sum(counts))
        return HandlerOutcome.applied(f"{sum(counts)} scheduled procedure step(s) changed")

    def _apply(self, session, message: Hl7Message, group: _OrderGroup, message_pk: int | None) -> int:
        control = _get(message, "ORC", group.orc, 1).upper()
        order = _get(message, "ORC", group.orc, 2) or _get(message, "ORC", group.orc, 3)
        if not order:
            raise OrderContentError(f"{message.kind}: ORC-2 and ORC-3 name no order number")
        order = order[:64]
        if control in _CANCELS or control == "SC":
            if control == "SC":
                code = _get(message, "ORC", group.orc, 5).upper()
                if code not in _ORDER_STATUS:
                    raise OrderContentError(f"{message.kind}: ORC-5 order status {code!r} is not SC, IP, CM, CA or DC")
                status = _ORDER_STATUS[code]
            else:
                status = _CANCELS[control]
            changed = set_order_status(session, order, status, message_pk=message_pk)
            if changed == 0:
                raise OrderContentError(f"{message.kind}: ORC-2 names an order that is not on the worklist")
            return changed
        if control not in ("NW", "XO"):
            raise OrderContentError(f"{message.kind}: ORC-1 order control {control!r} is not NW, XO, CA, DC or SC")
        steps = self._steps(message, group, order)
        new_status = StepStatus.SCHEDULED if control == "NW" else None  # a change keeps the status
        for step in steps:
            upsert_step(session, step, new_status, message_pk=message_pk)
        return len(steps)

    def _steps(self, message: Hl7Message, group: _OrderGroup, order: str) -> list[ScheduledStep]:
        patient = message.patient()
        obr, tq1 = group.first("OBR"), group.first("TQ1")
        start = (_get(message, "TQ1", tq1, 7) or _get(message, "OBR", obr, 27, 4)
                 or _get(message, "ORC", group.orc, 7, 4))
        date = hl7_date(start)
        if not date:
            raise OrderContentError(f"{message.kind}: TQ1-7, OBR-27.4 and ORC-7.4 give no scheduled start date")
        description = _get(message, "OBR", obr, 4, 2)[:64]
        referring = (_xcn_name(message, "PV1", 1 if message.has("PV1") else None, 8)
                     or _xcn_name(message, "ORC", group.orc, 12) or _xcn_name(message, "OBR", obr, 16))
        common = {
            "placer_order_number": order,
            "filler_order_number": _get(message, "ORC", group.orc, 3)[:64],
            "patient_id": patient.patient_id, "issuer_of_patient_id": patient.issuer,
            "patient_name": patient.name, "patient_birth_date": patient.birth_date, "patient_sex": patient.sex,
            "requested_procedure_description": description, "scheduled_step_description": description,
            "scheduled_date": date, "scheduled_time": hl7_time(start), "referring_physician_name": referring[:324],
        }
        obr_modality = _get(message, "OBR", obr, 24)
        if message.kind == "OMI^O23":
            ipcs = group.occurrences.get("IPC", [])
            if not ipcs:
                raise OrderContentError("OMI^O23: the order has no IPC segment")
            return [self._step(message, common, {
                "accession": _get(message, "IPC", ipc, 1), "requested": _get(message, "IPC", ipc, 2),
                "study": _get(message, "IPC", ipc, 3), "step": _get(message, "IPC", ipc, 4),
                "modality": _get(message, "IPC", ipc, 5) or obr_modality, "station": _get(message, "IPC", ipc, 9),
            }, ("IPC-1", "IPC-3", "IPC-5")) for ipc in ipcs]
        if obr is None:
            raise OrderContentError("ORM^O01: the order has no OBR segment")
        return [self._step(message, common, {
            "accession": _get(message, "OBR", obr, 18), "requested": _get(message, "OBR", obr, 19),
            "study": _get(message, "ZDS", group.first("ZDS"), 1), "step": _get(message, "OBR", obr, 20),
            "modality": obr_modality, "station": _get(message, "OBR", obr, 21),
        }, ("OBR-18", "ZDS-1", "OBR-24"))]

    def _step(self, message: Hl7Message, common: dict[str, str], found: dict[str, str],
              names: tuple[str, str, str]) -> ScheduledStep:
        """One step from the fields ``found``; ``names`` are where the accession number, study UID and modality
        come from (for the AE's text)."""
        accession, modality = found["accession"], found["modality"].upper()
        if not accession:
            raise OrderContentError(f"{message.kind}: {names[0]} names no accession number")
        if len(accession) > _ACCESSION_LENGTH:
            raise OrderContentError(f"{message.kind}: {names[0]} accession number is longer than 16 characters")
        if found["study"] and not is_valid_uid(found["study"]):
            raise OrderContentError(f"{message.kind}: {names[1]} is not a valid Study Instance UID")
        if not modality:
            raise OrderContentError(f"{message.kind}: {names[2]} names no modality")
        requested = (found["requested"] or accession)[:16]
        study = found["study"] or str(uid_for("oncopacs-order", common["placer_order_number"], accession, requested))
        return ScheduledStep(
            accession_number=accession, modality=modality[:16], requested_procedure_id=requested,
            scheduled_step_id=(found["step"] or requested)[:16], study_instance_uid=study,
            scheduled_station_ae=(found["station"] or self.default_station_ae)[:16], **common,
        )


def build_order_handlers(index: IndexDatabase, *, default_station_ae: str = "") -> dict[str, Handler]:
    """The handlers of ORM^O01 and OMI^O23, writing to ``index``'s worklist.

    ``default_station_ae`` is the Scheduled Station AE Title of orders that name none (empty: none).
    """
    handlers = OrderHandlers(index, default_station_ae=default_station_ae)
    return dict.fromkeys(ORDER_KINDS, handlers.handle)


def link_arrival(index: IndexDatabase, record: InstanceRecord) -> int:
    """Link the study of a stored instance to the worklist steps ordered under its accession number.

    Returns the steps linked (0 without an accession number, or when every such step has its study already).
    """
    accession = record.accession_number.strip()
    if not accession:
        return 0
    with index.reading() as session:
        if not has_unlinked(session, accession):
            return 0
    with index.writing() as session:
        linked = link_study(session, accession, record.study_instance_uid)
    if linked:
        log.info("study %s linked to %d scheduled procedure step(s)", record.study_instance_uid, linked)
    return linked


class ArrivalLinker:
    """:func:`link_arrival` for the ingest path: each study is looked at once (its first instance), so the other
    instances of a study cost a string comparison. Bind ``react`` as a built-in rule."""

    def __init__(self, index: IndexDatabase):
        self.index = index
        self._last_study = ""

    def react(self, record: InstanceRecord) -> None:
        if not record.accession_number or record.study_instance_uid == self._last_study:
            return
        self._last_study = record.study_instance_uid
        try:
            link_arrival(self.index, record)
        except SQLAlchemyError as exc:  # the instance is stored; the link is best effort
            log.error("study %s not linked to its order: %s", record.study_instance_uid, type(exc).__name__)


__all__ = ["ORDER_KINDS", "ArrivalLinker", "OrderContentError", "OrderHandlers", "build_order_handlers",
           "link_arrival"]
