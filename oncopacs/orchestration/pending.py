"""Series and study rules waiting to fire, kept in the index database (table ``pending_rules``).

The rows survive a restart, and every process of the platform shares them: a series that ``oncopacs import``
stored fires from the rule loop ``oncopacs serve`` runs. A row is taken by deleting it with the due time it was
read with, so two rule loops never fire the same wait twice.
"""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from oncopacs.index.db import IndexDatabase
from oncopacs.index.models import PendingRule
from oncopacs.orchestration.engine import PendingKey
from oncopacs.orchestration.rules import Trigger


class IndexPendingStore:
    """:class:`oncopacs.orchestration.engine.PendingStore` in the index database."""

    def __init__(self, index: IndexDatabase) -> None:
        self.index = index

    def note(self, key: PendingKey, due_at: float) -> None:
        if self._push(key, due_at):
            return
        try:
            with self.index.write_connection() as connection:
                connection.execute(insert(PendingRule).values(
                    rule=key.rule, uid=key.uid, level=key.level.value, study_instance_uid=key.study_instance_uid,
                    due_at=due_at))
        except IntegrityError:  # another process added it meanwhile
            self._push(key, due_at)

    def take_due(self, now: float) -> list[PendingKey]:
        with self.index.read_connection() as connection:
            rows = connection.execute(select(PendingRule.rule, PendingRule.uid, PendingRule.level,
                                             PendingRule.study_instance_uid, PendingRule.due_at)
                                      .where(PendingRule.due_at <= now).order_by(PendingRule.due_at)).all()
        taken = []
        for rule, uid, level, study_uid, due_at in rows:
            with self.index.write_connection() as connection:
                claimed = connection.execute(delete(PendingRule).where(
                    PendingRule.rule == rule, PendingRule.uid == uid, PendingRule.due_at == due_at)).rowcount
            if claimed == 1:
                taken.append(PendingKey(str(rule), Trigger(level), str(uid), str(study_uid)))
        return taken

    def count(self) -> int:
        with self.index.read_connection() as connection:
            return int(connection.execute(select(func.count()).select_from(PendingRule)).scalar_one())

    def _push(self, key: PendingKey, due_at: float) -> bool:
        """Move an existing row's due time later; whether the row exists."""
        with self.index.write_connection() as connection:
            moved = connection.execute(update(PendingRule).where(
                PendingRule.rule == key.rule, PendingRule.uid == key.uid, PendingRule.due_at < due_at)
                .values(due_at=due_at)).rowcount
            if moved:
                return True
            return connection.execute(select(PendingRule.rule).where(
                PendingRule.rule == key.rule, PendingRule.uid == key.uid)).first() is not None


__all__ = ["IndexPendingStore"]
