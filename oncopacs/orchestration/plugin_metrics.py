"""A plug-in's figures (a JSON object) as an analysis result of kind ``plugin_metrics``, keyed by its inputs.

The document keeps the object as the plug-in gave it; its numbers become searchable metrics: a top-level number is
a whole-series figure (structure ''), a number inside a top-level object is a figure of that structure
(``{"Body": {"volume_cc": 812.5}}`` -> structure ``Body``, metric ``volume_cc``). Other values stay in the document.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydicom import Dataset

from oncopacs.analysis.results import Metric, NewResult

KIND = "plugin_metrics"
METRIC_NAME_LENGTH = 32  # MetricValue.metric


def build_metrics_result(plugin: str, version: str, datasets: Sequence[Dataset],
                         metrics: Mapping[str, Any]) -> NewResult:
    """The result of ``plugin`` (at ``version``) on the series ``datasets``: the same inputs replace the last one."""
    inputs = sorted(str(ds.get("SOPInstanceUID", "")) for ds in datasets)
    first = datasets[0] if datasets else Dataset()
    key = hashlib.sha256("\n".join([KIND, plugin, version, *inputs]).encode("utf-8")).hexdigest()
    study_date = str(first.get("StudyDate", "") or "")
    document = {"plugin": plugin, "version": version, "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
                "metrics": dict(metrics)}
    return NewResult(KIND, key, str(first.get("PatientID", "") or ""), str(first.get("StudyInstanceUID", "") or ""),
                     study_date if len(study_date) == 8 else "", inputs, document,
                     tuple(compute_metric_values(metrics)))


def compute_metric_values(metrics: Mapping[str, Any]) -> Iterator[Metric]:
    """The finite numbers of ``metrics`` (booleans are not numbers here), names cut to the column's length."""
    for name, value in metrics.items():
        if _is_number(value):
            yield Metric("", str(name)[:METRIC_NAME_LENGTH], float(value))
        elif isinstance(value, Mapping):
            for inner, figure in value.items():
                if _is_number(figure):
                    yield Metric(str(name), str(inner)[:METRIC_NAME_LENGTH], float(figure))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["KIND", "build_metrics_result", "compute_metric_values"]
