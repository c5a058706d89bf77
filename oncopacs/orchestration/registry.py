"""The model registry: every analysis plug-in and inference endpoint, whether it may run, and what it has stored.

Whether a model may run is a row of the index's ``plugin_states`` table (who changed it, and when); a model without
a row is enabled. What a model produced is counted in the index: every object a plug-in stores is ingested with
source ``plugin:<name>`` (:func:`~oncopacs.orchestration.plugins.run_plugin`). The registry takes the entries it is
given (discovered plug-ins, configured endpoints) and adds that state to each.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from oncopacs.errors import NotFoundError
from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import Instance, PluginState
from oncopacs.orchestration.plugins import PluginEntry

ACTOR_LENGTH = 128  # plugin_states.changed_by


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One model of the registry: the entry, whether it may run, how many objects it has stored, the last change."""

    entry: PluginEntry
    enabled: bool
    produced: int  # objects in the archive whose source is the model's ``plugin:<name>``
    changed_by: str = ""  # who last enabled or disabled it ("" when nobody has)
    changed_at: datetime | None = None  # when (UTC); None when nobody has

    @property
    def name(self) -> str:
        return self.entry.name

    def to_dict(self) -> dict[str, object]:
        """The entry's fields, then ``enabled``, ``produced``, ``changed_by`` and ``changed_at`` (ISO 8601 or None)."""
        return {**self.entry.to_dict(), "enabled": self.enabled, "produced": self.produced,
                "changed_by": self.changed_by,
                "changed_at": self.changed_at.isoformat() if self.changed_at is not None else None}


def product_source(entry: PluginEntry) -> str:
    """The ingest source of what ``entry`` stores: ``plugin:`` and the plug-in's own name (the entry's if unloaded)."""
    return f"plugin:{entry.plugin.name if entry.plugin is not None else entry.name}"


class ModelRegistry:
    """The models of ``entries`` (by name) with their enabled state and product counts, kept in ``index``."""

    def __init__(self, index: IndexDatabase, entries: Mapping[str, PluginEntry],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.index = index
        self.entries = dict(entries)
        self.clock = clock

    def list(self) -> builtins.list[ModelStatus]:
        """Every model, by name."""
        return self._statuses(sorted(self.entries))

    def get(self, name: str) -> ModelStatus:
        """The model called ``name`` (NotFoundError when there is none)."""
        return self._statuses([self._known(name)])[0]

    def is_enabled(self, name: str) -> bool:
        """Whether ``name`` may run: True unless an administrator disabled it (also for a name not in the entries,
        so that a job of a model that is not installed fails on that, not on this)."""
        with self.index.reading() as session:
            enabled = session.scalar(select(PluginState.enabled).where(PluginState.name == name))
        return enabled is None or bool(enabled)

    def set_enabled(self, name: str, enabled: bool, actor: str) -> ModelStatus:
        """Enable or disable the model ``name`` as ``actor``; its new status (NotFoundError for an unknown name)."""
        name = self._known(name)
        values = {"enabled": enabled, "changed_by": actor[:ACTOR_LENGTH], "changed_at": self.clock()}
        for attempt in range(2):  # two first changes of one model at once: the second insert updates instead
            try:
                with self.index.write_connection() as connection:
                    changed = connection.execute(
                        update(PluginState).where(PluginState.name == name).values(**values)).rowcount
                    if not changed:
                        connection.execute(insert(PluginState).values(name=name, **values))
                break
            except IntegrityError:
                if attempt:
                    raise
        return self.get(name)

    def _known(self, name: str) -> str:
        if name not in self.entries:
            known = ", ".join(sorted(self.entries)) or "none"
            raise NotFoundError(f"no model named {name[:128]!r} is installed (installed: {known})")
        return name

    def _statuses(self, names: Sequence[str]) -> builtins.list[ModelStatus]:
        sources = {name: product_source(self.entries[name]) for name in names}
        with self.index.reading() as session:
            states = {row.name: row for row in session.execute(
                select(PluginState.name, PluginState.enabled, PluginState.changed_by, PluginState.changed_at)
                .where(PluginState.name.in_(names)))}
            counts: dict[str, int] = dict(session.execute(
                select(Instance.source, func.count()).where(Instance.source.in_(set(sources.values())))
                .group_by(Instance.source)).all())
        statuses = []
        for name in names:
            state = states.get(name)
            produced = counts.get(sources[name], 0)
            if state is None:
                statuses.append(ModelStatus(self.entries[name], True, produced))
            else:
                changed_at = state.changed_at if state.changed_at.tzinfo else state.changed_at.replace(tzinfo=UTC)
                statuses.append(ModelStatus(self.entries[name], bool(state.enabled), produced, state.changed_by,
                                            changed_at))
        return statuses


__all__ = ["ModelRegistry", "ModelStatus", "product_source"]
