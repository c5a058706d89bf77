"""The oncology summary of a study, read from the index alone (no file is opened).

Which image series, RT Structure Sets, RT (Ion) Plans, RT Doses, registrations, segmentations
and SRs a study holds, and which belong together: CT -> RTSTRUCT -> RTPLAN -> RTDOSE chains
("treatment planning sets", joined by the ``object_references`` rows written at ingest and by
Frame of Reference UIDs) and PET-CT pairs (PT and CT series on one frame of reference).
A reference to an object the archive does not hold (a dose whose plan was never sent) is
reported in ``unresolved_references``, never dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from pydicom.uid import RTIonPlanStorage
from sqlalchemy import select
from sqlalchemy.orm import Session

from oncopacs.errors import NotFoundError
from oncopacs.index.models import (
    Instance,
    Level,
    ObjectReference,
    Patient,
    Relation,
    Series,
    Study,
)

#: Modalities whose series hold no images (everything else counts as an image series).
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "SEG", "SR", "KO", "PR", "DOC", "FID", "RWV", "PLAN"}
)
#: Modalities whose instances are linked to others through ``object_references``.
LINKED_MODALITIES = ("RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "SEG", "SR")

_IN_CHUNK = 500  # UIDs per IN (...) clause


@dataclass(frozen=True, slots=True)
class ImageSeries:
    """An image series of the study (CT, MR, PT, ...)."""

    series_instance_uid: str
    modality: str
    series_number: str
    series_description: str
    frame_of_reference_uid: str
    number_of_instances: int


@dataclass(frozen=True, slots=True)
class StructureSet:
    """An RTSTRUCT and the image series (held in the archive) its contours were drawn on."""

    sop_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    image_series_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """An RT Plan or RT Ion Plan and the structure set it references (None: it references none)."""

    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    is_ion_plan: bool
    frame_of_reference_uid: str
    structure_set_uid: str | None


@dataclass(frozen=True, slots=True)
class Dose:
    """An RT Dose and the plan and structure set it references (None: it references none)."""

    sop_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    plan_uid: str | None
    structure_set_uid: str | None


@dataclass(frozen=True, slots=True)
class LinkedObject:
    """A REG, SEG or SR instance and the series and frames of reference it refers to or registers."""

    sop_instance_uid: str
    series_instance_uid: str
    modality: str
    referenced_series_uids: tuple[str, ...]
    frame_of_reference_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnresolvedReference:
    """A reference from an object of the study to a series or instance the archive does not hold."""

    sop_instance_uid: str
    modality: str
    relation: Relation
    level: Level
    referenced_uid: str


@dataclass(frozen=True, slots=True)
class TreatmentPlanningSet:
    """Images, structure set, plans and doses forming one planning chain (by UID; images may be in another study)."""

    frame_of_reference_uid: str
    image_series_uids: tuple[str, ...]
    structure_set_uid: str | None
    plan_uids: tuple[str, ...]
    dose_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PetCtPair:
    """A PT series and a CT series sharing one frame of reference (fused without registration)."""

    pet_series_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str


@dataclass(frozen=True, slots=True)
class OncologySummary:
    """What a study holds for radiation oncology and how its objects belong together."""

    study_instance_uid: str
    image_series: tuple[ImageSeries, ...]
    structure_sets: tuple[StructureSet, ...]
    plans: tuple[Plan, ...]
    doses: tuple[Dose, ...]
    registrations: tuple[LinkedObject, ...]
    segmentations: tuple[LinkedObject, ...]
    structured_reports: tuple[LinkedObject, ...]
    treatment_planning_sets: tuple[TreatmentPlanningSet, ...]
    pet_ct_pairs: tuple[PetCtPair, ...]
    unresolved_references: tuple[UnresolvedReference, ...]

    def image_series_by_modality(self) -> dict[str, tuple[ImageSeries, ...]]:
        grouped: dict[str, list[ImageSeries]] = defaultdict(list)
        for series in self.image_series:
            grouped[series.modality].append(series)
        return {modality: tuple(items) for modality, items in grouped.items()}

    def to_dict(self) -> dict:
        """A JSON-ready dict (image series grouped by modality, enums as their values)."""
        data = {name: [_plain(item) for item in getattr(self, name)] for name in _LIST_FIELDS}
        return {
            "study_instance_uid": self.study_instance_uid,
            "image_series": {m: [_plain(s) for s in items] for m, items in self.image_series_by_modality().items()},
            **data,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


_LIST_FIELDS = (
    "structure_sets", "plans", "doses", "registrations", "segmentations", "structured_reports",
    "treatment_planning_sets", "pet_ct_pairs", "unresolved_references",
)


def _plain(item) -> dict:
    return {key: value.value if isinstance(value, Relation | Level) else value for key, value in asdict(item).items()}


@dataclass(frozen=True, slots=True)
class _StoredObject:
    pk: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    modality: str
    frame_of_reference_uid: str


def summarize_study(session: Session, study_instance_uid: str) -> OncologySummary:
    """The oncology summary of one study; NotFoundError when the index does not hold it."""
    study_pk = session.scalar(select(Study.id).where(Study.study_instance_uid == study_instance_uid))
    if study_pk is None:
        raise NotFoundError(f"study {study_instance_uid} is not in the archive")
    images = _read_image_series(session, study_pk)
    objects = _read_linked_objects(session, study_pk)
    references = _read_references(session, study_pk)
    unresolved = _find_unresolved(session, objects, references)
    missing = {(u.level, u.referenced_uid) for u in unresolved}

    def resolved(pk: int, relation: Relation) -> list[str]:
        return [uid for rel, level, uid in references.get(pk, ()) if rel == relation and (level, uid) not in missing]

    def first(pk: int, relation: Relation) -> str | None:
        return next((uid for rel, _level, uid in references.get(pk, ()) if rel == relation), None)

    def frame_of(obj: _StoredObject) -> str:
        return obj.frame_of_reference_uid or (first(obj.pk, Relation.FRAME_OF_REFERENCE) or "")

    by_modality: dict[str, list[_StoredObject]] = defaultdict(list)
    for obj in objects:
        by_modality[obj.modality].append(obj)
    structure_sets = tuple(
        StructureSet(o.sop_instance_uid, o.series_instance_uid, frame_of(o),
                     tuple(dict.fromkeys(resolved(o.pk, Relation.IMAGE_SERIES)))
                     or _series_on_frame(images, frame_of(o)))
        for o in by_modality["RTSTRUCT"]
    )
    plans = tuple(
        Plan(o.sop_instance_uid, o.series_instance_uid, o.sop_class_uid, o.sop_class_uid == RTIonPlanStorage,
             frame_of(o), first(o.pk, Relation.STRUCTURE_SET))
        for o in by_modality["RTPLAN"]
    )
    doses = tuple(
        Dose(o.sop_instance_uid, o.series_instance_uid, frame_of(o), first(o.pk, Relation.PLAN),
             first(o.pk, Relation.STRUCTURE_SET))
        for o in by_modality["RTDOSE"]
    )
    plan_doses = {o.sop_instance_uid: resolved(o.pk, Relation.DOSE) for o in by_modality["RTPLAN"]}

    def linked(modality: str) -> tuple[LinkedObject, ...]:
        relation = Relation.REGISTERED_SERIES if modality == "REG" else Relation.IMAGE_SERIES
        return tuple(
            LinkedObject(o.sop_instance_uid, o.series_instance_uid, modality,
                         tuple(dict.fromkeys(uid for rel, _l, uid in references.get(o.pk, ()) if rel == relation)),
                         tuple(dict.fromkeys(uid for rel, _l, uid in references.get(o.pk, ())
                                             if rel == Relation.FRAME_OF_REFERENCE)))
            for o in by_modality[modality]
        )

    return OncologySummary(
        study_instance_uid=study_instance_uid,
        image_series=images,
        structure_sets=structure_sets,
        plans=plans,
        doses=doses,
        registrations=linked("REG"),
        segmentations=linked("SEG"),
        structured_reports=linked("SR"),
        treatment_planning_sets=build_treatment_planning_sets(images, structure_sets, plans, doses, plan_doses),
        pet_ct_pairs=find_pet_ct_pairs(images),
        unresolved_references=unresolved,
    )


def build_treatment_planning_sets(
    images: tuple[ImageSeries, ...],
    structure_sets: tuple[StructureSet, ...],
    plans: tuple[Plan, ...],
    doses: tuple[Dose, ...],
    plan_doses: dict[str, list[str]] | None = None,
) -> tuple[TreatmentPlanningSet, ...]:
    """One set per structure set (with its plans and their doses), then one per plan or dose left over.

    ``plan_doses`` adds the plan -> dose links a plan declares itself (ReferencedDoseSequence).
    A plan's doses come in a fixed order: the doses it declares first (the planning system's own dose, so
    that a secondary dose check or a copy referencing the plan does not come before it), then the others
    in ``doses`` order (stored order). A plan or dose whose structure set or plan is not in the study
    starts a set of its own, with the image series on its frame of reference.
    """
    dose_uids = {d.sop_instance_uid for d in doses}
    plan_uids = {p.sop_instance_uid for p in plans}
    doses_of_plan: dict[str, list[str]] = defaultdict(list)
    for plan_uid, linked_doses in (plan_doses or {}).items():
        doses_of_plan[plan_uid].extend(uid for uid in linked_doses if uid in dose_uids)
    for dose in doses:
        if dose.plan_uid in plan_uids:
            doses_of_plan[dose.plan_uid].append(dose.sop_instance_uid)
    sets: list[TreatmentPlanningSet] = []
    used_plans: set[str] = set()
    used_doses: set[str] = set()

    def take_doses(plan_list: Iterable[str]) -> list[str]:
        chosen = [d for p in plan_list for d in doses_of_plan.get(p, ()) if d not in used_doses]
        chosen = list(dict.fromkeys(chosen))
        used_doses.update(chosen)
        return chosen

    for structure_set in structure_sets:
        own_uid = structure_set.sop_instance_uid
        own_plans = [p.sop_instance_uid for p in plans if p.structure_set_uid == own_uid]
        used_plans.update(own_plans)
        own_doses = take_doses(own_plans)
        planless = [d.sop_instance_uid for d in doses if d.structure_set_uid == own_uid
                    and d.plan_uid not in plan_uids and d.sop_instance_uid not in used_doses]
        used_doses.update(planless)
        sets.append(TreatmentPlanningSet(structure_set.frame_of_reference_uid, structure_set.image_series_uids,
                                         own_uid, tuple(own_plans), tuple(own_doses + planless)))
    for plan in plans:
        if plan.sop_instance_uid not in used_plans:
            used_plans.add(plan.sop_instance_uid)
            frame = plan.frame_of_reference_uid
            sets.append(TreatmentPlanningSet(frame, _series_on_frame(images, frame), None, (plan.sop_instance_uid,),
                                             tuple(take_doses([plan.sop_instance_uid]))))
    for dose in doses:
        if dose.sop_instance_uid not in used_doses:
            used_doses.add(dose.sop_instance_uid)
            frame = dose.frame_of_reference_uid
            sets.append(
                TreatmentPlanningSet(frame, _series_on_frame(images, frame), None, (), (dose.sop_instance_uid,))
            )
    return tuple(sets)


def find_pet_ct_pairs(images: Iterable[ImageSeries]) -> tuple[PetCtPair, ...]:
    """Every (PT, CT) pair of series sharing a non-empty Frame of Reference UID."""
    images = list(images)
    return tuple(
        PetCtPair(pt.series_instance_uid, ct.series_instance_uid, pt.frame_of_reference_uid)
        for pt in images if pt.modality == "PT" and pt.frame_of_reference_uid
        for ct in images if ct.modality == "CT" and ct.frame_of_reference_uid == pt.frame_of_reference_uid
    )


def _series_on_frame(images: Iterable[ImageSeries], frame_of_reference_uid: str) -> tuple[str, ...]:
    if not frame_of_reference_uid:
        return ()
    return tuple(s.series_instance_uid for s in images if s.frame_of_reference_uid == frame_of_reference_uid)


def _read_image_series(session: Session, study_pk: int) -> tuple[ImageSeries, ...]:
    rows = session.execute(
        select(Series.series_instance_uid, Series.modality, Series.series_number, Series.series_description,
               Series.frame_of_reference_uid, Series.number_of_instances)
        .where(Series.study_pk == study_pk, Series.modality.not_in(NON_IMAGE_MODALITIES))
        .order_by(Series.id)
    ).all()
    return tuple(ImageSeries(*row) for row in rows)


def _read_linked_objects(session: Session, study_pk: int) -> list[_StoredObject]:
    rows = session.execute(
        select(Instance.id, Instance.sop_instance_uid, Instance.sop_class_uid, Series.series_instance_uid,
               Series.modality, Instance.frame_of_reference_uid, Series.frame_of_reference_uid)
        .join(Series, Instance.series_pk == Series.id)
        .where(Series.study_pk == study_pk, Series.modality.in_(LINKED_MODALITIES))
        .order_by(Series.id, Instance.id)
    ).all()
    return [_StoredObject(pk, sop, cls, series, modality, own_frame or series_frame)
            for pk, sop, cls, series, modality, own_frame, series_frame in rows]


def _read_references(session: Session, study_pk: int) -> dict[int, list[tuple[Relation, Level, str]]]:
    rows = session.execute(
        select(ObjectReference.instance_pk, ObjectReference.relation, ObjectReference.level,
               ObjectReference.referenced_uid)
        .join(Instance, ObjectReference.instance_pk == Instance.id)
        .join(Series, Instance.series_pk == Series.id)
        .where(Series.study_pk == study_pk, Series.modality.in_(LINKED_MODALITIES))
        .order_by(ObjectReference.id)
    ).all()
    references: dict[int, list[tuple[Relation, Level, str]]] = defaultdict(list)
    for pk, relation, level, uid in rows:
        references[pk].append((Relation(relation), Level(level), uid))
    return references


def _find_unresolved(
    session: Session, objects: list[_StoredObject], references: dict[int, list[tuple[Relation, Level, str]]]
) -> tuple[UnresolvedReference, ...]:
    """Series- and instance-level references whose target the archive (any study) does not hold."""
    wanted: dict[Level, set[str]] = {Level.SERIES: set(), Level.INSTANCE: set()}
    for links in references.values():
        for _relation, level, uid in links:
            if level in wanted:
                wanted[level].add(uid)
    held = {
        Level.SERIES: _existing(session, Series.series_instance_uid, wanted[Level.SERIES]),
        Level.INSTANCE: _existing(session, Instance.sop_instance_uid, wanted[Level.INSTANCE]),
    }
    return tuple(
        UnresolvedReference(obj.sop_instance_uid, obj.modality, relation, level, uid)
        for obj in objects
        for relation, level, uid in references.get(obj.pk, ())
        if level in held and uid not in held[level]
    )


def _existing(session: Session, column, uids: set[str]) -> set[str]:
    ordered = sorted(uids)
    found: set[str] = set()
    for start in range(0, len(ordered), _IN_CHUNK):
        found.update(session.scalars(select(column).where(column.in_(ordered[start:start + _IN_CHUNK]))))
    return found


def series_descriptions(session: Session, sop_instance_uids: Iterable[str]) -> dict[str, str]:
    """SOP Instance UID -> the SeriesDescription of its series (empty when the series has none)."""
    ordered = sorted(set(sop_instance_uids))
    found: dict[str, str] = {}
    for start in range(0, len(ordered), _IN_CHUNK):
        rows = session.execute(select(Instance.sop_instance_uid, Series.series_description)
                               .join(Series, Instance.series_pk == Series.id)
                               .where(Instance.sop_instance_uid.in_(ordered[start:start + _IN_CHUNK])))
        found.update({uid: description or "" for uid, description in rows})
    return found


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """One RT (Ion) Plan of a patient, as the index knows it."""

    sop_instance_uid: str
    study_instance_uid: str
    study_date: str  # YYYYMMDD
    study_description: str
    patient_id: str = ""


def find_patient_plans(session: Session, patient_id: str) -> list[StoredPlan]:
    """Every RT (Ion) Plan of ``patient_id``, oldest study first (the treatment course)."""
    return find_plans(session, patient_id)


def find_plans(session: Session, patient_id: str | None = None) -> list[StoredPlan]:
    """Every RT (Ion) Plan of ``patient_id`` (None: of every patient), oldest study first, then stored order."""
    statement = (
        select(Instance.sop_instance_uid, Study.study_instance_uid, Study.study_date, Study.study_description,
               Patient.patient_id)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Series.modality == "RTPLAN")
    )
    if patient_id is not None:
        statement = statement.where(Patient.patient_id == patient_id)
    return [StoredPlan(*row) for row in session.execute(statement.order_by(Study.study_date, Instance.id)).all()]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One RT treatment record (Modality RTRECORD) and the plan it references ("" when none is indexed).

    ``file_path`` and ``sha256`` locate the stored file (its TreatmentDate is not indexed).
    """

    sop_instance_uid: str
    sop_class_uid: str
    patient_id: str
    plan_uid: str
    file_path: str
    sha256: str


def find_treatment_records(session: Session, patient_id: str | None = None) -> list[StoredRecord]:
    """Every RT treatment record of ``patient_id`` (None: of every patient), in stored order."""
    statement = (
        select(Instance.id, Instance.sop_instance_uid, Instance.sop_class_uid, Patient.patient_id,
               Instance.file_path, Instance.sha256)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Series.modality == "RTRECORD")
    )
    if patient_id is not None:
        statement = statement.where(Patient.patient_id == patient_id)
    rows = session.execute(statement.order_by(Instance.id)).all()
    plans: dict[int, str] = {}
    pks = [row[0] for row in rows]
    for start in range(0, len(pks), _IN_CHUNK):
        for pk, uid in session.execute(
                select(ObjectReference.instance_pk, ObjectReference.referenced_uid)
                .where(ObjectReference.instance_pk.in_(pks[start:start + _IN_CHUNK]),
                       ObjectReference.relation == Relation.PLAN)
                .order_by(ObjectReference.id)):
            plans.setdefault(pk, uid)
    return [StoredRecord(uid, sop_class, pid, plans.get(pk, ""), path, sha) for pk, uid, sop_class, pid, path, sha
            in rows]


@dataclass(frozen=True, slots=True)
class PatientSeries:
    """One series of a patient with its study, as the index knows it."""

    study_instance_uid: str
    study_date: str  # YYYYMMDD
    study_description: str
    series_instance_uid: str


def find_patient_series(session: Session, patient_id: str, modality: str) -> list[PatientSeries]:
    """Every series of ``modality`` (e.g. ``PT``) of ``patient_id``, oldest study first, then in stored order."""
    rows = session.execute(
        select(Study.study_instance_uid, Study.study_date, Study.study_description, Series.series_instance_uid)
        .join(Patient, Study.patient_pk == Patient.id)
        .join(Series, Series.study_pk == Study.id)
        .where(Patient.patient_id == patient_id, Series.modality == modality)
        .order_by(Study.study_date, Series.id)
    ).all()
    return [PatientSeries(*row) for row in rows]
