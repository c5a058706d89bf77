"""Alembic environment: migrations run on the connection that :meth:`IndexDatabase.migrate` passes in."""

from alembic import context
from sqlalchemy import create_engine

from oncopacs.index.models import Base
import oncopacs.audit.models  # noqa: F401  (registers the audit tables)
import oncopacs.auth.models  # noqa: F401  (registers users and tokens)
import oncopacs.jobs.models  # noqa: F401  (registers jobs)
import oncopacs.analysis.models  # noqa: F401  (registers analysis results)
import oncopacs.reports.models  # noqa: F401  (registers reports and their deliveries)

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # the alembic command line
        engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
