"""Analysis and AI plug-ins: found under the Python entry-point group ``oncopacs.analyses``, run on a series.

A plug-in is an object with a ``name``, a ``version``, what it ``accepts`` (modalities and SOP Class UIDs) and what
it ``produces`` (modalities of the objects it returns), and ``run(datasets) -> list[Dataset]``: it takes the input
series' instances and returns DICOM objects that name it (Contributing Equipment, Algorithm Identification) and refer
to their inputs. A plug-in that also answers with figures (a JSON object) implements :class:`MetricsPlugin`; its
metrics are stored as an analysis result (kind ``plugin_metrics``). A hospital adds its own by installing a package
that declares, in its ``pyproject.toml``::

    [project.entry-points."oncopacs.analyses"]
    my-model = "my_package.plugin:MyModel"

:func:`discover_plugins` loads them all (a plug-in that fails to load is reported, never fatal), and
:func:`run_plugin` reads a series through the archive, runs a plug-in and stores what it produces through the one
ingest path (source ``plugin:<name>``), so the index links every product to its inputs by its references.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from pydicom import Dataset

from oncopacs.analysis.results import upsert_result
from oncopacs.archive.ingest import Archive
from oncopacs.orchestration.plugin_metrics import build_metrics_result

GROUP = "oncopacs.analyses"

log = logging.getLogger(__name__)


@runtime_checkable
class AnalysisPlugin(Protocol):
    """What OncoPACS needs of an analysis or AI plug-in."""

    name: str
    version: str
    accepts_modalities: tuple[str, ...]
    accepts_sop_classes: tuple[str, ...]  # empty: any SOP class of the modalities
    produces: tuple[str, ...]  # modalities of the objects it returns (RTSTRUCT, SEG, SR, ...)

    def run(self, datasets: Sequence[Dataset]) -> list[Dataset]: ...


@dataclass(frozen=True, slots=True)
class PluginOutput:
    """What a :class:`MetricsPlugin` returns: DICOM objects, and figures as a JSON object (None: none)."""

    products: tuple[Dataset, ...]
    metrics: Mapping[str, Any] | None = None


@runtime_checkable
class MetricsPlugin(AnalysisPlugin, Protocol):
    """A plug-in that may answer with metrics beside, or instead of, DICOM objects (run_plugin prefers this)."""

    def run_with_metrics(self, datasets: Sequence[Dataset]) -> PluginOutput: ...


@dataclass(frozen=True, slots=True)
class PluginEntry:
    """A discovered plug-in, or why it could not be loaded (``plugin`` None, ``problem`` says why)."""

    name: str
    source: str  # "module:attribute" of the entry point
    plugin: AnalysisPlugin | None
    problem: str = ""

    def to_dict(self) -> dict[str, object]:
        p = self.plugin
        return {"name": self.name, "source": self.source, "loaded": p is not None, "problem": self.problem,
                "version": p.version if p else "", "accepts": {"modalities": list(p.accepts_modalities),
                                                               "sop_classes": list(p.accepts_sop_classes)} if p else {},
                "produces": list(p.produces) if p else []}


@dataclass(frozen=True, slots=True)
class PluginRun:
    """What one run produced: the SOP Instance UIDs stored, and those the archive refused (with the reason)."""

    plugin: str
    version: str
    series_instance_uid: str
    stored: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    metrics: Mapping[str, Any] | None = None  # a MetricsPlugin's figures, stored as a plugin_metrics result


def discover_plugins() -> dict[str, PluginEntry]:
    """Every plug-in of the ``oncopacs.analyses`` group, by name."""
    found: dict[str, PluginEntry] = {}
    for point in entry_points(group=GROUP):
        try:
            loaded = point.load()
            plugin = loaded() if isinstance(loaded, type) else loaded
            if not isinstance(plugin, AnalysisPlugin):
                raise TypeError("it lacks name, version, accepts_modalities, accepts_sop_classes, produces or run")
            found[point.name] = PluginEntry(point.name, point.value, plugin)
        except Exception as exc:  # a broken third-party plug-in must not stop the archive
            log.error("plug-in %s (%s) cannot be loaded: %s", point.name, point.value, type(exc).__name__,
                      exc_info=exc)
            found[point.name] = PluginEntry(point.name, point.value, None, f"{type(exc).__name__}: {exc}")
    return found


def run_plugin(archive: Archive, plugin: AnalysisPlugin, series_instance_uid: str) -> PluginRun:
    """Run ``plugin`` on a series of the archive and store what it produces (NotFoundError, ValueError)."""
    datasets = archive.read_series(series_instance_uid)  # NotFoundError when the archive has none of it
    modalities = {str(ds.get("Modality", "")) for ds in datasets}
    if not modalities <= set(plugin.accepts_modalities):
        raise ValueError(f"{plugin.name} accepts {', '.join(plugin.accepts_modalities)} series, "
                         f"not {', '.join(sorted(modalities))}")
    classes = {str(ds.get("SOPClassUID", "")) for ds in datasets}
    if plugin.accepts_sop_classes and not classes <= set(plugin.accepts_sop_classes):
        raise ValueError(f"{plugin.name} does not accept the SOP class of series {series_instance_uid}")
    if isinstance(plugin, MetricsPlugin):
        output = plugin.run_with_metrics(datasets)
    else:
        output = PluginOutput(tuple(plugin.run(datasets)))
    if output.metrics is not None:
        upsert_result(archive.index, build_metrics_result(plugin.name, plugin.version, datasets, output.metrics))
    stored, refused = [], []
    for product in output.products:
        uid = str(product.get("SOPInstanceUID", ""))
        if archive.has_instance(uid):  # made from the same input before (same UIDs): the first copy stands
            stored.append(uid)
            continue
        result = archive.ingest_dataset(product, source=f"plugin:{plugin.name}")
        if result.acknowledged:
            stored.append(uid)
        else:
            refused.append((uid, result.reason))
    return PluginRun(plugin.name, plugin.version, series_instance_uid, tuple(stored), tuple(refused), output.metrics)


__all__ = ["GROUP", "AnalysisPlugin", "MetricsPlugin", "PluginEntry", "PluginOutput", "PluginRun", "discover_plugins",
           "run_plugin"]
