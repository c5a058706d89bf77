"""The re-identification key of de-identified exports, kept in the index database and nowhere else.

A patient gets one pseudonym and one date offset the first time one of its studies is exported; every
later export reuses them. An original UID gets one replacement UID, reused everywhere and always.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from pydicom.uid import generate_uid
from sqlalchemy import select

from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import DeidPatient, DeidUid
from oncopacs.orchestration.deid_profile import PatientKeys

#: Date offsets are drawn from [-MAX_OFFSET_DAYS, -MIN_OFFSET_DAYS]: never zero, always into the past.
MIN_OFFSET_DAYS = 365
MAX_OFFSET_DAYS = 3650
_QUERY_CHUNK = 500


def patient_keys(index: IndexDatabase, patient_id: str, issuer_of_patient_id: str = "") -> PatientKeys:
    """The pseudonym and date offset of a patient, created (at random) on its first export."""
    with index.writing() as session:
        row = session.scalars(select(DeidPatient).where(
            DeidPatient.patient_id == patient_id, DeidPatient.issuer_of_patient_id == issuer_of_patient_id)).first()
        if row is None:
            taken = set(session.scalars(select(DeidPatient.pseudonym)))
            pseudonym = _new_pseudonym(taken)
            offset = -(MIN_OFFSET_DAYS + secrets.randbelow(MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1))
            row = DeidPatient(patient_id=patient_id, issuer_of_patient_id=issuer_of_patient_id, pseudonym=pseudonym,
                              date_offset_days=offset, created_at=datetime.now(UTC))
            session.add(row)
        return PatientKeys(row.pseudonym, row.date_offset_days)


def map_uids(index: IndexDatabase, originals: Iterable[str]) -> dict[str, str]:
    """Original UID -> replacement UID for every one of ``originals`` (new ones recorded in one transaction)."""
    wanted = sorted(set(originals))
    mapping: dict[str, str] = {}
    with index.writing() as session:
        for start in range(0, len(wanted), _QUERY_CHUNK):
            chunk = wanted[start:start + _QUERY_CHUNK]
            rows = session.execute(select(DeidUid.original_uid, DeidUid.deid_uid)
                                   .where(DeidUid.original_uid.in_(chunk)))
            mapping.update((original, replacement) for original, replacement in rows)
        now = datetime.now(UTC)
        for original in wanted:
            if original not in mapping:
                mapping[original] = str(generate_uid(prefix=None))  # 2.25.<random UUID>: unlinkable to the original
                session.add(DeidUid(original_uid=original, deid_uid=mapping[original], created_at=now))
    return mapping


def reidentify_pseudonym(index: IndexDatabase, pseudonym: str) -> tuple[str, str] | None:
    """(PatientID, IssuerOfPatientID) behind ``pseudonym``, None when unknown (authorised use only)."""
    with index.reading() as session:
        row = session.execute(select(DeidPatient.patient_id, DeidPatient.issuer_of_patient_id)
                              .where(DeidPatient.pseudonym == pseudonym)).first()
    return None if row is None else (row[0], row[1])


def _new_pseudonym(taken: set[str]) -> str:
    while True:
        pseudonym = f"DEID-{secrets.token_hex(5).upper()}"
        if pseudonym not in taken:
            return pseudonym
