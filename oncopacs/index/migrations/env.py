"""Alembic environment: migrations run on the connection that :meth:`IndexDatabase.migrate` passes in."""

from typing import cast

from alembic import context
from sqlalchemy import create_engine

import oncopacs.analysis.models  # registers analysis results
import oncopacs.audit.models  # registers the audit tables
import oncopacs.auth.models  # registers users and tokens
import oncopacs.jobs.models  # registers jobs
import oncopacs.reports.models  # noqa: F401  (registers reports and their deliveries)
from oncopacs.index.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # the alembic command line
        # a missing URL (None) fails in create_engine as it always did
        engine = create_engine(cast(str, context.config.get_main_option("sqlalchemy.url")))
        with engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
