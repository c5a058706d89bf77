"""Attribute matching for C-FIND and QIDO-RS (PS3.4 C.2.2.2), translated to SQL.

Supported: single-value matching, wildcards ``*`` and ``?`` (case-insensitive for person names),
universal matching (empty value), UID-list matching (backslash-separated), and date/time range
matching (``A-B``, ``-B``, ``A-``). Higher-level keys act as filters at lower levels.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    distinct,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from oncopacs.errors import OncopacsError
from oncopacs.index.models import Instance, Patient, Series, Study


class QueryLevel(str, enum.Enum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


#: The largest row offset a page may ask for: SQL OFFSET is a signed 64-bit integer in SQLite and PostgreSQL.
MAX_OFFSET = 2**63 - 1


class QueryError(OncopacsError, ValueError):
    """The query cannot be answered as asked (bad level, malformed range)."""


_DEPTH = {QueryLevel.PATIENT: 0, QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}
_LEVEL_MODEL: dict[QueryLevel, type[Patient] | type[Study] | type[Series] | type[Instance]] = {
    QueryLevel.PATIENT: Patient, QueryLevel.STUDY: Study, QueryLevel.SERIES: Series, QueryLevel.IMAGE: Instance
}


@dataclass(frozen=True, slots=True)
class Attribute:
    """A matchable, returnable attribute and the column that holds it."""

    keyword: str
    level: QueryLevel
    column: InstrumentedAttribute
    vr: str


def _attrs(level: QueryLevel, specs: Iterable[tuple[str, InstrumentedAttribute, str]]) -> dict[str, Attribute]:
    return {keyword: Attribute(keyword, level, column, vr) for keyword, column, vr in specs}


ATTRIBUTES: dict[str, Attribute] = {
    **_attrs(QueryLevel.PATIENT, [
        ("PatientID", Patient.patient_id, "LO"),
        ("IssuerOfPatientID", Patient.issuer_of_patient_id, "LO"),
        ("PatientName", Patient.patient_name, "PN"),
        ("PatientBirthDate", Patient.patient_birth_date, "DA"),
        ("PatientSex", Patient.patient_sex, "CS"),
    ]),
    **_attrs(QueryLevel.STUDY, [
        ("StudyInstanceUID", Study.study_instance_uid, "UI"),
        ("StudyDate", Study.study_date, "DA"),
        ("StudyTime", Study.study_time, "TM"),
        ("AccessionNumber", Study.accession_number, "SH"),
        ("StudyID", Study.study_id, "SH"),
        ("StudyDescription", Study.study_description, "LO"),
        ("ReferringPhysicianName", Study.referring_physician_name, "PN"),
    ]),
    **_attrs(QueryLevel.SERIES, [
        ("SeriesInstanceUID", Series.series_instance_uid, "UI"),
        ("Modality", Series.modality, "CS"),
        ("SeriesNumber", Series.series_number, "IS"),
        ("SeriesDescription", Series.series_description, "LO"),
        ("SeriesDate", Series.series_date, "DA"),
        ("SeriesTime", Series.series_time, "TM"),
        ("BodyPartExamined", Series.body_part_examined, "CS"),
        ("FrameOfReferenceUID", Series.frame_of_reference_uid, "UI"),
    ]),
    **_attrs(QueryLevel.IMAGE, [
        ("SOPInstanceUID", Instance.sop_instance_uid, "UI"),
        ("SOPClassUID", Instance.sop_class_uid, "UI"),
        ("InstanceNumber", Instance.instance_number, "IS"),
        ("ContentDate", Instance.content_date, "DA"),
        ("ContentTime", Instance.content_time, "TM"),
        ("Rows", Instance.rows, "US"),
        ("Columns", Instance.columns, "US"),
        ("NumberOfFrames", Instance.number_of_frames, "IS"),
        ("AvailableTransferSyntaxUID", Instance.transfer_syntax_uid, "UI"),
    ]),
}

#: Attributes computed from the levels below, by the level they belong to.
COMPUTED: dict[str, QueryLevel] = {
    "NumberOfPatientRelatedStudies": QueryLevel.PATIENT,
    "NumberOfPatientRelatedSeries": QueryLevel.PATIENT,
    "NumberOfPatientRelatedInstances": QueryLevel.PATIENT,
    "NumberOfStudyRelatedSeries": QueryLevel.STUDY,
    "NumberOfStudyRelatedInstances": QueryLevel.STUDY,
    "ModalitiesInStudy": QueryLevel.STUDY,
    "SOPClassesInStudy": QueryLevel.STUDY,
    "NumberOfSeriesRelatedInstances": QueryLevel.SERIES,
}

COMPUTED_VR = {"ModalitiesInStudy": "CS", "SOPClassesInStudy": "UI"}


@dataclass(frozen=True, slots=True)
class Match:
    """One matching entity: its primary key and its attribute values by keyword."""

    pk: int
    values: dict[str, Any]


def find(
    session: Session | Connection,
    level: QueryLevel,
    keys: Mapping[str, str],
    *,
    return_keys: Iterable[str] = (),
    limit: int | None = None,
    offset: int = 0,
) -> list[Match]:
    """Entities at ``level`` matching ``keys`` (keyword -> DICOM string value).

    Each match carries every column attribute of its level and the levels above, plus the
    computed attributes named in ``return_keys`` or ``keys``.
    """
    statement = _base_select(level)
    for condition in build_conditions(level, keys):
        statement = statement.where(condition)
    model = _LEVEL_MODEL[level]
    statement = statement.order_by(model.id).offset(offset)
    if limit is not None:
        statement = statement.limit(limit)
    returned = _RETURNED[level]
    keywords = [a.keyword for a in returned]
    # Core rows: the ORM's row loading is not needed for plain columns
    connection = session if isinstance(session, Connection) else session.connection()
    rows = connection.execute(statement.add_columns(*[a.column for a in returned])).all()
    matches = [Match(row[0], dict(zip(keywords, row[1:], strict=False))) for row in rows]
    wanted = {k for k in (*return_keys, *keys) if COMPUTED.get(k) == level}
    if wanted and matches:
        _add_computed(connection, level, matches, wanted, statement)
    return matches


@dataclass(frozen=True, slots=True)
class LimitedMatches:
    """The first matches of a query, at most a limit of them, and whether more matched."""

    matches: tuple[Match, ...]
    truncated: bool  # more than the limit matched; those past it were never read from the database


def find_at_most(
    session: Session | Connection,
    level: QueryLevel,
    keys: Mapping[str, str],
    limit: int,
    *,
    return_keys: Iterable[str] = (),
) -> LimitedMatches:
    """The first ``limit`` matches of :func:`find` (by primary key; ``limit`` 0: every match).

    The database returns at most ``limit + 1`` rows (SQL LIMIT): the extra one only tells that more matched.
    """
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    found = find(session, level, keys, return_keys=return_keys, limit=limit + 1 if limit else None)
    truncated = bool(limit) and len(found) > limit
    return LimitedMatches(tuple(found[:limit] if truncated else found), truncated)


#: The column attributes each level returns: its own and those of the levels above.
_RETURNED = {level: [a for a in ATTRIBUTES.values() if _DEPTH[a.level] <= _DEPTH[level]] for level in QueryLevel}


def count(session: Session, level: QueryLevel, keys: Mapping[str, str]) -> int:
    """How many entities at ``level`` match ``keys``."""
    statement = _base_select(level)
    for condition in build_conditions(level, keys):
        statement = statement.where(condition)
    return session.scalar(select(func.count()).select_from(statement.subquery())) or 0


def _base_select(level: QueryLevel) -> Select:
    model = _LEVEL_MODEL[level]
    statement = select(model.id).select_from(model)
    if _DEPTH[level] >= 3:
        statement = statement.join(Series, Instance.series_pk == Series.id)
    if _DEPTH[level] >= 2:
        statement = statement.join(Study, Series.study_pk == Study.id)
    if _DEPTH[level] >= 1:
        statement = statement.join(Patient, Study.patient_pk == Patient.id)
    return statement


def build_conditions(level: QueryLevel, keys: Mapping[str, str]) -> list[ColumnElement[bool]]:
    """SQL conditions for the non-empty keys usable at ``level`` (others are ignored)."""
    conditions: list[ColumnElement[bool]] = []
    for keyword, raw in keys.items():
        value = "" if raw is None else str(raw).strip()
        if not value or value == "*":
            continue  # universal matching
        if keyword == "ModalitiesInStudy" and _DEPTH[level] >= 1:
            modalities = [m.strip() for m in value.replace(",", "\\").split("\\") if m.strip()]
            conditions.append(
                exists().where(Series.study_pk == Study.id, Series.modality.in_(modalities))
                if level == QueryLevel.STUDY
                else Series.modality.in_(modalities)
            )
            continue
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None or _DEPTH[attribute.level] > _DEPTH[level]:
            continue
        conditions.append(match_condition(attribute, value))
    return conditions


def match_condition(attribute: Attribute, value: str) -> ColumnElement[bool]:
    """The condition for one attribute and one query value."""
    column = attribute.column
    if attribute.vr == "UI":
        uids = [uid.strip() for uid in value.replace(",", "\\").split("\\") if uid.strip()]
        return column.in_(uids) if len(uids) > 1 else column == uids[0]
    if attribute.vr in ("DA", "TM", "DT") and "-" in value:
        return _range_condition(column, value)
    if attribute.vr in ("US", "IS") and attribute.column.type.python_type is int:
        try:
            return column == int(value)
        except ValueError:
            raise QueryError(f"{attribute.keyword} value {value!r} is not a number") from None
    alternatives = value.split("\\") if "\\" in value else [value]
    return or_(*[_single_condition(attribute, alternative) for alternative in alternatives])


def _single_condition(attribute: Attribute, value: str) -> ColumnElement[bool]:
    column = attribute.column
    fold = attribute.vr == "PN"
    if "*" in value or "?" in value:
        pattern = _like_pattern(value.lower() if fold else value)
        return (func.lower(column) if fold else column).like(pattern, escape="\\")
    return func.lower(column) == value.lower() if fold else column == value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _range_condition(column: InstrumentedAttribute, value: str) -> ColumnElement[bool]:
    if value.count("-") != 1:
        raise QueryError(f"range {value!r} must have the form A-B, -B or A-")
    low, high = (part.strip() for part in value.split("-"))
    parts = []
    if low:
        parts.append(column >= low)
    if high:
        # An upper bound covers its whole last unit: "-1030" includes 10:30:59.9.
        parts.append(column <= high.ljust(26, "9"))
    parts.append(column != "")
    return and_(*parts)


def _add_computed(connection: Connection, level: QueryLevel, matches: list[Match], wanted: set[str],
                  matched: Select) -> None:
    """Add the ``wanted`` computed attributes to ``matches``, the rows of ``matched`` (its primary keys first).

    The grouped queries select their entities with ``matched`` as a subquery rather than with a
    list of primary keys (500 studies were 500 bound parameters). A row that is not among
    ``matches`` (committed between the two statements, which PostgreSQL's default isolation lets
    the second one see) is skipped.
    """
    by_pk = {m.pk: m.values for m in matches}
    matched_pks = matched.with_only_columns(matched.selected_columns[0])
    if level == QueryLevel.SERIES:
        statement = select(Series.id, Series.number_of_instances).where(Series.id.in_(matched_pks))
        for pk, n in connection.execute(statement).all():
            if pk in by_pk:
                by_pk[pk]["NumberOfSeriesRelatedInstances"] = n
        return
    if level == QueryLevel.STUDY:
        _add_study_counts(connection, by_pk, matched_pks, with_modalities="ModalitiesInStudy" in wanted)
    else:
        _add_patient_counts(connection, by_pk, matched_pks)
    if level == QueryLevel.STUDY and "SOPClassesInStudy" in wanted:
        for values in by_pk.values():
            values["SOPClassesInStudy"] = []
        rows = connection.execute(
            select(Series.study_pk, Instance.sop_class_uid)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk.in_(matched_pks))
            .distinct()
            .order_by(Instance.sop_class_uid)
        )
        for pk, sop_class in rows:
            if pk in by_pk:
                by_pk[pk]["SOPClassesInStudy"].append(sop_class)


def _add_study_counts(connection: Connection, by_pk: dict[int, dict[str, Any]], matched_pks: Select, *,
                      with_modalities: bool) -> None:
    """Series and instance counts (and modalities) of studies, in one grouped query."""
    values: dict[str, Any] | None
    for values in by_pk.values():
        values.update(NumberOfStudyRelatedSeries=0, NumberOfStudyRelatedInstances=0)
        if with_modalities:
            values["ModalitiesInStudy"] = []
    statement = (
        select(
            Series.study_pk,
            Series.modality,
            func.count(Series.id),
            func.coalesce(func.sum(Series.number_of_instances), 0),
        )
        .where(Series.study_pk.in_(matched_pks))
        .group_by(Series.study_pk, Series.modality)
        .order_by(Series.study_pk, Series.modality)
    )
    for pk, modality, n_series, n_instances in connection.execute(statement).all():
        values = by_pk.get(pk)
        if values is None:
            continue
        values["NumberOfStudyRelatedSeries"] += n_series
        values["NumberOfStudyRelatedInstances"] += int(n_instances)
        if with_modalities and modality:
            values["ModalitiesInStudy"].append(modality)


def _add_patient_counts(connection: Connection, by_pk: dict[int, dict[str, Any]], matched_pks: Select) -> None:
    """Study, series and instance counts of patients."""
    statement = (
        select(
            Study.patient_pk,
            func.count(distinct(Study.id)),
            func.count(Series.id),
            func.coalesce(func.sum(Series.number_of_instances), 0),
        )
        .select_from(Study)
        .join(Series, Series.study_pk == Study.id, isouter=True)
        .where(Study.patient_pk.in_(matched_pks))
        .group_by(Study.patient_pk)
    )
    for values in by_pk.values():
        values.update(
            NumberOfPatientRelatedStudies=0, NumberOfPatientRelatedSeries=0, NumberOfPatientRelatedInstances=0
        )
    for pk, n_studies, n_series, n_instances in connection.execute(statement).all():
        if pk in by_pk:
            by_pk[pk].update(
                NumberOfPatientRelatedStudies=n_studies,
                NumberOfPatientRelatedSeries=n_series,
                NumberOfPatientRelatedInstances=int(n_instances),
            )


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """Where one instance's file is, for retrieval."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str
    sha256: str
    study_instance_uid: str
    patient_id: str


def find_instances(session: Session, keys: Mapping[str, str]) -> list[StoredInstance]:
    """Every stored instance matching ``keys`` at any level (for C-GET, C-MOVE and WADO)."""
    statement = _base_select(QueryLevel.IMAGE).add_columns(
        Instance.sop_instance_uid,
        Instance.sop_class_uid,
        Instance.transfer_syntax_uid,
        Instance.file_path,
        Instance.sha256,
        Study.study_instance_uid,
        Patient.patient_id,
    )
    conditions = build_conditions(QueryLevel.IMAGE, keys)
    if not conditions:
        raise QueryError("a retrieve needs at least one unique key (PatientID, StudyInstanceUID, ...)")
    for condition in conditions:
        statement = statement.where(condition)
    statement = statement.order_by(Series.id, Instance.id)
    return [StoredInstance(*row[1:]) for row in session.execute(statement)]


@dataclass(frozen=True, slots=True)
class PatientStudy:
    """A study and its patient as the index holds them (DICOM formats: PN ``Family^Given``, DA YYYYMMDD, TM)."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    study_date: str
    study_time: str
    study_id: str
    study_description: str
    accession_number: str
    referring_physician_name: str


def find_patient_study(session: Session, study_instance_uid: str) -> PatientStudy | None:
    """The study ``study_instance_uid`` (exact match) with its patient; None when the index does not hold it."""
    row = session.execute(
        select(Patient.patient_id, Patient.issuer_of_patient_id, Patient.patient_name, Patient.patient_birth_date,
               Patient.patient_sex, Study.study_instance_uid, Study.study_date, Study.study_time, Study.study_id,
               Study.study_description, Study.accession_number, Study.referring_physician_name)
        .join(Study, Study.patient_pk == Patient.id)
        .where(Study.study_instance_uid == study_instance_uid)
    ).first()
    return PatientStudy(*tuple(row)) if row is not None else None


@dataclass(frozen=True, slots=True)
class StoredPatient:
    """A patient as the index knows it: PatientID and PatientName (DICOM PN text, ``^``-separated)."""

    patient_id: str
    patient_name: str


def find_patient(session: Session, patient_id: str) -> StoredPatient | None:
    """The patient whose PatientID is exactly ``patient_id`` (no wildcards); None when the index has none."""
    row = session.execute(select(Patient.patient_id, Patient.patient_name)
                          .where(Patient.patient_id == patient_id).order_by(Patient.id)).first()
    return StoredPatient(str(row[0]), str(row[1] or "")) if row is not None else None


def find_study_patient(session: Session, study_instance_uid: str) -> StoredPatient | None:
    """The patient of the study ``study_instance_uid``; None when the index does not hold the study."""
    row = session.execute(select(Patient.patient_id, Patient.patient_name).join(Study, Study.patient_pk == Patient.id)
                          .where(Study.study_instance_uid == study_instance_uid)).first()
    return StoredPatient(str(row[0]), str(row[1] or "")) if row is not None else None
