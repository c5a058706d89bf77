"""What a firing rule does on the platform: forward through the outbox, analyse as a plug-in job, export de-identified.

Nothing runs inside the association or request that stored the instance: ``forward`` writes outbox rows (delivered
by the delivery loop), ``analyse`` and ``export`` queue jobs (run by the job worker). A destination or plug-in the
configuration does not know is refused when the platform opens (:func:`check_rules`), never at the first firing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from oncopacs.archive.ingest import Archive
from oncopacs.audit.trail import AuditTrail
from oncopacs.errors import ConfigError
from oncopacs.index.models import Instance, Series
from oncopacs.jobs.background import BackgroundLoop
from oncopacs.jobs.kinds import JobSystem, enqueue_once
from oncopacs.jobs.worker import Handler, ProgressCallback
from oncopacs.orchestration.deid_export import DirectorySink, export_deidentified
from oncopacs.orchestration.engine import Firing, RuleEngine
from oncopacs.orchestration.outbox import Outbox, parse_destination
from oncopacs.orchestration.plugins import PluginEntry, discover_plugins, run_plugin
from oncopacs.orchestration.rules import Rule, parse_rules
from oncopacs.settings import RemoteAE, Settings

PLUGIN_JOB = "plugin_analysis"
EXPORT_JOB = "deid_export"
RULES_ACTOR = "rules"

log = logging.getLogger(__name__)


def check_rules(rules: Iterable[Rule], remote_aes: Iterable[RemoteAE], plugins: Mapping[str, PluginEntry]) -> None:
    """ConfigError naming the rule when it forwards to an unknown destination, runs an unknown or broken plug-in,
    or exports elsewhere than a folder (exports to an AE or a DICOMweb URL are not available yet)."""
    for rule in rules:
        for destination in rule.forward:
            try:
                parse_destination(destination, remote_aes)
            except ConfigError as exc:
                raise ConfigError(f"rule {rule.name!r}: {exc}") from None
        for name in rule.analyse:
            entry = plugins.get(name)
            if entry is None:
                raise ConfigError(f"rule {rule.name!r}: no plug-in named {name!r} (installed: "
                                  f"{', '.join(sorted(plugins)) or 'none'})")
            if entry.plugin is None:
                raise ConfigError(f"rule {rule.name!r}: plug-in {name!r} cannot be loaded: {entry.problem}")
        for target in rule.export:
            if not Path(target).is_absolute():
                raise ConfigError(f"rule {rule.name!r}: export to {target!r}: give an absolute folder path")


class PlatformActions:
    """Carries out firings on the platform's outbox and job queue."""

    def __init__(self, archive: Archive, jobs: JobSystem, outbox: Outbox) -> None:
        self.archive = archive
        self.jobs = jobs
        self.outbox = outbox

    def run(self, firing: Firing) -> None:
        rule = firing.rule
        for destination in rule.forward:
            self.outbox.enqueue(firing.sop_instance_uids, destination, rule.name)
        for plugin in rule.analyse:
            for series in self._series_of(firing):
                enqueue_once(self.jobs.queue, PLUGIN_JOB, {"plugin": plugin, "series_instance_uid": series,
                                                           "rule": rule.name}, RULES_ACTOR)
        for target in rule.export:
            enqueue_once(self.jobs.queue, EXPORT_JOB, {"study_instance_uids": [firing.study_instance_uid],
                                                          "out": target, "rule": rule.name}, RULES_ACTOR)

    def _series_of(self, firing: Firing) -> list[str]:
        """The series a firing covers (a study firing: each series its instances belong to)."""
        with self.archive.index.reading() as session:
            rows = session.execute(select(Series.series_instance_uid).join(Instance.series)
                                   .where(Instance.sop_instance_uid.in_(firing.sop_instance_uids)).distinct())
            return sorted(str(uid) for (uid,) in rows)


def build_plugin_handler(archive: Archive, plugins: Mapping[str, PluginEntry] | None = None) -> Handler:
    """The job handler running a plug-in on a series (params: plugin, series_instance_uid); the installed plug-ins
    are looked up at the first job when ``plugins`` is None."""
    found: dict[str, Mapping[str, PluginEntry]] = {"plugins": plugins} if plugins is not None else {}

    def run(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        if "plugins" not in found:
            found["plugins"] = discover_plugins()
        entry = found["plugins"].get(str(params.get("plugin", "")))
        if entry is None or entry.plugin is None:
            raise ValueError(f"plug-in {params.get('plugin')!r} is not installed or cannot be loaded")
        progress(0.0, f"{entry.name} on a series")
        done = run_plugin(archive, entry.plugin, str(params["series_instance_uid"]))
        progress(1.0, f"{len(done.stored)} object(s) stored")
        return {"plugin": done.plugin, "version": done.version, "series_instance_uid": done.series_instance_uid,
                "stored": list(done.stored), "refused": [list(r) for r in done.refused]}

    return run


def build_export_handler(archive: Archive, audit: AuditTrail) -> Handler:
    """The job handler of a rule's export: the studies de-identified into a folder (params: study UIDs, out)."""

    def run(params: Mapping[str, Any], progress: ProgressCallback) -> dict[str, Any]:
        progress(0.0, "de-identified export")
        summary = export_deidentified(archive, audit, list(params["study_instance_uids"]),
                                      DirectorySink(Path(str(params["out"]))), actor=RULES_ACTOR,
                                      source=f"rule {params.get('rule', '')}")
        progress(1.0, "exported")
        return summary.to_dict()

    return run


def install_rules(settings: Settings, archive: Archive, jobs: JobSystem, outbox: Outbox,
                  audit: AuditTrail) -> RuleEngine:
    """The configured rules, checked (ConfigError), listening to the archive; the plug-in and export job kinds."""
    rules = parse_rules(settings.rules)
    plugins = discover_plugins() if any(rule.analyse for rule in rules) else None
    check_rules(rules, settings.remote_aes, plugins or {})
    jobs.registry.register(PLUGIN_JOB, build_plugin_handler(archive, plugins))
    jobs.registry.register(EXPORT_JOB, build_export_handler(archive, audit))
    engine = RuleEngine(rules, PlatformActions(archive, jobs, outbox), stable_seconds=settings.stable_seconds)
    if rules:
        archive.subscribe_arrivals(engine.arrived)
    return engine


class RuleLoop(BackgroundLoop):
    """Fires the series and study rules whose data has become stable, checking every ``poll_s`` seconds."""

    thread_name = "oncopacs-rules"

    def __init__(self, engine: RuleEngine, poll_s: float = 1.0) -> None:
        super().__init__()
        self.engine = engine
        self.poll_s = poll_s

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.engine.fire_stable()
            except Exception as exc:  # one failing action must not end rule processing
                log.error("a stable-series rule failed: %s", type(exc).__name__, exc_info=exc)
            self._sleep(self.poll_s)


__all__ = ["EXPORT_JOB", "PLUGIN_JOB", "PlatformActions", "RuleLoop", "build_export_handler", "build_plugin_handler",
           "check_rules", "install_rules"]
