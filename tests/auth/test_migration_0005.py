"""The 0005 migration (sign-in throttle, last TOTP step, audit spool marks) on both back-ends, down and up again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from oncopacs.index.db import _alembic_config, open_index


def test_migration_0005_upgrades_and_downgrades(database_url: str) -> None:
    index = open_index(database_url)
    try:
        with index.read_connection() as connection:
            schema = inspect(connection)
            assert {"sign_in_throttles", "audit_spool_marks"} <= set(schema.get_table_names())
            assert "totp_last_step" in {column["name"] for column in schema.get_columns("users")}
        with index.write_engine.begin() as connection:
            config = _alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        with index.read_connection() as connection:
            schema = inspect(connection)
            assert not {"sign_in_throttles", "audit_spool_marks"} & set(schema.get_table_names())
            assert "totp_last_step" not in {column["name"] for column in schema.get_columns("users")}
        index.migrate()
        with index.read_connection() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("sign_in_throttles")}
        assert columns == {"source", "failures", "window_started_at", "throttled_until"}
    finally:
        index.dispose()
