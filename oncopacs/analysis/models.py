"""Index tables of analysis results: JSON for dashboards and the API, plus searchable metric values.

A result is keyed by its kind and the SOP Instance UIDs (and parameters) it was computed from, so a
cached result is found again for the same inputs and recomputed when an input changes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from oncopacs.index.models import UID_LENGTH, Base


class AnalysisResult(Base):
    __tablename__ = "analysis_results"
    __table_args__ = (UniqueConstraint("kind", "input_key", name="uq_analysis_result_inputs"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(32), index=True
    )  # "dvh", "goals", "plan", "suv", "response", "registration_qa", ...
    input_key: Mapped[str] = mapped_column(String(64))  # SHA-256 of the sorted input SOP Instance UIDs and parameters
    patient_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True, default="")
    time_point: Mapped[str] = mapped_column(String(8), default="")  # YYYYMMDD, for longitudinal results
    inputs: Mapped[str] = mapped_column(Text, default="")  # backslash-separated SOP Instance UIDs
    result_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MetricValue(Base):
    """One number of a result (e.g. Rectum ``V70Gy[%]``), so metrics are searchable across patients."""

    __tablename__ = "metric_values"
    __table_args__ = (Index("ix_metric_values_lookup", "metric", "structure", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("analysis_results.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), default="")
    structure: Mapped[str] = mapped_column(String(64), default="")  # TG-263 name where known, else the ROI name
    metric: Mapped[str] = mapped_column(String(32))  # e.g. "D95%[Gy]", "V70Gy[%]", "SUVmax[g/mL]"
    value: Mapped[float] = mapped_column(Float)
