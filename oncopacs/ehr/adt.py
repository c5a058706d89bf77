"""ADT handlers: demographics updates (A08, A31; A01 and A04 register) and patient merges (A40).

The index's patient row is changed and the change recorded (:mod:`oncopacs.index.demographics`); stored files
are never rewritten: instances leave the archive carrying the current demographics by coercion.
"""

from __future__ import annotations

import logging

from oncopacs.ehr.dispatch import Handler
from oncopacs.ehr.messages import HandlerOutcome, Hl7FormatError, Hl7Message, PatientIdentity, hl7_date
from oncopacs.index.db import IndexDatabase
from oncopacs.index.demographics import (
    HL7_NULL,
    Demographics,
    DemographicsError,
    merge_patients,
    update_patient,
)

log = logging.getLogger(__name__)

UPDATE_KINDS = ("ADT^A08", "ADT^A31", "ADT^A01", "ADT^A04")
MERGE_KIND = "ADT^A40"


def build_adt_handlers(index: IndexDatabase) -> dict[str, Handler]:
    """``{kind: handler}`` for the ADT messages this archive applies (see :mod:`oncopacs.ehr.dispatch`)."""

    def on_update(message: Hl7Message, message_pk: int | None) -> HandlerOutcome:
        try:
            values = demographics_of(message.patient("PID"))
            result = update_patient(index, values, message_pk)
        except (Hl7FormatError, DemographicsError) as exc:
            return HandlerOutcome.not_applied(str(exc))
        if result.created:
            return HandlerOutcome.applied("patient registered")
        return HandlerOutcome.applied(f"updated {', '.join(result.changed)}" if result.changed else "no change")

    def on_merge(message: Hl7Message, message_pk: int | None) -> HandlerOutcome:
        pairs = len(message.segments("PID"))
        if not pairs:
            return HandlerOutcome.not_applied(f"{message.kind} has no PID segment")
        if len(message.segments("MRG")) < pairs:
            return HandlerOutcome.not_applied(f"{message.kind} needs an MRG segment after each PID segment")
        moved = merged = 0
        for occurrence in range(1, pairs + 1):
            try:
                surviving = demographics_of(message.patient("PID", occurrence=occurrence))
                prior = demographics_of(message.patient("MRG", occurrence=occurrence))
                result = merge_patients(index, surviving, prior, message_pk)
            except (Hl7FormatError, DemographicsError) as exc:
                done = f" ({merged} of {pairs} pairs merged before)" if merged else ""
                return HandlerOutcome.not_applied(f"{exc}{done}")
            merged += 0 if result.already_merged else 1
            moved += len(result.moved_study_uids)
        if not merged:
            return HandlerOutcome.applied("merged already")
        return HandlerOutcome.applied(f"merged {merged} patient(s), moved {moved} studies")

    return {**dict.fromkeys(UPDATE_KINDS, on_update), MERGE_KIND: on_merge}


def demographics_of(identity: PatientIdentity) -> Demographics:
    """A PID (or MRG) patient as index demographics: an empty value means "unchanged", ``""`` "delete"."""
    birth = identity.birth_date
    sex = identity.sex
    return Demographics(
        patient_id=identity.patient_id,
        issuer=identity.issuer,
        name=HL7_NULL if identity.name.startswith(HL7_NULL) else identity.name,
        birth_date=HL7_NULL if birth.startswith(HL7_NULL) else hl7_date(birth),
        sex=HL7_NULL if sex == '"' else sex,
    )


__all__ = ["MERGE_KIND", "UPDATE_KINDS", "build_adt_handlers", "demographics_of"]
