"""the indexes the common C-FIND and QIDO-RS queries need at millions of instances: person-name wildcards
(lower(patient_name), prefix and trigram), ModalitiesInStudy and the study counts (series by study and
modality), SOPClassesInStudy (instances by series and SOP class); PostgreSQL only, SQLite keeps its plans

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:00:00.000000
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

#: (name, table, definition): PN matching folds case with lower() (oncopacs.index.query), so the name indexes are
#: on lower(patient_name); text_pattern_ops serves LIKE 'smith^j%' under any collation, the trigram index (when
#: pg_trgm is there) '%son%'. INCLUDE makes the study counts an index-only scan.
_INDEXES = (
    ('ix_patients_name_lower_prefix', 'patients', '(lower(patient_name) text_pattern_ops)'),
    ('ix_series_study_modality', 'series', '(study_pk, modality) INCLUDE (number_of_instances)'),
    ('ix_instances_series_sop_class', 'instances', '(series_pk, sop_class_uid)'),
)
_TRIGRAM = ('ix_patients_name_lower_trgm', 'patients', 'USING gin (lower(patient_name) {schema}.gin_trgm_ops)')
_TRIGRAM_SCHEMA = ("SELECT quote_ident(nspname) FROM pg_extension JOIN pg_namespace ON pg_namespace.oid = extnamespace"
                   " WHERE extname = 'pg_trgm'")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    for name, table, definition in _INDEXES:
        op.execute(f'CREATE INDEX IF NOT EXISTS {name} ON {table} {definition}')
    schema = _trigram_schema(bind)
    if schema is not None:
        name, table, definition = _TRIGRAM
        op.execute(f'CREATE INDEX IF NOT EXISTS {name} ON {table} {definition.format(schema=schema)}')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for name, _table, _definition in (_TRIGRAM, *reversed(_INDEXES)):
        op.execute(f'DROP INDEX IF EXISTS {name}')


def _trigram_schema(bind: sa.Connection) -> str | None:
    """The schema of pg_trgm, created in public (not in the schema being migrated, which a test drops) when the
    database has none; None when this user may not create it (then '%son%' wildcards read every patient)."""
    schema = bind.exec_driver_sql(_TRIGRAM_SCHEMA).scalar()
    if schema is None:
        try:
            with bind.begin_nested():
                bind.exec_driver_sql('CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public')
        except sa.exc.DBAPIError as exc:
            log.warning("pg_trgm cannot be created (%s): no trigram index for name wildcards", type(exc).__name__)
            return None
        schema = bind.exec_driver_sql(_TRIGRAM_SCHEMA).scalar()
    return schema
