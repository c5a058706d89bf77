"""The index: patients, studies, series, instances, and the references between RT objects.

Every attribute that C-FIND and QIDO-RS match on or return is a column, so queries never open files.
Counters of related instances are kept on the series row by the ingest transaction.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID_LENGTH = 64


class Base(DeclarativeBase):
    """Declarative base of the index schema (migrated by Alembic)."""


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[str] = mapped_column(String(12), default="")
    series_description: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    frame_of_reference_uid: Mapped[str] = mapped_column(String(UID_LENGTH), default="", index=True)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    instance_number: Mapped[str] = mapped_column(String(12), default="")
    content_date: Mapped[str] = mapped_column(String(8), default="")
    content_time: Mapped[str] = mapped_column(String(16), default="")
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frame_of_reference_uid: Mapped[str] = mapped_column(String(UID_LENGTH), default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    # Storage: the file as received, relative to the storage directory.
    file_path: Mapped[str] = mapped_column(Text)
    file_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(80), default="", index=True)  # the model registry counts by it

    series: Mapped[Series] = relationship(back_populates="instances")
    references: Mapped[list[ObjectReference]] = relationship(
        back_populates="instance", cascade="all, delete-orphan"
    )


class Relation(str, enum.Enum):
    """How one stored object refers to another (the links oncology needs)."""

    IMAGE_SERIES = "image_series"  # RTSTRUCT, SEG, SR -> the images they were drawn on
    STRUCTURE_SET = "structure_set"  # RTPLAN -> RTSTRUCT
    PLAN = "plan"  # RTDOSE, treatment record -> RTPLAN
    DOSE = "dose"  # RTPLAN -> RTDOSE
    REGISTERED_SERIES = "registered_series"  # REG / Deformable REG -> the series it registers
    FRAME_OF_REFERENCE = "frame_of_reference"  # any object -> a frame of reference it maps or uses


class Level(str, enum.Enum):
    """What kind of UID a reference points at."""

    SERIES = "series"
    INSTANCE = "instance"
    FRAME_OF_REFERENCE = "frame_of_reference"


class ObjectReference(Base):
    __tablename__ = "object_references"
    __table_args__ = (Index("ix_object_references_target", "referenced_uid", "relation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    relation: Mapped[Relation] = mapped_column(Enum(Relation, native_enum=False, length=32))
    level: Mapped[Level] = mapped_column(Enum(Level, native_enum=False, length=32))
    referenced_uid: Mapped[str] = mapped_column(String(UID_LENGTH))

    instance: Mapped[Instance] = relationship(back_populates="references")


class IngestConflict(Base):
    """A SOP Instance UID that arrived again with other bytes and was refused (kept once, reported)."""

    __tablename__ = "ingest_conflicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    stored_sha256: Mapped[str] = mapped_column(String(64))
    received_sha256: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(80), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeidPatient(Base):
    """A patient's pseudonym and date shift for de-identified export (authorised re-identification only).

    One row per patient, reused by every later export, so a patient's studies keep one pseudonym and
    one date offset. Never written into an export or a log.
    """

    __tablename__ = "deid_patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_deid_patient_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    date_offset_days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeidUid(Base):
    """One original UID and the UID that replaces it in every de-identified export."""

    __tablename__ = "deid_uids"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    original_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    deid_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxItem(Base):
    """One instance to forward to one destination (a remote AE title or a DICOMweb base URL), kept until delivered.

    ``state`` is pending, delivering, delivered or dead; ``attempts`` counts the tries started and is the
    claim's token (a worker whose claim was taken over cannot mark the row). ``next_attempt_at`` is when a
    pending row is due, or when a delivering row's claim lapses. ``last_error`` names the problem (DIMSE
    status, HTTP status, reachability), never patient data. One row per (destination, instance): a second
    enqueue is a no-op.
    """

    __tablename__ = "outbox_items"
    __table_args__ = (
        UniqueConstraint("destination", "sop_instance_uid", name="uq_outbox_destination_instance"),
        Index("ix_outbox_items_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    destination: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PluginState(Base):
    """Whether an analysis plug-in or inference endpoint of the model registry may run; absent means enabled."""

    __tablename__ = "plugin_states"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    changed_by: Mapped[str] = mapped_column(String(128), default="")
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ManagedRule(Base):
    """A rule an administrator added through ``/api/rules``: its TOML table as JSON (the configuration's rules
    are not stored here; they live in the configuration file)."""

    __tablename__ = "managed_rules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PendingRule(Base):
    """A series or study rule waiting for its series (study) to become stable: kept so a restart loses none.

    ``uid`` is the Series (Study) Instance UID; the firing covers the instances the index holds of it then.
    ``due_at`` (seconds since the epoch) is when it fires unless another instance arrives first.
    """

    __tablename__ = "pending_rules"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    uid: Mapped[str] = mapped_column(String(UID_LENGTH), primary_key=True)
    level: Mapped[str] = mapped_column(String(8))
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    due_at: Mapped[float] = mapped_column(Float, index=True)


class Hl7MessageLog(Base):
    """Every HL7 v2 message the listener read, with the ACK it answered (AA, AE or AR) and why.

    ``raw`` is the message as received (it holds patient data, like the rest of the index); ``reason`` names the
    problem of an AE or AR without patient data.
    """

    __tablename__ = "hl7_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    peer: Mapped[str] = mapped_column(String(128), default="")
    sending_application: Mapped[str] = mapped_column(String(180), default="")
    sending_facility: Mapped[str] = mapped_column(String(180), default="")
    message_type: Mapped[str] = mapped_column(String(32), default="", index=True)  # e.g. "ADT^A08"
    control_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(2))  # AA, AE or AR
    reason: Mapped[str] = mapped_column(String(500), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    raw: Mapped[str] = mapped_column(Text, default="")


class PatientUpdate(Base):
    """One change of a patient's demographics in the index (an ADT update), with the values before and after."""

    __tablename__ = "patient_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    before_json: Mapped[str] = mapped_column(Text)
    after_json: Mapped[str] = mapped_column(Text)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("hl7_messages.id"), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PatientMerge(Base):
    """A40: the prior patient's studies moved to the surviving patient. ``moved_study_uids`` (backslash-separated)
    and the prior patient's demographics (``prior_json``) let an administrator undo it (``reverted_at``)."""

    __tablename__ = "patient_merges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    surviving_patient_id: Mapped[str] = mapped_column(String(64), index=True)
    surviving_issuer: Mapped[str] = mapped_column(String(64), default="")
    prior_patient_id: Mapped[str] = mapped_column(String(64), index=True)
    prior_issuer: Mapped[str] = mapped_column(String(64), default="")
    prior_json: Mapped[str] = mapped_column(Text, default="")
    moved_study_uids: Mapped[str] = mapped_column(Text, default="")
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("hl7_messages.id"), nullable=True)
    merged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reverted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reverted_by: Mapped[str] = mapped_column(String(128), default="")


class WorklistItem(Base):
    """A scheduled procedure step from an order (ORM^O01, OMI^O23), offered to modalities by the Modality Worklist
    SCP until it is performed, completed, discontinued or cancelled.

    ``status`` is SCHEDULED, IN PROGRESS, COMPLETED, DISCONTINUED or CANCELLED; ``study_instance_uid`` is the one
    given to the modality; ``linked_study_uid`` the study that arrived with the accession number.
    """

    __tablename__ = "worklist_items"
    __table_args__ = (UniqueConstraint("placer_order_number", "scheduled_step_id", name="uq_worklist_order_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    placer_order_number: Mapped[str] = mapped_column(String(64))
    filler_order_number: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_description: Mapped[str] = mapped_column(String(64), default="")
    scheduled_step_id: Mapped[str] = mapped_column(String(16), default="")
    scheduled_step_description: Mapped[str] = mapped_column(String(64), default="")
    scheduled_station_ae: Mapped[str] = mapped_column(String(16), default="", index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    scheduled_date: Mapped[str] = mapped_column(String(8), default="", index=True)  # YYYYMMDD
    scheduled_time: Mapped[str] = mapped_column(String(16), default="")  # HHMMSS
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    status: Mapped[str] = mapped_column(String(16), index=True)
    linked_study_uid: Mapped[str] = mapped_column(String(UID_LENGTH), default="")
    mpps_uid: Mapped[str] = mapped_column(String(UID_LENGTH), default="")
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("hl7_messages.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
